"""Detector sweeps end to end on a real local Ray, through the console script, on tiny data in the
YOLO layout that both detectors read: the report's tables must be filled from the test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import REPO, visiontune

from visiontune.data import pv_arrays

pytestmark = pytest.mark.ray  # every test here starts a local Ray through the console script

TINY = {"train": 8, "val": 4, "test": 4}


@pytest.fixture(scope="module")
def tiny_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = pv_arrays.write_yolo(tmp_path_factory.mktemp("det") / "pv", num_images=TINY, seed=5)
    return root / "data.yaml"


def _table(report: str, title: str) -> list[list[str]]:
    section = report[report.index(f"## {title}") :].split("\n\n")[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()[2:]]


def _sweep(space: str, data: Path, storage: Path, name: str, *extra: str) -> Path:
    proc = visiontune(
        "tune", REPO / "search_spaces" / space, "--num-samples", 2, "--max-epochs", 1,
        "--data", data, "--storage", storage, "--name", name, *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return storage / name


def test_faster_rcnn_sweep_reports_coco_table_for_seed_and_tuned_best(tiny_yolo, tmp_path):
    exp = _sweep("faster_rcnn.yaml", tiny_yolo, tmp_path, "F")
    report = (exp / "report" / "report.md").read_text()
    rows = _table(report, "Test split, COCO metrics (%)")
    assert [row[0] for row in rows] == ["seed configuration", "tuned best"]
    for row in rows:
        assert all(0.0 <= float(cell) <= 100.0 for cell in row[1:]), row
    per_class = _table(report, "Test split, per-class AP@[.50:.95] (%)")
    assert [row[0] for row in per_class] == list(pv_arrays.NAMES)
    results = json.loads((exp / "test_results.json").read_text())
    assert {r["role"] for r in results} == {"seed configuration", "tuned best"}


def test_yolo_sweep_reports_per_class_precision_and_recall(tiny_yolo, tmp_path):
    exp = _sweep("yolo.yaml", tiny_yolo, tmp_path, "Y", "--set", "imgsz=64", "--set", "batch=4")
    report = (exp / "report" / "report.md").read_text()
    title = next(
        line[3:] for line in report.splitlines() if line.startswith("## Test split, per class")
    )
    rows = _table(report, title)
    assert [row[0] for row in rows] == [*pv_arrays.NAMES, "all"]
    assert all(0.0 <= float(cell) <= 100.0 for cell in rows[-1][1:]), rows[-1]
    status = json.loads((exp / "trial_status.json").read_text())
    assert len(status) == 2 and all(entry["epochs"] == 1 for entry in status.values())
    history = [
        json.loads(line)
        for trial in exp.glob("trial_*")
        if trial.is_dir()
        for line in (trial / "result.json").read_text().splitlines()
    ]
    assert len(history) == 2, "ultralytics' own Ray callback must not report a second time"
