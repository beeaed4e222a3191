"""The sweep's schedulers (visiontune/sweep/schedulers.py) driven without a Ray cluster: a small
stand-in for Ray's controller gives them results and carries out their decisions as Ray's does,
and the Optuna study is read back from SQLite afterwards."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler, TrialScheduler
from support import CLASSIFIER_SPACE

from visiontune.spec import SweepSpec, load_spec
from visiontune.sweep.schedulers import build_scheduler
from visiontune.sweep.searcher import TRIAL_ID_ATTR, StudySearcher
from visiontune.sweep.tuner import build_searcher
from visiontune.trainables.contract import divergence_result

SCHEDULERS = {
    "asha": {"type": "asha", "grace_period": 1, "reduction_factor": 3},
    "hyperband": {"type": "hyperband", "reduction_factor": 3},
    "median": {"type": "median", "grace_period": 1, "min_samples_required": 2},
    "fifo": {"type": "fifo"},
}


def _spec(
    tmp_path: Path, scheduler: dict, epochs: int, num_samples: int, searcher: dict | None = None
) -> SweepSpec:
    """A copy of search_spaces/classifier.yaml with `scheduler` (and `searcher`), this budget."""
    raw = yaml.safe_load(CLASSIFIER_SPACE.read_text())
    raw["scheduler"] = scheduler
    raw["searcher"] = searcher or raw["searcher"]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path, {"max_epochs": epochs, "num_samples": num_samples})


def _study(tmp_path: Path) -> dict[str, optuna.trial.FrozenTrial]:
    """The study's trials by Tune trial id (seed points not asked for yet have none)."""
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    return {t.user_attrs[TRIAL_ID_ATTR]: t for t in study.trials if t.user_attrs}


@dataclass(eq=False)  # Ray keys schedulers' state by trial object
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    quality: float  # its val_acc at the last epoch
    status: str = Trial.PENDING
    is_saving: bool = False
    epoch: int = 0  # epochs trained (a paused trial resumes from its checkpoint, here)
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None


class FakeController:
    """Ray's TuneController as a scheduler sees it (ray 2.60.0, tune_controller.py): it asks the
    searcher for a new trial whenever none is PENDING (a custom searcher without a limit on
    concurrent trials), until `num_samples`; trials train one epoch per step on `slots` slots;
    each result goes to the scheduler, then to the searcher unless the decision is STOP; STOP,
    and the end of a trial's epochs, go through `stop_trial`; a PAUSED trial gives up its slot
    until the scheduler chooses it again, and PENDING trials start even when it chooses none.
    A trial's val_acc grows to its quality: 0.1 for the seed points (so an early-stopping
    scheduler would stop them), up to 0.9 for lr = 1e-3."""

    def __init__(self, scheduler: Any, searcher: StudySearcher, spec: SweepSpec,
                 num_samples: int = 0, slots: int = 2) -> None:  # fmt: skip
        self.scheduler, self.searcher, self.spec = scheduler, searcher, spec
        self.num_samples, self.slots = num_samples, slots
        self.search_alg = SimpleNamespace(searcher=searcher)  # HyperBandForBOHB tells it pauses
        self.trials: list[FakeTrial] = []
        self.paused: dict[str, list[int]] = {}  # trial id -> epochs it was paused at
        self.resumed: set[str] = set()
        self.budgets: list[tuple[str, float, str]] = []  # results judged at a BOHB budget

    def add(self, trial: FakeTrial) -> None:
        self.trials.append(trial)
        self.scheduler.on_trial_add(self, trial)

    def get_trials(self) -> list[FakeTrial]:
        return list(self.trials)

    def get_live_trials(self) -> set[FakeTrial]:
        return {t for t in self.trials if t.status not in (Trial.TERMINATED, Trial.ERROR)}

    def stop_trial(self, trial: FakeTrial) -> None:
        if trial.status in (Trial.TERMINATED, Trial.ERROR):
            return
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
            self.searcher.on_trial_complete(trial.trial_id)
        else:
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
            self.searcher.on_trial_complete(trial.trial_id, result=trial.last_result)
        trial.status = Trial.TERMINATED

    def run(self) -> None:
        for _ in range(10_000):
            self._ask_searcher()
            running = [t for t in self.trials if t.status == Trial.RUNNING]
            while len(running) < self.slots:
                chosen = self.scheduler.choose_trial_to_run(self)
                pending = [t for t in self.trials if t.status == Trial.PENDING]
                trial = chosen or (pending[0] if pending else None)
                if trial is None:
                    break
                if trial.status == Trial.PAUSED:
                    self.resumed.add(trial.trial_id)
                trial.status = Trial.RUNNING
                running.append(trial)
                self._ask_searcher()
            if not running:
                break
            for trial in running:
                if trial.status == Trial.RUNNING:  # not stopped by another trial's result
                    self._train_one_epoch(trial)
        assert len(self.trials) == self.num_samples
        assert all(t.status == Trial.TERMINATED for t in self.trials)

    def _ask_searcher(self) -> None:
        if len(self.trials) == self.num_samples:
            return
        if any(t.status == Trial.PENDING for t in self.trials):
            return
        trial_id = f"t{len(self.trials)}"
        config = {**self.spec.fixed, **self.searcher.suggest(trial_id)}
        seed = self.spec.seed_name(config) is not None
        quality = 0.1 if seed else 0.9 - 0.25 * abs(math.log10(config["lr"]) + 3)
        self.add(FakeTrial(trial_id, config, quality))

    def _train_one_epoch(self, trial: FakeTrial) -> None:
        trial.epoch += 1
        assert trial.epoch <= self.spec.epochs, trial
        score = trial.quality * (0.5 + 0.5 * trial.epoch / self.spec.epochs)
        result = {"epoch": trial.epoch, "training_iteration": trial.epoch, "val_acc": score}
        decision = self.scheduler.on_trial_result(self, trial, result)
        if "budget" in result.get("hyperband_info", {}):
            self.budgets.append((trial.trial_id, result["val_acc"], decision))
        if decision != TrialScheduler.STOP:
            self.searcher.on_trial_result(trial.trial_id, result)
        trial.last_result = result
        if decision == TrialScheduler.PAUSE:
            trial.status = Trial.PAUSED
            self.paused.setdefault(trial.trial_id, []).append(trial.epoch)
        elif decision == TrialScheduler.STOP or trial.epoch == self.spec.epochs:
            self.stop_trial(trial)  # a finished trial's function returns: Ray stops it


def _sweep(
    tmp_path: Path, scheduler: dict, epochs: int, num_samples: int, searcher: dict | None = None
) -> tuple[SweepSpec, FakeController]:
    """A whole sweep of `num_samples` trials under `scheduler` (and `searcher`)."""
    spec = _spec(tmp_path, scheduler, epochs, num_samples, searcher)
    study_searcher = build_searcher(spec, tmp_path / "optuna.db", "s")
    scheduler = build_scheduler(spec, study_searcher)
    controller = FakeController(scheduler, study_searcher, spec, num_samples)
    controller.run()
    return spec, controller


@pytest.mark.parametrize("kind", list(SCHEDULERS))
def test_the_study_gets_every_epoch_and_seeds_train_their_full_budget(tmp_path, kind):
    spec, controller = _sweep(tmp_path, SCHEDULERS[kind], epochs=4, num_samples=12)
    study = _study(tmp_path)
    for trial in controller.trials:
        frozen = study[trial.trial_id]
        assert sorted(frozen.intermediate_values) == list(range(1, trial.epoch + 1)), trial
        full = trial.epoch == spec.epochs
        assert frozen.state == (TrialState.COMPLETE if full else TrialState.PRUNED), trial
        if spec.seed_name(trial.config) is not None:
            assert full, trial
    if kind != "fifo":
        assert any(t.epoch < spec.epochs for t in controller.trials)  # something was stopped


def test_hyperband_pauses_at_a_rung_resumes_the_best_and_stops_the_rest(tmp_path):
    """A trial that reaches a rung before its bracket does waits PAUSED (its slot freed, still
    RUNNING in the study); the bracket's best resume from their checkpoint, the others are
    stopped while paused, through the controller, and are PRUNED at the rung's epoch."""
    spec, controller = _sweep(tmp_path, SCHEDULERS["hyperband"], epochs=9, num_samples=19)
    study = _study(tmp_path)
    resumed = controller.resumed & set(controller.paused)
    assert resumed
    for trial_id in resumed:
        trial = next(t for t in controller.trials if t.trial_id == trial_id)
        assert trial.epoch > controller.paused[trial_id][0]
    stopped_while_paused = [
        t for t in controller.trials if t.trial_id in controller.paused
        and t.trial_id not in controller.resumed and t.epoch < spec.epochs
    ]  # fmt: skip
    assert stopped_while_paused
    for trial in stopped_while_paused:
        assert study[trial.trial_id].state == TrialState.PRUNED
        assert max(study[trial.trial_id].intermediate_values) == trial.epoch
    seeds = [t for t in controller.trials if spec.seed_name(t.config) is not None]
    assert len(seeds) == 2 and not {t.trial_id for t in seeds} & set(controller.paused)


@pytest.mark.parametrize(("epochs", "factor"), [(8, 3), (5, 4)])  # not powers of the factor
def test_every_hyperband_bracket_ends_at_the_epoch_budget(tmp_path, epochs, factor):
    """A trial HyperBand stops early is stopped at one of its bracket's rungs below max_t;
    every other trial trains every epoch (no bracket ends between its last rung and max_t)."""
    scheduler = {"type": "hyperband", "reduction_factor": factor}
    spec, controller = _sweep(tmp_path, scheduler, epochs, num_samples=30)
    hyperband = controller.scheduler
    brackets = round(math.log(epochs) / math.log(factor)) + 1
    rungs = {hyperband.first_rung(s) * factor**i for s in range(brackets) for i in range(s)}
    assert {t.epoch for t in controller.trials if t.epoch < epochs} <= rungs
    assert sum(t.epoch == epochs for t in controller.trials) > brackets  # seeds + a winner each


def test_rays_own_hyperband_ends_a_bracket_short_of_max_t():
    """Why SeedProtectingHyperBand rounds the first rung up: Ray rounds it down, and its
    8-epoch, factor-3 bracket with one halving stops its survivors at epoch 2 * 3 = 6. If this
    fails, Ray changed its rounding; re-check SeedProtectingHyperBand.first_rung."""
    hyperband = HyperBandScheduler(metric="val_acc", mode="max", max_t=8, reduction_factor=3)
    assert hyperband._get_r0(1) * 3 == 6


def test_hyperband_keeps_seed_trials_out_of_its_brackets(tmp_path):
    spec = _spec(tmp_path, SCHEDULERS["hyperband"], epochs=3, num_samples=4)
    searcher = build_searcher(spec, tmp_path / "optuna.db", "s")
    scheduler = build_scheduler(spec, searcher)
    seed, second_seed, other = (
        FakeTrial(name, {**spec.fixed, **searcher.suggest(name)}, 0.5)
        for name in ("seed", "second seed", "other")
    )
    controller = FakeController(scheduler, searcher, spec)
    controller.add(other)
    controller.add(seed)
    assert scheduler.seed_trials == [seed]
    assert scheduler.choose_trial_to_run(controller) is seed  # the seeds first
    seed.status = Trial.RUNNING
    assert scheduler.choose_trial_to_run(controller) is other
    for epoch in (1, 2, 3):
        result = {"epoch": epoch, "training_iteration": epoch, "val_acc": 0.0}
        assert scheduler.on_trial_result(controller, seed, result) == TrialScheduler.CONTINUE
    assert _study(tmp_path)["seed"].intermediate_values == {1: 0.0, 2: 0.0, 3: 0.0}
    scheduler.on_trial_complete(controller, seed, result)  # leaves no bracket behind
    assert scheduler.seed_trials == []


def test_median_never_pauses_a_trial_and_never_stops_a_seed(tmp_path):
    spec = _spec(tmp_path, SCHEDULERS["median"], epochs=4, num_samples=4)
    searcher = build_searcher(spec, tmp_path / "optuna.db", "s")
    scheduler = build_scheduler(spec, searcher)
    seed = FakeTrial("seed", {**spec.fixed, **searcher.suggest("seed")}, 0.1)
    good = [FakeTrial(f"g{i}", {**spec.fixed, **searcher.suggest(f"g{i}")}, 0.9) for i in (1, 2)]
    waiting = FakeTrial("waiting", {**spec.fixed, **searcher.suggest("waiting")}, 0.9)
    controller = FakeController(scheduler, searcher, spec)
    for trial in (*good, seed, waiting):
        controller.add(trial)
    decisions = []
    for epoch in (1, 2, 3, 4):
        for trial, acc in ((good[0], 0.9), (good[1], 0.8), (seed, 0.1)):
            result = {"epoch": epoch, "training_iteration": epoch, "val_acc": acc}
            decisions.append(scheduler.on_trial_result(controller, trial, result))
    # Ray's rule would pause the first trials (too few samples, one trial waiting) and stop
    # the seed at epoch 1 (then assert when it reported again).
    assert decisions == [TrialScheduler.CONTINUE] * 12
    other = FakeTrial("bad", {**spec.fixed, "lr": 0.5}, 0.1)
    result = {"epoch": 2, "training_iteration": 2, "val_acc": 0.1}
    assert scheduler.on_trial_result(controller, other, result) == TrialScheduler.STOP


def test_asha_never_stops_a_seed_configuration(tmp_path):
    spec = _spec(tmp_path, SCHEDULERS["asha"], epochs=3, num_samples=4)
    searcher = build_searcher(spec, tmp_path / "optuna.db", "s")
    scheduler = build_scheduler(spec, searcher)
    seed = FakeTrial("seed", {**spec.fixed, **searcher.suggest("seed")}, 0.1)
    other = FakeTrial("other", {**spec.fixed, "lr": 0.5}, 0.1)
    assert spec.seed_name(seed.config) == "seed baseline"
    last = {"epoch": 3, "training_iteration": 3, "val_acc": 0.5}  # ASHA stops all at max_t
    assert scheduler.on_trial_result(None, seed, last) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, other, last) == TrialScheduler.STOP


@pytest.mark.parametrize("kind", list(SCHEDULERS))
def test_a_failed_trials_reason_comes_from_the_traceback_ray_wrote(tmp_path, kind):
    spec = _spec(tmp_path, SCHEDULERS[kind], epochs=3, num_samples=4)
    searcher = build_searcher(spec, tmp_path / "optuna.db", "s")
    scheduler = build_scheduler(spec, searcher)
    trial = FakeTrial("t", {**spec.fixed, **searcher.suggest("t")}, 0.5)
    scheduler.on_trial_add(None, trial)
    error_file = tmp_path / "error.txt"
    error_file.write_text("Traceback (most recent call last):\n  ...\nValueError: boom\n\n")
    trial.error_file = str(error_file)
    scheduler.on_trial_error(None, trial)
    searcher.on_trial_complete("t", error=True)
    assert _study(tmp_path)["t"].user_attrs["error"] == "ValueError: boom"


BOHB = {"type": "bohb", "seed": 0}


def test_bohb_is_given_every_result_hyperband_judges_also_the_ones_it_stops_on(tmp_path):
    spec, controller = _sweep(tmp_path, SCHEDULERS["hyperband"], 9, num_samples=20, searcher=BOHB)
    study = _study(tmp_path)
    for trial in controller.trials:
        frozen = study[trial.trial_id]
        assert sorted(frozen.intermediate_values) == list(range(1, trial.epoch + 1)), trial
        full = trial.epoch == spec.epochs
        assert frozen.state == (TrialState.COMPLETE if full else TrialState.PRUNED), trial
    seeds = [t for t in controller.trials if spec.seed_name(t.config) is not None]
    assert len(seeds) == 2 and all(t.epoch == spec.epochs for t in seeds)
    assert any(d == TrialScheduler.STOP for _, _, d in controller.budgets)  # Ray's gap
    bohb = controller.searcher._proposer._bohb.bohber  # hpbandster's BOHB (its own record)
    told = sorted(-loss for losses in bohb.losses.values() for loss in losses)
    assert told == sorted(score for _, score, _ in controller.budgets)


@pytest.mark.parametrize("kind", list(SCHEDULERS))
def test_a_diverged_trial_is_stopped_and_ends_as_an_error_its_nans_unseen(tmp_path, kind):
    """The last result of a diverged trial (trainables/tune_edge.py) reaches neither Ray's
    scheduler (no rung, bracket or median counts its NaN) nor the study as a value; the study
    FAILs it with the reason, and the other trials go on as if it had errored."""
    spec = _spec(tmp_path, SCHEDULERS[kind], epochs=3, num_samples=4)
    searcher = build_searcher(spec, tmp_path / "optuna.db", "s")
    scheduler = build_scheduler(spec, searcher)
    trials = [FakeTrial(f"t{i}", {**spec.fixed, "lr": 0.01}, 0.5) for i in range(3)]
    controller = FakeController(scheduler, searcher, spec)
    for trial in trials:
        controller.add(trial)
        searcher.suggest(trial.trial_id)
        trial.status = Trial.RUNNING
        result = {"epoch": 1, "training_iteration": 1, "val_acc": 0.5}
        scheduler.on_trial_result(controller, trial, result)
        trial.last_result = result
    diverged = trials[0]
    last = {
        **divergence_result(("val_acc", "epoch"), FloatingPointError("loss became nan")),
        "training_iteration": 2,
    }
    assert scheduler.on_trial_result(controller, diverged, last) == TrialScheduler.STOP
    diverged.last_result = last
    controller.stop_trial(diverged)
    frozen = _study(tmp_path)["t0"]
    assert frozen.state == TrialState.FAIL and frozen.intermediate_values == {1: 0.5}
    assert frozen.user_attrs["error"] == "FloatingPointError: loss became nan"
    for trial in trials[1:]:  # the others are judged on measured values only
        result = {"epoch": 2, "training_iteration": 2, "val_acc": 0.6}
        decision = scheduler.on_trial_result(controller, trial, result)
        assert decision in (TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.PAUSE)
    recorded = [
        value
        for value in _scheduler_values(scheduler)
        if isinstance(value, float) and math.isnan(value)
    ]
    assert recorded == []


def _scheduler_values(scheduler: Any) -> list[Any]:
    """Every metric value Ray's scheduler state holds (ASHA rungs, HyperBand brackets, the
    median rule's results)."""
    values: list[Any] = []
    for bracket in getattr(scheduler, "_brackets", []) or []:
        for _, recorded in getattr(bracket, "_rungs", []):
            values += list(recorded.values())
    for results in getattr(scheduler, "_results", {}).values():
        values += [r.get("val_acc") for r in results]
    for band in getattr(scheduler, "_hyperbands", []) or []:
        for bracket in band:
            if bracket is not None:
                values += [r.get("val_acc") for r in bracket._live_trials.values() if r]
    return values
