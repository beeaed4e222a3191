"""analysis/results.py on checked-in experiment directories (tests/fixtures, made by a real tiny
sweep; see fixtures/make_experiment.py): which trials, their statuses, the epoch each is judged
by, and the histories, read from the files alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import copy_fixture

from visiontune.analysis.results import load_experiment
from visiontune.best import Objective
from visiontune.errors import InputError


@pytest.fixture
def experiment_dir(tmp_path: Path) -> Path:
    return copy_fixture("experiment", tmp_path)


def _ledger(exp: Path) -> dict[str, dict]:
    return json.loads((exp / "trial_status.json").read_text())


def _write_ledger(exp: Path, ledger: dict[str, dict]) -> None:
    (exp / "trial_status.json").write_text(json.dumps(ledger))


def _result_rows(exp: Path, trial_id: str) -> list[dict]:
    lines = (exp / f"trial_{trial_id}" / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _test_rows(exp: Path) -> dict[str, dict]:
    return {row["role"]: row for row in json.loads((exp / "test_results.json").read_text())}


def test_every_trial_directory_is_one_row_with_its_ledger_status(experiment_dir):
    trials = load_experiment(experiment_dir).trials
    ledger = _ledger(experiment_dir)
    on_disk = {p.name.removeprefix("trial_") for p in experiment_dir.glob("trial_*/")}
    assert sorted(trials["trial_id"]) == sorted(on_disk) == sorted(ledger)
    statuses = dict(zip(trials["trial_id"], trials["status"], strict=True))
    assert statuses == {trial_id: entry["status"] for trial_id, entry in ledger.items()}
    assert {"TERMINATED", "STOPPED"} <= set(statuses.values())


def test_epochs_are_the_reported_epochs_and_stopped_trials_have_fewer(experiment_dir):
    experiment = load_experiment(experiment_dir)
    for row in experiment.trials.itertuples():
        assert row.epochs == len(_result_rows(experiment_dir, row.trial_id))
        full = row.epochs == experiment.spec.epochs
        assert full == (row.status == "TERMINATED"), row


def test_seed_rows_are_the_trials_tested_as_seeds(experiment_dir):
    experiment = load_experiment(experiment_dir)
    seeds = {row.seed: row.trial_id for row in experiment.trials.itertuples() if row.seed}
    tested = {role: row["trial_id"] for role, row in _test_rows(experiment_dir).items()}
    tested.pop("tuned best")
    assert seeds == tested
    assert set(seeds) == set(experiment.spec.seeds)


def test_best_epoch_is_the_objectives_the_later_one_on_ties(experiment_dir):
    experiment = load_experiment(experiment_dir)
    spec = experiment.spec
    objective = Objective(spec.metric, spec.mode)
    tied = 0
    for row in experiment.trials.itertuples():
        results = _result_rows(experiment_dir, row.trial_id)
        best = objective.best_epoch(results)
        assert row.best_epoch == best["training_iteration"], row.trial_id
        assert getattr(row, spec.metric) == best[spec.metric]
        values = [r[spec.metric] for r in results]
        if values.count(best[spec.metric]) > 1:
            tied += 1
            last = max(i for i, v in enumerate(values, 1) if v == best[spec.metric])
            assert row.best_epoch == last, row.trial_id
    assert tied, "the fixture should hold a trial whose best score repeats (the tie rule)"


def test_the_tested_checkpoint_is_the_best_epoch_of_its_trial(experiment_dir):
    trials = load_experiment(experiment_dir).trials.set_index("trial_id")
    for role, row in _test_rows(experiment_dir).items():
        assert trials.loc[row["trial_id"], "best_epoch"] == row["epoch"], role


def test_trials_are_ranked_by_the_objective_ties_by_trial_id(experiment_dir):
    experiment = load_experiment(experiment_dir)
    objective = Objective(experiment.spec.metric, experiment.spec.mode)
    ids = list(experiment.trials["trial_id"])
    values = dict(zip(ids, experiment.trials[experiment.spec.metric], strict=True))
    assert ids == sorted(ids, key=lambda t: objective.rank_key(values[t], t))


def test_history_holds_every_reported_epoch_of_every_trial(experiment_dir):
    experiment = load_experiment(experiment_dir)
    history = experiment.history
    for trial_id in experiment.trials["trial_id"]:
        rows = _result_rows(experiment_dir, trial_id)
        mine = history[history["trial_id"] == trial_id].sort_values("training_iteration")
        assert list(mine["training_iteration"]) == [r["training_iteration"] for r in rows]
        assert list(mine["val_loss"]) == [r["val_loss"] for r in rows]


def test_params_become_config_columns(experiment_dir):
    trials = load_experiment(experiment_dir).trials.set_index("trial_id")
    for trial_id in trials.index:
        params = json.loads((experiment_dir / f"trial_{trial_id}" / "params.json").read_text())
        assert {k: trials.loc[trial_id, f"config/{k}"] for k in params} == params


def test_a_result_line_cut_short_by_a_crash_is_skipped(experiment_dir):
    trial_id = load_experiment(experiment_dir).trials["trial_id"].iloc[0]
    path = experiment_dir / f"trial_{trial_id}" / "result.json"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:-1], lines[-1][: len(lines[-1]) // 2]]))
    experiment = load_experiment(experiment_dir)
    row = experiment.trials.set_index("trial_id").loc[trial_id]
    assert row["epochs"] == len(lines) - 1
    assert (experiment.history["trial_id"] == trial_id).sum() == len(lines) - 1


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("[1, 2]", "expected a JSON object, got [1, 2]"),
        ('"done"', "expected a JSON object, got 'done'"),
        ('{"val_acc": 0.5}', "training_iteration: expected an epoch number >= 1, got None"),
        ('{"training_iteration": "3"}', "training_iteration: expected an epoch number >= 1"),
        ('{"training_iteration": 2, "trial_id": 7}', "trial_id: expected a string, got 7"),
    ],
)
def test_a_complete_result_line_of_another_shape_is_named_with_its_line(experiment_dir, line, says):
    path = sorted(experiment_dir.glob("trial_*/result.json"))[0]
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0], line, *rows[1:]]) + "\n")
    with pytest.raises(InputError) as info:
        load_experiment(experiment_dir)
    assert str(info.value).startswith(f"{path}: line 2: {says}")


def test_a_trial_the_ledger_calls_lost_is_not_part_of_the_sweep(experiment_dir):
    ledger = _ledger(experiment_dir)
    lost = sorted(ledger)[0]
    ledger[lost]["status"] = "LOST"
    _write_ledger(experiment_dir, ledger)
    assert lost not in set(load_experiment(experiment_dir).trials["trial_id"])


def test_a_trial_still_running_in_the_ledger_is_judged_by_its_epochs(experiment_dir):
    ledger = _ledger(experiment_dir)
    stopped = next(t for t, e in ledger.items() if e["status"] == "STOPPED")
    finished = next(t for t, e in ledger.items() if e["status"] == "TERMINATED")
    for trial_id in (stopped, finished):
        ledger[trial_id]["status"] = "RUNNING"
    _write_ledger(experiment_dir, ledger)
    statuses = load_experiment(experiment_dir).trials.set_index("trial_id")["status"]
    assert statuses[stopped] == "INCOMPLETE" and statuses[finished] == "TERMINATED"


def test_retries_count_the_ledgers_recoveries(experiment_dir):
    ledger = _ledger(experiment_dir)
    trial_id = sorted(ledger)[0]
    ledger[trial_id]["recoveries"] = [
        {"failed_after": 2, "checkpoint_epoch": 1, "resumed_at": 2},
        {"failed_after": 3, "checkpoint_epoch": 2, "resumed_at": 3},
    ]
    _write_ledger(experiment_dir, ledger)
    retries = load_experiment(experiment_dir).trials.set_index("trial_id")["retries"]
    assert retries[trial_id] == 2 and retries.drop(trial_id).eq(0).all()


def test_an_errored_trial_keeps_its_error_and_has_no_best_epoch(tmp_path):
    exp = copy_fixture("diverging", tmp_path)
    ledger = _ledger(exp)
    errored = next(t for t, e in ledger.items() if e["status"] == "ERROR")
    row = load_experiment(exp).trials.set_index("trial_id").loc[errored]
    assert row["status"] == "ERROR" and row["error"] == ledger[errored]["error"]
    assert "FloatingPointError" in row["error"]
    assert row["epochs"] == 0 and row.isna()["best_epoch"]


def test_a_trial_errored_before_it_started_is_a_row_with_its_error(experiment_dir):
    """Ray leaves only error.txt in the directory of a trial whose reused actor failed to reset;
    the reconciled ledger names it (visiontune.sweep.ledger)."""
    reason = "Trainable runner reuse requires reset_config() to be implemented and return True."
    (experiment_dir / "trial_0rphan01").mkdir()
    (experiment_dir / "trial_0rphan01" / "error.txt").write_text(reason)
    (experiment_dir / "trial_stray").mkdir()  # not in the ledger, no params.json: no trial
    ledger = _ledger(experiment_dir)
    ledger["0rphan01"] = {"dir": "trial_0rphan01", "status": "ERROR", "error": reason, "epochs": 0}
    _write_ledger(experiment_dir, ledger)
    trials = load_experiment(experiment_dir).trials.set_index("trial_id")
    assert len(trials) == len(ledger)
    row = trials.loc["0rphan01"]
    assert (row["status"], row["error"], row["epochs"]) == ("ERROR", reason, 0)


def test_the_experiment_carries_spec_dataset_summary_and_test_rows(experiment_dir):
    experiment = load_experiment(experiment_dir)
    dataset = json.loads((experiment_dir / "dataset.json").read_text())
    assert experiment.names == dataset["classes"]
    assert experiment.summary == json.loads((experiment_dir / "sweep.json").read_text())
    assert experiment.test == json.loads((experiment_dir / "test_results.json").read_text())
    assert experiment.spec.metric in experiment.metrics and "epoch" not in experiment.metrics


def test_a_directory_without_a_spec_is_no_experiment(tmp_path):
    with pytest.raises(InputError, match="not a visiontune experiment directory"):
        load_experiment(tmp_path)


def test_an_experiment_without_trial_directories_is_refused(experiment_dir):
    for trial in experiment_dir.glob("trial_*/"):
        (trial / "params.json").unlink()
    with pytest.raises(InputError, match="no trials found"):
        load_experiment(experiment_dir)


def test_the_devices_a_trial_reported_become_its_device_column(experiment_dir):
    trial_ids = sorted(_ledger(experiment_dir))
    moved = next(t for t in trial_ids if len(_result_rows(experiment_dir, t)) >= 2)
    on_gpu = next(t for t in trial_ids if t != moved)
    for trial_id, devices in ((moved, ["Tesla T4", "NVIDIA L4"]), (on_gpu, ["Tesla T4"])):
        rows = _result_rows(experiment_dir, trial_id)
        for index, row in enumerate(rows):  # a retry on another node: the later rows
            row["device"] = devices[min(index, len(devices) - 1)]
        path = experiment_dir / f"trial_{trial_id}" / "result.json"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    trials = load_experiment(experiment_dir).trials.set_index("trial_id")
    assert trials.loc[on_gpu, "device"] == "Tesla T4"
    assert trials.loc[moved, "device"] == "Tesla T4, NVIDIA L4"
    assert trials.drop([moved, on_gpu])["device"].isna().all()  # reported nothing: a sweep before


def test_a_sweep_whose_trials_report_no_device_has_no_device_column(experiment_dir):
    assert "device" not in load_experiment(experiment_dir).trials
