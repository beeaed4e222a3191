"""Detector sweeps end to end on a real local Ray, through the console script, on an easy set in
the YOLO layout that both detectors read (bright boxes on a dark ground, tests/tiny_data.py): the
report's tables are filled from the test split, and the tuned best has learnt to detect (a
detector that does not learn scores mAP@0.5 = 0 and fails here).

Epochs are what each detector needs on this set from scratch on a CPU: Faster R-CNN's seed
configuration reaches val mAP@0.5 ~0.1 by epoch 4 (0 at epoch 1); YOLOv5n needs ~15 epochs at
128 px with lr0 0.02 and no warmup (ultralytics warms up for at least 100 steps, i.e. every epoch
of a 16-image set) and reached test mAP@0.5 ~0.8 after 20."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import REPO, visiontune
from tiny_data import NAMES, write_detection_dataset

pytestmark = pytest.mark.ray  # every test here starts a local Ray through the console script

FASTER_RCNN_EPOCHS = 4
YOLO_EPOCHS = 20
YOLO_PINS = {  # fixed for both trials: from-scratch YOLO on 16 images learns only like this
    "imgsz": 128, "batch": 2, "lr0": 0.02, "lrf": 0.1, "warmup_epochs": 0, "mosaic": 0,
}  # fmt: skip


@pytest.fixture(scope="module")
def easy_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("det") / "easy"
    write_detection_dataset(root)
    return root / "data.yaml"


def _table(report: str, title: str) -> list[list[str]]:
    """Body rows of the markdown table under `## title...`, as stripped cells."""
    lines = report[report.index(f"## {title}") :].splitlines()[1:]
    end = next((i for i, line in enumerate(lines) if line.startswith("#")), len(lines))
    rows = [line.strip() for line in lines[:end] if line.strip().startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows[2:]]


def _sweep(space: str, data: Path, storage: Path, name: str, epochs: int, *extra: str) -> Path:
    proc = visiontune(
        "tune", REPO / "search_spaces" / space, "--num-samples", 2, "--max-epochs", epochs,
        "--data", data, "--storage", storage, "--name", name, *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return storage / name


def _tested(exp: Path) -> dict[str, dict]:
    return {r["role"]: r for r in json.loads((exp / "test_results.json").read_text())}


def test_faster_rcnn_sweep_learns_and_reports_coco_table_for_seed_and_tuned_best(
    easy_yolo, tmp_path
):
    exp = _sweep("faster_rcnn.yaml", easy_yolo, tmp_path, "F", FASTER_RCNN_EPOCHS)
    tested = _tested(exp)
    assert set(tested) == {"seed configuration", "tuned best"}
    best = tested["tuned best"]
    assert best["map50"] > 0 and best["test_map50"] > 0, best
    report = (exp / "report" / "report.md").read_text()
    rows = _table(report, "Test split, COCO metrics (%)")
    assert [row[0] for row in rows] == ["seed configuration", "tuned best"]
    for row in rows:
        assert all(0.0 <= float(cell) <= 100.0 for cell in row[1:]), row
    per_class = _table(report, "Test split, per-class AP@[.50:.95] (%)")
    assert [row[0] for row in per_class] == list(NAMES)


def test_yolo_sweep_learns_and_reports_per_class_precision_and_recall(easy_yolo, tmp_path):
    pins = [arg for key, value in YOLO_PINS.items() for arg in ("--set", f"{key}={value}")]
    exp = _sweep("yolo.yaml", easy_yolo, tmp_path, "Y", YOLO_EPOCHS, *pins)
    best = _tested(exp)["tuned best"]
    assert best["map50"] > 0 and best["test_map50"] > 0, best
    report = (exp / "report" / "report.md").read_text()
    title = next(
        line[3:] for line in report.splitlines() if line.startswith("## Test split, per class")
    )
    rows = _table(report, title)
    assert [row[0] for row in rows] == [*NAMES, "all"]
    assert all(0.0 <= float(cell) <= 100.0 for cell in rows[-1][1:]), rows[-1]
    status = json.loads((exp / "trial_status.json").read_text())
    assert len(status) == 2
    for entry in status.values():
        lines = (exp / entry["dir"] / "result.json").read_text().splitlines()
        assert len(lines) == entry["epochs"], "ultralytics' own Ray callback must not report too"
