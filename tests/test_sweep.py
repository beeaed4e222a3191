"""A real sweep on a real local Ray (loopback), run through the console script as a user would.

Checked from the files alone: the Optuna study (seed points first), the status ledger, the test
results, the report, and the TensorBoard event files read back with TensorBoard's own reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from support import (
    CLASSIFIER_SPACE,
    REPO,
    SWEEP_EPOCHS,
    SWEEP_SAMPLES,
    check_study_against_trials,
    visiontune,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

pytestmark = pytest.mark.ray  # every test here starts a local Ray through the console script

NUM_SAMPLES, EPOCHS = SWEEP_SAMPLES, SWEEP_EPOCHS  # the shared `sweep` fixture (conftest.py)


def _accumulator(path: Path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _plugin_content(acc: EventAccumulator, tag: str) -> bytes:
    return acc.SummaryMetadata(tag).plugin_data.content


def test_sweep_prints_the_seed_table_with_all_three_rows(sweep):
    out = sweep["stdout"]
    assert f"Experiment: {sweep['dir']}" in out
    table = out[out.index("| ") :]
    rows = {
        cells[0]: cells[1:]
        for line in table.splitlines()
        if line.startswith("|")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    for role in ("seed baseline", "seed custom", "tuned best"):
        assert len(rows[role]) == 6 and "—" not in rows[role], rows[role]


def test_seed_points_are_the_first_trials_of_the_optuna_study(sweep):
    spec = yaml.safe_load((sweep["dir"] / "spec.yaml").read_text())
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{sweep['dir'] / 'optuna.db'}")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == NUM_SAMPLES
    seeds = list(spec["points_to_evaluate"].values())
    assert [t.params for t in trials[:2]] == [
        {k: v for k, v in seed.items() if k != "width"} for seed in seeds
    ]
    states = {t.state for t in trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}


def test_early_stopped_trials_are_pruned_in_optuna_and_seeds_run_their_full_budget(sweep):
    status = json.loads((sweep["dir"] / "trial_status.json").read_text())
    trials = pd.read_csv(sweep["dir"] / "report" / "trials.csv")
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{sweep['dir'] / 'optuna.db'}")
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    stopped = [tid for tid, entry in status.items() if entry["status"] == "STOPPED"]
    assert pruned == len(stopped)
    for row in trials.itertuples():
        entry = status[row.trial_id]
        assert entry["status"] in ("TERMINATED", "STOPPED")
        assert (entry["status"] == "TERMINATED") == (row.epochs == EPOCHS)
        if isinstance(row.seed, str) and row.seed:
            assert entry["status"] == "TERMINATED"


def test_the_study_holds_every_epoch_each_trial_trained_and_the_value_trials_csv_has(sweep):
    """Every epoch reaches Optuna, also the one ASHA stopped a trial on and a finished trial's
    last (Ray's controller gives the searcher neither); STOPPED is PRUNED with the stopping
    epoch's value, TERMINATED is COMPLETE with its best epoch's value, as in trials.csv."""
    check_study_against_trials(sweep["dir"], EPOCHS)


def test_tuned_best_is_tested_and_at_least_as_good_as_the_seeds_on_validation(sweep):
    rows = {r["role"]: r for r in json.loads((sweep["dir"] / "test_results.json").read_text())}
    assert set(rows) == {"seed baseline", "seed custom", "tuned best"}
    for row in rows.values():
        assert 0.0 <= row["test_acc"] <= 1.0 and row["test_loss"] > 0
        assert 1 <= row["epoch"] <= EPOCHS
    best = rows["tuned best"]["val_acc"]
    assert best >= rows["seed baseline"]["val_acc"] and best >= rows["seed custom"]["val_acc"]
    trials = pd.read_csv(sweep["dir"] / "report" / "trials.csv")
    assert best == pytest.approx(trials["val_acc"].max())


def test_tensorboard_has_live_scalars_for_every_epoch_of_every_trial(sweep):
    trials = pd.read_csv(sweep["dir"] / "report" / "trials.csv")
    for row in trials.itertuples():
        acc = _accumulator(sweep["dir"] / row.dir)
        for tag in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            steps = [event.step for event in acc.Scalars(tag)]
            assert steps == list(range(1, row.epochs + 1)), (row.trial_id, tag, steps)


def test_tensorboard_hparams_list_every_trial_with_its_config_and_status(sweep):
    root = _accumulator(sweep["dir"])
    experiment = metadata.parse_experiment_plugin_data(
        _plugin_content(root, metadata.EXPERIMENT_TAG)
    )
    spec = yaml.safe_load((sweep["dir"] / "spec.yaml").read_text())
    names = {info.name for info in experiment.hparam_infos}
    assert set(spec["search"]) <= names and {"epochs", "batch_size"} <= names
    assert {m.name.tag for m in experiment.metric_infos} >= {"val_acc", "val_loss", "train_acc"}
    trials = pd.read_csv(sweep["dir"] / "report" / "trials.csv")
    for _, row in trials.iterrows():
        acc = _accumulator(sweep["dir"] / row["dir"])
        start = metadata.parse_session_start_info_plugin_data(
            _plugin_content(acc, metadata.SESSION_START_INFO_TAG)
        )
        assert start.hparams["lr"].number_value == pytest.approx(row["config/lr"])
        assert start.hparams["arch"].string_value == row["config/arch"]
        assert start.hparams["epochs"].number_value == EPOCHS
        end = metadata.parse_session_end_info_plugin_data(
            _plugin_content(acc, metadata.SESSION_END_INFO_TAG)
        )
        assert end.status == api_pb2.STATUS_SUCCESS


def test_report_works_offline_and_writes_its_three_files(sweep, tmp_path):
    proc = visiontune("report", sweep["dir"], "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| seed baseline " in report and "## Top 10 trials by val_acc (max)" in report
    assert f"- trials: {NUM_SAMPLES} (of num_samples {NUM_SAMPLES})" in report
    assert len(pd.read_csv(tmp_path / "r" / "trials.csv")) == NUM_SAMPLES
    best = yaml.safe_load((tmp_path / "r" / "best_config.yaml").read_text())
    assert best["epochs"] == EPOCHS and best["width"] == 8 and "lr" in best


def test_best_config_reproduces_with_visiontune_train(sweep, tmp_path):
    config = sweep["dir"] / "report" / "best_config.yaml"
    proc = visiontune(
        "train", CLASSIFIER_SPACE, "--config", config, "--data", sweep["data"],
        "--max-epochs", 1, "--out", tmp_path / "one",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "val_acc" in proc.stdout.splitlines()[0]
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and 0 <= metrics["test_acc"] <= 1


def test_a_diverging_trial_errors_once_with_its_reason_and_the_sweep_goes_on(
    tiny_imagefolder, tmp_path
):
    """diverging.yaml allows 3 retries (`max_failures: 3`), which are for lost workers and
    nodes: a NaN loss is final, so the diverging trial runs once and is an ERROR everywhere."""
    proc = visiontune(
        "tune", REPO / "tests" / "fixtures" / "diverging.yaml", "--data", tiny_imagefolder,
        "--storage", tmp_path, "--name", "nan",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / "nan"
    assert yaml.safe_load((exp / "spec.yaml").read_text())["max_failures"] == 3
    status = json.loads((exp / "trial_status.json").read_text())
    by_state = {entry["status"]: entry for entry in status.values()}
    assert set(by_state) == {"TERMINATED", "ERROR"}
    errored = by_state["ERROR"]
    assert errored["error"].startswith("FloatingPointError: ") and "nan" in errored["error"]
    assert "recoveries" not in errored and errored.get("epochs", 0) == 0
    # run once: one report (the divergence, in its first epoch), no traceback for a retry
    rows = [json.loads(line) for line in (exp / errored["dir"] / "result.json").open()]
    assert [row["training_iteration"] for row in rows] == [1]
    assert rows[0]["diverged"] == errored["error"]
    assert not (exp / errored["dir"] / "error.txt").exists()
    report = (exp / "report" / "report.md").read_text()
    assert "errored: 1;" in report and "loss became nan (diverged" in report
    assert "retried" not in report
    trials = pd.read_csv(exp / "report" / "trials.csv").set_index("dir")
    assert trials.loc[errored["dir"], "status"] == "ERROR"
    assert trials.loc[errored["dir"], "error"] == errored["error"]
    assert trials.loc[errored["dir"], "retries"] == 0
    study = optuna.load_study(study_name="nan", storage=f"sqlite:///{exp / 'optuna.db'}")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.user_attrs["error"] for t in failed] == [errored["error"]]
    assert failed[0].intermediate_values == {}
    roles = [r["role"] for r in json.loads((exp / "test_results.json").read_text())]
    assert roles == ["sane", "tuned best"]
    tensorboard = _accumulator(exp / errored["dir"])
    end = metadata.parse_session_end_info_plugin_data(
        _plugin_content(tensorboard, metadata.SESSION_END_INFO_TAG)
    )
    assert end.status == api_pb2.STATUS_FAILURE
    assert "val_acc" not in tensorboard.Tags()["scalars"]  # its NaNs were never measured


CHOICES = {  # every searcher and scheduler type of the spec in as few sweeps as cover them all
    "bohb+hyperband": (
        {"type": "bohb", "seed": 0},
        {"type": "hyperband", "reduction_factor": 3},
        7,
    ),
    "qmc+hyperband": ({"type": "qmc", "seed": 0}, {"type": "hyperband", "reduction_factor": 3}, 7),
    "gp+median": (
        {"type": "gp", "seed": 0, "n_startup_trials": 2},
        {"type": "median", "grace_period": 1, "min_samples_required": 1},
        5,
    ),
    "random+fifo": ({"type": "random", "seed": 0}, {"type": "fifo"}, 4),
}  # optuna_tpe + asha: the module's `sweep`. HyperBand at 3 epochs, factor 3: the 2 seed trials
# outside its brackets, a bracket of 2 trials (3 epochs) and one of 3 (halved after epoch 1)


@pytest.mark.parametrize("choice", list(CHOICES))
def test_a_small_sweep_completes_with_each_searcher_and_scheduler_type(
    choice, tiny_imagefolder, tmp_path
):
    searcher, scheduler, num_samples = CHOICES[choice]
    raw = yaml.safe_load(CLASSIFIER_SPACE.read_text())
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**raw, "searcher": searcher, "scheduler": scheduler}))
    proc = visiontune(
        "tune", space, "--num-samples", num_samples, "--max-epochs", EPOCHS, "--set", "width=4",
        "--set", "batch_size=16", "--data", tiny_imagefolder, "--storage", tmp_path,
        "--name", "choice",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / "choice"
    saved = yaml.safe_load((exp / "spec.yaml").read_text())
    assert (saved["searcher"], saved["scheduler"]) == (searcher, scheduler)
    trials = pd.read_csv(exp / "report" / "trials.csv")
    assert len(trials) == num_samples
    check_study_against_trials(exp, EPOCHS)
