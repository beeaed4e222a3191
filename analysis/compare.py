"""Several sweeps side by side: one figure and one table (TPE vs random search, two datasets,
two budgets).

    visiontune compare runs/tpe runs/random [--out DIR]       # default DIR: ./compare-<UTC time>
    visiontune compare s3://bucket/runs/tpe s3://bucket/runs/random --out cmp

compare.png: the best-so-far of the sweeps' metric against the budget spent in trial-epochs and
against wall time, one line per sweep (the legend names the experiment). compare.md and
compare.csv: one row per sweep with the trial-epochs it used, its best validation score (by the
one definition of best, visiontune/best.py), the tuned best's test score, the confirmed test
score where `visiontune confirm` ran (confirm.json) and the wall time.

Why the axes are what they are:
- A trial-epoch is one epoch a trial reported, taken in the order they were reported (Ray's
  `timestamp`, ties by `training_iteration`, then trial id): it is the unit ASHA spends, so two
  searchers compare at equal cost whatever their concurrency. An epoch re-trained after an
  interruption counts once and a diverged trial's last report not at all (analysis/results.py
  keeps neither in the history): the budget is the epochs that produced a score.
- Wall time is seconds since the sweep's first driver run started (sweep.json runs[0].started),
  at Ray's timestamp of each report, which has whole seconds. A resumed sweep's axis includes the
  pause between its driver runs; the table's wall time (sweep.json wall_time_s, as in the report)
  counts only the runs.

The sweeps must share one objective (metric and mode): scores under two objectives are not
comparable, so that is refused (exit 2) before anything is written, like any other bad input.
"""

from __future__ import annotations

import datetime
import math
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from visiontune.analysis.confirmation import load_confirmation, spread, test_split_key
from visiontune.analysis.plots import metric_label, new_figure, png
from visiontune.analysis.report import markdown_table
from visiontune.analysis.results import Experiment, is_number, load_experiment
from visiontune.errors import InputError
from visiontune.fileio import write_atomic
from visiontune.params import short_repr
from visiontune.storage import is_uri, open_report_source

OUT_PREFIX = "compare-"


@dataclass(frozen=True)
class Sweep:
    """One experiment of the comparison: its label (the legend's), where it was given, what
    it holds, and its best-so-far curve (`best_so_far_curve`)."""

    label: str
    location: str
    experiment: Experiment
    curve: pd.DataFrame


def default_out(now: datetime.datetime | None = None) -> Path:
    """./compare-YYYYmmdd-HHMMSS (UTC): a comparison spans several experiments, so it is not
    written into any one of them."""
    now = now or datetime.datetime.now(datetime.UTC)
    return Path(f"{OUT_PREFIX}{now:%Y%m%d-%H%M%S}")


def best_so_far_curve(experiment: Experiment) -> pd.DataFrame:
    """One row per trial-epoch in report order: `trial_epochs` (1, 2, ...), `seconds` since the
    sweep started, `trial_id`, `epoch`, the epoch's `value` and the sweep's `best_so_far`."""
    objective, history = experiment.spec.objective, experiment.history
    columns = ["trial_epochs", "seconds", "trial_id", "epoch", "value", "best_so_far"]
    if history.empty:
        return pd.DataFrame(columns=columns)
    stamps = history["timestamp"] if "timestamp" in history else pd.Series([None] * len(history))
    bad = next((i for i, stamp in enumerate(stamps) if not is_number(stamp)), None)
    if bad is not None:
        row = history.iloc[bad]
        dirs = dict(zip(experiment.trials["trial_id"], experiment.trials["dir"], strict=True))
        raise InputError(
            f"{experiment.path}/{dirs.get(row['trial_id'], row['trial_id'])}/result.json: epoch "
            f"{row['training_iteration']}: timestamp: expected a time (Ray's, in seconds), "
            f"got {short_repr(stamps.iloc[bad])}"
        )
    ordered = history.sort_values(["timestamp", "training_iteration", "trial_id"], kind="stable")
    best, bests = None, []
    for value in ordered[objective.metric].tolist():
        if objective.better(value, best):
            best = value
        bests.append(math.nan if best is None else float(best))
    # Ray's timestamp is whole seconds (rounded down): an epoch ending in the second the sweep
    # started would sit up to 1 s before it.
    seconds = (ordered["timestamp"].astype(float) - sweep_start(experiment)).clip(lower=0)
    return pd.DataFrame(
        {
            "trial_epochs": range(1, len(ordered) + 1),
            "seconds": seconds.to_numpy(),
            "trial_id": ordered["trial_id"].to_numpy(),
            "epoch": ordered["training_iteration"].to_numpy(),
            "value": pd.to_numeric(ordered[objective.metric], errors="coerce").to_numpy(),
            "best_so_far": bests,
        }
    )


def sweep_start(experiment: Experiment) -> float:
    """When the sweep's first driver run started (sweep.json runs[0].started)."""
    runs = experiment.summary.get("runs") or []
    started = runs[0].get("started") if runs else None
    if not is_number(started):
        raise InputError(
            f"{experiment.path}/sweep.json: runs[0].started: expected the time the sweep "
            f"started, got {short_repr(started)}"
        )
    return float(started)


def confirmed_test(experiment: Experiment) -> tuple[float | None, int]:
    """The mean test score over its seeds of the configuration the confirmation picks as the
    tuned best (analysis/confirmation.py), and how many runs it averages; (None, 0) where
    `visiontune confirm` has not run or confirmed no tuned configuration."""
    confirmation = load_confirmation(experiment)
    if confirmation is None or confirmation.best is None:
        return None, 0
    scores = spread(confirmation.runs(confirmation.best, confirmation.test_key))
    return (None, 0) if scores is None else (scores.mean, scores.n)


def summary_row(sweep: Sweep) -> dict[str, Any]:
    """The sweep's row of compare.csv (machine-readable names; compare.md retitles them)."""
    experiment = sweep.experiment
    spec, trials = experiment.spec, experiment.trials
    metric = spec.metric
    values = trials[metric].tolist() if metric in trials else [None] * len(trials)
    best_id = spec.objective.best_trial(zip(trials["trial_id"], values, strict=True))
    best = values[trials["trial_id"].tolist().index(best_id)] if best_id else None
    tuned = next((row for row in experiment.test if row["role"] == "tuned best"), {})
    confirmed, seeds = confirmed_test(experiment)
    wall = experiment.summary.get("wall_time_s")
    return {
        "experiment": sweep.label,
        "location": sweep.location,
        "searcher": spec.searcher.get("type"),
        "scheduler": spec.scheduler.get("type"),
        "trials": len(trials),
        "trial_epochs": len(sweep.curve),
        f"best_{metric}": best,
        "best_trial": best_id,
        f"tuned_best_{test_split_key(metric)}": tuned.get(test_split_key(metric)),
        f"confirmed_{test_split_key(metric)}": confirmed,
        "confirmed_seeds": seeds,
        "wall_time_s": wall if is_number(wall) else None,
    }


def summary_table(sweeps: Sequence[Sweep]) -> pd.DataFrame:
    return pd.DataFrame([summary_row(sweep) for sweep in sweeps])


def markdown_summary(table: pd.DataFrame, metric: str) -> str:
    test = test_split_key(metric)
    titles = {
        "experiment": "Experiment",
        "searcher": "Searcher",
        "scheduler": "Scheduler",
        "trials": "Trials",
        "trial_epochs": "Budget used (trial-epochs)",
        f"best_{metric}": f"Best validation {metric}",
        "best_trial": "Best trial",
        f"tuned_best_{test}": f"Tuned best {test}",
        f"confirmed_{test}": f"Confirmed {test} (mean over seeds)",
        "wall_time_s": "Wall time (s)",
    }
    frame = table[list(titles)].rename(columns=titles).astype(object)
    confirmed = titles[f"confirmed_{test}"]
    frame[confirmed] = [  # the number of seeds the mean is over, beside it
        f"{value:.4f} (n={seeds})" if is_number(value) else None
        for value, seeds in zip(table[f"confirmed_{test}"], table["confirmed_seeds"], strict=True)
    ]
    frame["Wall time (s)"] = [f"{w:.1f}" if is_number(w) else None for w in table["wall_time_s"]]
    return markdown_table(frame)


def comparison_figure(sweeps: Sequence[Sweep]) -> Any:
    """Best-so-far vs trial-epochs (left) and vs wall time (right), one step line per sweep."""
    spec = sweeps[0].experiment.spec
    figure = new_figure(12, 4.8)
    by_budget, by_time = figure.subplots(1, 2, sharey=True)
    for index, sweep in enumerate(sweeps):
        curve = sweep.curve
        style = {"color": f"C{index % 10}", "where": "post", "marker": ".", "label": sweep.label}
        by_budget.step(curve["trial_epochs"], curve["best_so_far"], **style)
        by_time.step(curve["seconds"], curve["best_so_far"], **style)
    by_budget.set_xlabel("budget used (trial-epochs, cumulative)")
    by_time.set_xlabel("wall time since the sweep started (s)")
    by_budget.set_ylabel(f"best-so-far {metric_label(spec.metric)}")
    for axes in (by_budget, by_time):
        axes.set_xlim(left=0)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    by_budget.set_title("vs budget")
    by_time.set_title("vs wall time")
    figure.suptitle(f"Best-so-far {spec.metric} ({spec.mode}) of {len(sweeps)} sweeps")
    return figure


def render(sweeps: Sequence[Sweep]) -> dict[str, str | bytes]:
    """compare.md, compare.csv and compare.png, in memory."""
    spec = sweeps[0].experiment.spec
    table = summary_table(sweeps)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    locations = "\n".join(f"- {s.label}: `{s.location}`" for s in sweeps)
    markdown = "\n\n".join(
        [
            f"# Sweep comparison: {' vs '.join(s.label for s in sweeps)}",
            f"Metric `{spec.metric}` ({spec.mode}); each trial counts by its best epoch; "
            f"budget = epochs the trials reported; written {stamp}.",
            markdown_summary(table, spec.metric),
            "Confirmed: the mean test score over its training seeds of the configuration "
            "`visiontune confirm` picked as the tuned best (by its mean validation score, "
            "confirm.json); — where the sweep has no confirmation.",
            "![best-so-far vs budget and wall time](compare.png)",
            locations,
        ]
    )
    return {
        "compare.md": markdown + "\n",
        "compare.csv": table.to_csv(index=False),
        "compare.png": png(comparison_figure(sweeps)),
    }


def load_sweeps(sources: dict[str, Path]) -> list[Sweep]:
    """The experiments at `sources` ({location as given: local directory}), checked to share
    one objective; labels are the directory names (the locations where two names are equal)."""
    experiments = {location: load_experiment(path) for location, path in sources.items()}
    first_location, first = next(iter(experiments.items()))
    for location, experiment in experiments.items():
        spec = experiment.spec
        if (spec.metric, spec.mode) != (first.spec.metric, first.spec.mode):
            raise InputError(
                f"{location}: metric {spec.metric} ({spec.mode}) differs from {first_location}'s "
                f"{first.spec.metric} ({first.spec.mode}); compare needs one metric and mode"
            )
    names = Counter(Path(_bare(loc).rstrip("/")).name for loc in sources)
    sweeps = []
    for location, experiment in experiments.items():
        name = Path(_bare(location).rstrip("/")).name
        label = name if names[name] == 1 and name else _bare(location)
        curve = best_so_far_curve(experiment)
        sweeps.append(Sweep(label, _bare(location), experiment, curve))
    return sweeps


def _bare(location: str) -> str:
    """A location without its query (a URI's pyarrow options are not a name)."""
    return str(location).split("?")[0]


def check_out(out: Path) -> None:
    """--out must be a directory or a path that can become one."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} is a file, not a directory")


def write_files(files: dict[str, str | bytes], out: Path, source: str) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            write_atomic(out / name, content)
    except OSError as exc:
        raise InputError(f"{source}: cannot write {out} ({exc.strerror or exc})") from None


def compare_command(locations: Sequence[str], out_dir: str | None) -> Path:
    """`visiontune compare`: read every experiment (a URI's is downloaded to a temporary
    directory, without checkpoints), render everything, then write it; returns the directory."""
    if len(locations) < 2:
        raise InputError(
            f"compare: needs two or more experiments, got {len(locations)} ({', '.join(locations)})"
        )
    seen: dict[str, str] = {}
    for location in locations:  # runs/a and ./runs/a are one experiment
        local = Path(location.removeprefix("file://")).expanduser().resolve()
        key = _bare(location) if is_uri(location) else str(local)
        if key in seen:
            raise InputError(f"compare: {location} is the same experiment as {seen[key]}")
        seen[key] = location
    out = Path(out_dir).expanduser() if out_dir else default_out()
    check_out(out)
    with tempfile.TemporaryDirectory(prefix="visiontune-compare-") as scratch:
        sources = {}
        for index, location in enumerate(locations):
            target = Path(scratch) / str(index)
            sources[location] = open_report_source(location, target)[1]
        try:
            files = render(load_sweeps(sources))
        except InputError as exc:  # name the file in the storage, not in the scratch copy
            message = str(exc)
            for location, local in sources.items():
                if is_uri(location):
                    message = message.replace(str(local), _bare(location).rstrip("/"))
            raise InputError(message) from None
    write_files(files, out, "--out" if out_dir else "compare")
    return out
