"""Write report.md, trials.csv, best_config.yaml, the plots (PNG), report.tex and report.html
for an experiment directory.

    visiontune report runs/classifier [--out DIR]

The first table reproduces the seed's: rows "seed baseline", "seed custom" (one per seed point)
and "tuned best"; train/validation numbers come from the epoch of the checkpoint that was tested.
The plots (analysis/plots.py) are linked from report.md; a plot the data cannot make is a line
saying why. report.tex holds the tables, report.html all of report.md with the plots embedded
(analysis/formats.py).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from visiontune.analysis.confirmation import (
    confirmation_notes,
    confirmed_config_header,
    confirmed_tables,
    read_confirmation,
    test_split_key,
)
from visiontune.analysis.formats import html_document, latex_document
from visiontune.analysis.plots import PLOT_FILES, Plot, report_plots
from visiontune.analysis.results import Experiment, is_number, load_experiment
from visiontune.analysis.study import TOP_QUANTILE, StudyFacts, read_study
from visiontune.analysis.tables import task_tables
from visiontune.errors import InputError
from visiontune.fileio import write_atomic
from visiontune.layout import CONFIRM_FILE, REPORT_DIR, SPEC_FILE
from visiontune.load import REPORT_CHECKPOINT, best_run, keep_best_checkpoint
from visiontune.provenance import provenance_lines

TOP_N = 10


def _fmt(value: Any) -> str:
    if is_number(value):
        if isinstance(value, float) and value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"  # learning rates and l2 strengths
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    return str(value)


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as report.md shows it (`_fmt`)."""
    return frame.astype(object).map(_fmt)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (tabulate), every cell formatted by `_fmt`."""
    return formatted(frame).to_markdown(index=False, tablefmt="github", disable_numparse=True)


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
    columns = ["trial_id", "status", "seed", "epochs", "best_epoch", "device", *metrics, *params]
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
    devices = trials["device"].dropna() if "device" in trials else []
    if len(devices):  # what the trials trained on (a GPU's name, or cpu), most used first
        used = devices.value_counts()
        lines.append("- trained on: " + ", ".join(f"{d} ({n} trials)" for d, n in used.items()))
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
    """The tuned best's config (visiontune.load.best_run): the confirmed configuration with the
    training seed of the run report/best_checkpoint/ holds, where `visiontune confirm` ran."""
    best = best_run(experiment)
    if best is None:
        return None
    match = experiment.trials[experiment.trials["trial_id"] == best.row["trial_id"]]
    if match.empty:
        return None
    row = match.iloc[0]
    config = {
        c.removeprefix("config/"): _plain(row[c]) for c in row.index if c.startswith("config/")
    }
    if best.seed is not None:
        config["seed"] = best.seed
    return config


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def confirm_frame(experiment: Experiment) -> pd.DataFrame | None:
    """confirm.json (`visiontune confirm`) as one row per confirmation run; None without one."""
    rows = read_confirmation(experiment.path / CONFIRM_FILE)
    return pd.DataFrame(rows) if rows else None


def importance_table(facts: StudyFacts) -> pd.DataFrame:
    return pd.DataFrame(list(facts.importances.items()), columns=["Parameter", "Importance"])


def paper_tables(experiment: Experiment, facts: StudyFacts) -> list[tuple[str, pd.DataFrame]]:
    """report.tex's tables (caption, cells as report.md shows them, `mean ± std` where a
    confirmation measured a spread), in report.md's order: the confirmation's, the task's, the
    importances."""
    tables = [*confirmed_tables(experiment), *task_tables(experiment)]
    if facts.importances:
        tables.append((f"Hyperparameter importance for {experiment.spec.metric} (PED-ANOVA)",
                       importance_table(facts)))  # fmt: skip
    return [(title, formatted(table)) for title, table in tables]


def analysis_sections(
    experiment: Experiment, plots: Sequence[Plot], facts: StudyFacts | None
) -> list[str]:
    """report.md's importance and plot sections (none without the study's facts)."""
    if facts is None:
        return []
    parts = [f"## Hyperparameter importance for {experiment.spec.metric}"]
    if facts.importances:
        parts += [
            f"PED-ANOVA (Optuna) over the study's {facts.complete} complete trials: how differently "
            f"each parameter is distributed in the best {TOP_QUANTILE:.0%} of them than in all; "
            "the shares sum to 1.",
            markdown_table(importance_table(facts)),
        ]
    else:
        parts.append(f"Not computed: {facts.reason}.")
    parts.append("## Plots")
    for plot in plots:
        drawn = plot.png is not None
        parts.append(f"![{plot.caption}]({plot.file})" if drawn else
                     f"- {plot.caption} (`{plot.file}`): not drawn: {plot.reason}")  # fmt: skip
    return parts


def render(
    experiment: Experiment,
    plots: Sequence[Plot] = (),
    facts: StudyFacts | None = None,
) -> str:
    """report.md; with the study's facts (write_report) also the importance and plot sections."""
    spec = experiment.spec
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"# Sweep report: {experiment.path.name}",
        f"Task `{spec.task}`, data `{spec.data_source}`, {spec.epochs} epochs per trial; written {stamp}.",
    ]
    for title, table in confirmed_tables(experiment):  # mean ± std where `confirm` ran
        parts += [f"## {title}", markdown_table(table)]
    parts += confirmation_notes(experiment)
    for title, table in task_tables(experiment):
        parts += [f"## {title}", markdown_table(table)]
    parts += [
        "\n".join(checkpoint_notes(experiment)),
        f"## Top {TOP_N} trials by {spec.metric} ({spec.mode})",
        markdown_table(top_trials(experiment)),
        "## Sweep",
        "\n".join(sweep_lines(experiment)),
    ]
    parts += analysis_sections(experiment, plots, facts)
    parts += ["## Provenance", "\n".join(provenance_lines(experiment.summary))]  # stays last
    return "\n\n".join(parts) + "\n"


def write_report(experiment_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the report files; returns the output directory. Everything is rendered first: the
    directory is created only once there is a report to put in it. best_config.yaml is written
    when the sweep has a tested tuned best, and an older one there is removed otherwise (it
    would pass for this sweep's)."""
    experiment = load_experiment(experiment_dir)
    out = Path(out_dir) if out_dir else experiment.path / REPORT_DIR
    facts = read_study(experiment)
    plots = report_plots(experiment, facts, confirm_frame(experiment))
    images = {plot.file: plot.png for plot in plots if plot.png is not None}
    markdown = render(experiment, plots, facts)
    title = f"Sweep report: {experiment.path.name}"
    files: dict[str, str | bytes | None] = {
        "report.md": markdown,
        "report.tex": latex_document(title, paper_tables(experiment, facts)),
        "report.html": html_document(title, markdown, images),
        "trials.csv": experiment.trials.to_csv(index=False),
        "best_config.yaml": best_config_text(experiment, out),
        **{name: images.get(name) for name in PLOT_FILES},  # a plot not drawn now: removed
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            if text is not None:
                write_atomic(out / name, text)
            else:
                (out / name).unlink(missing_ok=True)
        keep_best_checkpoint(experiment, out)  # out/best_checkpoint/: the tuned best's files
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
    best = next((row for row in experiment.test if row["role"] == "tuned best"), {})
    header = confirmed_config_header(experiment) or (
        f"# Best configuration of {experiment.path.name}: trial {best.get('trial_id')}, "
        f"epoch {best.get('epoch')}, {experiment.spec.metric} {best.get(experiment.spec.metric)}\n"
    )
    run = best_run(experiment)
    if run is not None and run.seed is not None:
        test = test_split_key(experiment.spec.metric)
        header += (
            f"# report/{REPORT_CHECKPOINT}/ and visiontune.load_best: its training-seed-{run.seed} "
            f"run (confirmation run {run.row['run_id']}), epoch {run.row.get('epoch')}, "
            f"{experiment.spec.metric} {run.row.get(experiment.spec.metric)}, {test} {run.row.get(test)}\n"
        )
    header += f"# Reproduce: visiontune train {experiment.path / SPEC_FILE} --config {out / 'best_config.yaml'}\n"
    return header + yaml.safe_dump(config, sort_keys=False)
