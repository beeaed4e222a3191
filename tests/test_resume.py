"""A sweep whose driver is killed (SIGKILL) or interrupted (Ctrl-C) continues with --resume: finished trials are not run
again, unfinished ones continue from their checkpoints, and the Optuna study stays consistent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from support import CLASSIFIER_SPACE, visiontune

pytestmark = pytest.mark.ray  # every test here starts local Ray sweeps and kills them

NUM_SAMPLES = 5
EPOCHS = 3


def _finished(exp: Path) -> dict[str, dict]:
    try:
        status = json.loads((exp / "trial_status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: v for k, v in status.items() if v.get("status") in ("TERMINATED", "STOPPED")}


def _interrupt_when_two_trials_finished(
    args: list[str], exp: Path, signum: int
) -> tuple[dict[str, dict], int | None]:
    """Send `signum` to the driver's process group (as a terminal does on Ctrl-C / kill) once two
    trials finished; returns those trials and the driver's exit code (None when killed)."""
    exe = str(Path(sys.executable).with_name("visiontune"))
    # Its own session: the driver and the local Ray it started get the signal together.
    proc = subprocess.Popen(
        [exe, *map(str, args)], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while len(_finished(exp)) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.5)
        finished = _finished(exp)
        os.killpg(proc.pid, signum)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert len(finished) >= 2
    assert len(finished) < NUM_SAMPLES, "every trial finished before the kill: nothing to resume"
    if signum == signal.SIGINT:  # Ray saved its state and the driver said how to continue
        assert proc.returncode == 130, stderr[-3000:]
        assert "--resume" in stderr.splitlines()[-1]
    return finished


def _rows_of(trial_dir: Path) -> list[dict]:
    rows = []
    for line in (trial_dir / "result.json").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _epochs_of(trial_dir: Path) -> list[int]:
    return [row["training_iteration"] for row in _rows_of(trial_dir)]


def _retrained(trial_dir: Path) -> list[int]:
    """Epochs a trial reported twice. Ray registers a trial's checkpoint one controller step
    after its result: an interrupt in between leaves the previous checkpoint as the latest, and
    the resumed trial trains that one epoch again, from it. Training restores bit-identically,
    so the repeat must report the same numbers (a restart from scratch would not)."""
    rows = _rows_of(trial_dir)
    epochs = [row["training_iteration"] for row in rows]
    assert sorted(set(epochs)) == list(range(1, max(epochs) + 1)), epochs  # none missing
    repeats = sorted(e for e in set(epochs) if epochs.count(e) > 1)
    for epoch in repeats:
        same = [(r["val_loss"], r["train_loss"]) for r in rows if r["training_iteration"] == epoch]
        assert len(set(same)) == 1, (trial_dir.name, epoch, same)
        first = epochs.index(epoch)  # the repeat follows the original: the interrupt came between
        assert epochs.count(epoch) == 2 and epochs[first + 1] == epoch, epochs
    return repeats


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_interrupted_sweep_resumes_without_running_any_trial_twice(
    signum, tiny_imagefolder, tmp_path
):
    args = [
        "tune", CLASSIFIER_SPACE, "--num-samples", NUM_SAMPLES, "--max-epochs", EPOCHS,
        "--data", tiny_imagefolder, "--storage", tmp_path, "--name", "r", "--set", "width=8",
    ]  # fmt: skip
    exp = tmp_path / "r"
    before = _interrupt_when_two_trials_finished(args, exp, signum)
    epochs_before = {tid: _epochs_of(exp / entry["dir"]) for tid, entry in before.items()}

    refused = visiontune(*args)
    assert refused.returncode == 2 and "use --resume" in refused.stderr

    resumed = visiontune("tune", CLASSIFIER_SPACE, "--storage", tmp_path, "--name", "r", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    ledger = json.loads((exp / "trial_status.json").read_text())
    # LOST: started by the killed driver but never recorded in Ray's state; Ray sampled a
    # replacement instead, so the sweep still has NUM_SAMPLES trials.
    status = {tid: entry for tid, entry in ledger.items() if entry["status"] != "LOST"}
    assert len(status) == NUM_SAMPLES
    assert {entry["status"] for entry in status.values()} <= {"TERMINATED", "STOPPED"}
    retrained = {}
    for tid, entry in status.items():
        if tid in epochs_before:
            epochs = _epochs_of(exp / entry["dir"])
            assert epochs == epochs_before[tid], f"finished trial {tid} was run again"
            assert epochs == list(range(1, len(epochs) + 1)), (tid, epochs)
        else:
            retrained[tid] = _retrained(exp / entry["dir"])
    # At most the epoch in flight at the interrupt, on at most the trials that were running.
    assert all(len(epochs) <= 1 for epochs in retrained.values()), retrained
    assert sum(map(len, retrained.values())) <= 2, retrained  # 2 slots
    # The study: one finished trial per sweep trial (no duplicate, none lost); the trials the
    # killed driver had asked for but Ray forgot are failed and say why.
    study = optuna.load_study(study_name="r", storage=f"sqlite:///{exp / 'optuna.db'}")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    done = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert sorted(t.user_attrs["tune_trial_id"] for t in done) == sorted(status)
    assert {t.state for t in done} <= {
        optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    }  # fmt: skip
    for trial in done:  # every epoch trained reached the study, before and after the resume
        entry = status[trial.user_attrs["tune_trial_id"]]
        trained = {row["epoch"]: row["val_acc"] for row in _rows_of(exp / entry["dir"])}
        assert trial.intermediate_values == trained, (entry["dir"], trial.intermediate_values)
        pruned = trial.state == optuna.trial.TrialState.PRUNED
        assert pruned == (entry["status"] == "STOPPED"), (entry, trial.state)
    lost = {tid for tid, entry in ledger.items() if entry["status"] == "LOST"}
    assert {t.user_attrs.get("tune_trial_id") for t in failed if t.user_attrs.get(
        "lost_on_resume") == "lost"} == lost  # fmt: skip
    assert all(t.user_attrs.get("lost_on_resume") in ("lost", "never started") for t in failed)
    if signum == signal.SIGINT:  # Ray saved its state on the way out: nothing was lost
        assert not failed and not lost
    trials = pd.read_csv(exp / "report" / "trials.csv")
    assert len(trials) == NUM_SAMPLES
    roles = {r["role"] for r in json.loads((exp / "test_results.json").read_text())}
    assert roles == {"seed baseline", "seed custom", "tuned best"}
    # The report's wall time counts both driver runs, the interrupted one too.
    summary = json.loads((exp / "sweep.json").read_text())
    first, second = summary["runs"]
    assert first["interrupted"] and first["ended"] > first["started"]
    assert second["started"] >= first["ended"] and not second.get("interrupted")
    spans = (first["ended"] - first["started"]) + (second["ended"] - second["started"])
    assert summary["wall_time_s"] == pytest.approx(spans)
    assert "over 2 driver runs (1 interrupted" in (exp / "report" / "report.md").read_text()
