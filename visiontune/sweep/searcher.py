"""The sweep's searcher: a Ray Tune `Searcher` over Optuna's ask/tell, with the study in the
experiment directory (STORAGE/NAME/optuna.db, study name = experiment name), readable by
`optuna.load_study` and optuna-dashboard.

What the study is told, and why Ray's stock `OptunaSearch` is not used (ray 2.60.0):
* The seed configurations are enqueued first, so they are study trials 0, 1, ...
* Every epoch's metric is the trial's intermediate value at step = epoch. Ray's controller does
  not pass the searcher the result on which the scheduler stops a trial, and passes a finished
  trial's last result only to `on_trial_complete`; so besides `on_trial_result`, the sweep's
  scheduler hands over every result it sees (`record`), and `on_trial_complete` records its
  result too. Each epoch is recorded once, whichever path brings it first.
* A trial that ends before the epoch budget (stopped by the scheduler) is PRUNED, with its last
  intermediate value; a finished one is COMPLETE with the value the report ranks it by (its best
  epoch, `visiontune.best.Objective.trial_value`); an errored one FAIL, with the reason in user
  attribute `error`, and so is a diverged one (its last result carries the reason under
  `contract.DIVERGED` and its NaN metric is never recorded: trainables/tune_edge.py). Stock `OptunaSearch` tells a stopped trial COMPLETE with its partial score
  (which TPE then models as final) and a finished one its last epoch.
* Trials still running stay RUNNING, so TPE's constant liar (Optuna 5 default) sees them.
* Each study trial carries the Tune trial id (user attribute `tune_trial_id`), which maps it to
  the ledger and the trial directory.
* With a `proposer` (BOHB, visiontune.sweep.bohb), the proposer picks every configuration, seed
  points first; each is enqueued in the study and asked for there, so the study is the same.

A resumed sweep unpickles this searcher and restores its saved state (`save`/`restore`): the map
from Tune trial to study trial number and the sampler's (or the proposer's) state. The study itself lives in SQLite
and is reopened from there; the epochs already recorded are read back from it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import Searcher

from visiontune.best import Objective
from visiontune.layout import current_experiment_dir
from visiontune.sweep.compat import StoredTrial
from visiontune.trainables.contract import diverged_reason

TRIAL_ID_ATTR = "tune_trial_id"  # Optuna user attribute: the Tune trial a study trial became
ERROR_ATTR = "error"  # user attribute of a FAIL trial: why it failed
LOST_ATTR = "lost_on_resume"  # FAIL trials a resumed sweep lost: "lost" or "never started"

TrialState = optuna.trial.TrialState


def study_url(study_file: Path) -> str:
    return f"sqlite:///{study_file}"


def result_step(result: Mapping[str, Any]) -> int | None:
    """The epoch a Tune result reports (its `epoch`, else Tune's `training_iteration`)."""
    step = result.get("epoch", result.get("training_iteration"))
    return None if step is None else int(step)


class StudySearcher(Searcher):
    """Proposes configurations from an Optuna study (see the module docstring).

    `space` maps each searched name to its Optuna distribution; `seeds` are configurations
    evaluated first; `epochs` is a trial's full budget (fewer epochs = stopped early)."""

    def __init__(
        self,
        *,
        space: Mapping[str, Any],
        objective: Objective,
        epochs: int,
        study_file: Path,
        study_name: str,
        sampler: optuna.samplers.BaseSampler,
        seeds: Iterable[Mapping[str, Any]] = (),
        proposer: Any = None,
    ) -> None:
        super().__init__(metric=objective.metric, mode=objective.mode)
        self._space = dict(space)
        self._objective = objective
        self._epochs = epochs
        self._study_file = Path(study_file)
        self._study_name = study_name
        self._sampler = sampler
        self._numbers: dict[str, int] = {}  # Tune trial id -> study trial number
        self._params: dict[str, dict[str, Any]] = {}  # Tune trial id -> proposed config
        self._finished: set[str] = set()  # told COMPLETE / PRUNED / FAIL
        self._errors: dict[str, str] = {}  # why a trial failed, from the scheduler
        self._proposer = proposer  # proposes every configuration (the seeds too) if given
        self._forget_study()
        if not self._open().get_trials(deepcopy=False) and proposer is None:  # seeds first
            for point in seeds:
                self._study.enqueue_trial(dict(point))

    # --- the study, reopened lazily (not pickled) ----------------------------------------

    def _forget_study(self) -> None:
        self._study: optuna.Study | None = None
        self._storage: Any = None
        self._values: dict[str, dict[int, float]] = {}  # Tune trial id -> {epoch: metric}

    def _open(self) -> optuna.Study:
        """The study, opened (or created) on first use; the recorded epochs are read back."""
        if self._study is not None:
            return self._study
        # the study of THIS driver's experiment directory: a resumed sweep's pickled path may be
        # another machine's mirror, or a directory since moved
        study_file = current_experiment_dir(self._study_file.parent) / self._study_file.name
        self._storage = optuna.storages.RDBStorage(study_url(study_file))
        self._study = optuna.create_study(
            storage=self._storage,
            study_name=self._study_name,
            sampler=self._sampler,
            pruner=optuna.pruners.NopPruner(),  # Ray's scheduler stops trials, not Optuna
            direction="maximize" if self._objective.mode == "max" else "minimize",
            load_if_exists=True,
        )
        by_number = {t.number: t for t in self._study.get_trials(deepcopy=False)}
        for trial_id, number in self._numbers.items():
            frozen = by_number.get(number)
            self._values[trial_id] = dict(frozen.intermediate_values) if frozen else {}
            if frozen is not None and frozen.state.is_finished():
                self._finished.add(trial_id)
        return self._study

    def _trial(self, trial_id: str) -> StoredTrial:
        return StoredTrial(self._storage, self._study_name, self._numbers[trial_id])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_study", "_storage", "_values"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_proposer": None, **state})  # saved before proposers existed
        self._forget_study()

    # --- Ray's Searcher interface ---------------------------------------------------------

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id in self._params:
            return dict(self._params[trial_id])
        study = self._open()
        if self._proposer is not None:
            study.enqueue_trial(self._proposer.suggest(trial_id))
        trial = study.ask(self._space)  # an enqueued configuration first: a seed, a proposal
        trial.set_user_attr(TRIAL_ID_ATTR, trial_id)
        self._numbers[trial_id] = trial.number
        self._params[trial_id] = dict(trial.params)
        self._values[trial_id] = {}
        return dict(trial.params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.record(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._numbers or trial_id in self._finished:
            return
        if self._proposer is not None:
            self._proposer.forget(trial_id)
        if result:
            self.record(trial_id, result)
        diverged = diverged_reason(result)
        if diverged:
            self._errors[trial_id] = diverged
        study = self._open()
        state, value, reason = self._verdict(self._values[trial_id], error or bool(diverged))
        if reason is None and state == TrialState.FAIL:
            reason = self._errors.pop(trial_id, None) or "the trial raised an error"
        if reason is not None:
            self._trial(trial_id).set_user_attr(ERROR_ATTR, reason)
        study.tell(self._numbers[trial_id], value, state=state, skip_if_finished=True)
        self._finished.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__getstate__(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__setstate__(pickle.load(file))

    # --- what the scheduler hands over ----------------------------------------------------

    def record(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """`result`'s metric as the trial's intermediate value at its epoch; an epoch already
        recorded (by another path, or before a resume) is left as it is."""
        value, step = result.get(self.metric), result_step(result)
        if isinstance(value, bool) or not isinstance(value, int | float) or step is None:
            return
        if diverged_reason(result):  # measured nothing (its metric is NaN)
            return
        if trial_id not in self._numbers or trial_id in self._finished:
            return
        self._open()
        recorded = self._values.setdefault(trial_id, {})
        if step in recorded:
            return
        self._trial(trial_id).report(step, float(value))
        recorded[step] = float(value)

    def observe(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """A result the scheduler judged at a budget, for the proposer (BOHB) if there is one."""
        if self._proposer is not None:
            self._proposer.observe(trial_id, result)

    def on_pause(self, trial_id: str) -> None:
        """Ray's HyperBand for BOHB tells the searcher of a pause; the study is not told."""

    def on_unpause(self, trial_id: str) -> None:
        """As `on_pause`."""

    def note_error(self, trial_id: str, reason: str) -> None:
        """Why a trial failed; the study gets it when Ray reports the trial complete."""
        self._errors[trial_id] = reason

    def _verdict(
        self, values: dict[int, float], error: bool
    ) -> tuple[TrialState, float | None, str | None]:
        """(state, value, reason) for a trial that ended with these recorded epochs."""
        if error:
            return TrialState.FAIL, None, None
        if not values:
            return TrialState.FAIL, None, f"ended before reporting {self.metric}"
        if max(values) < self._epochs:  # the scheduler stopped it: Optuna takes its last value
            return TrialState.PRUNED, None, None
        value = self._objective.trial_value([{self.metric: values[s]} for s in sorted(values)])
        if value is None:
            return TrialState.FAIL, None, f"no {self.metric} to rank it by"
        return TrialState.COMPLETE, value, None


def fail_lost_trials(
    study_file: Path, study_name: str, ledger: Mapping[str, Mapping[str, Any]]
) -> None:
    """FAIL every study trial still RUNNING once a sweep is over. One whose Tune trial the
    ledger calls ERROR (Ray ended it without telling the searcher) gets the ledger's reason in
    `error`; any other gets `lost_on_resume`: "lost" when its Tune trial started (it is in the
    ledger, then forgotten by Ray after a killed driver), "never started" when it was asked for
    just before the driver died. None of them then counts as a trial that exists."""
    storage = optuna.storages.RDBStorage(study_url(study_file))
    study = optuna.load_study(study_name=study_name, storage=storage)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        entry = ledger.get(trial.user_attrs.get(TRIAL_ID_ATTR, ""))
        stored = StoredTrial(storage, study_name, trial.number)
        if entry is not None and entry.get("status") == "ERROR":
            stored.set_user_attr(ERROR_ATTR, entry.get("error", "unknown error"))
        else:
            stored.set_user_attr(LOST_ATTR, "lost" if entry is not None else "never started")
        study.tell(trial.number, state=TrialState.FAIL)
