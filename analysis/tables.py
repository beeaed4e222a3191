"""Each task's report tables, laid out like the seed's: the first one is the sweep's main table.

classifier   rows: one per seed point, "tuned best"; Train/Validation/Test Loss and Accuracy.
faster_rcnn  rows: the seed point, "tuned best"; COCO mAP, mAP@0.5, AR@100 in percent; per-class AP.
yolo         rows: classes + "all"; Precision, Recall, mAP@0.5, mAP@0.5:0.95 of the tuned best, with
             the seed configuration's values beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from visiontune.analysis.results import Experiment, is_number

CLASSIFIER_COLUMNS = {
    "train_loss": "Train Loss",
    "train_acc": "Train Accuracy",
    "val_loss": "Validation Loss",
    "val_acc": "Validation Accuracy",
    "test_loss": "Test Loss",
    "test_acc": "Test Accuracy",
}
DETECTION_COLUMNS = {"test_map": "mAP", "test_map50": "mAP@0.5", "test_ar100": "AR@100"}
YOLO_COLUMNS = {
    "precision": "Precision",
    "recall": "Recall",
    "map50": "mAP@0.5",
    "map": "mAP@0.5:0.95",
}


def percent(value: Any) -> str:
    return f"{100 * value:.2f}" if is_number(value) and value >= 0 else "—"


def roles(experiment: Experiment) -> list[str]:
    """Row order: the seed points as the YAML lists them, then the tuned best."""
    return [*experiment.spec.seeds, "tuned best"]


def evaluated_row(experiment: Experiment, role: str) -> dict[str, Any]:
    """The test-split result of the checkpoint evaluated for `role` ({} when there is none)."""
    return next((row for row in experiment.test if row["role"] == role), {})


def classifier_tables(experiment: Experiment) -> list[tuple[str, pd.DataFrame]]:
    records = []
    for role in roles(experiment):
        row = evaluated_row(experiment, role)
        label = role if role == "tuned best" or role.startswith("seed") else f"seed {role}"
        records.append(
            {"": label, **{title: row.get(k) for k, title in CLASSIFIER_COLUMNS.items()}}
        )
    return [("Seed configurations vs tuned best", pd.DataFrame(records))]


def faster_rcnn_tables(experiment: Experiment) -> list[tuple[str, pd.DataFrame]]:
    main, per_class = [], {}
    for role in roles(experiment):
        row = evaluated_row(experiment, role)
        main.append({"": role, **{t: percent(row.get(k)) for k, t in DETECTION_COLUMNS.items()}})
        per_class[role] = {
            name: percent((values or {}).get("ap"))
            for name, values in (row.get("per_class") or {}).items()
        }
    names = experiment.names
    classes = pd.DataFrame(
        [{"Class": n, **{f"AP {r}": per_class[r].get(n, "—") for r in per_class}} for n in names]
    )
    return [
        ("Test split, COCO metrics (%)", pd.DataFrame(main)),
        ("Test split, per-class AP@[.50:.95] (%)", classes),
    ]


def yolo_tables(experiment: Experiment) -> list[tuple[str, pd.DataFrame]]:
    best = evaluated_row(experiment, "tuned best")
    seed_role = next(iter(experiment.spec.seeds), None)
    seed = evaluated_row(experiment, seed_role) if seed_role else {}
    records = []
    for name in [*experiment.names, "all"]:
        record: dict[str, Any] = {"Class": name}
        for source, prefix in ((best, ""), (seed, "Seed ")):
            values = _yolo_values(source, name)
            record.update({prefix + t: percent(values.get(k)) for k, t in YOLO_COLUMNS.items()})
        records.append(record)
    title = f"Test split, per class (%): tuned best, and {seed_role or 'no seed point'} as Seed"
    return [(title, pd.DataFrame(records))]


def _yolo_values(row: dict[str, Any], name: str) -> dict[str, Any]:
    if name == "all":
        return {k: row.get(f"test_{k}") for k in YOLO_COLUMNS}
    return (row.get("per_class") or {}).get(name) or {}


TABLES: dict[str, Callable[[Experiment], list[tuple[str, pd.DataFrame]]]] = {
    "classifier": classifier_tables,
    "faster_rcnn": faster_rcnn_tables,
    "yolo": yolo_tables,
}


def task_tables(experiment: Experiment) -> list[tuple[str, pd.DataFrame]]:
    return TABLES[experiment.spec.task](experiment)
