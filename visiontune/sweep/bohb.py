"""BOHB (Falkner et al. 2018: a TPE-like model per HyperBand budget) as the sweep's proposer,
through Ray's `TuneBOHB` (hpbandster's BOHB over a ConfigSpace).

BOHB proposes each configuration; the sweep's StudySearcher enqueues it in the Optuna study and
asks for it there, so a BOHB sweep has the same study (optuna.db: every epoch, PRUNED/COMPLETE/
FAIL) as any other. BOHB learns from the results HyperBand judges a bracket on (the result at
a rung, with its budget in `hyperband_info`), which the scheduler (`SeedProtectingBOHB`) hands
over for every trial, also the one it stops: Ray's controller gives the searcher no result on
which the scheduler says STOP. Seed points are proposed first and train outside the brackets,
so BOHB's model is fitted on the bracket trials only.

hpbandster draws its model-based picks from NumPy's global random state; each proposal here
runs on a private state seeded by `searcher.seed`, so the same seed proposes the same
configurations (given the same results) and the driver's global state is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from visiontune.best import Objective
from visiontune.spec_file import Choice, IntRange, LogUniform, Range

BUDGET_KEY = "hyperband_info"  # where HyperBandForBOHB writes a rung's budget into a result


def tune_domain(dist: Range | Choice) -> Any:
    """The Ray Tune domain TuneBOHB converts to a ConfigSpace hyperparameter. An int step is
    not kept (TuneBOHB drops quantisation); proposals are put back on the grid instead."""
    from ray import tune

    if isinstance(dist, Choice):
        return tune.choice(list(dist.values))
    if isinstance(dist, IntRange):
        sample = tune.lograndint if dist.log else tune.randint
        return sample(int(dist.low), int(dist.high) + 1)  # Tune's upper bound is exclusive
    return (tune.loguniform if isinstance(dist, LogUniform) else tune.uniform)(dist.low, dist.high)


def spec_value(dist: Range | Choice, value: Any) -> Any:
    """A ConfigSpace value as the spec's distribution holds it: a Python number on the int
    grid, or the very choice (not NumPy's copy of it)."""
    if isinstance(dist, Choice):
        return next(choice for choice in dist.values if choice == value)
    if isinstance(dist, IntRange):
        step = dist.step or 1
        return min(int(dist.low + round((int(value) - dist.low) / step) * step), int(dist.high))
    return float(value)


class BohbProposer:
    """Ray's TuneBOHB over the spec's search space, proposing the seed points first."""

    def __init__(
        self,
        space: Mapping[str, Range | Choice],
        objective: Objective,
        seed: int,
        seeds: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        from ray.tune.search.bohb import TuneBOHB

        self._space = dict(space)
        self._bohb = TuneBOHB(
            space={name: tune_domain(dist) for name, dist in self._space.items()},
            metric=objective.metric,
            mode=objective.mode,
            points_to_evaluate=[dict(point) for point in seeds],
            seed=seed,
        )
        self._random_state = np.random.RandomState(seed).get_state()

    def suggest(self, trial_id: str) -> dict[str, Any]:
        outside = np.random.get_state()
        np.random.set_state(self._random_state)
        try:
            config = self._bohb.suggest(trial_id)
        finally:
            self._random_state = np.random.get_state()
            np.random.set_state(outside)
        return {name: spec_value(self._space[name], config[name]) for name in self._space}

    def observe(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """A result HyperBand judged at a budget (results without one are not BOHB's)."""
        if "budget" in result.get(BUDGET_KEY, {}) and trial_id in self._bohb.trial_to_params:
            self._bohb.on_trial_result(trial_id, dict(result))

    def forget(self, trial_id: str) -> None:
        """The trial has ended: BOHB keeps the results it was given, not the trial."""
        if trial_id in self._bohb.trial_to_params:
            self._bohb.on_trial_complete(trial_id)
