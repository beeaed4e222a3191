"""benchmarks/scale.py: the per-trial overhead and slope arithmetic on made-up timelines, and a
4-trial run of the whole script (a real sweep) that prints every measured row."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from support import REPO

MODULE = "scale_under_test"


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(MODULE, REPO / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules[MODULE]


def test_overhead_is_the_gap_to_the_next_start_on_the_same_actor_less_training(bench):
    trial = bench.TrialTime
    trials = [
        trial("a", actor=1, start=0.0, train_s=2.0, epochs=2),
        trial("b", actor=2, start=0.5, train_s=1.0, epochs=1),
        trial("c", actor=2, start=2.0, train_s=1.0, epochs=1),
        trial("d", actor=1, start=2.5, train_s=2.0, epochs=2),
        trial("e", actor=2, start=3.25, train_s=1.0, epochs=1),
    ]
    overheads = bench.trial_overheads(trials)
    # positions in start order: a=1, b=2, c=3, d=4, e=5; d and e have no successor on their actor
    assert overheads == [(1, 0.5), (2, 0.5), (3, 0.25)]


def test_window_medians_take_the_first_and_last_positions(bench):
    overheads = [(1, 0.1), (2, 0.3), (3, 0.2), (5, 0.6), (6, 0.4)]
    assert bench.window_medians(overheads, trials=6, window=2) == (0.2, 0.5)
    assert bench.window_medians([], trials=6, window=2) == (None, None)


def test_driver_cpu_per_trial_is_taken_between_the_first_samples_that_saw_each_count(bench):
    def sample(trials: int, cpu: float):
        return bench.Sample(time=0.0, trials=trials, driver_rss=1, ray_rss=1, load=1.0,
                            driver_cpu=cpu)  # fmt: skip

    samples = [sample(1, 5.0), sample(2, 6.0), sample(2, 6.5), sample(5, 8.0), sample(8, 12.5)]
    assert bench.cpu_per_trial(samples, 2, 5) == pytest.approx(2.0 / 3)
    assert bench.cpu_per_trial(samples, 4, 8) == pytest.approx(4.5 / 3)  # 5 trials at "4"
    assert bench.cpu_per_trial(samples, 2, 9) is None


def test_slope_ignores_a_spike_and_needs_two_distinct_points(bench):
    xs = list(range(10))
    ys = [0.5 + 0.01 * x for x in xs]
    ys[4] = 9.0  # another job on the machine
    assert bench.slope(xs, ys) == pytest.approx(0.01)
    assert bench.slope([3, 3], [1.0, 2.0]) is None


def test_driver_costs_are_timed_at_the_window_the_end_and_between(bench):
    assert bench.sizes_between(50, 500) == [50, 275, 500]
    assert bench.sizes_between(2, 4) == [2, 3, 4]


@pytest.mark.ray
@pytest.mark.slow
def test_a_small_run_finishes_and_prints_every_measured_row(bench):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--trials", "4", "--reps", "2",
         "--tensorboard-timeout", "120"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.index("\nmeasure ") :]
    for row in bench.ROWS:
        assert f"\n{row} " in table, row
    assert "all 4, none lost" in table
