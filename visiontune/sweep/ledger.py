"""The sweep's own records of what happened, kept right after a resume and between driver runs:
the trial ledger (trial_status.json) and the Optuna study brought in line with what Ray
finished, the driver runs so far (sweep.json), and the trials Ray's saved state holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontune.fileio import read_json, write_json
from visiontune.layout import STATUS_FILE, STUDY_FILE, SUMMARY_FILE
from visiontune.storage import Experiment


def reconcile_trials(exp_dir: Path, name: str, results: Any, epochs: int) -> None:
    """Bring the ledger and the Optuna study in line with what Ray finished, after a resume.

    A driver killed mid-sweep can leave trials the ledger still calls RUNNING: some Ray restored
    and finished without a fresh event, others Ray's experiment state never recorded, so Ray does
    not restore them (it samples replacements). The first get their final state from Ray's
    results; the second are marked LOST in the ledger and FAIL in the study, so neither counts a
    trial that no longer exists."""
    from visiontune.sweep.evaluation import trial_id_of
    from visiontune.sweep.searcher import fail_lost_trials

    finished = {trial_id_of(result): result for result in results}
    ledger = reconcile_ledger(read_json(exp_dir / STATUS_FILE, {}), finished, epochs)
    write_json(exp_dir / STATUS_FILE, ledger)
    fail_lost_trials(exp_dir / STUDY_FILE, name, started=ledger)


def reconcile_ledger(
    ledger: dict[str, dict[str, Any]], finished: dict[str, Any], epochs: int
) -> dict[str, dict[str, Any]]:
    """The ledger with each entry's final state: LOST when Ray has no result for the trial; for
    one still RUNNING/RETRYING, what Ray's result says (epochs done, TERMINATED at the full
    budget, STOPPED before it, ERROR). `finished` maps trial id to Ray's result."""
    for trial_id, entry in ledger.items():
        result = finished.get(trial_id)
        if result is None:
            entry["status"] = "LOST"
        elif entry.get("status") in ("RUNNING", "RETRYING"):
            done = int((result.metrics or {}).get("training_iteration", entry.get("epochs", 0)))
            stopped = "TERMINATED" if done >= epochs else "STOPPED"
            entry.update(epochs=done, status="ERROR" if result.error else stopped)
    return ledger


def driver_runs(exp_dir: Path, resume: bool) -> list[dict[str, Any]]:
    """The driver runs of this sweep so far (a resumed sweep has several); an interrupted run's
    end is its last ledger update."""
    previous = read_json(exp_dir / SUMMARY_FILE, {}).get("runs", []) if resume else []
    ledger = read_json(exp_dir / STATUS_FILE, {})
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
