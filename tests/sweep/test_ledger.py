"""visiontune/sweep/ledger.py on a copy of the checked-in experiment (tests/fixtures/experiment):
after a resume, the ledger and the Optuna study are brought in line with the results Ray returns;
the driver runs of a sweep; the trials Ray's saved state holds. No Ray cluster: the results are
small stand-ins with what reconciliation reads of Ray's (path, metrics, error)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from support import copy_fixture

from visiontune.errors import InputError
from visiontune.storage import open_experiment
from visiontune.sweep.ledger import (
    driver_runs,
    read_ledger,
    read_summary,
    reconcile_trials,
    saved_trial_states,
    sweep_finished,
)
from visiontune.sweep.searcher import ERROR_ATTR, LOST_ATTR, TRIAL_ID_ATTR
from visiontune.trainables.contract import divergence_result


@dataclass
class FakeResult:
    """What reconciliation reads of a `ray.tune.Result`."""

    path: str
    metrics: dict[str, Any]
    error: Exception | None = None


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    return copy_fixture("experiment", tmp_path)


def _ledger(exp: Path) -> dict[str, dict]:
    return json.loads((exp / "trial_status.json").read_text())


def _write_ledger(exp: Path, ledger: dict[str, dict]) -> None:
    (exp / "trial_status.json").write_text(json.dumps(ledger))


def _spec(exp: Path) -> dict[str, Any]:
    return yaml.safe_load((exp / "spec.yaml").read_text())


def _name(exp: Path) -> str:
    return json.loads((exp / "sweep.json").read_text())["name"]


def _study(exp: Path) -> optuna.Study:
    return optuna.load_study(study_name=_name(exp), storage=f"sqlite:///{exp / 'optuna.db'}")


def _results(exp: Path, **last_epoch: int) -> list[FakeResult]:
    """Ray's results for every trial directory: each trial's last reported row, or the row of
    the epoch given for it in `last_epoch` (trial id -> epoch)."""
    results = []
    for trial in sorted(exp.glob("trial_*/")):
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        epoch = last_epoch.get(trial.name.removeprefix("trial_"), len(rows))
        results.append(FakeResult(str(trial), rows[epoch - 1]))
    return results


def _reconcile(exp: Path, results: list[FakeResult]) -> None:
    reconcile_trials(exp, _name(exp), results, _spec(exp)["fixed"]["epochs"])


def _force_running(exp: Path, *trial_ids: str) -> None:
    ledger = _ledger(exp)
    for trial_id in trial_ids:
        ledger[trial_id]["status"] = "RUNNING"
    _write_ledger(exp, ledger)


def _trial_with(exp: Path, status: str) -> str:
    return next(t for t, entry in sorted(_ledger(exp).items()) if entry["status"] == status)


def test_a_finished_sweep_is_left_as_it_was(exp):
    ledger, study = _ledger(exp), _study(exp).trials
    _reconcile(exp, _results(exp))
    assert _ledger(exp) == ledger
    assert [(t.state, t.value) for t in _study(exp).trials] == [(t.state, t.value) for t in study]


def test_a_running_entry_that_ray_finished_gets_terminated_with_its_epochs(exp):
    trial_id = _trial_with(exp, "TERMINATED")
    _force_running(exp, trial_id)
    _reconcile(exp, _results(exp))
    entry = _ledger(exp)[trial_id]
    assert entry["status"] == "TERMINATED" and entry["epochs"] == _spec(exp)["fixed"]["epochs"]


def test_a_running_entry_that_ray_ended_before_the_budget_was_stopped(exp):
    trial_id = _trial_with(exp, "TERMINATED")
    ledger = _ledger(exp)
    ledger[trial_id] |= {"status": "RUNNING", "epochs": 1}
    _write_ledger(exp, ledger)
    _reconcile(exp, _results(exp, **{trial_id: 2}))
    assert _ledger(exp)[trial_id] | {"updated": 0} == {
        "dir": f"trial_{trial_id}", "status": "STOPPED", "epochs": 2, "updated": 0,
    }  # fmt: skip


def test_a_retrying_entry_whose_result_is_an_error_is_errored(exp):
    trial_id = _trial_with(exp, "TERMINATED")
    ledger = _ledger(exp)
    ledger[trial_id]["status"] = "RETRYING"
    _write_ledger(exp, ledger)
    results = _results(exp)
    failed = next(r for r in results if r.path.endswith(trial_id))
    failed.error = RuntimeError("worker died")
    _reconcile(exp, results)
    assert _ledger(exp)[trial_id]["status"] == "ERROR"


def test_a_running_entry_whose_last_result_diverged_is_errored_without_counting_it(exp):
    trial_id = _trial_with(exp, "TERMINATED")
    ledger = _ledger(exp)
    ledger[trial_id] |= {"status": "RUNNING", "epochs": 1}
    _write_ledger(exp, ledger)
    results = _results(exp)
    diverged = next(r for r in results if r.path.endswith(trial_id))
    metrics = ("val_acc", "val_loss", "epoch")
    diverged.metrics = {
        **divergence_result(metrics, FloatingPointError("loss became nan")),
        "training_iteration": 2,
    }
    _reconcile(exp, results)
    entry = _ledger(exp)[trial_id]
    assert entry["status"] == "ERROR" and "loss became nan" in entry["error"]
    assert entry["epochs"] == 1  # the divergence row is not a trained epoch


def test_entries_already_final_keep_their_state(exp):
    stopped = _trial_with(exp, "STOPPED")
    _reconcile(exp, _results(exp))
    assert _ledger(exp)[stopped]["status"] == "STOPPED"


def test_an_entry_ray_has_no_result_for_is_lost(exp):
    lost = _trial_with(exp, "TERMINATED")
    running = _trial_with(exp, "STOPPED")
    _force_running(exp, running)
    results = [r for r in _results(exp) if not r.path.endswith(lost)]
    _reconcile(exp, results)
    ledger = _ledger(exp)
    assert ledger[lost]["status"] == "LOST"
    assert ledger[running]["status"] == "STOPPED"


def test_running_study_trials_fail_as_lost_or_never_started(exp):
    study = _study(exp)
    done = {t.number: (t.state, t.value) for t in study.trials}
    started = study.ask()  # the Tune trial started, then Ray forgot it
    started.set_user_attr(TRIAL_ID_ATTR, _trial_with(exp, "TERMINATED"))
    never = study.ask()  # asked for just before the driver died
    _reconcile(exp, _results(exp))
    trials = {t.number: t for t in _study(exp).trials}
    assert trials[started.number].state == TrialState.FAIL
    assert trials[started.number].user_attrs[LOST_ATTR] == "lost"
    assert trials[never.number].state == TrialState.FAIL
    assert trials[never.number].user_attrs[LOST_ATTR] == "never started"
    assert {n: (trials[n].state, trials[n].value) for n in done} == done


def test_a_trial_ray_errored_without_telling_the_callbacks_gets_an_entry_and_fails_its_study_trial(
    exp,
):
    """Ray 2.60 errors a trial whose reused actor failed to reset without calling any callback
    or the searcher: the ledger has no entry and its study trial is still RUNNING."""
    reason = "Trainable runner reuse requires reset_config() to be implemented and return True."
    orphan = "0rphan01"
    results = _results(exp)
    (exp / f"trial_{orphan}").mkdir()  # Ray wrote only its error.txt there
    asked = _study(exp).ask()
    asked.set_user_attr(TRIAL_ID_ATTR, orphan)
    results = [*results, FakeResult(str(exp / f"trial_{orphan}"), {}, RuntimeError(reason))]
    _reconcile(exp, results)
    entry = _ledger(exp)[orphan]
    assert (entry["dir"], entry["status"], entry["error"], entry["epochs"]) == (
        f"trial_{orphan}", "ERROR", reason, 0,
    )  # fmt: skip
    failed = {t.number: t for t in _study(exp).trials}[asked.number]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs[ERROR_ATTR] == reason and LOST_ATTR not in failed.user_attrs


def test_driver_runs_are_none_for_a_fresh_sweep(exp):
    assert driver_runs(exp, resume=False) == []


def test_a_finished_driver_run_is_kept_as_it_was(exp):
    summary = json.loads((exp / "sweep.json").read_text())
    assert driver_runs(exp, resume=True) == summary["runs"]


def _with_runs(exp: Path, runs: list[dict]) -> None:
    summary = json.loads((exp / "sweep.json").read_text())
    (exp / "sweep.json").write_text(json.dumps(summary | {"runs": runs}))


def test_an_interrupted_run_ends_at_the_last_ledger_update(exp):
    last = max(entry["updated"] for entry in _ledger(exp).values())
    _with_runs(exp, [{"started": last - 60.0, "ended": None}])
    assert driver_runs(exp, resume=True) == [
        {"started": last - 60.0, "ended": last, "interrupted": True}
    ]


def test_a_run_killed_before_any_ledger_update_has_no_known_end(exp):
    started = max(entry["updated"] for entry in _ledger(exp).values()) + 60.0
    _with_runs(exp, [{"started": started, "ended": None}])
    assert driver_runs(exp, resume=True) == [
        {"started": started, "ended": None, "interrupted": True}
    ]


def test_driver_runs_do_not_change_sweep_json(exp):
    _with_runs(exp, [{"started": time.time() - 60, "ended": None}])
    before = (exp / "sweep.json").read_text()
    driver_runs(exp, resume=True)
    assert (exp / "sweep.json").read_text() == before


def test_saved_state_of_a_finished_sweep_holds_every_trial_and_none_unfinished(exp):
    count, unfinished = saved_trial_states(open_experiment(exp.parent, exp.name))
    assert count == len(_ledger(exp)) and unfinished == []


# --- the one strict reading of the ledger and sweep.json --------------------------------------


def test_missing_ledger_and_summary_are_empty(tmp_path):
    assert read_ledger(tmp_path) == {} and read_summary(tmp_path) == {}
    assert not sweep_finished(tmp_path)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[]", "expected a JSON object, got []"),
        ('{"abc": 3}', "abc: expected an object, got 3"),
        ('{"abc": {"status": 1}}', "abc.status: expected a string, got 1"),
        ('{"abc": {"epochs": true}}', "abc.epochs: expected an integer, got True"),
        ('{"abc": {"recoveries": {}}}', "abc.recoveries: expected a list, got {}"),
        ('{"abc": ', "not valid JSON (Expecting value at line 1)"),
    ],
)
def test_a_damaged_ledger_is_named_and_reconciling_it_writes_nothing(exp, content, says):
    (exp / "trial_status.json").write_text(content)
    with pytest.raises(InputError) as info:
        _reconcile(exp, _results(exp))
    assert str(info.value) == f"{exp / 'trial_status.json'}: {says}"
    assert (exp / "trial_status.json").read_text() == content


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('"sweep"', "expected a JSON object, got 'sweep'"),
        ('{"runs": {"started": 1}}', "runs: expected a list, got {'started': 1}"),
        ('{"runs": [5]}', "runs[0]: expected an object, got 5"),
        ('{"runs": [{"ended": null}]}', "runs[0]: no 'started' time"),
        ('{"runs": [{"started": 1, "ended": "late"}]}', "runs[0].ended: expected a number"),
    ],
)
def test_a_damaged_summary_is_named_when_driver_runs_read_it(exp, content, says):
    (exp / "sweep.json").write_text(content)
    with pytest.raises(InputError) as info:
        driver_runs(exp, resume=True)
    assert str(info.value).startswith(f"{exp / 'sweep.json'}: {says}")


def test_a_sweep_is_finished_only_once_its_last_run_recorded_the_totals(exp):
    assert sweep_finished(exp)
    summary = json.loads((exp / "sweep.json").read_text())
    del summary["num_trials"]  # killed during the test evaluation
    (exp / "sweep.json").write_text(json.dumps(summary))
    assert not sweep_finished(exp)
