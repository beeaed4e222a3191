"""visiontune command line: tune, report, train, data make.

    visiontune tune search_spaces/classifier.yaml            # sweep, then print the report table
    visiontune report runs/classifier                        # report.md, trials.csv, best_config.yaml
    visiontune train search_spaces/classifier.yaml --config runs/classifier/report/best_config.yaml
    visiontune data make ir-solar-modules --out DIR

Bad input exits with code 2 and one line on stderr naming the file, key and value.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visiontune.errors import InputError, SweepInterrupted
from visiontune.fileio import write_json

# Spec keys an option writes besides its own (visiontune.spec.OVERRIDE_PATHS): a --max-epochs
# below the scheduler's grace period shortens the grace period with it.
FLAG_TARGETS = {"max_epochs": ("scheduler.grace_period",)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visiontune", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tune = sub.add_parser("tune", help="run a hyperparameter sweep on Ray Tune")
    tune.add_argument("space", help="sweep spec YAML, e.g. search_spaces/classifier.yaml")
    tune.add_argument("--num-samples", type=int, help="trials in total (seed points included)")
    tune.add_argument("--max-epochs", type=int, help="epoch budget per trial (max_t)")
    tune.add_argument("--data", help="ImageFolder dir or YOLO data.yaml (overrides data.source)")
    tune.add_argument("--storage", default="./runs", help="where experiments live (default ./runs)")
    tune.add_argument("--name", help="experiment name (default: the spec's name or file stem)")
    tune.add_argument(
        "--address",
        help="attach to a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: "
        "$RAY_ADDRESS, set inside `ray job submit` jobs; else a local Ray on 127.0.0.1)",
    )
    tune.add_argument("--cpus-per-trial", type=float, help="CPU cores per trial")
    tune.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (fractions pack trials)")
    tune.add_argument("--max-concurrent", type=int, help="trials at once (default: every slot)")
    tune.add_argument("--seed", type=int, help="searcher seed")
    tune.add_argument("--max-failures", type=int,
                      help="retries of a trial whose worker or node died (from its checkpoint)")  # fmt: skip
    tune.add_argument("--resume", action="store_true",
                      help="continue the interrupted sweep STORAGE/NAME (finished trials are kept)")  # fmt: skip
    tune.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                      help="fix a trainable parameter for every trial (repeatable)")  # fmt: skip

    report = sub.add_parser("report", help="write report.md, trials.csv, best_config.yaml")
    report.add_argument("experiment", help="experiment directory STORAGE/NAME")
    report.add_argument("--out", help="output directory (default STORAGE/NAME/report)")

    train = sub.add_parser("train", help="train one configuration without a search")
    train.add_argument("space", help="sweep spec YAML (its fixed settings and data)")
    train.add_argument(
        "--config", help="YAML of parameter values, e.g. a report's best_config.yaml"
    )
    train.add_argument("--data", help="ImageFolder dir or YOLO data.yaml (overrides data.source)")
    train.add_argument("--max-epochs", type=int, help="epochs to train")
    train.add_argument("--out", help="directory for checkpoint.pt and metrics.json")
    train.add_argument(
        "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE"
    )

    data = sub.add_parser("data", help="embedded datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    make = data_sub.add_parser("make", help="write an embedded dataset as an ImageFolder tree")
    make.add_argument("dataset", help="ir-solar-modules (ImageFolder) or pv-arrays (YOLO layout)")
    make.add_argument("--out", required=True, help="output directory (must not exist)")
    make.add_argument("--seed", type=int, default=0)
    return parser


def _abs_data(value: str | None) -> str | None:
    return str(Path(value).expanduser().resolve()) if value else None


def cmd_tune(args: argparse.Namespace) -> int:
    from visiontune.data import load_dataset
    from visiontune.storage import open_experiment
    from visiontune.sweep import check_address, keep_ray_on_loopback
    from visiontune.trainables import load_task

    overrides = {
        "num_samples": args.num_samples,
        "max_epochs": args.max_epochs,
        "data": _abs_data(args.data),
        "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": args.gpus_per_trial,
        "max_concurrent": args.max_concurrent,
        "seed": args.seed,
        "max_failures": args.max_failures,
    }
    spec = _load_tune_spec(args.space, overrides, args.assignments)
    # Inside a Ray job (`ray job submit`), Ray names the cluster in RAY_ADDRESS: attach to it.
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        keep_ray_on_loopback()
    else:
        check_address(address)
    experiment = open_experiment(args.storage, *_experiment_name(args, spec))
    experiment.check_writable()
    if args.resume:
        changed = [k for k, v in overrides.items() if v is not None] + args.assignments
        if changed:
            raise InputError(f"--resume: the sweep's spec cannot change on resume, got {changed}")
        spec = _resumable_spec(experiment)
        if spec is None:
            print(f"{experiment.location}: the sweep finished; nothing to resume. "
                  f"Its report: visiontune report {experiment.location}")  # fmt: skip
            return 0
    elif experiment.exists():
        raise experiment.exists_error()
    task = load_task(spec.task)
    data = load_dataset(task.DATA_FORMAT, spec.data_source, spec.data_options)
    try:
        if address and address.startswith("ray://"):
            exp_dir, report, table = _sweep_on_head(address, spec, data, experiment, args.resume)
        else:
            exp_dir, report, table = sweep_and_report(spec, data, experiment, address, args.resume)
    except SweepInterrupted as stop:
        print(
            f"\nSweep interrupted ({stop}); its state is saved in {experiment.location}.\n"
            f"Continue it with: visiontune tune {args.space} --storage {args.storage} "
            f"--name {experiment.name} --resume",
            file=sys.stderr,
        )
        return 130
    where = f"{experiment.uri}\nLocal copy: {exp_dir}" if experiment.uri else exp_dir
    print(f"\nExperiment: {where}\nReport:     {report}\n")
    print(table)
    return 0


def _load_tune_spec(space: str, overrides: dict[str, Any], assignments: list[str]) -> Any:
    """The spec with the command line's options applied. A value the spec's checks refuse is
    named by its flag (`--max-failures: must be >= 0, got -1`), not blamed on the file: an
    error at a key an option wrote to is the option's when the spec without that option does
    not fail the same way."""
    from visiontune.spec import OVERRIDE_PATHS, load_spec

    try:
        return load_spec(space, overrides, assignments)
    except InputError as exc:
        message = str(exc)
        key, _, problem = message.removeprefix(f"{space}: ").partition(": ")
        for option, value in overrides.items():
            targets = (".".join(OVERRIDE_PATHS[option]), *FLAG_TARGETS.get(option, ()))
            if value is None or key not in targets:
                continue
            try:
                load_spec(space, {**overrides, option: None}, assignments)
            except InputError as without:
                if str(without) == message:
                    continue  # the file's own value fails without the option too
            raise InputError(f"--{option.replace('_', '-')}: {problem}") from None
        raise


def _experiment_name(args: argparse.Namespace, spec: Any) -> tuple[str, str]:
    """The experiment's name and where it came from (for an error about it)."""
    if args.name is not None:
        return args.name, "--name"
    if spec.raw.get("name"):
        return spec.name, f"{args.space}: name"
    return spec.name, f"{args.space}: the file's name (the default experiment name; use --name)"


def _resumable_spec(experiment: Any) -> Any:
    """The spec of the interrupted sweep `experiment` once every file its resume reads is
    checked, before Ray starts (visiontune.sweep.preflight); None when it already finished."""
    from visiontune.sweep.preflight import check_resumable, finished

    experiment.mirror()  # a URI storage's files, fresh in the driver's mirror
    if finished(experiment):
        return None
    return check_resumable(experiment)  # the search space a sweep started with is fixed


def sweep_and_report(
    spec: Any, data: Any, experiment: Any, address: str | None, resume: bool
) -> tuple[str, str, str]:
    """A driver's whole job: the sweep, then its report (uploaded next to it for a URI storage).
    Returns the local experiment directory, the report's path and the main table."""
    from visiontune.analysis.report import main_table, write_report
    from visiontune.analysis.results import load_experiment
    from visiontune.sweep import run_sweep

    exp_dir = run_sweep(spec, data, experiment, address, resume=resume)
    experiment.download()  # Ray's trial results join the driver's files (no checkpoints)
    out = write_report(exp_dir)
    experiment.upload()
    return str(exp_dir), str(out / "report.md"), main_table(load_experiment(exp_dir))


def _sweep_on_head(
    address: str, spec: Any, data: Any, experiment: Any, resume: bool
) -> tuple[str, str, str]:
    """Ray Client (ray://HOST:PORT): Ray Tune runs its loop on the head node then, so the whole
    driver runs there as one task: the Optuna study, ledger, TensorBoard events and report are
    written on the head's disk (a local --storage is a path on the head) or to the URI storage."""
    import ray

    _connect_client(address)
    try:
        head = ray.remote(sweep_and_report).options(
            num_cpus=0, max_retries=0, resources={"node:__internal_head__": 0.001}
        )
        return ray.get(head.remote(spec, data, experiment, address, resume))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, InputError | SweepInterrupted):
            raise exc.cause from None
        raise
    finally:
        ray.shutdown()


def _connect_client(address: str, attempts: int = 3) -> None:
    """ray.init over Ray Client. The head's client proxy starts one server process per client
    connection, and that start can fail on a busy head (the proxy then says so and frees the
    port only later): retry on a fresh server instead of giving up on the sweep."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, log_to_driver=True)
            return
        except ConnectionAbortedError as exc:
            if "client server failed" not in str(exc) or attempt == attempts:
                raise
            print(f"visiontune: Ray Client server did not start ({attempt}/{attempts}); retrying",
                  file=sys.stderr)  # fmt: skip
            time.sleep(2)


def cmd_report(args: argparse.Namespace) -> int:
    from visiontune.analysis.report import write_report
    from visiontune.layout import REPORT_DIR
    from visiontune.storage import open_report_source

    with tempfile.TemporaryDirectory(prefix="visiontune-report-") as scratch:
        experiment, local = open_report_source(args.experiment, Path(scratch))
        out = write_report(local, args.out)
        print((out / "report.md").read_text())
        written = ["report.md", "trials.csv"]
        if (out / "best_config.yaml").exists():
            written.append("best_config.yaml")
        if experiment.uri:  # the report goes back next to the sweep (and to --out if given)
            experiment.upload_dir(out, REPORT_DIR)
            print(f"Written: {experiment.uri.split('?')[0]}/{REPORT_DIR}/ ({', '.join(written)})"
                  + (f" and {out}/" if args.out else ""))  # fmt: skip
        else:
            print(f"Written: {out}/{', '.join(written)}")
        if len(written) < 3:
            print("No best_config.yaml: the sweep has no tested tuned best (it did not finish; "
                  "`visiontune tune ... --resume` continues it)")  # fmt: skip
    return 0


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


def cmd_train(args: argparse.Namespace) -> int:
    """Train one configuration; exit 1 with one line if it diverges (a training outcome, not
    bad input), leaving `--out` as it was: it is written only once training and the test
    evaluation are done, in one step."""
    from visiontune.data import load_dataset
    from visiontune.data.files import write_tree_atomically
    from visiontune.trainables import load_task

    overrides = {"max_epochs": args.max_epochs, "data": _abs_data(args.data)}
    spec = _load_tune_spec(args.space, overrides, args.assignments)
    task = load_task(spec.task)
    config = task.build_config(_train_config(spec, args.config), args.config or args.space)
    out = _train_out(args.out)
    data = load_dataset(task.DATA_FORMAT, spec.data_source, spec.data_options)
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


def cmd_data(args: argparse.Namespace) -> int:
    from visiontune.data import make_embedded

    start = time.perf_counter()
    path = make_embedded(args.dataset, Path(args.out).expanduser(), seed=args.seed)
    print(f"Written {args.dataset} to {path} in {time.perf_counter() - start:.1f} s")
    return 0


COMMANDS = {"tune": cmd_tune, "report": cmd_report, "train": cmd_train, "data": cmd_data}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        print(f"visiontune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
