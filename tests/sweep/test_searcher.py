"""visiontune's searcher (visiontune/sweep/searcher.py) fed Ray's calls directly, without a Ray
cluster: what the Optuna study in SQLite holds afterwards, read back with `optuna.load_study` as
a user would. The schedulers' share of the telling is in test_schedulers.py."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from visiontune.best import Objective
from visiontune.layout import EXPERIMENT_DIR_ENV
from visiontune.sweep.searcher import StudySearcher
from visiontune.trainables.contract import divergence_result

EPOCHS = 3
SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "arch": CategoricalDistribution(["a", "b"])}
SEEDS = [{"lr": 1e-3, "arch": "a"}, {"lr": 1e-2, "arch": "b"}]


def _searcher(tmp_path: Path, mode: str = "max") -> StudySearcher:
    return StudySearcher(
        space=SPACE,
        objective=Objective("val_acc", mode),
        epochs=EPOCHS,
        study_file=tmp_path / "optuna.db",
        study_name="s",
        sampler=optuna.samplers.RandomSampler(seed=0),
        seeds=SEEDS,
    )


def _study(tmp_path: Path) -> dict[str, optuna.trial.FrozenTrial]:
    """The study's trials by Tune trial id, as read from the file."""
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    return {t.user_attrs["tune_trial_id"]: t for t in study.trials if t.user_attrs}


def _result(epoch: int, val_acc: float) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "val_acc": val_acc}


def test_seed_points_are_proposed_first_then_sampled_ones(tmp_path):
    searcher = _searcher(tmp_path)
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert configs[:2] == SEEDS
    assert all(set(c) == set(SPACE) and c not in SEEDS for c in configs[2:])
    trials = _study(tmp_path)
    assert [trials[f"t{i}"].number for i in range(4)] == [0, 1, 2, 3]
    assert searcher.suggest("t1") == SEEDS[1]  # asked again: the same trial, no new one
    assert len(_study(tmp_path)) == 4


def test_each_epoch_is_recorded_once_whichever_path_brings_it(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("t")
    searcher.record("t", _result(1, 0.5))  # the scheduler's copy
    searcher.on_trial_result("t", _result(1, 0.5))  # the controller's copy of the same result
    searcher.on_trial_result("t", _result(2, 0.6))
    searcher.record("t", _result(2, 0.9))  # a repeat of epoch 2 (e.g. re-trained): ignored
    searcher.record("t", {"training_iteration": 3, "val_acc": 0.7})  # no `epoch`: the iteration
    searcher.record("t", {"epoch": 4, "val_loss": 1.0})  # no metric: nothing to record
    trial = _study(tmp_path)["t"]
    assert trial.intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7}
    assert trial.state == TrialState.RUNNING  # TPE's constant liar sees it


def test_a_trial_stopped_early_is_pruned_with_the_epoch_it_was_stopped_on(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("t")
    searcher.on_trial_result("t", _result(1, 0.5))
    # Ray gives the searcher no on_trial_result for the result the scheduler stopped on;
    # on_trial_complete brings it.
    searcher.on_trial_complete("t", _result(2, 0.4))
    trial = _study(tmp_path)["t"]
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.5, 2: 0.4}
    assert trial.value == 0.4  # Optuna's rule: the last intermediate value


@pytest.mark.parametrize(("mode", "best"), [("max", 0.8), ("min", 0.5)])
def test_a_finished_trial_is_complete_with_its_best_epoch(tmp_path, mode, best):
    searcher = _searcher(tmp_path, mode)
    searcher.suggest("t")
    searcher.on_trial_result("t", _result(1, 0.5))
    searcher.on_trial_result("t", _result(2, 0.8))
    searcher.on_trial_complete("t", _result(3, 0.7))
    trial = _study(tmp_path)["t"]
    assert trial.state == TrialState.COMPLETE
    assert trial.intermediate_values == {1: 0.5, 2: 0.8, 3: 0.7}
    assert trial.value == best
    searcher.on_trial_complete("t", _result(3, 0.7))  # told twice: no error, nothing changes
    searcher.record("t", _result(4, 0.9))
    assert _study(tmp_path)["t"].intermediate_values == trial.intermediate_values


def test_an_errored_trial_fails_with_its_reason(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("t")
    searcher.suggest("u")
    searcher.on_trial_result("t", _result(1, 0.5))
    searcher.note_error("t", "FloatingPointError: loss became nan")
    searcher.on_trial_complete("t", error=True)
    searcher.on_trial_complete("u", error=True)  # no reason known
    trials = _study(tmp_path)
    assert trials["t"].state == TrialState.FAIL
    assert trials["t"].user_attrs["error"] == "FloatingPointError: loss became nan"
    assert trials["u"].state == TrialState.FAIL and trials["u"].user_attrs["error"]


def test_a_diverged_trial_fails_with_its_reason_and_its_nan_is_never_recorded(tmp_path):
    """run_trial ends a diverged trial with a last result instead of an error (so that Ray
    does not retry it); Ray then completes it normally, that result in hand."""
    searcher = _searcher(tmp_path)
    searcher.suggest("t")
    searcher.on_trial_result("t", _result(1, 0.5))
    last = {
        **divergence_result(("val_acc", "epoch"), FloatingPointError("loss became nan")),
        "training_iteration": 2,
    }
    searcher.record("t", last)  # the scheduler's copy
    searcher.on_trial_complete("t", result=last)
    trial = _study(tmp_path)["t"]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["error"] == "FloatingPointError: loss became nan"
    assert trial.intermediate_values == {1: 0.5}


def test_a_trial_without_any_result_fails_instead_of_counting_as_pruned(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("t")
    searcher.on_trial_complete("t")
    trial = _study(tmp_path)["t"]
    assert trial.state == TrialState.FAIL and "val_acc" in trial.user_attrs["error"]


def test_saved_state_restores_into_the_searcher_unpickled_at_the_start(tmp_path):
    """As Tuner.restore does: the searcher as pickled when the Tuner was built, then its state
    from the last experiment checkpoint; the study comes back from SQLite."""
    searcher = _searcher(tmp_path)
    at_start = pickle.dumps(searcher)
    configs = {tid: searcher.suggest(tid) for tid in ("a", "b", "c")}
    searcher.on_trial_result("a", _result(1, 0.5))
    searcher.on_trial_complete("b", _result(1, 0.3))
    searcher.save(str(tmp_path / "searcher.pkl"))
    searcher.on_trial_result("a", _result(2, 0.6))  # recorded after the last save

    resumed = pickle.loads(at_start)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    assert {tid: resumed.suggest(tid) for tid in configs} == configs  # no new study trials
    resumed.on_trial_result("a", _result(2, 0.6))  # the epoch re-trained after the resume
    resumed.on_trial_complete("a", _result(3, 0.7))
    resumed.on_trial_complete("b", _result(1, 0.3))  # finished before: left as it was
    assert resumed.suggest("d") not in configs.values()
    trials = _study(tmp_path)
    assert trials["a"].state == TrialState.COMPLETE and trials["a"].value == 0.7
    assert trials["a"].intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7}
    assert trials["b"].state == TrialState.PRUNED
    assert trials["c"].state == TrialState.RUNNING
    assert sorted(t.number for t in trials.values()) == [0, 1, 2, 3]


def test_a_resumed_searcher_uses_the_study_of_the_drivers_experiment_dir(tmp_path, monkeypatch):
    """A sweep resumed from another place (its directory moved, or a URI experiment's mirror on
    another machine): the pickled path is stale, the driver's EXPERIMENT_DIR_ENV is the truth."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    searcher = _searcher(old)
    searcher.suggest("a")
    searcher.save(str(tmp_path / "searcher.pkl"))
    old.rename(new)  # the experiment directory moved before the resume

    resumed = pickle.loads(pickle.dumps(searcher))
    resumed.restore(str(tmp_path / "searcher.pkl"))
    monkeypatch.setenv(EXPERIMENT_DIR_ENV, str(new))
    resumed.on_trial_complete("a", _result(EPOCHS, 0.9))
    assert not old.exists()  # no new study created at the pickled path
    assert _study(new)["a"].state == TrialState.COMPLETE
