"""Helpers shared by tests (import as `from support import ...`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CLASSIFIER_SPACE = REPO / "search_spaces" / "classifier.yaml"
SWEEP_SAMPLES, SWEEP_EPOCHS = 5, 3  # the shared finished sweep (conftest.py `sweep`)
FIXTURES = REPO / "tests" / "fixtures"  # experiment dirs made by fixtures/make_experiment.py


def visiontune(
    *args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the installed console script as a user would; returns the completed process.
    `env` adds to (or replaces) variables of this process's environment."""
    exe = Path(sys.executable).with_name("visiontune")
    environ = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(exe), *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=environ,
    )  # fmt: skip


@contextmanager
def no_network() -> Iterator[list[str]]:
    """Every way out of the process records its target and fails, as on an offline machine."""
    attempts: list[str] = []

    def refuse(name: str):
        def blocked(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
            raise OSError(f"network blocked in tests: {name}")

        return blocked

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse("socket.connect"))
        patch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
        patch.setattr(socket, "create_connection", refuse("create_connection"))
        patch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        yield attempts


def uncommented_keys(path: Path) -> list[str]:
    """Lines of a YAML file that set a key without a trailing comment saying what it is.
    Keys inside a multi-line {flow mapping} are documented by the line that opens it."""
    missing, depth = [], 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        opened = depth
        depth += code.count("{") - code.count("}")
        stripped = code.strip()
        if opened or not stripped or stripped.startswith(("{", "-")) or ":" not in code:
            continue
        if "#" not in line:
            missing.append(f"{path.name}:{number}: {line.strip()}")
    return missing


def read_ledger(exp: Path) -> dict[str, dict]:
    """The sweep's trial ledger (trial_status.json); {} while it does not exist yet."""
    import json

    try:
        return json.loads((exp / "trial_status.json").read_text())
    except (OSError, ValueError):
        return {}


def copy_fixture(name: str, target: Path) -> Path:
    """A writable copy of the checked-in experiment directory tests/fixtures/NAME (`experiment`:
    a 5-trial classifier sweep with ASHA stops; `diverging`: a sweep with an errored trial)."""
    return Path(shutil.copytree(FIXTURES / name, target / name))


def check_study_against_trials(exp: Path, epochs: int, metric: str = "val_acc") -> None:
    """The sweep's Optuna study agrees with what its trials trained: every epoch a trial
    reported is its intermediate value at step = epoch (also the one a scheduler stopped it on,
    and a finished trial's last); a STOPPED trial is PRUNED with its stopping epoch's value, a
    TERMINATED one trained every epoch and is COMPLETE with its best epoch's value, as in
    trials.csv; the seed points are TERMINATED."""
    import json

    import optuna
    import pandas as pd

    from visiontune.analysis.results import read_result_lines

    status = json.loads((exp / "trial_status.json").read_text())
    trials = pd.read_csv(exp / "report" / "trials.csv").set_index("trial_id")
    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'optuna.db'}")
    assert sorted(t.user_attrs["tune_trial_id"] for t in study.trials) == sorted(trials.index)
    for trial in study.trials:
        row = trials.loc[trial.user_attrs["tune_trial_id"]]
        results = read_result_lines(exp / row["dir"] / "result.json")
        trained = {r["epoch"]: r[metric] for r in results}
        assert list(trained) == list(range(1, row["epochs"] + 1)), (row.name, list(trained))
        assert trial.intermediate_values == trained, row.name
        if status[row.name]["status"] == "STOPPED":
            assert row["epochs"] < epochs and not (isinstance(row["seed"], str) and row["seed"])
            assert trial.state == optuna.trial.TrialState.PRUNED
            assert trial.value == trained[row["epochs"]]
        else:
            assert status[row.name]["status"] == "TERMINATED" and row["epochs"] == epochs
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == pytest.approx(row[metric], abs=0, rel=1e-12)


def classifier_test_accuracy(best: Any, test_dir: Path) -> float:
    """The accuracy of a loaded classifier (visiontune.load_best's TunedModel) on an ImageFolder
    split, predicted from the decoded files; its class names must be the split's folders."""
    import torch

    from visiontune.data.imagefolder import decode_image

    classes = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    assert best.classes == tuple(classes)
    files = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((test_dir / name).iterdir())
    ]
    images = [decode_image(path) for path, _ in files]
    with torch.no_grad():
        predicted = torch.cat([
            best.model(best.preprocess(images[start : start + 256])).argmax(1)
            for start in range(0, len(images), 256)
        ])  # fmt: skip
    correct = int((predicted == torch.tensor([label for _, label in files])).sum())
    return correct / len(files)


def hparams_plugin_values(path: Path, tag: str) -> list[bytes]:
    """The TensorBoard HParams plugin payloads written under `tag` in the event files directly
    in `path`, read with TensorBoard's own event loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [
        value.metadata.plugin_data.content
        for events in sorted(path.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(events)).Load()
        for value in event.summary.value
        if value.tag == tag
    ]
