"""analysis/report.py on the checked-in experiments (tests/fixtures): report.md's sections hold the
test results, the ranking and the sweep's counts; trials.csv is one row per trial; best_config.yaml
is the tuned best's parameters in a form the task accepts. Checked by content, not layout."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support import copy_fixture

from visiontune.analysis.report import write_report
from visiontune.trainables import load_task


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classifier fixture with its report written (report/ under the copy)."""
    exp = copy_fixture("experiment", tmp_path_factory.mktemp("reported"))
    write_report(exp)
    return exp


def _json(path: Path) -> object:
    return json.loads(path.read_text())


def _section(report: str, heading: str) -> str:
    """The text under the first `## heading...` up to the next heading."""
    start = next(
        i for i, line in enumerate(report.splitlines()) if line.startswith(f"## {heading}")
    )
    lines = report.splitlines()[start + 1 :]
    end = next((i for i, line in enumerate(lines) if line.startswith("#")), len(lines))
    return "\n".join(lines[:end])


def _table_rows(section: str) -> list[list[str]]:
    """Body rows of the first markdown table in `section`, as stripped cells."""
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _cells_of(rows: list[list[str]], label: str) -> list[str]:
    """The cells after `label` in the row that holds it."""
    row = next(row for row in rows if label in row)
    return row[row.index(label) + 1 :]


def test_report_files_are_written_under_report(reported):
    assert {p.name for p in (reported / "report").iterdir()} >= {
        "report.md", "trials.csv", "best_config.yaml",
    }  # fmt: skip


def test_main_section_holds_each_roles_test_results(reported):
    report = (reported / "report" / "report.md").read_text()
    rows = _table_rows(_section(report, "Seed configurations vs tuned best"))
    keys = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    for result in _json(reported / "test_results.json"):
        cells = [float(c) for c in _cells_of(rows, result["role"])]
        assert cells == pytest.approx([result[k] for k in keys], abs=1e-4), result["role"]


def test_checkpoint_notes_name_each_tested_trial_and_epoch(reported):
    report = (reported / "report" / "report.md").read_text()
    for result in _json(reported / "test_results.json"):
        line = next(line for line in report.splitlines() if line.startswith(f"- {result['role']}:"))
        assert result["trial_id"] in line and f"epoch {result['epoch']}" in line


def test_top_trials_rank_every_trial_by_the_metric(reported):
    report = (reported / "report" / "report.md").read_text()
    spec = yaml.safe_load((reported / "spec.yaml").read_text())
    rows = _table_rows(_section(report, f"Top 10 trials by {spec['metric']} ({spec['mode']})"))
    ledger = _json(reported / "trial_status.json")
    ranked = [next(cell for cell in row if cell in ledger) for row in rows]
    assert sorted(ranked) == sorted(ledger)
    best = {t: max(r[spec["metric"]] for r in _results(reported, t)) for t in ledger}
    assert [best[t] for t in ranked] == sorted(best.values(), reverse=True)


def _results(exp: Path, trial_id: str) -> list[dict]:
    text = (exp / f"trial_{trial_id}" / "result.json").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_sweep_section_counts_trials_by_status(reported):
    sweep = _section((reported / "report" / "report.md").read_text(), "Sweep")
    statuses = [e["status"] for e in _json(reported / "trial_status.json").values()]
    spec = yaml.safe_load((reported / "spec.yaml").read_text())
    assert f"trials: {len(statuses)} (of num_samples {spec['num_samples']})" in sweep
    assert (
        f"finished all {spec['fixed']['epochs']} epochs: {statuses.count('TERMINATED')};" in sweep
    )
    assert f"stopped early by ASHA: {statuses.count('STOPPED')};" in sweep
    assert f"errored: {statuses.count('ERROR')};" in sweep
    assert f"wall time: {_json(reported / 'sweep.json')['wall_time_s']:.1f} s" in sweep


def test_trials_csv_is_one_row_per_trial_with_status_best_epoch_metrics_and_params(reported):
    trials = pd.read_csv(reported / "report" / "trials.csv", dtype={"trial_id": str})
    ledger = _json(reported / "trial_status.json")
    assert sorted(trials["trial_id"]) == sorted(ledger)
    params = _json(reported / f"trial_{trials['trial_id'][0]}" / "params.json")
    expected = {"trial_id", "status", "seed", "epochs", "best_epoch", "val_acc", "val_loss"}
    assert expected | {f"config/{k}" for k in params} <= set(trials.columns)
    for row in trials.itertuples():
        assert row.status == ledger[row.trial_id]["status"]
        assert row.epochs == len(_results(reported, row.trial_id))


def test_best_config_is_the_tuned_best_trials_params(reported):
    best = next(r for r in _json(reported / "test_results.json") if r["role"] == "tuned best")
    config = yaml.safe_load((reported / "report" / "best_config.yaml").read_text())
    assert config == _json(reported / f"trial_{best['trial_id']}" / "params.json")


def test_best_config_is_accepted_by_the_task_unchanged(reported):
    spec = yaml.safe_load((reported / "spec.yaml").read_text())
    path = reported / "report" / "best_config.yaml"
    values = yaml.safe_load(path.read_text())
    config = load_task(spec["task"]).build_config(values, str(path))
    assert {key: getattr(config, key) for key in values} == values


def test_best_config_header_names_the_trial_and_how_to_reproduce_it(reported):
    best = next(r for r in _json(reported / "test_results.json") if r["role"] == "tuned best")
    header = (reported / "report" / "best_config.yaml").read_text().split("\n", 2)[:2]
    assert best["trial_id"] in header[0] and f"epoch {best['epoch']}" in header[0]
    assert header[1].startswith("# Reproduce: visiontune train") and "--config" in header[1]


def test_report_names_an_errored_trial_and_the_seed_point_without_a_test_result(tmp_path):
    exp = copy_fixture("diverging", tmp_path)
    out = write_report(exp, tmp_path / "out")
    report = (out / "report.md").read_text()
    ledger = _json(exp / "trial_status.json")
    errored = next(t for t, e in ledger.items() if e["status"] == "ERROR")
    sweep = _section(report, "Sweep")
    assert "errored: 1;" in sweep
    assert f"`{errored}`" in sweep and ledger[errored]["error"] in sweep
    assert any(
        line.startswith("- diverging:") and "no test result" in line for line in report.splitlines()
    )
    assert not (exp / "report").exists(), "--out given: nothing is written beside the sweep"


def test_the_device_each_trial_trained_on_is_in_the_tables_and_the_sweep_section(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    trial_ids = sorted(_json(exp / "trial_status.json"))
    for index, trial_id in enumerate(trial_ids):
        device = "cpu" if index == 0 else "Tesla T4"
        rows = [{**row, "device": device} for row in _results(exp, trial_id)]
        (exp / f"trial_{trial_id}" / "result.json").write_text(
            "".join(json.dumps(row) + "\n" for row in rows)
        )
    write_report(exp)
    report = (exp / "report" / "report.md").read_text()
    top = _section(report, "Top")
    header = next(line for line in top.splitlines() if line.startswith("|"))
    column = [cell.strip() for cell in header.strip("|").split("|")].index("device")
    assert {row[column] for row in _table_rows(top)} == {"cpu", "Tesla T4"}
    sweep = _section(report, "Sweep")
    assert f"trained on: Tesla T4 ({len(trial_ids) - 1} trials), cpu (1 trials)" in sweep
    trials = pd.read_csv(exp / "report" / "trials.csv").set_index("trial_id")
    assert trials.loc[trial_ids[0], "device"] == "cpu"
