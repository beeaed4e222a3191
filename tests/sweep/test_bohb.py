"""BOHB as the sweep's proposer (visiontune/sweep/bohb.py): Ray's TuneBOHB over the spec's
search space, its proposals put back into the spec's own values. How the scheduler feeds it is
in test_schedulers.py."""

from __future__ import annotations

import numpy as np
import pytest

from visiontune.best import Objective
from visiontune.spec_file import Choice, IntRange, LogUniform, Uniform
from visiontune.sweep.bohb import BohbProposer, spec_value

SPACE = {
    "lr": LogUniform(distribution="loguniform", low=1e-5, high=1e-2),
    "drop": Uniform(distribution="uniform", low=0.0, high=0.5),
    "every": IntRange(distribution="int", low=2, high=48, step=5),
    "scale": IntRange(distribution="int", low=1, high=64, log=True),
    "arch": Choice(distribution="choice", values=["baseline", "custom", True, 3]),
}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("every", np.int64(13), 12),  # the nearest of 2, 7, 12, ...
        ("every", np.int64(48), 47),  # the grid's last value is inside the range
        ("scale", np.int64(9), 9),
        ("lr", np.float64(1e-3), 1e-3),
        ("arch", np.str_("custom"), "custom"),
        ("arch", np.bool_(True), True),
    ],
)
def test_a_bohb_value_becomes_the_spec_distributions_own(name, value, expected):
    got = spec_value(SPACE[name], value)
    assert got == expected and type(got) is type(expected)
    assert SPACE[name].contains(got)


def _proposals(seed: int, count: int) -> list[dict]:
    seeds = [{"lr": 1e-4, "drop": 0.2, "every": 47, "scale": 8, "arch": "baseline"}]
    proposer = BohbProposer(SPACE, Objective("val_acc", "max"), seed, seeds)
    return [proposer.suggest(f"t{i}") for i in range(count)]


def test_bohb_proposes_the_seed_points_first_then_values_inside_the_space():
    outside = np.random.get_state()
    first = _proposals(seed=1, count=12)
    assert first[0] == {"lr": 1e-4, "drop": 0.2, "every": 47, "scale": 8, "arch": "baseline"}
    for config in first[1:]:
        assert set(config) == set(SPACE)
        assert all(SPACE[name].contains(value) for name, value in config.items()), config
    assert _proposals(seed=1, count=12) == first
    assert _proposals(seed=2, count=12)[1:] != first[1:]
    assert np.array_equal(np.random.get_state()[1], outside[1])


def _learned_proposals(seed: int) -> tuple[list[dict], BohbProposer]:
    """Proposals of a BOHB told each one's score at budget 1, long enough to fit its model."""
    space = {"lr": SPACE["lr"], "arch": SPACE["arch"]}
    proposer = BohbProposer(space, Objective("val_acc", "max"), seed)
    configs = []
    for i in range(30):
        configs.append(proposer.suggest(f"t{i}"))
        score = -abs(np.log10(configs[-1]["lr"]) + 3)
        proposer.observe(f"t{i}", {"val_acc": score, "hyperband_info": {"budget": 1}})
        proposer.forget(f"t{i}")
    return configs, proposer


def test_bohb_model_based_proposals_follow_the_seed_not_numpys_global_state():
    first, proposer = _learned_proposals(seed=3)
    assert proposer._bohb.bohber.kde_models  # hpbandster's model was fitted: picks used it
    np.random.seed(123)  # the driver's own draws do not steer BOHB
    outside = np.random.get_state()
    assert _learned_proposals(seed=3)[0] == first
    assert np.array_equal(np.random.get_state()[1], outside[1])
