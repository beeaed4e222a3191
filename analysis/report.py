"""Write report.md, trials.csv and best_config.yaml for an experiment directory.

    visiontune report runs/classifier [--out DIR]

The first table reproduces the seed's: rows "seed baseline", "seed custom" (one per seed point)
and "tuned best"; train/validation numbers come from the epoch of the checkpoint that was tested.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from visiontune.analysis.results import Experiment, is_number, load_experiment
from visiontune.analysis.tables import task_tables
from visiontune.errors import InputError
from visiontune.fileio import write_atomic
from visiontune.layout import REPORT_DIR, SPEC_FILE

TOP_N = 10


def _fmt(value: Any) -> str:
    if is_number(value):
        if isinstance(value, float) and value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"  # learning rates and l2 strengths
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (tabulate), every cell formatted by `_fmt`."""
    cells = frame.astype(object).map(_fmt)
    return cells.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def main_table(experiment: Experiment) -> str:
    """The task's first table (the one `visiontune tune` prints when it ends)."""
    return markdown_table(task_tables(experiment)[0][1])


def checkpoint_notes(experiment: Experiment) -> list[str]:
    notes = []
    for row in experiment.test:
        notes.append(
            f"- {row['role']}: trial `{row.get('trial_id')}`, checkpoint of epoch {row.get('epoch')}"
        )
    missing = [
        r
        for r in [*experiment.spec.seeds, "tuned best"]
        if r not in {t["role"] for t in experiment.test}
    ]
    for role in missing:
        notes.append(f"- {role}: no test result (trial errored, or the sweep did not finish)")
    return notes


def top_trials(experiment: Experiment, n: int = TOP_N) -> pd.DataFrame:
    spec = experiment.spec
    metrics = [m for m in experiment.metrics if m in experiment.trials and m != "lr"]
    params = [f"config/{k}" for k in spec.search if f"config/{k}" in experiment.trials]
    columns = ["trial_id", "status", "seed", "epochs", "best_epoch", *metrics, *params]
    frame = experiment.trials[[c for c in columns if c in experiment.trials]].head(n)
    return frame.rename(columns=lambda c: c.removeprefix("config/"))


def sweep_lines(experiment: Experiment) -> list[str]:
    trials = experiment.trials
    counts = trials["status"].value_counts().to_dict()
    summary = experiment.summary
    lines = [
        f"- trials: {len(trials)} (of num_samples {experiment.spec.num_samples})",
        f"- finished all {experiment.spec.epochs} epochs: {counts.get('TERMINATED', 0)}; "
        f"stopped early by {experiment.spec.scheduler['type'].upper()}: {counts.get('STOPPED', 0)}; "
        f"errored: {counts.get('ERROR', 0)}; incomplete: {counts.get('INCOMPLETE', 0)}",
        _wall_line(summary),
        f"- concurrent slots: {summary.get('slots', '?')} at cpu={summary.get('cpus_per_trial', '?')}, "
        f"gpu={summary.get('gpus_per_trial', '?')} per trial; metric: {experiment.spec.metric} "
        f"({experiment.spec.mode})",
    ]
    retried = trials[trials["retries"] > 0] if "retries" in trials else trials.iloc[:0]
    if len(retried):
        lines.append(
            f"- retried from their last checkpoint after a worker or node failure: "
            f"{len(retried)} trial(s), {int(retried['retries'].sum())} retries"
        )
    for row in trials[trials["status"] == "ERROR"].itertuples():
        lines.append(f"- errored trial `{row.trial_id}`: {row.error}")
    return lines


def _wall_line(summary: dict[str, Any]) -> str:
    wall = summary.get("wall_time_s")
    if not is_number(wall):
        return "- wall time: unknown (sweep did not finish)"
    runs = summary.get("runs") or []
    if len(runs) < 2:
        return f"- wall time: {wall:.1f} s"
    interrupted = sum(1 for run in runs if run.get("interrupted"))
    elapsed = summary.get("elapsed_s")
    return (
        f"- wall time: {wall:.1f} s over {len(runs)} driver runs ({interrupted} interrupted, "
        f"each counted to its last recorded trial event); "
        + (f"{elapsed:.1f} s from first start to end" if is_number(elapsed) else "")
    ).rstrip("; ")


def best_config(experiment: Experiment) -> dict[str, Any] | None:
    best = next((row for row in experiment.test if row["role"] == "tuned best"), None)
    if best is None:
        return None
    match = experiment.trials[experiment.trials["trial_id"] == best["trial_id"]]
    if match.empty:
        return None
    row = match.iloc[0]
    return {c.removeprefix("config/"): _plain(row[c]) for c in row.index if c.startswith("config/")}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def render(experiment: Experiment) -> str:
    spec = experiment.spec
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"# Sweep report: {experiment.path.name}",
        f"Task `{spec.task}`, data `{spec.data_source}`, {spec.epochs} epochs per trial; written {stamp}.",
    ]
    for title, table in task_tables(experiment):
        parts += [f"## {title}", markdown_table(table)]
    parts += [
        "\n".join(checkpoint_notes(experiment)),
        f"## Top {TOP_N} trials by {spec.metric} ({spec.mode})",
        markdown_table(top_trials(experiment)),
        "## Sweep",
        "\n".join(sweep_lines(experiment)),
    ]
    return "\n\n".join(parts) + "\n"


def write_report(experiment_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the report files; returns the output directory. Everything is rendered first: the
    directory is created only once there is a report to put in it. best_config.yaml is written
    when the sweep has a tested tuned best, and an older one there is removed otherwise (it
    would pass for this sweep's)."""
    experiment = load_experiment(experiment_dir)
    out = Path(out_dir) if out_dir else experiment.path / REPORT_DIR
    files = {
        "report.md": render(experiment),
        "trials.csv": experiment.trials.to_csv(index=False),
        "best_config.yaml": best_config_text(experiment, out),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            if text is not None:
                write_atomic(out / name, text)
            else:
                (out / name).unlink(missing_ok=True)
    except OSError as exc:
        where = "--out" if out_dir else "report"
        raise InputError(f"{where}: cannot write {out} ({exc.strerror or exc})") from None
    return out


def best_config_text(experiment: Experiment, out: Path) -> str | None:
    """best_config.yaml: the tuned best's parameters, headed by where they come from and how to
    train them again; None without a tested tuned best."""
    config = best_config(experiment)
    if config is None:
        return None
    best = next(row for row in experiment.test if row["role"] == "tuned best")
    header = (
        f"# Best configuration of {experiment.path.name}: trial {best['trial_id']}, "
        f"epoch {best['epoch']}, {experiment.spec.metric} {best.get(experiment.spec.metric)}\n"
        f"# Reproduce: visiontune train {experiment.path / SPEC_FILE} --config {out / 'best_config.yaml'}\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)
