"""The sweep's trial schedulers: Ray's, plus two duties every one of them has here.

* They hand every result they judge to the searcher (`StudySearcher.record`). Ray's controller
  (ray 2.60.0, tune_controller.py: "Only updating search alg if the trial is not to be
  stopped") gives the searcher no result on which the scheduler decides STOP, so without this
  the study would miss the epoch a trial was stopped on, and each finished trial's last epoch
  under ASHA (which says STOP at max_t).
* They pass on why a trial failed (the last line of the traceback Ray wrote), which Ray's
  controller does not tell the searcher.

ASHA additionally never stops a seed configuration: those are the report's reference rows and
train their full budget (ASHA still records them in its rungs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from visiontune.spec import SweepSpec
from visiontune.sweep.searcher import StudySearcher


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
        self.searcher.record(trial.trial_id, result)
        return super().on_trial_result(tune_controller, trial, result)

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


def build_scheduler(spec: SweepSpec, searcher: StudySearcher) -> TrialScheduler:
    """The spec's scheduler, telling `searcher` what it sees."""
    if spec.scheduler["type"] == "fifo":
        return RecordingFIFO(searcher)
    return SeedProtectingASHA(
        searcher,
        spec,
        time_attr="training_iteration",
        metric=spec.metric,
        mode=spec.mode,
        max_t=spec.epochs,
        grace_period=spec.scheduler["grace_period"],
        reduction_factor=spec.scheduler["reduction_factor"],
    )
