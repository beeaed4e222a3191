"""The sweep's trial schedulers: Ray's, plus three duties every one of them has here.

* They hand every result they judge to the searcher (`StudySearcher.record`). Ray's controller
  (ray 2.60.0, tune_controller.py: "Only updating search alg if the trial is not to be
  stopped") gives the searcher no result on which the scheduler decides STOP, so without this
  the study would miss the epoch a trial was stopped on, and each finished trial's last epoch
  under ASHA (which says STOP at max_t).
* They never stop a seed configuration: those are the report's reference rows and train their
  full budget.
* They pass on why a trial failed (the last line of the traceback Ray wrote), which Ray's
  controller does not tell the searcher.
* A diverged trial's last result (`contract.DIVERGED`, NaN metrics: trainables/tune_edge.py)
  never reaches Ray's scheduler: it stops the trial, and its completion is handled as Ray
  handles an error, so no rung, bracket or median counts a value that was never measured.

`asha`: ASHA records seed trials in its rungs (they inform the cut-offs) but never stops them.
`hyperband`: Ray's synchronous HyperBand (its variant for BOHB with `searcher.type: bohb`);
  seed trials stay out of its brackets (see SeedProtectingHyperBand). A trial waiting at a rung is PAUSED (checkpointed, its slot freed)
  and resumes from its checkpoint if it is among the best; Ray calls neither the searcher's nor
  the callbacks' on_trial_complete for a pause, so the study keeps it RUNNING and the ledger
  RUNNING until it really ends.
`median`: Ray's median stopping rule (stop a trial whose best score is worse than the median of
  the other trials' running means at the same epoch); seed trials count in the median.
`fifo`: every trial trains every epoch.

Two private members of Ray's schedulers are used here, checked on ray 2.60.0 and pinned by
tests/sweep/test_schedulers.py: `HyperBandScheduler._get_r0` (replaced: see
SeedProtectingHyperBand) and `MedianStoppingRule._stopped_trials` (see SeedProtectingMedian).
A trial HyperBand stops while it is paused needs visiontune.sweep.compat's
`save_state_of_removed_trial`, or Ray's saved experiment state keeps it PAUSED.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandForBOHB,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from visiontune.spec import SweepSpec
from visiontune.sweep.compat import save_state_of_removed_trial
from visiontune.sweep.searcher import StudySearcher
from visiontune.trainables.contract import diverged_reason


def error_reason(trial: Any) -> str:
    """The last line of the traceback Ray wrote for a failed trial ("" when there is none)."""
    path = trial.error_file
    text = Path(path).read_text() if path and Path(path).exists() else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class _TellsTheSearcher:
    """Mixin for a Ray TrialScheduler: every result it sees and every failure's reason reach
    `searcher`. Picklable with the searcher (Tuner.restore unpickles both from one file, so the
    restored scheduler holds the restored searcher)."""

    def __init__(self, searcher: StudySearcher, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.searcher = searcher

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if diverged_reason(result):
            return TrialScheduler.STOP
        self.searcher.record(trial.trial_id, result)
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if diverged_reason(result):  # the searcher reads the reason from `result` itself
            super().on_trial_error(tune_controller, trial)
            return
        super().on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        # Ray calls this just before the searcher's on_trial_complete(error=True).
        self.searcher.note_error(trial.trial_id, error_reason(trial) or "unknown error")
        super().on_trial_error(tune_controller, trial)


class RecordingFIFO(_TellsTheSearcher, FIFOScheduler):
    """FIFO: every trial trains every epoch."""


class SeedProtectingASHA(_TellsTheSearcher, ASHAScheduler):
    """ASHA that records seed trials in its rungs but never stops them."""

    def __init__(self, searcher: StudySearcher, spec: SweepSpec, **asha: Any) -> None:
        super().__init__(searcher, **asha)
        self.spec = spec

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and self.spec.seed_name(trial.config) is not None:
            return TrialScheduler.CONTINUE
        return decision


class SeedProtectingHyperBand(_TellsTheSearcher, HyperBandScheduler):
    """Ray's synchronous HyperBand (max_t = the epoch budget) with two changes.

    Seed trials never enter a bracket. HyperBand does not act on a trial only through the
    decision it returns for that trial's result: when it processes a bracket it stops the
    losers and any trial still paused in a finished bracket through the controller
    (`tune_controller.stop_trial`), so turning its decision into CONTINUE, as for ASHA, would
    not keep a seed alive. Outside the brackets a seed is a FIFO trial: CONTINUE on every
    result, started when PENDING. Nothing else of HyperBand refers to it (ray 2.60.0: only the
    trials `on_trial_add` placed are in `_trial_info`, a bracket's live trials and
    `trials_to_unpause`; `on_trial_complete` and `on_trial_error` go through `on_trial_remove`).

    Each bracket's first rung is rounded up, ceil(max_t / factor**s), where Ray rounds down:
    with an integer factor every bracket's last rung is then exactly max_t. Ray's rounding ends
    a bracket short of max_t when max_t is not a power of the factor (8 epochs, factor 3: at
    epoch 6) and stops its best trials there, so no trial of that bracket trains its budget.
    """

    def __init__(
        self, searcher: StudySearcher, spec: SweepSpec, *, max_t: int, reduction_factor: int,
        **hyperband: Any,
    ) -> None:  # fmt: skip
        super().__init__(searcher, max_t=max_t, reduction_factor=reduction_factor, **hyperband)
        self.spec = spec
        self.seed_trials: list[Trial] = []
        self.full_budget, self.factor = max_t, reduction_factor
        self._get_r0 = self.first_rung  # ray 2.60.0: sizes each new bracket (private)

    def first_rung(self, s: int) -> int:
        """Epochs a bracket with `s` halvings gives its trials before the first halving."""
        return math.ceil(self.full_budget / self.factor**s)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if self.spec.seed_name(trial.config) is None:
            super().on_trial_add(tune_controller, trial)
        elif trial not in self.seed_trials:
            self.seed_trials.append(trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if trial not in self.seed_trials:
            return super().on_trial_result(tune_controller, trial, result)
        self.searcher.record(trial.trial_id, result)
        return TrialScheduler.CONTINUE

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        save_state_of_removed_trial(tune_controller, trial)  # Ray 2.60 would keep it PAUSED
        if trial in self.seed_trials:
            self.seed_trials.remove(trial)
        else:
            super().on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any, **hyperband: Any) -> Trial | None:
        for trial in self.seed_trials:
            if trial.status in (Trial.PENDING, Trial.PAUSED):
                return trial
        return super().choose_trial_to_run(tune_controller, **hyperband)  # BOHB's allow_recurse


class SeedProtectingBOHB(SeedProtectingHyperBand, HyperBandForBOHB):
    """Ray's HyperBand for BOHB (largest bracket first; a trial pauses at a rung even while its
    bracket fills), with SeedProtectingHyperBand's seed trials and full-budget brackets, that
    hands the searcher's BOHB every result it judges at a budget, also the one it stops a trial
    on (Ray's controller would not: see the module docstring)."""

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        self.searcher.observe(trial.trial_id, result)  # HyperBandForBOHB set the budget in it
        return decision


class SeedProtectingMedian(_TellsTheSearcher, MedianStoppingRule):
    """Ray's median stopping rule, over every trial's results (seed trials included), that
    never stops a seed trial and never pauses a trial.

    Ray's rule pauses a trial to "yield" to waiting trials while it lacks samples; here a
    waiting trial already has a free slot (the sweep limits concurrent trials to the slots), so
    a pause would only cost a checkpoint round trip. A seed the rule would stop continues; the
    rule's memory of having stopped it (`_stopped_trials`, private, ray 2.60.0) is cleared, or
    its next result would trip the rule's assertion that a stopped trial reports no more.
    """

    def __init__(self, searcher: StudySearcher, spec: SweepSpec, **median: Any) -> None:
        super().__init__(searcher, **median)
        self.spec = spec

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.PAUSE:
            return TrialScheduler.CONTINUE
        if decision == TrialScheduler.STOP and self.spec.seed_name(trial.config) is not None:
            self._stopped_trials.discard(trial)
            return TrialScheduler.CONTINUE
        return decision


def build_scheduler(spec: SweepSpec, searcher: StudySearcher) -> TrialScheduler:
    """The spec's scheduler, telling `searcher` what it sees."""
    options = {key: value for key, value in spec.scheduler.items() if key != "type"}
    kind = spec.scheduler["type"]
    if kind == "fifo":
        return RecordingFIFO(searcher)
    judged = {"time_attr": "training_iteration", "metric": spec.metric, "mode": spec.mode}
    if kind == "hyperband":
        bohb = spec.searcher["type"] == "bohb"
        hyperband = SeedProtectingBOHB if bohb else SeedProtectingHyperBand
        return hyperband(searcher, spec, max_t=spec.epochs, **judged, **options)
    if kind == "median":
        return SeedProtectingMedian(searcher, spec, **judged, **options)
    return SeedProtectingASHA(searcher, spec, max_t=spec.epochs, **judged, **options)
