"""The pure parts of benchmarks/search_efficiency.py: budgets, best-so-far curves, their
quartiles, the share of a budget a curve needs to reach a target, and the pick within budget."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from support import REPO

MODULE = "search_efficiency_under_test"


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        MODULE, REPO / "benchmarks" / "search_efficiency.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules[MODULE]


def events(rows: list[tuple[str, int, float, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["trial_id", "epoch", "value", "timestamp"])
    return frame.assign(dir="", checkpoint="")


def test_curve_keeps_the_best_so_far_and_skips_missing_scores(bench):
    curve = bench.curve_on_grid([0.2, math.nan, 0.5, 0.4, 0.7], budget=5, mode="max")
    np.testing.assert_array_equal(curve, [0.2, 0.2, 0.5, 0.5, 0.7])


def test_curve_is_nan_before_the_first_score_and_cut_at_the_budget(bench):
    curve = bench.curve_on_grid([math.nan, 0.3, 0.1, 0.9], budget=3, mode="max")
    np.testing.assert_array_equal(curve, [np.nan, 0.3, 0.3])


def test_curve_of_a_sweep_under_budget_holds_its_final_best(bench):
    np.testing.assert_array_equal(bench.curve_on_grid([0.5, 0.4], 4, "min"), [0.5, 0.4, 0.4, 0.4])


def test_budget_to_target_counts_trial_epochs_from_one(bench):
    curve = np.array([np.nan, 0.3, 0.6, 0.8])
    assert bench.budget_to_target(curve, 0.6, "max") == 3
    assert bench.budget_to_target(curve, 0.9, "max") is None
    assert bench.budget_to_target(np.array([0.9, 0.5, 0.2]), 0.5, "min") == 2


def test_quartiles_over_repetitions_ignore_repetitions_without_a_score_yet(bench):
    curves = np.array([[np.nan, 1.0, 1.0], [0.0, 2.0, 3.0], [np.nan, 3.0, 5.0]])
    q25, q50, q75 = bench.quartile_curves(curves)
    np.testing.assert_array_equal(q50, [0.0, 2.0, 3.0])
    np.testing.assert_array_equal(q25, [0.0, 1.5, 2.0])
    np.testing.assert_array_equal(q75, [0.0, 2.5, 4.0])


def test_shares_to_target_for_the_median_curve_and_each_repetition(bench):
    curves = np.array([[0.1, 0.5, 0.5, 0.9], [0.4, 0.4, 0.6, 0.6], [0.2, 0.3, 0.3, 0.3]])
    # median curve: 0.2, 0.4, 0.5, 0.6 -> reaches 0.5 at 3 of 4; reps at 2, 3 and never
    assert bench.shares_to_target(curves, 0.5, 4, "max") == ("0.75", "2/3", "0.75")
    assert bench.shares_to_target(curves[1:], 0.5, 4, "max") == (
        "not reached",
        "1/2",
        "not reached",
    )
    assert bench.shares_to_target(curves, None, 4, "max") == ("n/a", "n/a", "n/a")


def test_report_order_is_time_then_epoch_then_trial(bench):
    frame = events([("b", 2, 0.1, 11), ("a", 1, 0.2, 10), ("b", 1, 0.3, 10), ("a", 2, 0.4, 11)])
    ordered = bench.in_report_order(frame)
    assert list(zip(ordered.trial_id, ordered.epoch, strict=True)) == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
    ]


def test_pick_is_the_best_trial_epoch_within_the_budget(bench):
    frame = events([("a", 1, 0.5, 1), ("b", 1, 0.6, 2), ("a", 2, 0.6, 3), ("b", 2, 0.9, 4)])
    pick = bench.pick_in_budget(frame, budget=3, mode="max")
    assert (pick.trial_id, pick.epoch) == ("a", 2)  # tie with b at 0.6: trial "a" ranks first
    assert bench.pick_in_budget(frame, budget=4, mode="max").trial_id == "b"


def test_asha_expects_a_third_of_trials_to_reach_the_top_rung(bench):
    asha = {"type": "asha", "grace_period": 2, "reduction_factor": 3}
    assert bench.expected_epochs(asha, 6) == pytest.approx(2 + 4 / 3)
    assert bench.expected_epochs({**asha, "grace_period": 6}, 6) == 6


def test_hyperband_epochs_follow_its_brackets(bench):
    # 6 epochs, factor 3: brackets of 3 x 6 epochs; 5 x 2 then 2 x 4 more; 9 x 1, 3 x 2, 1 x 3
    assert bench.hyperband_epochs(6, 3) == pytest.approx(54 / 17)


def test_fifo_budget_is_exact_and_early_stopping_gets_more_trials(bench):
    assert bench.samples_for_budget(72, 6, 2, {"type": "fifo"}) == 12
    asha = {"type": "asha", "grace_period": 2, "reduction_factor": 3}
    assert bench.samples_for_budget(72, 6, 2, asha) == 2 + math.ceil(bench.MARGIN * 60 / (10 / 3))


def test_every_searcher_and_scheduler_type_is_a_method(bench):
    shipped = yaml.safe_load((REPO / "search_spaces" / "classifier.yaml").read_text())
    table = bench.method_table(shipped)
    searchers = {m.sections(shipped)[0]["type"] for m in table.values() if not m.peer}
    schedulers = {m.sections(shipped)[1]["type"] for m in table.values()}
    assert searchers >= {"optuna_tpe", "random", "gp", "qmc", "bohb"}
    assert schedulers == {"asha", "hyperband", "median", "fifo"}


def test_a_method_with_the_defaults_settings_is_left_out(bench):
    shipped = {
        "searcher": {"type": "optuna_tpe", "seed": 0, "n_startup_trials": 4},
        "scheduler": {"type": "hyperband", "reduction_factor": 3},
    }
    assert bench.duplicates_of_default(bench.method_table(shipped), shipped) == ["tpe_hyperband"]
