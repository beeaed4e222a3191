"""Search efficiency: the best validation score each searcher/scheduler finds per trial-epoch
spent, against random search without early stopping (the baseline) and Ray's stock
OptunaSearch + ASHAScheduler (the peer). Issue 9, deliverable 3.

Run (from the repository root):

    .venv/bin/python benchmarks/search_efficiency.py                   # 9 methods x 5 reps, hours
    .venv/bin/python benchmarks/search_efficiency.py --quick           # 2 methods x 2 reps, < 5 min
    .venv/bin/python benchmarks/search_efficiency.py --data DIR        # any ImageFolder instead
    .venv/bin/python benchmarks/search_efficiency.py --methods default,random_fifo --reps 3
    .venv/bin/python benchmarks/search_efficiency.py --task yolo --quick   # detector: study check
    .venv/bin/python benchmarks/search_efficiency.py --out DIR --resume    # go on where DIR stopped

Goal: visiontune's default (search_spaces/classifier.yaml's searcher and scheduler as shipped)
reaches the baseline's median final best within <= 0.33 of the baseline's budget.

The setting, and why. The classifier on the embedded ir-solar-modules set (3000 images, 12
classes; `--data DIR` for any ImageFolder), `--set width=8` and 6 epochs per trial: a trial-epoch
then takes ~4 slot-seconds here, so one sweep takes 3-4 min on 2 cores, and 6 epochs still
separate configurations (a calibration sweep of the default, seed 0: the seed configurations
ended at 0.53 validation accuracy, the majority-class rate, its other trials between 0.18 and
0.73). Images are not subsampled in the full run: the validation split (452 images) must stay
large enough for its ranking to mean something.
`--quick` uses a generated 600-image set (90 validation images): it checks the script, not the
methods. Each trial's own seed (`fixed.seed`: init, shuffling, augmentation) stays 0; repetitions
differ in the searcher's seed only (0, 1, ..., printed), so every method meets the same noise.

Budget accounting. Every method gets the baseline's budget B = --trials x --epochs trial-epochs
(12 x 6 = 72) and the same --slots concurrent trials (2). A trial-epoch is one reported result
(an epoch trained; a diverged trial's last, scoreless result counts as spent too). The sweeps run
as a user runs them (`visiontune.sweep.run_sweep`), which ends a sweep after `num_samples`
trials, not at a budget; so an early-stopping method gets num_samples sized to spend a little
more than B (`samples_for_budget`: the budget over the epochs a trial is expected to train under
its scheduler, plus 10%; ASHA in practice promotes more than 1/factor of its trials, the first
ones at a rung and those tied at its cut-off, so such sweeps run past B), and its results are cut
at B: the curve is the best score among the first x results in the order they were reported
(Ray's `timestamp`, whole seconds; ties by epoch, then trial id), x = 1..B. Cutting at B is exact
for the curve: nothing reported after the B-th result can change what the searcher proposed
before it. A sweep that ends under B keeps its final best for the rest of the curve (it found
nothing more) and is counted in the table ("under B"). The seed points (`points_to_evaluate`) are
evaluated first by every method, the peer included, and count against the budget.
The configuration a method picks is its best trial within the budget (visiontune.best: a trial's
best epoch, ties to the later epoch). Its test score is the sweep's own test_results.json "tuned
best" row when that row is the same trial and epoch; otherwise (the sweep went on past B and
found better) the trial's kept checkpoint of that epoch is evaluated on the test split, or, when
Ray no longer keeps it, the trial is trained again to that epoch in this process (training is
seeded; the retrained validation score is compared with the recorded one and mismatches are
printed).

Methods (`--methods`, comma-separated; each searcher and scheduler type appears at least once):
random_fifo (the baseline), random_asha, ray_optuna_asha (the peer: a Tuner built here as a Ray
user writes it, with the sweep's trainable, space, seed points, ASHA settings and slots), default
(the shipped YAML's searcher and scheduler), tpe_asha, tpe_hyperband, tpe_median, gp_asha,
qmc_asha, bohb_hyperband; a method with the default's exact settings is left out as a duplicate.
ASHA/median grace period, reduction factor and TPE/GP startup trials come from the shipped YAML.

Output, printed and under --out (default benchmarks/results/search_efficiency/): curves.csv and
curves.png (median and IQR over repetitions of the best-so-far curve), runs.csv (one row per
sweep), events.csv (every trial-epoch of every sweep, in report order: the curves can be rebuilt
from it), summary.txt (the tables below), settings.json (what decides a sweep besides its
method). Each sweep is recorded as soon as it ends: `--resume` with the same --out and settings
reuses every recorded sweep whose method still has the same searcher and scheduler, and runs
only the rest (so a long run can be split over several sittings; a recorded sweep's wall time is
its own, and its test score source says "recorded"). Ray's and Tune's console output goes to
console.log beside the sweeps (a temporary directory unless --storage names one; its end is
printed if the run fails).
For every visiontune sweep the Optuna study is checked against the trials: each PRUNED/COMPLETE
study trial's intermediate values are exactly the epochs its trial reported, a PRUNED one's value
is its last epoch, a COMPLETE one's its best epoch. With `--task faster_rcnn|yolo` that check is
the point (no efficiency goal): `--quick` there runs the task's default and tpe_hyperband once on
a 16/8/8-image pv-arrays set (budget 4 x 2 trial-epochs).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import yaml

from visiontune.best import Objective

REPO = Path(__file__).resolve().parents[1]
GOAL_FRACTION = 0.33  # the default reaches the baseline's median final best within this share of B
MARGIN = 1.1  # num_samples of an early-stopping method aims at MARGIN x the budget (see docstring)
BASELINE, PEER, DEFAULT = "random_fifo", "ray_optuna_asha", "default"
ASHA_FALLBACK = {"type": "asha", "grace_period": 2, "reduction_factor": 3}
TPE_STARTUP_FALLBACK = 4


# --- methods and budgets ------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One way to search: the spec's searcher and scheduler sections (None: as shipped), or the
    peer (Ray's stock OptunaSearch + ASHAScheduler with `scheduler`'s ASHA settings; its
    `searcher` section only makes its spec valid)."""

    key: str
    searcher: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    peer: bool = False

    def sections(self, shipped: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The (searcher, scheduler) sections this method runs with."""
        return (
            dict(self.searcher or shipped["searcher"]),
            dict(self.scheduler or shipped["scheduler"]),
        )

    def label(self, shipped: Mapping[str, Any]) -> str:
        searcher, scheduler = self.sections(shipped)
        name = "ray OptunaSearch" if self.peer else searcher["type"]
        return f"{name} + {scheduler['type']}"


def method_table(shipped: Mapping[str, Any]) -> dict[str, Method]:
    """Every method, keyed by name; settings a method shares with the default (ASHA's grace
    period and factor, TPE's startup trials) come from the shipped spec."""
    scheduler, searcher = shipped["scheduler"], shipped["searcher"]
    asha = dict(scheduler) if scheduler["type"] == "asha" else dict(ASHA_FALLBACK)
    grace, factor = asha.get("grace_period", 1), asha.get("reduction_factor", 3)
    startup = searcher.get("n_startup_trials", TPE_STARTUP_FALLBACK)
    hyperband = {"type": "hyperband", "reduction_factor": max(2, int(factor))}
    median = {"type": "median", "grace_period": grace, "min_samples_required": 3}
    tpe = {"type": "optuna_tpe", "n_startup_trials": startup}
    methods = [
        Method(BASELINE, {"type": "random"}, {"type": "fifo"}),
        Method("random_asha", {"type": "random"}, asha),
        Method(PEER, {"type": "optuna_tpe"}, asha, peer=True),  # OptunaSearch: TPE by default
        Method(DEFAULT, None, None),
        Method("tpe_asha", tpe, asha),
        Method("tpe_hyperband", tpe, hyperband),
        Method("tpe_median", tpe, median),
        Method("gp_asha", {"type": "gp", "n_startup_trials": max(1, startup)}, asha),
        Method("qmc_asha", {"type": "qmc"}, asha),
        Method("bohb_hyperband", {"type": "bohb"}, hyperband),
    ]
    return {m.key: m for m in methods}


def same_settings(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two spec sections configure the same thing (the searcher's seed aside)."""
    return {k: v for k, v in a.items() if k != "seed"} == {
        k: v for k, v in b.items() if k != "seed"
    }


def duplicates_of_default(table: Mapping[str, Method], shipped: Mapping[str, Any]) -> list[str]:
    """Methods (other than the default and the peer) that would run the default's settings."""
    return [
        key
        for key, m in table.items()
        if key != DEFAULT
        and not m.peer
        and all(same_settings(a, b) for a, b in zip(m.sections(shipped), table[DEFAULT].sections(shipped), strict=True))
    ]  # fmt: skip


def expected_epochs(scheduler: Mapping[str, Any], epochs: int) -> float:
    """Mean epochs a (non-seed) trial trains under `scheduler` with an `epochs` budget, if each
    rung keeps 1/factor of its trials (asha), the median rule stops about half of them once the
    grace period is over (median), or one full HyperBand band runs (hyperband)."""
    kind = scheduler["type"]
    if kind == "fifo":
        return float(epochs)
    if kind == "hyperband":
        return hyperband_epochs(epochs, int(scheduler.get("reduction_factor", 3)))
    grace = min(int(scheduler.get("grace_period", 1)), epochs)
    if kind == "median":
        return (grace + epochs) / 2
    factor = float(scheduler.get("reduction_factor", 3))
    rungs = [grace * factor**k for k in range(64) if grace * factor**k < epochs] + [epochs]
    steps = zip(rungs, rungs[1:], strict=False)
    return rungs[0] + sum((b - a) / factor**i for i, (a, b) in enumerate(steps, 1))


def hyperband_epochs(epochs: int, factor: int) -> float:
    """Mean epochs per trial over one band of the sweep's HyperBand: Ray's brackets (ray 2.60.0:
    round(log_factor(epochs)) + 1 of them, bracket s starts ceil(brackets/(s+1) * factor**s)
    trials and halves s times, keeping ceil(n/factor)) with visiontune's first rung
    ceil(epochs / factor**s) (visiontune.sweep.schedulers.SeedProtectingHyperBand)."""
    brackets = round(math.log(epochs) / math.log(factor)) + 1 if epochs > 1 else 1
    total = trials = 0
    for s in range(brackets):
        n, rung, done = math.ceil(brackets / (s + 1) * factor**s), math.ceil(epochs / factor**s), 0
        trials += n
        for _ in range(s + 1):
            total += n * (rung - done)
            n, rung, done = math.ceil(n / factor), min(rung * factor, epochs), rung
    return total / trials


def samples_for_budget(budget: int, epochs: int, seeds: int, scheduler: Mapping[str, Any]) -> int:
    """num_samples that spends about `budget` trial-epochs (FIFO: exactly), the seed points (which
    train every epoch) included; early-stopping schedulers aim at MARGIN x the rest."""
    rest = max(budget - seeds * epochs, 0)
    if scheduler["type"] == "fifo":
        return seeds + math.ceil(rest / epochs)
    return seeds + min(math.ceil(MARGIN * rest / expected_epochs(scheduler, epochs)), rest)


# --- curves over trial-epochs (pure) ------------------------------------------------------


def in_report_order(events: pd.DataFrame) -> pd.DataFrame:
    """Trial-epochs in the order their results were reported: Ray's `timestamp` (whole seconds),
    then the epoch, then the trial id (a stable order inside a second)."""
    return events.sort_values(["timestamp", "epoch", "trial_id"], kind="stable").reset_index(
        drop=True
    )


def curve_on_grid(values: Sequence[float], budget: int, mode: str) -> np.ndarray:
    """Best of the first x values (NaN = no score), x = 1..budget: NaN before the first score;
    a sweep that reported fewer than `budget` values keeps its final best to the end."""
    scores = np.asarray(list(values)[:budget], dtype=float)
    curve = np.full(budget, np.nan)
    if scores.size == 0:
        return curve
    better = np.fmax if mode == "max" else np.fmin  # fmax/fmin skip NaN
    running = better.accumulate(scores)
    curve[: running.size] = running
    curve[running.size :] = running[-1]
    return curve


def budget_to_target(curve: np.ndarray, target: float, mode: str) -> int | None:
    """Trial-epochs a curve needs to reach `target` (1-based), None if it never does."""
    reached = curve >= target if mode == "max" else curve <= target
    hits = np.flatnonzero(np.nan_to_num(reached, nan=False))
    return int(hits[0]) + 1 if hits.size else None


def quartile_curves(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """25th, 50th and 75th percentile over repetitions (rows) at each trial-epoch (columns);
    NaN where no repetition has a score yet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before any score
        q25, q50, q75 = np.nanpercentile(np.atleast_2d(curves), [25, 50, 75], axis=0)
    return q25, q50, q75


def pick_in_budget(events: pd.DataFrame, budget: int, mode: str) -> pd.Series | None:
    """The trial-epoch a method picks after `budget` trial-epochs: the best trial by its best
    epoch among the first `budget` results (visiontune.best), its best epoch's row."""
    objective = Objective("value", mode)
    used = events.iloc[:budget]
    by_trial = {tid: rows.sort_values("epoch") for tid, rows in used.groupby("trial_id")}
    best = objective.best_trial(
        (tid, objective.trial_value(rows.to_dict("records"))) for tid, rows in by_trial.items()
    )
    if best is None:
        return None
    rows = by_trial[best]
    return rows.iloc[objective.best_epoch_index(rows.to_dict("records"))]


def mean_std(values: Sequence[float]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "n/a"
    spread = f"{np.std(finite, ddof=1):.4f}" if len(finite) > 1 else "-"
    return f"{np.mean(finite):.4f} ± {spread}"


# --- one sweep ---------------------------------------------------------------------------


@dataclass
class Sweep:
    """One method's sweep in one repetition, and what the benchmark read from it."""

    method: str
    rep: int
    seed: int
    num_samples: int
    wall_s: float
    path: Path
    events: pd.DataFrame
    final_best: float = math.nan
    pick: dict[str, Any] = field(default_factory=dict)
    test: float = math.nan
    test_from: str = ""
    study: str = "-"
    curve: np.ndarray = field(default_factory=lambda: np.empty(0))


def read_events(exp_dir: Path, metric: str) -> pd.DataFrame:
    """Every result of every trial under `exp_dir` (trial_<id>/result.json), in report order."""
    from visiontune.analysis.results import read_result_lines

    rows = []
    for trial_dir in sorted(p for p in exp_dir.glob("trial_*") if p.is_dir()):
        for result in read_result_lines(trial_dir / "result.json"):
            value = result.get(metric)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            rows.append({
                "trial_id": str(result.get("trial_id", trial_dir.name.removeprefix("trial_"))),
                "epoch": int(result.get("epoch") or result["training_iteration"]),
                "value": float(value) if number else math.nan,
                "timestamp": int(result.get("timestamp", 0)),
                "dir": trial_dir.name,
                "checkpoint": result.get("checkpoint_dir_name") or "",
            })  # fmt: skip
    columns = ["trial_id", "epoch", "value", "timestamp", "dir", "checkpoint"]
    return in_report_order(pd.DataFrame(rows, columns=columns))


def method_spec(shipped_raw: dict[str, Any], method: Method, settings: Settings, seed: int,
                num_samples: int, scratch: Path) -> Any:  # fmt: skip
    """The SweepSpec a method runs: a copy of the shipped YAML with the method's searcher and
    scheduler, validated with the benchmark's overrides like `visiontune tune` options."""
    from visiontune.spec import load_spec

    raw = copy.deepcopy(shipped_raw)
    raw["searcher"], raw["scheduler"] = method.sections(shipped_raw)
    path = scratch / f"{method.key}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    overrides = {"num_samples": num_samples, "max_epochs": settings.epochs, "seed": seed,
                 "data": settings.data_source}  # fmt: skip
    return load_spec(path, overrides, settings.assignments)


def run_visiontune(spec: Any, data: Any, storage: Path, name: str) -> Path:
    """The sweep as `visiontune tune` runs it (on the Ray session this benchmark started)."""
    from visiontune.storage import open_experiment
    from visiontune.sweep import run_sweep

    return run_sweep(spec, data, open_experiment(storage, name))


def run_peer(spec: Any, data: Any, storage: Path, name: str, slots: int) -> Path:
    """Ray's stock OptunaSearch + ASHAScheduler as a Ray user writes them, around the sweep's
    own trainable, parameter space, seed points and ASHA settings, with `slots` trials at once.
    Ray's default loggers are on (the sweep turns them off for itself; see compat)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from visiontune.sweep import wrapped_trainable

    asha = {k: v for k, v in spec.scheduler.items() if k != "type"}
    searcher = OptunaSearch(
        space={key: dist.to_optuna() for key, dist in spec.search.items()},
        metric=spec.metric,
        mode=spec.mode,
        points_to_evaluate=[dict(point) for point in spec.seeds.values()],
        seed=spec.searcher["seed"],
    )
    scheduler = ASHAScheduler(metric=spec.metric, mode=spec.mode, max_t=spec.epochs, **asha)
    tuner = tune.Tuner(
        wrapped_trainable(spec, data),
        param_space=dict(spec.fixed),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=spec.num_samples,
            max_concurrent_trials=slots,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=spec.metric,
                checkpoint_score_order=spec.mode,
            ),
        ),
    )
    os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)  # Ray's defaults, as for a user
    tuner.fit()
    return storage / name


# --- what a sweep picked, and its test score ----------------------------------------------


class _ReachedEpoch(Exception):
    """Ends a retraining at the epoch whose checkpoint was wanted."""


def retrain_and_test(task: Any, config: Mapping[str, Any], data: Any, epoch: int,
                     metric: str) -> tuple[float, dict[str, Any]]:  # fmt: skip
    """Train `config` again up to `epoch` (same seed, same budget: the run a trial made) and
    evaluate that epoch's checkpoint on the test split; (validation score, test metrics)."""
    from visiontune.trainables.contract import TrainContext
    from visiontune.trainables.device import local_device, releasing_memory

    found: dict[str, Any] = {}

    def at_epoch(metrics: dict[str, float], checkpoint_dir: Path) -> None:
        if int(metrics["epoch"]) < epoch:
            return
        found["val"] = float(metrics[metric])
        found["test"] = task.evaluate_checkpoint(checkpoint_dir, data, "test")
        raise _ReachedEpoch

    device = local_device()
    settings = task.build_config(dict(config), "retrained pick")
    with (
        tempfile.TemporaryDirectory(prefix="vt-retrain-") as work,
        releasing_memory(device),
        suppress(_ReachedEpoch),
    ):
        task.train(settings, data, TrainContext(device, Path(work), at_epoch))
    return found["val"], found["test"]


def tuned_best_row(exp_dir: Path) -> dict[str, Any] | None:
    from visiontune.analysis.results import read_test_results

    rows = read_test_results(exp_dir / "test_results.json")
    return next((row for row in rows if row["role"] == "tuned best"), None)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Train and evaluate in this process with a trial's thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pick_test_score(sweep: Sweep, spec: Any, data: Any) -> tuple[float, str]:
    """(test score of the picked trial-epoch, where it came from): the sweep's own tuned best
    row if it is that trial-epoch, else its kept checkpoint, else a retraining."""
    from visiontune.trainables import load_task

    key = f"test_{spec.metric.removeprefix('val_')}"
    pick, task = sweep.pick, load_task(spec.task)
    row = tuned_best_row(sweep.path) if sweep.method != PEER else None
    if row and row["trial_id"] == pick["trial_id"] and row["epoch"] == pick["epoch"]:
        return float(row[key]), "sweep"
    kept = sweep.path / pick["dir"] / pick["checkpoint"]
    with torch_threads(int(spec.cpus_per_trial)):
        if pick["checkpoint"] and kept.is_dir():
            return float(task.evaluate_checkpoint(kept, data, "test")[key]), "checkpoint"
        config = json.loads((sweep.path / pick["dir"] / "params.json").read_text())
        val, test = retrain_and_test(task, config, data, int(pick["epoch"]), spec.metric)
    same = math.isclose(val, pick["value"], rel_tol=0, abs_tol=1e-9)
    return float(test[key]), "retrained" if same else f"retrained (val {val:.4f} != recorded)"


# --- the Optuna study against the trials ----------------------------------------------------


def study_check(exp_dir: Path) -> str:
    """Whether the sweep's study was told what its trials did (see the module docstring): a
    one-line verdict with the PRUNED/COMPLETE/FAIL counts and the first problem, if any."""
    import optuna

    from visiontune.analysis.results import load_experiment

    experiment = load_experiment(exp_dir)
    spec, history = experiment.spec, experiment.history
    trials = experiment.trials.set_index("trial_id")
    study = optuna.load_study(study_name=exp_dir.name, storage=f"sqlite:///{exp_dir / 'optuna.db'}")
    counts: dict[str, int] = {}
    problems: list[str] = []
    for trial in study.trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        if trial.state.name not in ("PRUNED", "COMPLETE"):
            continue
        tid = trial.user_attrs.get("tune_trial_id")
        rows = history[history["trial_id"] == tid] if not history.empty else history
        problem = (
            study_trial_problem(trial, rows, trials.loc[tid], spec)
            if tid in trials.index
            else "no Tune trial"
        )
        if problem:
            problems.append(f"trial {tid}: {problem}")
    verdict = "told right" if not problems else f"{len(problems)} PROBLEM(S): {problems[0]}"
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"{verdict} ({states})"


def study_trial_problem(trial: Any, rows: pd.DataFrame, row: pd.Series, spec: Any) -> str | None:
    """What is wrong with one PRUNED/COMPLETE study trial, None if nothing: its intermediate
    values are its epochs, its state and value follow from its ledger status."""
    scored = rows[rows[spec.metric].notna()] if not rows.empty else rows
    trained = {int(e): float(v) for e, v in zip(scored["epoch"], scored[spec.metric], strict=True)}
    if trial.intermediate_values != trained:
        return (
            f"intermediate values at {sorted(trial.intermediate_values)}, epochs {sorted(trained)}"
        )
    if row["status"] == "STOPPED":
        ok = trial.state.name == "PRUNED" and trial.value == trained[max(trained)]
        return None if ok else f"STOPPED but {trial.state.name} with value {trial.value}"
    best = spec.objective.trial_value([{spec.metric: trained[e]} for e in sorted(trained)])
    ok = trial.state.name == "COMPLETE" and max(trained) == spec.epochs and trial.value == best
    return None if ok else f"{row['status']} but {trial.state.name}, value {trial.value} != {best}"


# --- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    task: str
    epochs: int
    trials: int
    reps: int
    slots: int
    seed: int
    methods: tuple[str, ...]
    data_source: str | None
    assignments: tuple[str, ...]
    out: Path
    quick: bool = False
    data_label: str = ""  # --data, the generated set's size, or "embedded" (for --resume)

    @property
    def budget(self) -> int:
        return self.trials * self.epochs


def run_one(method: Method, rep: int, settings: Settings, shipped: dict[str, Any], data: Any,
            storage: Path) -> tuple[Sweep, Any]:  # fmt: skip
    """One sweep of `method` with searcher seed settings.seed + rep; (the sweep, its spec)."""
    seed = settings.seed + rep
    seeds = len(shipped.get("points_to_evaluate") or {})
    _, scheduler = method.sections(shipped)
    samples = samples_for_budget(settings.budget, settings.epochs, seeds, scheduler)
    spec = method_spec(shipped, method, settings, seed, samples, storage)
    name = f"{method.key}-r{rep}"
    start = time.perf_counter()
    if method.peer:
        path = run_peer(spec, data, storage, name, settings.slots)
    else:
        path = run_visiontune(spec, data, storage, name)
    wall = time.perf_counter() - start
    events = read_events(path, spec.metric)
    return Sweep(method.key, rep, seed, samples, wall, path, events), spec


def analyse(sweep: Sweep, spec: Any, data: Any, budget: int) -> None:
    """Fill in the sweep's curve, final best, pick, its test score and the study check."""
    sweep.curve = curve_on_grid(sweep.events["value"], budget, spec.mode)
    sweep.final_best = float(sweep.curve[-1])
    pick = pick_in_budget(sweep.events, budget, spec.mode)
    if pick is not None:
        sweep.pick = pick.to_dict()
        sweep.test, sweep.test_from = pick_test_score(sweep, spec, data)
    if sweep.method != PEER:
        sweep.study = study_check(sweep.path)


def progress_line(sweep: Sweep, budget: int, total: int, done: int) -> str:
    used = len(sweep.events)
    return (
        f"[{done}/{total}] rep {sweep.rep + 1} {sweep.method:<16} seed {sweep.seed}: "
        f"{sweep.events['trial_id'].nunique()} trials, {used} trial-epochs (budget {budget}), "
        f"best@budget {sweep.final_best:.4f}, test {sweep.test:.4f} [{sweep.test_from}], "
        f"{sweep.wall_s:.0f} s; study: {sweep.study}"
    )


# --- tables and files ---------------------------------------------------------------------


def shares_to_target(curves: np.ndarray, target: float | None, budget: int,
                     mode: str) -> tuple[str, str, str]:  # fmt: skip
    """How much of the budget curves (one row per repetition) need to reach `target`: the share
    for their median curve, how many repetitions reach it ("k/n"), and the median of the
    repetitions' shares (one that never reaches it counts as never); "n/a" without a target."""
    if target is None:
        return "n/a", "n/a", "n/a"
    _, median, _ = quartile_curves(curves)
    at = budget_to_target(median, target, mode)
    per_rep = [budget_to_target(curve, target, mode) for curve in curves]
    reached = sum(x is not None for x in per_rep)
    middle = float(np.median([np.inf if x is None else x for x in per_rep]))
    return (
        fraction_text(None if at is None else at / budget),
        f"{reached}/{len(per_rep)}",
        fraction_text(middle / budget if math.isfinite(middle) else None),
    )


def summary_rows(sweeps: list[Sweep], methods: Sequence[str], budget: int, mode: str,
                 target: float | None) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for key in methods:
        mine = [s for s in sweeps if s.method == key]
        if not mine:
            continue
        shares = shares_to_target(np.vstack([s.curve for s in mine]), target, budget, mode)
        rows.append({
            "method": key,
            "trials": int(np.median([s.events["trial_id"].nunique() for s in mine])),
            "used": int(np.median([len(s.events) for s in mine])),
            "under": sum(len(s.events) < budget for s in mine),
            "final": [s.final_best for s in mine],
            "test": [s.test for s in mine],
            **dict(zip(("fraction", "reached", "rep_fraction"), shares, strict=True)),
            "study": study_summary([s.study for s in mine]),
        })  # fmt: skip
    return rows


def study_summary(verdicts: Sequence[str]) -> str:
    if all(v == "-" for v in verdicts):
        return "-"
    bad = sum("PROBLEM" in v for v in verdicts)
    return f"{len(verdicts) - bad}/{len(verdicts)} right"


def fraction_text(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}"


def table_lines(rows: list[dict[str, Any]], labels: Mapping[str, str], budget: int,
                metric: str) -> list[str]:  # fmt: skip
    header = (
        f"{'method':<16}{'searcher + scheduler':<28}{'trials':>7}{'used':>6}{'under B':>8}"
        f"{'final best ' + metric:>24}{'median':>8}{'test (pick)':>20}{'budget to target':>18}"
        f"{'reps reached':>14}{'per-rep':>13}  study"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['method']:<16}{labels[r['method']]:<28}{r['trials']:>7}{r['used']:>6}"
            f"{r['under']:>8}{mean_std(r['final']):>24}{np.median(r['final']):>8.4f}"
            f"{mean_std(r['test']):>20}{r['fraction']:>18}{r['reached']:>14}"
            f"{r['rep_fraction']:>13}  {r['study']}"
        )
    lines += [
        "",
        f"trials, used: median over reps of trials run and trial-epochs reported (budget B = "
        f"{budget}; 'under B': sweeps that ended before B);",
        "final best: best validation score within B, mean ± std over reps; test (pick): the test "
        "score of the configuration picked within B;",
        "budget to target: first share of B at which the median curve reaches the baseline's "
        "median final best; per-rep: median over reps of the share each needs (a rep that never "
        "reaches it counts as never).",
    ]
    return lines


def rank_tests(sweeps: list[Sweep], methods: Sequence[str]) -> list[str]:
    """Mann-Whitney U (two-sided) of the default's final best vs the baseline's and the peer's."""
    from scipy.stats import mannwhitneyu

    finals = {k: [s.final_best for s in sweeps if s.method == k] for k in methods}
    lines = []
    for other in (BASELINE, PEER):
        a, b = finals.get(DEFAULT, []), finals.get(other, [])
        if not a or not b:
            lines.append(f"Mann-Whitney U, final best, {DEFAULT} vs {other}: not run (no sweeps)")
            continue
        test = mannwhitneyu(a, b, alternative="two-sided")
        lines.append(
            f"Mann-Whitney U, final best, {DEFAULT} vs {other}: U = {test.statistic:.1f}, "
            f"p = {test.pvalue:.3f} (two-sided; n = {len(a)} vs {len(b)}; medians "
            f"{np.median(a):.4f} vs {np.median(b):.4f})"
        )
    return lines


def verdict_line(rows: list[dict[str, Any]], settings: Settings) -> str:
    if settings.task != "classifier":
        return "no efficiency goal for detectors: the study check above is the result"
    default = next((r for r in rows if r["method"] == DEFAULT), None)
    if default is None or not any(r["method"] == BASELINE for r in rows):
        return f"goal ({DEFAULT} <= {GOAL_FRACTION} of the baseline's budget): not measured"
    share = default["fraction"]
    met = share != "not reached" and float(share) <= GOAL_FRACTION
    if settings.quick:
        return f"goal not judged on a --quick run ({DEFAULT} needed {share} of the budget)"
    return (
        f"goal: {DEFAULT} reaches the baseline's median final best within <= {GOAL_FRACTION} of "
        f"its budget: {share} -> {'met' if met else 'MISSED'}"
    )


def write_curves(out: Path, sweeps: list[Sweep], methods: Sequence[str], labels: Mapping[str, str],
                 budget: int, metric: str, target: float | None) -> None:  # fmt: skip
    """curves.csv (median and IQR per method and trial-epoch) and curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, budget + 1)
    frames = []
    figure, axes = plt.subplots(figsize=(10, 6))
    for key in methods:
        mine = [s.curve for s in sweeps if s.method == key]
        if not mine:
            continue
        q25, q50, q75 = quartile_curves(np.vstack(mine))
        frames.append(pd.DataFrame({"method": key, "trial_epochs": x, "q25": q25,
                                    "median": q50, "q75": q75}))  # fmt: skip
        (line,) = axes.plot(x, q50, label=f"{key} ({labels[key]})")
        axes.fill_between(x, q25, q75, color=line.get_color(), alpha=0.12)
    if target is not None:
        axes.axhline(target, color="black", linestyle="--", linewidth=1,
                     label="baseline's median final best")  # fmt: skip
        axes.axvline(GOAL_FRACTION * budget, color="grey", linestyle=":", linewidth=1,
                     label=f"{GOAL_FRACTION} of the budget")  # fmt: skip
    axes.set_xlabel("trial-epochs spent (results in the order they were reported)")
    axes.set_ylabel(f"best {metric} so far (median, IQR over reps)")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(out / "curves.png", dpi=100)
    plt.close(figure)
    pd.concat(frames).to_csv(out / "curves.csv", index=False, float_format="%.6g")


def sweep_record(sweep: Sweep) -> dict[str, Any]:
    pick = sweep.pick
    return {
        "method": sweep.method, "rep": sweep.rep + 1, "searcher_seed": sweep.seed,
        "num_samples": sweep.num_samples, "trials": sweep.events["trial_id"].nunique(),
        "trial_epochs": len(sweep.events), "final_best": sweep.final_best,
        "pick_trial": pick.get("trial_id", ""), "pick_epoch": pick.get("epoch", ""),
        "test": sweep.test, "test_from": sweep.test_from, "wall_s": round(sweep.wall_s, 1),
        "study": sweep.study,
    }  # fmt: skip


def append_csv(path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, mode="a", header=not path.exists(), index=False, float_format="%.6g")


# --- set-up -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 methods x 2 reps, tiny (< 5 min)")
    parser.add_argument(
        "--task", default="classifier", choices=["classifier", "faster_rcnn", "yolo"]
    )
    parser.add_argument(
        "--methods", help="comma-separated (default: all; --quick: random_fifo,default)"
    )
    parser.add_argument(
        "--reps", type=int, help="repetitions (searcher seeds), default 5 (quick 2)"
    )
    parser.add_argument("--trials", type=int, help="baseline trials: budget = trials x epochs (12)")
    parser.add_argument("--epochs", type=int, help="epochs per trial, max_t (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="searcher seed of repetition 1")
    parser.add_argument(
        "--slots", type=int, default=2, help="concurrent trials (Ray gets slots x cpu)"
    )
    parser.add_argument("--data", help="an ImageFolder dir (classifier) or YOLO data.yaml")
    parser.add_argument("--images", type=int, help="generate an ir-solar set of this size instead")
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        metavar="KEY=VALUE",
        help="fixed trainable setting (default for the classifier: width=8)",
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "search_efficiency"))
    parser.add_argument("--storage", help="keep the sweeps here (default: a temporary directory)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the sweeps --out already records for these settings; run only the rest",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, table: Mapping[str, Method], scratch: Path) -> Settings:
    detector = args.task != "classifier"
    quick_methods = "default,tpe_hyperband" if detector else f"{BASELINE},{DEFAULT}"
    default_methods = quick_methods if detector else ",".join(table)
    methods = tuple((args.methods or (quick_methods if args.quick else default_methods)).split(","))
    unknown = [m for m in methods if m not in table]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown} (known: {', '.join(table)})")
    quick = (
        {"reps": 2, "trials": 5, "epochs": 3}
        if not detector
        else {"reps": 1, "trials": 4, "epochs": 2}
    )
    full = {"reps": 5, "trials": 12, "epochs": 6}
    sizes = {k: getattr(args, k) or (quick if args.quick else full)[k] for k in full}
    assignments = args.assignments or (["width=8"] if not detector else [])
    return Settings(
        task=args.task, epochs=sizes["epochs"], trials=sizes["trials"], reps=sizes["reps"],
        slots=args.slots, seed=args.seed, methods=methods,
        data_source=data_source(args, scratch), assignments=tuple(assignments),
        out=Path(args.out).expanduser().resolve(), quick=args.quick,
        data_label=data_label(args),
    )  # fmt: skip


def data_label(args: argparse.Namespace) -> str:
    """The data a run uses, stable across runs (a generated set lives in a new temporary dir)."""
    if args.data:
        return str(Path(args.data).expanduser().resolve())
    if args.quick or args.images:
        return f"generated ({args.images or 'quick'} images)"
    return "embedded"


def data_source(args: argparse.Namespace, scratch: Path) -> str | None:
    """--data, or a generated set (--images; --quick: 600 IR images or a 16/8/8-image PV set),
    or None: the spec's embedded set."""
    if args.data:
        return str(Path(args.data).expanduser().resolve())
    if args.task != "classifier":
        if not args.quick:
            return None
        from visiontune.data import pv_arrays

        return str(pv_arrays.write_yolo(scratch / "pv", {"train": 16, "val": 8, "test": 8}))
    images = args.images or (600 if args.quick else None)
    if images is None:
        return None
    from visiontune.data import ir_solar

    return str(ir_solar.write_imagefolder(scratch / "ir", num_images=images, seed=0))


def header_lines(settings: Settings, shipped: dict[str, Any], table: Mapping[str, Method],
                 dropped: list[str]) -> list[str]:  # fmt: skip
    import optuna
    import ray
    import torch

    seeds = len(shipped.get("points_to_evaluate") or {})
    lines = [
        f"python {sys.version.split()[0]}, ray {ray.__version__}, optuna {optuna.__version__}, "
        f"torch {torch.__version__}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        f"task {settings.task}, data {settings.data_source or shipped['data']['source']}, "
        f"--set {' '.join(settings.assignments) or '(none)'}, {settings.epochs} epochs per trial; "
        f"budget B = {settings.trials} x {settings.epochs} = {settings.budget} trial-epochs, "
        f"{settings.slots} slots; {seeds} seed point(s) per sweep",
        f"searcher seeds: {', '.join(str(settings.seed + r) for r in range(settings.reps))}",
    ]
    for key in settings.methods:
        _, scheduler = table[key].sections(shipped)
        samples = samples_for_budget(settings.budget, settings.epochs, seeds, scheduler)
        lines.append(f"  {key:<16} {table[key].label(shipped):<28} num_samples {samples}")
    if dropped:
        lines.append(f"  (same settings as {DEFAULT}, left out: {', '.join(dropped)})")
    return lines


class Output:
    """Lines for the terminal (kept while Ray's console output goes to a file) and summary.txt."""

    def __init__(self, terminal: TextIO) -> None:
        self.terminal, self.lines = terminal, []

    def say(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.terminal, flush=True)
            self.lines.append(line)


def run_all(settings: Settings, shipped: dict[str, Any], table: Mapping[str, Method],
            storage: Path, output: Output) -> tuple[list[Sweep], Any]:  # fmt: skip
    """Every sweep, one at a time, repetition by repetition (each repetition runs every method,
    so drifting machine load hits all of them alike); returns the sweeps and a spec."""
    import ray

    from visiontune.data import load_dataset
    from visiontune.trainables import load_task

    first = method_spec(shipped, table[settings.methods[0]], settings, settings.seed, 1, storage)
    data = load_dataset(load_task(first.task).DATA_FORMAT, first.data_source, first.data_options)
    cpus = settings.slots * max(1, math.ceil(first.cpus_per_trial))
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True)
    sweeps: list[Sweep] = []
    total = settings.reps * len(settings.methods)
    recorded = recorded_sweeps(settings, shipped, table, first.mode)
    try:
        for rep in range(settings.reps):
            for key in settings.methods:
                if (key, rep) in recorded:
                    sweeps.append(recorded[key, rep])
                    output.say(progress_line(sweeps[-1], settings.budget, total, len(sweeps)))
                    continue
                sweep, spec = run_one(table[key], rep, settings, shipped, data, storage)
                analyse(sweep, spec, data, settings.budget)
                sweeps.append(sweep)
                record_sweep(settings.out, sweep, method_config(table[key], shipped))
                output.say(progress_line(sweep, settings.budget, total, len(sweeps)))
    finally:
        ray.shutdown()
    return sweeps, first


def record_sweep(out: Path, sweep: Sweep, config: str) -> None:
    append_csv(out / "runs.csv", pd.DataFrame([{**sweep_record(sweep), "config": config}]))
    events = sweep.events.drop(columns=["dir", "checkpoint"]).assign(
        method=sweep.method, rep=sweep.rep + 1, order=range(1, len(sweep.events) + 1)
    )
    append_csv(
        out / "events.csv",
        events[["method", "rep", "order", "trial_id", "epoch", "value", "timestamp"]],
    )


# --- resuming a run from its recorded sweeps ------------------------------------------------


def method_config(method: Method, shipped: Mapping[str, Any]) -> str:
    """What a method runs (its searcher and scheduler sections, peer or not), as recorded with
    each of its sweeps: a recorded sweep is reused only while this is unchanged."""
    searcher, scheduler = method.sections(shipped)
    searcher = {k: v for k, v in searcher.items() if k != "seed"}  # the rep sets the seed
    return json.dumps({"searcher": searcher, "scheduler": scheduler, "peer": method.peer},
                      sort_keys=True)  # fmt: skip


def run_fingerprint(settings: Settings, shipped: Mapping[str, Any]) -> dict[str, Any]:
    """Everything besides the method that decides what a sweep does: a resumed run must match."""
    fixed = {k: v for k, v in shipped.items() if k not in ("searcher", "scheduler", "num_samples")}
    return {
        "task": settings.task, "epochs": settings.epochs, "trials": settings.trials,
        "slots": settings.slots, "seed": settings.seed, "data": settings.data_label,
        "assignments": list(settings.assignments), "spec": fixed,
    }  # fmt: skip


def start_records(settings: Settings, shipped: Mapping[str, Any], resume: bool) -> None:
    """Write settings.json for this run; without --resume (or when the recorded run had other
    settings, which is refused) the recorded sweeps are removed first."""
    path = settings.out / "settings.json"
    fingerprint = run_fingerprint(settings, shipped)
    if resume and path.exists():
        recorded = json.loads(path.read_text())
        if recorded != fingerprint:
            changed = sorted(k for k in fingerprint if recorded.get(k) != fingerprint[k])
            print(f"error: --resume: {path}: recorded with other settings ({', '.join(changed)}); "
                  "rerun without --resume or with another --out", file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
    else:
        for name in ("runs.csv", "events.csv", "summary.txt"):
            (settings.out / name).unlink(missing_ok=True)
    path.write_text(json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")


def recorded_sweeps(settings: Settings, shipped: Mapping[str, Any],
                    table: Mapping[str, Method], mode: str) -> dict[tuple[str, int], Sweep]:  # fmt: skip
    """The sweeps runs.csv and events.csv already hold for this run's methods and repetitions,
    with the method's configuration unchanged, keyed (method, rep); the files are rewritten to
    hold only those (a method whose settings changed runs again)."""
    runs_path, events_path = settings.out / "runs.csv", settings.out / "events.csv"
    if not runs_path.exists() or not events_path.exists():
        return {}
    runs = pd.read_csv(runs_path, dtype={"pick_trial": str}, keep_default_na=False)
    events = pd.read_csv(events_path, dtype={"trial_id": str})
    wanted = {(k, rep + 1): method_config(table[k], shipped) for k in settings.methods
              for rep in range(settings.reps)}  # fmt: skip
    keep = runs[[wanted.get((m, int(r))) == c for m, r, c in
                 zip(runs["method"], runs["rep"], runs["config"], strict=True)]]  # fmt: skip
    keep = keep.drop_duplicates(["method", "rep"], keep="last")
    pairs = set(zip(keep["method"], keep["rep"].astype(int), strict=True))
    kept_events = events[[(m, int(r)) in pairs for m, r in
                          zip(events["method"], events["rep"], strict=True)]]  # fmt: skip
    keep.to_csv(runs_path, index=False, float_format="%.6g")
    kept_events.to_csv(events_path, index=False, float_format="%.6g")
    sweeps = {}
    for row in keep.to_dict("records"):
        mine = kept_events[
            (kept_events["method"] == row["method"]) & (kept_events["rep"] == row["rep"])
        ]
        sweeps[row["method"], int(row["rep"]) - 1] = sweep_from_record(row, mine, settings, mode)
    return sweeps


def sweep_from_record(row: Mapping[str, Any], events: pd.DataFrame, settings: Settings,
                      mode: str) -> Sweep:  # fmt: skip
    """A Sweep as analyse() left it, from its runs.csv row and its events.csv rows."""
    events = events.sort_values("order")[["trial_id", "epoch", "value", "timestamp"]]
    events = events.reset_index(drop=True)
    curve = curve_on_grid(events["value"], settings.budget, mode)
    pick = {"trial_id": row["pick_trial"], "epoch": row["pick_epoch"]} if row["pick_trial"] else {}
    return Sweep(
        row["method"], int(row["rep"]) - 1, int(row["searcher_seed"]), int(row["num_samples"]),
        float(row["wall_s"]), Path(), events, final_best=float(curve[-1]), pick=pick,
        test=float(row["test"]) if row["test"] != "" else math.nan,
        test_from=f"{row['test_from']}, recorded", study=str(row["study"]), curve=curve,
    )  # fmt: skip


def results(sweeps: list[Sweep], settings: Settings, spec: Any,
            labels: Mapping[str, str]) -> tuple[list[str], float | None]:  # fmt: skip
    """The summary tables' lines and the target (the baseline's median final best)."""
    detector = settings.task != "classifier"
    baseline = [s.final_best for s in sweeps if s.method == BASELINE]
    target = float(np.median(baseline)) if baseline else None
    rows = summary_rows(sweeps, settings.methods, settings.budget, spec.mode, target)
    lines = [
        "",
        f"target: the baseline's ({BASELINE}) median final best = "
        + (
            f"{target:.4f} {spec.metric} at {settings.budget} trial-epochs"
            if target is not None
            else "n/a"
        ),
        "",
        *table_lines(rows, labels, settings.budget, spec.metric),
        "",
        *([] if detector else rank_tests(sweeps, settings.methods)),
        verdict_line(rows, settings),
    ]
    retrained = [s for s in sweeps if s.test_from.startswith("retrained")]
    if retrained:
        matched = sum(s.test_from.removesuffix(", recorded") == "retrained" for s in retrained)
        lines.append(f"picks retrained for their test score: {len(retrained)}, validation score "
                     f"reproduced in {matched}")  # fmt: skip
    return lines, target


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from trainable_throughput import console_to

    from visiontune.sweep import keep_ray_on_loopback

    keep_ray_on_loopback()
    os.environ.setdefault("RAY_worker_niceness", "0")  # trials share the machine with the driver
    start = time.perf_counter()
    shipped = yaml.safe_load((REPO / "search_spaces" / f"{args.task}.yaml").read_text())
    table = method_table(shipped)
    dropped = duplicates_of_default(table, shipped)
    table = {k: m for k, m in table.items() if k not in dropped}
    with tempfile.TemporaryDirectory(prefix="vt-search-efficiency-") as scratch:
        storage = Path(args.storage).expanduser().resolve() if args.storage else Path(scratch)
        settings = settings_from(args, table, Path(scratch))
        settings.out.mkdir(parents=True, exist_ok=True)
        storage.mkdir(parents=True, exist_ok=True)
        start_records(settings, shipped, args.resume)
        terminal = os.fdopen(os.dup(sys.stdout.fileno()), "w")
        output = Output(terminal)
        output.say(*header_lines(settings, shipped, table, dropped))
        with console_to(storage / "console.log"):  # Ray's and Tune's output, kept with the sweeps
            sweeps, spec = run_all(settings, shipped, table, storage, output)
        terminal.close()
    labels = {k: table[k].label(shipped) for k in settings.methods}
    lines, target = results(sweeps, settings, spec, labels)
    lines.append(
        f"wall time {time.perf_counter() - start:.0f} s (the sweeps' own: "
        f"{sum(s.wall_s for s in sweeps):.0f} s); files: {settings.out}"
    )
    print("\n".join(lines))
    write_curves(
        settings.out, sweeps, settings.methods, labels, settings.budget, spec.metric, target
    )
    (settings.out / "summary.txt").write_text("\n".join(output.lines + lines) + "\n")


if __name__ == "__main__":
    main()
