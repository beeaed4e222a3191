"""analysis/tables.py: each task's report tables hold the test split's numbers, rows in the seed's
order. The classifier's from the checked-in experiments (tests/fixtures); the detectors' from
test rows shaped as their trainables' `evaluate_checkpoint` writes them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from support import REPO, copy_fixture

from visiontune.analysis.results import Experiment, load_experiment
from visiontune.analysis.tables import task_tables
from visiontune.spec import load_spec

# The seed's table: metric key in test_results.json -> its column title.
CLASSIFIER_TITLES = {
    "train_loss": "Train Loss",
    "train_acc": "Train Accuracy",
    "val_loss": "Validation Loss",
    "val_acc": "Validation Accuracy",
    "test_loss": "Test Loss",
    "test_acc": "Test Accuracy",
}
DETECTION_NAMES = ["No-Anomaly", "Shadowing", "Cell"]


def _main_table(exp: Path) -> pd.DataFrame:
    return task_tables(load_experiment(exp))[0][1]


def _row(table: pd.DataFrame, label: str) -> pd.Series:
    """The row whose first cell (or index) is `label`."""
    matches = table[table.iloc[:, 0] == label] if label not in table.index else table.loc[[label]]
    assert len(matches) == 1, (label, table)
    return matches.iloc[0]


def _missing(value: Any) -> bool:
    return value is None or value == "—" or (isinstance(value, float) and math.isnan(value))


def _numbers(cells: Any) -> list[float | None]:
    """Cells as numbers (percent strings or floats alike), None where missing."""
    return [None if _missing(cell) else float(cell) for cell in cells]


def test_classifier_table_is_the_seed_rows_then_tuned_best_with_test_results(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    tested = json.loads((exp / "test_results.json").read_text())
    table = _main_table(exp)
    assert list(table.iloc[:, 0]) == ["seed baseline", "seed custom", "tuned best"]
    assert set(CLASSIFIER_TITLES.values()) <= set(table.columns)
    for row in tested:
        cells = _row(table, row["role"])
        for key, title in CLASSIFIER_TITLES.items():
            assert cells[title] == pytest.approx(row[key]), (row["role"], title)


def test_a_seed_point_named_without_seed_gets_the_prefix_and_an_errored_one_stays_empty(tmp_path):
    exp = copy_fixture("diverging", tmp_path)
    tested = {r["role"]: r for r in json.loads((exp / "test_results.json").read_text())}
    table = _main_table(exp)
    assert list(table.iloc[:, 0]) == ["seed sane", "seed diverging", "tuned best"]
    for label, role in (("seed sane", "sane"), ("tuned best", "tuned best")):
        cells = _row(table, label)
        assert [cells[t] for t in CLASSIFIER_TITLES.values()] == pytest.approx(
            [tested[role][k] for k in CLASSIFIER_TITLES]
        )
    diverging = _row(table, "seed diverging")
    assert all(_missing(diverging[t]) for t in CLASSIFIER_TITLES.values())


def test_a_test_metric_that_was_not_measured_prints_as_a_dash_never_a_zero(tmp_path):
    """A checkpoint evaluated on a split without images has None test metrics (the classifier's
    `evaluate`); the printed table says so instead of 0.0000."""
    from visiontune.analysis.report import main_table

    exp = copy_fixture("experiment", tmp_path)
    tested = json.loads((exp / "test_results.json").read_text())
    for row in tested:
        row.update(test_loss=None, test_acc=None)
    (exp / "test_results.json").write_text(json.dumps(tested))
    printed = main_table(load_experiment(exp))
    rows = [line.split("|")[1:-1] for line in printed.splitlines()[2:]]
    assert rows and all(cells[-2].strip() == cells[-1].strip() == "—" for cells in rows)
    assert all(cells[4].strip() not in ("—", "0.0000") for cells in rows)  # val_acc measured


def _detection_experiment(space: str, test: list[dict[str, Any]]) -> Experiment:
    return Experiment(
        path=Path("/nowhere"),
        spec=load_spec(REPO / "search_spaces" / space),
        trials=pd.DataFrame(),
        history=pd.DataFrame(),
        test=test,
        summary={},
        dataset={"classes": DETECTION_NAMES},
    )


def test_faster_rcnn_tables_give_coco_metrics_and_per_class_ap_in_percent():
    seed = {"role": "seed configuration", "test_map": 0.125, "test_map50": 0.5}
    seed |= {"test_ar100": 0.25, "per_class": {"No-Anomaly": {"ap": 0.375}, "Cell": {"ap": None}}}
    best = {"role": "tuned best", "test_map": 0.5, "test_map50": 0.75, "test_ar100": -1.0}
    best |= {"per_class": {n: {"ap": 0.0625} for n in DETECTION_NAMES}}
    (_, main), (_, per_class) = task_tables(_detection_experiment("faster_rcnn.yaml", [seed, best]))
    assert list(main.iloc[:, 0]) == ["seed configuration", "tuned best"]
    assert _numbers(_row(main, "seed configuration")[1:]) == [12.5, 50.0, 25.0]
    # COCO writes -1 where a metric is undefined: shown as missing, not as -100 %
    assert _numbers(_row(main, "tuned best")[1:]) == [50.0, 75.0, None]
    assert list(per_class.iloc[:, 0]) == DETECTION_NAMES
    assert _numbers(_row(per_class, "No-Anomaly")[1:]) == [37.5, 6.25]
    assert _numbers(_row(per_class, "Shadowing")[1:]) == [None, 6.25]  # absent from the seed's row
    assert _numbers(_row(per_class, "Cell")[1:]) == [None, 6.25]  # None: no ground truth


def test_yolo_table_puts_the_seed_beside_the_tuned_best_per_class_and_overall():
    def row(role: str, scale: float) -> dict[str, Any]:
        values = {"precision": 0.5 * scale, "recall": 0.25 * scale, "map50": 0.75, "map": 0.125}
        return {
            "role": role,
            **{f"test_{k}": v for k, v in values.items()},
            "per_class": {"Cell": values | {"instances": 3}},
        }

    test = [row("seed configuration", 1.0), row("tuned best", 1.5)]
    [(title, table)] = task_tables(_detection_experiment("yolo.yaml", test))
    assert "seed configuration" in title
    assert list(table.iloc[:, 0]) == [*DETECTION_NAMES, "all"]
    cell = _row(table, "Cell")
    best = ["Precision", "Recall", "mAP@0.5", "mAP@0.5:0.95"]
    assert _numbers(cell[best]) == [75.0, 37.5, 75.0, 12.5]
    assert _numbers(cell[[f"Seed {c}" for c in best]]) == [50.0, 25.0, 75.0, 12.5]
    overall = _row(table, "all")
    assert _numbers(overall[["Precision", "Seed Precision"]]) == [75.0, 50.0]
    assert all(_missing(v) for v in _row(table, "Shadowing")[1:])
