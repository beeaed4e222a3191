"""The report's figures, each a matplotlib Figure drawn without pyplot: nothing global is
touched, no window opens and no backend is chosen at import (`png` renders with Agg). A function
whose data cannot make its plot raises NotDrawn with the reason, which the report prints instead
of saving a blank image. `report_plots` draws every plot the report links.

Optuna's `optuna.visualization.matplotlib` draws through pyplot and sets the ggplot style for the
whole process (`plt.style.use`), so the figures are drawn here; the numbers they need from the
study (trial numbers, importances) come from analysis/study.py.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from visiontune.analysis.results import Experiment
from visiontune.analysis.study import StudyFacts
from visiontune.best import Objective
from visiontune.spec_file import Choice, Range

LABELS = {  # metric -> axis label with its unit
    "acc": "accuracy (fraction correct, 0–1)",
    "loss": "loss (cross-entropy, nats)",
    "map": "mAP@[.5:.95] (fraction, 0–1)",
    "map50": "mAP@0.5 (fraction, 0–1)",
    "ar100": "AR@100 (fraction, 0–1)",
    "precision": "precision (fraction, 0–1)",
    "recall": "recall (fraction, 0–1)",
}
SPLITS = {"train": "train", "val": "validation", "test": "test"}
PER_CLASS_KEYS = {  # per_class key in test_results.json -> what it is; AP first
    "ap": "AP@[.5:.95]",  # Faster R-CNN
    "map": "AP@[.5:.95]",  # YOLO
    "map50": "AP@0.5",
    "precision": "precision",
    "recall": "recall",
}
DETECTORS = ("faster_rcnn", "yolo")


@dataclass(frozen=True)
class Plot:
    file: str  # its name in the report directory
    caption: str  # what it shows
    png: bytes | None = None  # None: not drawn, for `reason`
    reason: str = ""


class NotDrawn(Exception):
    """Why a plot cannot be drawn from the experiment's data."""


def metric_label(metric: str) -> str:
    """`val_acc` -> "validation accuracy (fraction correct, 0–1)"; a detector's unprefixed
    metrics are validation metrics (the trainables report them on the val split)."""
    split, _, name = metric.partition("_")
    if split not in SPLITS or name not in LABELS:
        split, name = "val", metric
    return f"{SPLITS[split]} {LABELS[name]}" if name in LABELS else f"{metric} (as reported)"


def new_figure(width: float = 7.5, height: float = 4.5) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (Agg, picked by savefig for this figure only)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _best_so_far(axes: Any, x: Any, values: pd.Series, mode: str) -> None:
    best = values.cummax() if mode == "max" else values.cummin()
    axes.step(x, best, where="post", color="C3", label="best so far")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)


def history_figure(
    trials: pd.DataFrame,
    history: pd.DataFrame,
    objective: Objective,
    numbers: Mapping[str, int],
    started: float | None = None,
) -> Figure:
    """Best-so-far of the metric vs trial number (the study's; start order where a trial has
    none) and vs wall time since the sweep started (every reported epoch)."""
    metric = objective.metric
    scored = trials[trials[metric].notna()] if metric in trials else trials.iloc[:0]
    if len(scored) < 2:
        raise NotDrawn(f"{len(scored)} trial(s) with a {metric}; an optimization history needs 2")
    if "timestamp" not in history:
        raise NotDrawn("the trials' results carry no timestamp (result.json)")
    epochs = history[history[metric].notna()].sort_values("timestamp", kind="stable")
    start_of = epochs.groupby("trial_id")["timestamp"].min()
    order = sorted(scored["trial_id"], key=lambda t: (numbers.get(t, math.inf), start_of.get(t)))
    by_number = scored.set_index("trial_id").loc[order].reset_index()
    seconds = epochs["timestamp"] - (started if started is not None else start_of.min())
    figure = new_figure(11, 4.5)
    left, right = figure.subplots(1, 2, sharey=True)
    for status, group in by_number.groupby("status"):
        left.scatter(group.index, group[metric], s=22, alpha=0.7, label=f"trial ({status})")
    _best_so_far(left, by_number.index, by_number[metric], objective.mode)
    left.set(xlabel="trial number (order of sampling)", ylabel=metric_label(metric))
    left.xaxis.get_major_locator().set_params(integer=True)
    left.set_title(f"Best {metric} so far vs trial number ({len(by_number)} trials)")
    right.scatter(seconds, epochs[metric], s=10, alpha=0.4, label="an epoch's value")
    _best_so_far(right, seconds, epochs[metric], objective.mode)
    right.set(xlabel="wall time since the sweep started (s)", xlim=(0, None))
    right.set_title(f"Best {metric} so far vs wall time ({len(epochs)} epochs)")
    return figure


def learning_curves_figure(
    trials: pd.DataFrame, history: pd.DataFrame, metric: str, scheduler: str = "scheduler"
) -> Figure:
    """The metric at every epoch of every trial; the best trial and the seed points named,
    trials stopped early (STOPPED) marked where they stopped, errored ones where they ended."""
    if history.empty or metric not in history or history[metric].notna().sum() == 0:
        raise NotDrawn(f"no trial reported {metric} for an epoch")
    info = trials.set_index("trial_id")
    ranked_first = trials[metric].notna().iloc[0] if metric in trials else False
    best = trials["trial_id"].iloc[0] if ranked_first else None
    figure = new_figure()
    axes = figure.add_subplot()
    shown: set[str] = set()  # each legend entry once
    for trial_id, curve in history.groupby("trial_id", sort=False):
        x, y = curve["training_iteration"], curve[metric]
        seed, status = info["seed"].get(trial_id, ""), info["status"].get(trial_id, "")
        if trial_id == best:
            style = {"color": "C1", "lw": 2.2, "marker": "o", "ms": 3, "zorder": 3}
            label = f"tuned best ({trial_id}{', ' + seed if seed else ''})"
        elif seed:
            style, label = {"color": "C2", "lw": 1.5, "ls": "--"}, f"{seed} ({trial_id})"
        else:
            style, label = {"color": "C0", "lw": 1, "alpha": 0.6}, "searched trial"
        axes.plot(x, y, label=None if label in shown else label, **style)
        shown.add(label)
        if status in ("STOPPED", "ERROR"):
            stopped = status == "STOPPED"
            label = f"stopped early by {scheduler}" if stopped else "errored"
            axes.plot(x.iloc[-1], y.iloc[-1], "X" if stopped else "v", color="C3" if stopped else "k",
                      ms=9, zorder=4, label=None if label in shown else label)  # fmt: skip
            shown.add(label)
    axes.set(xlabel="epoch", ylabel=metric_label(metric))
    count = history["trial_id"].nunique()
    axes.set_title(f"Learning curves: {metric} at each epoch of {count} trials")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    return figure


def _position(values: pd.Series, dist: Range | Choice) -> tuple[np.ndarray, list[str]]:
    """Each value's place in its search range, 0 (low) to 1 (high), log-scaled where the
    distribution is; and the tick texts for the low and high ends (every choice for a choice)."""
    if isinstance(dist, Choice):
        spread = max(len(dist.values) - 1, 1)
        where = [dist.values.index(v) / spread if v in dist.values else np.nan for v in values]
        return np.array(where, dtype=float), [str(v) for v in dist.values]
    low, high, v = dist.low, dist.high, pd.to_numeric(values, errors="coerce").to_numpy(float)
    if dist.log:
        low, high, v = math.log10(low), math.log10(high), np.log10(v)
    place = (v - low) / (high - low) if high > low else np.full_like(v, 0.5)
    return place, [f"{dist.low:.3g}", f"{dist.high:.3g}"]


def parallel_coordinates_figure(
    trials: pd.DataFrame, search: Mapping[str, Range | Choice], objective: Objective
) -> Figure:
    """One line per trial across the searched parameters (each axis its search range, low at
    the bottom), coloured by the trial's metric; the best trials drawn on top."""
    metric = objective.metric
    params = [k for k in search if f"config/{k}" in trials]
    scored = trials[trials[metric].notna()] if metric in trials else trials.iloc[:0]
    if not params or len(scored) < 2:
        raise NotDrawn(
            f"{len(scored)} trial(s) with a {metric} over {len(params)} searched parameter(s); needs 2 trials"
        )
    scored = scored.iloc[::-1]  # trials are ranked best first: draw the best last, on top
    columns = [_position(scored[f"config/{k}"], search[k]) for k in params]
    grid = np.column_stack([place for place, _ in columns])
    norm = Normalize(scored[metric].min(), scored[metric].max())
    mappable = ScalarMappable(norm=norm, cmap="viridis" if objective.mode == "max" else "viridis_r")
    figure = new_figure(max(7.5, 0.9 * len(params) + 2), 5)
    axes = figure.add_subplot()
    for row, value in zip(grid, scored[metric], strict=True):
        axes.plot(range(len(params)), row, color=mappable.to_rgba(value), lw=1.4, alpha=0.85)
    for i, (_, ticks) in enumerate(columns):
        axes.axvline(i, color="0.6", lw=0.8)
        for j, text in enumerate(ticks):
            y = j / max(len(ticks) - 1, 1)
            axes.text(i, y, text, fontsize=7, va="center", bbox={"fc": "white", "lw": 0, "pad": 1})
    log = {k for k in params if getattr(search[k], "log", False)}
    axes.set_xticks(
        range(len(params)),
        [f"{k} (log)" if k in log else k for k in params],
        rotation=35,
        ha="right",
    )
    axes.set(ylim=(-0.05, 1.05), ylabel="place in the search range (0 = low, 1 = high)")
    axes.set_title(
        f"Parallel coordinates: {len(scored)} trials' searched parameters, coloured by {metric}"
    )
    figure.colorbar(mappable, ax=axes, label=metric_label(metric))
    return figure


def importance_figure(facts: StudyFacts, metric: str) -> Figure:
    """Horizontal bars: each searched parameter's PED-ANOVA importance (shares summing to 1)."""
    if not facts.importances:
        raise NotDrawn(facts.reason or "no importances were computed")
    ranked = sorted(facts.importances.items(), key=lambda item: item[1])
    names, shares = zip(*ranked, strict=True)
    figure = new_figure(7.5, 0.3 * len(names) + 1.5)
    axes = figure.add_subplot()
    axes.barh(names, shares, color="C0")
    axes.set(xlabel="importance (PED-ANOVA, share of the total, 0–1)", ylabel="searched parameter")
    axes.set_title(f"Hyperparameter importance for {metric} ({facts.complete} complete trials)")
    axes.grid(axis="x", alpha=0.3)
    return figure


def confirm_figure(frame: pd.DataFrame, metrics: Sequence[str]) -> Figure:
    """Box and strip plot of each metric per `role` (one point per confirmation run), for the
    metrics of `metrics` that the rows hold numbers for."""
    present = [m for m in metrics if m in frame and frame[m].notna().any()]
    if "role" not in frame or not present:
        raise NotDrawn(f"no confirmation rows with a role and any of {', '.join(metrics)}")
    groups = {role: rows for role, rows in frame.groupby("role", sort=False)}
    figure = new_figure(max(5.0, 3.5 * len(present)), 4.5)
    for axes, metric in zip(np.atleast_1d(figure.subplots(1, len(present))), present, strict=True):
        values = [rows[metric].dropna().to_numpy(float) for rows in groups.values()]
        axes.boxplot(values, tick_labels=list(groups), widths=0.5)
        for i, v in enumerate(values, start=1):
            axes.scatter(i + np.linspace(-0.1, 0.1, len(v)), v, s=18, color="C1", zorder=3)
        axes.set(ylabel=metric_label(metric), xlabel="configuration")
        axes.set_title(f"{metric} of each run ({sum(map(len, values))} runs)")
        axes.tick_params(axis="x", labelrotation=20)
    figure.suptitle("Confirmation runs: spread over seeds of each configuration")
    return figure


def _per_class_key(rows: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The first PER_CLASS_KEYS entry any class of any row has a value for."""
    values = [v or {} for per_class in rows.values() for v in per_class.values()]
    return next((k for k in PER_CLASS_KEYS if any(v.get(k) is not None for v in values)), None)


def per_class_figure(
    test: Sequence[Mapping[str, Any]], names: Sequence[str], roles: Sequence[str]
) -> Figure:
    """Grouped bars per class of the test split's per-class AP for each role (the seed
    configuration beside the tuned best); another per-class metric where no AP was recorded."""
    rows = {r["role"]: r["per_class"] for r in test if r["role"] in roles and r.get("per_class")}
    key = _per_class_key(rows)
    if key is None:
        raise NotDrawn("test_results.json holds no per-class results")
    names = list(names) or sorted({n for per_class in rows.values() for n in per_class})
    figure = new_figure(max(7.5, 1.2 * len(names) + 2), 4.5)
    axes = figure.add_subplot()
    width = 0.8 / len(rows)
    for i, (role, per_class) in enumerate(rows.items()):
        values = [(per_class.get(n) or {}).get(key) for n in names]
        heights = [np.nan if v is None else 100 * v for v in values]
        where = np.arange(len(names)) + (i - (len(rows) - 1) / 2) * width
        axes.bar(where, heights, width, label=role)
        for x in where[np.isnan(heights)]:  # not 0: no value recorded (e.g. no such object)
            axes.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7)
    what = PER_CLASS_KEYS[key]
    note = "" if "AP" in what else " (per-class AP not recorded)"
    axes.set_xticks(range(len(names)), names, rotation=20)
    axes.set(xlabel="class", ylabel=f"test {what} (%)")
    axes.set_title(f"Per-class {what} on the test split: {' vs '.join(rows)}{note}")
    axes.legend(fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    return figure


def _drawn(file: str, caption: str, draw: Callable[[], Figure]) -> Plot:
    try:
        return Plot(file, caption, png(draw()))
    except NotDrawn as exc:
        return Plot(file, caption, reason=str(exc))


def report_plots(
    experiment: Experiment, facts: StudyFacts, confirm: pd.DataFrame | None = None
) -> list[Plot]:
    """Every plot of the report, drawn or with the reason it is not: the confirmation spread
    only with confirmation runs, the per-class bars only for a detector."""
    spec, trials, history = experiment.spec, experiment.trials, experiment.history
    metric, started = spec.metric, experiment.summary.get("started")
    scheduler = str(spec.scheduler.get("type", "scheduler")).upper()
    draws = {
        "optimization_history.png": (f"Best {metric} so far vs trial number and wall time",
            lambda: history_figure(trials, history, spec.objective, facts.numbers, started)),
        "learning_curves.png": (f"Learning curves: {metric} at each epoch of every trial",
            lambda: learning_curves_figure(trials, history, metric, scheduler)),
        "parallel_coordinates.png": (f"Searched parameters of each trial, coloured by {metric}",
            lambda: parallel_coordinates_figure(trials, spec.search, spec.objective)),
        "param_importance.png": (f"Hyperparameter importance for {metric} (PED-ANOVA)",
            lambda: importance_figure(facts, metric)),
    }  # fmt: skip
    if confirm is not None:
        tested = "test_" + metric.removeprefix("val_")  # as the tasks' summarize writes it
        draws["confirm_spread.png"] = ("Confirmation runs: spread over seeds",
            lambda: confirm_figure(confirm, [metric, tested]))  # fmt: skip
    if spec.task in DETECTORS:
        roles = [*list(spec.seeds)[:1], "tuned best"]
        draws["per_class_ap.png"] = ("Per-class test AP: seed configuration vs tuned best",
            lambda: per_class_figure(experiment.test, experiment.names, roles))  # fmt: skip
    return [_drawn(file, caption, draw) for file, (caption, draw) in draws.items()]


PLOT_FILES = (  # every file report_plots can write: an older report's copy is removed
    "optimization_history.png", "learning_curves.png", "parallel_coordinates.png",
    "param_importance.png", "confirm_spread.png", "per_class_ap.png",
)  # fmt: skip
