"""What "best" means, defined once: the metric, its direction, the tie rule, and which epoch
of a trial counts.

* A trial is judged by its best epoch: the epoch whose `metric` is best under `mode`; on a tie
  the LATER epoch counts (it has trained more, and Ray's checkpoint retention keeps the newer
  of two equally scored checkpoints, so the tested checkpoint is that epoch's).
* Trials are ranked by that value; on a tie the trial with the smaller trial id comes first
  (a stable, reproducible order that does not depend on which trial reported first).
* Missing and NaN values never count as best.

Used by the checkpoint retention (`checkpoint_score_attribute`/`order`), the choice of the tuned
best and its test evaluation, the value each trial gets in the Optuna study, trials.csv and the
report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MODES = ("max", "min")


def _score(value: Any) -> float | None:
    """`value` as a float, or None when it is missing, not a number or NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Objective:
    """The sweep's objective: `metric` reported every epoch, maximised or minimised."""

    metric: str
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be max or min, got {self.mode!r}")

    def better(self, a: Any, b: Any) -> bool:
        """Whether score `a` is strictly better than `b` (anything beats a missing/NaN `b`;
        a missing/NaN `a` beats nothing)."""
        a, b = _score(a), _score(b)
        if a is None:
            return False
        if b is None:
            return True
        return a > b if self.mode == "max" else a < b

    def best_epoch_index(self, results: Sequence[dict[str, Any]]) -> int | None:
        """Index in `results` (one dict per epoch, in epoch order) of the epoch a trial is
        judged by: the best `metric`, the later epoch on ties; None without any score."""
        best = None
        for index, result in enumerate(results):
            value = _score(result.get(self.metric))
            if value is None:
                continue
            if best is None or not self.better(results[best][self.metric], value):
                best = index  # better or equal: the later epoch wins ties
        return best

    def best_epoch(self, results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        """The result dict of the epoch a trial is judged by (see `best_epoch_index`)."""
        index = self.best_epoch_index(results)
        return None if index is None else results[index]

    def trial_value(self, results: Sequence[dict[str, Any]]) -> float | None:
        """The value a trial is ranked by: its best epoch's `metric` (None without one)."""
        best = self.best_epoch(results)
        return None if best is None else float(best[self.metric])

    def rank_key(self, value: Any, trial_id: str = "") -> tuple:
        """Sort key that puts the best trial first: by value under `mode`, missing values last,
        ties by trial id."""
        score = _score(value)
        if score is None:
            return (1, 0.0, trial_id)
        return (0, -score if self.mode == "max" else score, trial_id)

    def best_trial(self, trials: Iterable[tuple[str, Any]]) -> str | None:
        """The id of the best of (trial_id, value) pairs; None when no value is a score."""
        ranked = sorted(trials, key=lambda item: self.rank_key(item[1], item[0]))
        if not ranked or _score(ranked[0][1]) is None:
            return None
        return ranked[0][0]

    @property
    def checkpoint_order(self) -> str:
        """Ray's `checkpoint_score_order` that keeps this objective's best checkpoint."""
        return self.mode
