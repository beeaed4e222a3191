"""The sweep's own records of what happened, kept right after a resume and between driver runs:
the trial ledger (trial_status.json) and the Optuna study brought in line with what Ray
finished, the driver runs so far (sweep.json), and the trials Ray's saved state holds.

`read_ledger` and `read_summary` are the one reading of those two files (the report's too): a
missing file is empty, a damaged one (not JSON, or JSON of another shape) a one-line error
naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontune.errors import InputError
from visiontune.fileio import read_json_file, write_json
from visiontune.layout import STATUS_FILE, STUDY_FILE, SUMMARY_FILE
from visiontune.params import short_repr
from visiontune.storage import Experiment
from visiontune.trainables.contract import diverged_reason

TEXT, INTEGER, NUMBER, LIST, FLAG = "a string", "an integer", "a number", "a list", "true/false"
LEDGER_FIELDS = {  # what a ledger entry may hold (visiontune.callbacks.TrialStatusCallback)
    "dir": TEXT,
    "status": TEXT,
    "error": TEXT,
    "epochs": INTEGER,
    "updated": NUMBER,
    "recoveries": LIST,
}
RUN_FIELDS = {"started": NUMBER, "ended": NUMBER, "interrupted": FLAG}  # `ended` may be null


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == FLAG
    return {
        TEXT: isinstance(value, str),
        INTEGER: isinstance(value, int),
        NUMBER: isinstance(value, int | float),
        LIST: isinstance(value, list),
    }.get(kind, False)


def _check_fields(entry: Any, fields: dict[str, str], where: str) -> None:
    """`entry` is an object whose known keys hold values of their kind (null where allowed)."""
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object, got {short_repr(entry)}")
    for key, kind in fields.items():
        value = entry.get(key)
        if key in entry and not (_is(value, kind) or (key == "ended" and value is None)):
            raise InputError(f"{where}.{key}: expected {kind}, got {short_repr(value)}")


def read_ledger(exp_dir: Path) -> dict[str, dict[str, Any]]:
    """trial_status.json: trial id -> its entry ({} before the first trial started)."""
    path = Path(exp_dir) / STATUS_FILE
    ledger = read_json_file(path, dict, {})
    for trial_id, entry in ledger.items():
        _check_fields(entry, LEDGER_FIELDS, f"{path}: {trial_id}")
    return ledger


def read_summary(exp_dir: Path) -> dict[str, Any]:
    """sweep.json: the sweep's size, resources and driver runs ({} before the first run)."""
    path = Path(exp_dir) / SUMMARY_FILE
    summary = read_json_file(path, dict, {})
    runs = summary.get("runs", [])
    if not isinstance(runs, list):
        raise InputError(f"{path}: runs: expected a list, got {short_repr(runs)}")
    for index, run in enumerate(runs):
        _check_fields(run, RUN_FIELDS, f"{path}: runs[{index}]")
        if "started" not in run:
            raise InputError(f"{path}: runs[{index}]: no 'started' time")
    return summary


def sweep_finished(exp_dir: Path) -> bool:
    """Whether the sweep ran to its end: its last driver run ended without an interruption and
    recorded the sweep's totals (written once the test evaluation is done)."""
    summary = read_summary(exp_dir)
    runs = summary.get("runs") or [{}]
    last = runs[-1]
    return "num_trials" in summary and last.get("ended") is not None and not last.get("interrupted")


def reconcile_trials(exp_dir: Path, name: str, results: Any, epochs: int) -> None:
    """Bring the ledger and the Optuna study in line with what Ray finished, after a resume.

    A driver killed mid-sweep can leave trials the ledger still calls RUNNING: some Ray restored
    and finished without a fresh event, others Ray's experiment state never recorded, so Ray does
    not restore them (it samples replacements). The first get their final state from Ray's
    results; the second are marked LOST in the ledger and FAIL in the study, so neither counts a
    trial that no longer exists. A trial Ray ended without telling the callbacks (an actor reuse
    that failed, ray 2.60.0 `TuneController._on_trial_reset`) gets its entry from Ray's result,
    and its study trial FAILs with Ray's reason."""
    from visiontune.sweep.evaluation import trial_id_of
    from visiontune.sweep.searcher import fail_lost_trials

    finished = {trial_id_of(result): result for result in results}
    ledger = reconcile_ledger(read_ledger(exp_dir), finished, epochs)
    write_json(exp_dir / STATUS_FILE, ledger)
    fail_lost_trials(exp_dir / STUDY_FILE, name, ledger=ledger)


def reconcile_ledger(
    ledger: dict[str, dict[str, Any]], finished: dict[str, Any], epochs: int
) -> dict[str, dict[str, Any]]:
    """The ledger with each entry's final state: LOST when Ray has no result for the trial; for
    one still RUNNING/RETRYING, what Ray's result says (epochs done, TERMINATED at the full
    budget, STOPPED before it, ERROR); a trial Ray has a result for and the ledger lacks gets an
    entry the same way. `finished` maps trial id to Ray's result."""
    for trial_id, result in finished.items():
        if trial_id not in ledger:
            ledger[trial_id] = {"dir": Path(result.path).name, "status": "RUNNING", "epochs": 0}
    for trial_id, entry in ledger.items():
        result = finished.get(trial_id)
        if result is None:
            entry["status"] = "LOST"
        elif entry.get("status") in ("RUNNING", "RETRYING"):
            metrics = result.metrics or {}
            reason = diverged_reason(metrics)
            if reason is not None:  # its last row is the divergence, not a trained epoch
                entry.update(status="ERROR", error=reason)
                continue
            done = int(metrics.get("training_iteration", entry.get("epochs", 0)))
            stopped = "TERMINATED" if done >= epochs else "STOPPED"
            entry.update(epochs=done, status="ERROR" if result.error else stopped)
            if result.error:
                entry["error"] = error_line(result.error)
    return ledger


def error_line(error: BaseException) -> str:
    """The last non-empty line of an error's text (Ray's errors carry whole tracebacks)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def driver_runs(exp_dir: Path, resume: bool) -> list[dict[str, Any]]:
    """The driver runs of this sweep so far (a resumed sweep has several); an interrupted run's
    end is its last ledger update."""
    previous = read_summary(exp_dir).get("runs", []) if resume else []
    ledger = read_ledger(exp_dir)
    last_update = max((e.get("updated", 0) for e in ledger.values()), default=None)
    runs = [dict(run) for run in previous]
    for run in runs:
        if run.get("ended") is None:
            run["ended"] = last_update if last_update and last_update > run["started"] else None
            run["interrupted"] = True
    return runs


def saved_trial_states(experiment: Experiment) -> tuple[int, list[str]]:
    """How many trials Ray's saved experiment state holds, and which of them are unfinished.
    The saved state is what `--resume` continues from: after Ctrl-C, Ray saves it before
    stopping the running trials (which it then calls TERMINATED in memory only)."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(
        experiment.ray_experiment_path, storage_filesystem=experiment.filesystem
    )
    unfinished = [t.trial_id for t in analysis.trials if t.status not in ("TERMINATED", "ERROR")]
    return len(analysis.trials), unfinished
