"""`visiontune train`: one configuration trained through the trainable contract, without Ray or
a search, then evaluated on the test split (see the README's `visiontune train` section)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from visiontune.cli import abs_data, load_tune_spec
from visiontune.errors import InputError
from visiontune.fileio import write_json


def _train_config(spec: Any, config_path: str | None) -> dict[str, Any]:
    from visiontune.spec import read_yaml

    values = dict(spec.fixed)
    if spec.seeds:
        values.update(next(iter(spec.seeds.values())))
    if config_path:
        values.update(read_yaml(config_path))
        for key in spec.raw.get("fixed") or {}:  # command-line pins beat the file
            values[key] = spec.fixed[key]
    return values


def train_command(args: argparse.Namespace) -> int:
    """Train one configuration; exit 1 with one line if it diverges (a training outcome, not
    bad input), leaving `--out` as it was: it is written only once training and the test
    evaluation are done, in one step."""
    from visiontune.data import load_dataset
    from visiontune.data.files import write_tree_atomically
    from visiontune.trainables import load_task

    overrides = {"max_epochs": args.max_epochs, "data": abs_data(args.data)}
    spec = load_tune_spec(args.space, overrides, args.assignments)
    task = load_task(spec.task)
    config = task.build_config(_train_config(spec, args.config), args.config or args.space)
    out = _train_out(args.out)
    data = load_dataset(task.DATA_FORMAT, spec.data_source, spec.data_options)
    _use_a_trials_threads(spec.cpus_per_trial)
    with tempfile.TemporaryDirectory(prefix="visiontune-train-") as scratch:
        checkpoint_dir = Path(scratch) / "checkpoint"
        checkpoint_dir.mkdir()
        workdir = Path(scratch) / "work"
        workdir.mkdir()
        history: list[dict] = []
        try:
            _train_epochs(task, config, data, checkpoint_dir, workdir, history)
        except FloatingPointError as exc:
            kept = f"; nothing written to {out}" if out else ""
            print(f"visiontune: training diverged at epoch {len(history) + 1}: {exc}{kept}",
                  file=sys.stderr)  # fmt: skip
            return 1
        test = task.evaluate_checkpoint(checkpoint_dir, data, "test")
        print(_measured(test))
        if out:
            metrics = {"history": history, **test}
            write_tree_atomically(out, lambda staging: _keep(checkpoint_dir, metrics, staging))
            print(f"Written: {out}/ (checkpoint, metrics.json)")
    return 0


def _use_a_trials_threads(cpus_per_trial: float) -> None:
    """torch's CPU threads as a trial of the spec gets them (tune_edge.trial_cpus: its CPU
    share, at least one): another thread count sums in another order, and the CPU floats would
    differ from the sweep's in the last digits."""
    import torch

    torch.set_num_threads(max(1, int(cpus_per_trial)))


def _train_out(value: str | None) -> Path | None:
    """`--out` resolved, once it is known that a directory can be written there: a missing or
    empty directory whose parent (the nearest existing one) is a writable directory."""
    if not value:
        return None
    out = Path(value).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out is a file; name a directory for checkpoint and metrics")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out}: --out directory is not empty; choose another")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{out}: --out cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{out}: --out cannot be created: {parent} is not writable")
    return out


def _measured(test: dict[str, Any]) -> str:
    """The test split's numbers as one line; "—" for one that was not measured (None)."""
    numbers = {
        k: v
        for k, v in test.items()
        if v is None or (isinstance(v, int | float) and not isinstance(v, bool))
    }
    return " ".join(f"{k}={'—' if v is None else f'{v:.4f}'}" for k, v in numbers.items())


def _keep(checkpoint_dir: Path, metrics: dict[str, Any], target: Path) -> None:
    for path in checkpoint_dir.iterdir():
        shutil.copyfile(path, target / path.name)
    write_json(target / "metrics.json", metrics)


def _train_epochs(
    task: Any, config: Any, data: Any, checkpoint_dir: Path, workdir: Path, history: list[dict]
) -> None:
    """Train one configuration through the trainable contract, printing each epoch's metrics,
    appending them to `history` and keeping the latest epoch's checkpoint files in
    `checkpoint_dir` (what `task.evaluate_checkpoint` reads). CUDA when this machine has it.
    A loss that becomes NaN/inf raises FloatingPointError (after the epochs in `history`)."""
    from visiontune.trainables.contract import TrainContext
    from visiontune.trainables.device import local_device, releasing_memory

    print(" ".join(f"{m:>10}" for m in task.METRICS))

    def keep(metrics: dict, epoch_dir: Path) -> None:
        history.append(metrics)
        print(" ".join(f"{metrics[m]:>10.4g}" for m in task.METRICS), flush=True)
        for path in epoch_dir.iterdir():
            shutil.copyfile(path, checkpoint_dir / path.name)

    device = local_device()
    with releasing_memory(device):
        task.train(config, data, TrainContext(device, workdir, keep))
