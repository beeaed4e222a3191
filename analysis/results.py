"""Read a finished (or interrupted) experiment directory into DataFrames, with no Ray cluster.

Everything comes from files in STORAGE/NAME: the resolved spec, each trial's params.json and
result.json (read defensively: a killed run can leave a truncated line), the trial status
ledger, the sweep summary and the test-split results. A file that is valid JSON of another shape
than the one written there (a ledger that is a list, a result row that is a number) is damaged:
a one-line error names it. "Best" (which epoch of a trial counts, and
how trials rank) comes from visiontune/best.py, as everywhere else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from visiontune.best import Objective
from visiontune.errors import InputError
from visiontune.fileio import read_json_file
from visiontune.layout import DATASET_FILE, SPEC_FILE, TEST_FILE
from visiontune.params import short_repr
from visiontune.spec import SweepSpec, read_yaml, validate
from visiontune.sweep.ledger import read_ledger, read_summary
from visiontune.trainables.contract import diverged_reason


@dataclass(frozen=True)
class Experiment:
    path: Path
    spec: SweepSpec
    trials: pd.DataFrame  # one row per trial: id, status, seed, params, best-epoch metrics
    history: pd.DataFrame  # every reported epoch of every trial
    test: list[dict[str, Any]]
    summary: dict[str, Any]
    dataset: dict[str, Any]  # dataset.json: classes, channels, image size, counts

    @property
    def names(self) -> list[str]:
        """Class names of the dataset the sweep ran on."""
        return list(self.dataset.get("classes", []))

    @property
    def metrics(self) -> tuple[str, ...]:
        """What the task reports each epoch (without `epoch`)."""
        return _metric_names(self.spec)


def read_result_lines(path: Path) -> list[dict[str, Any]]:
    """result.json rows, one JSON object per epoch with its `training_iteration`. A line that is
    not JSON was cut short by a crash and is skipped; a complete line of another shape is a
    damaged file (InputError naming it and the line)."""
    rows: list[dict[str, Any]] = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return rows
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if not isinstance(row, dict):
            raise InputError(
                f"{path}: line {number}: expected a JSON object, got {short_repr(row)}"
            )
        epoch = row.get("training_iteration")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise InputError(
                f"{path}: line {number}: training_iteration: expected an epoch number >= 1, "
                f"got {short_repr(epoch)}"
            )
        if not isinstance(row.get("trial_id", ""), str):
            raise InputError(
                f"{path}: line {number}: trial_id: expected a string, got "
                f"{short_repr(row['trial_id'])}"
            )
        rows.append(row)
    return rows


TEST_ROW_KEYS = (  # what every test_results.json row holds (visiontune.sweep.evaluation)
    ("role", str, "a name"),
    ("trial_id", str | None, "a trial id"),
    ("epoch", int | None, "an epoch number"),
)


def read_rows(path: Path, keys: Sequence[tuple[str, Any, str]]) -> list[dict[str, Any]]:
    """A JSON list of objects ([] when the file does not exist) in which each (key, type(s),
    what to expect) of `keys` holds a value of its type (a bool is never a number); anything
    else is a damaged file, named with the row and key in one line."""
    rows = read_json_file(path, list, [])
    for index, row in enumerate(rows):
        where = f"{path}: [{index}]"
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object, got {short_repr(row)}")
        for key, kind, expected in keys:
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise InputError(f"{where}.{key}: expected {expected}, got {short_repr(value)}")
    return rows


def read_test_results(path: Path) -> list[dict[str, Any]]:
    """test_results.json: one object per evaluated checkpoint, with its `role` (a seed point or
    "tuned best"), `trial_id` and `epoch` (null if the trial did not report them); [] before the
    sweep's test evaluation."""
    rows = read_rows(path, TEST_ROW_KEYS)
    for index, row in enumerate(rows):
        where = f"{path}: [{index}]"
        per_class = row.get("per_class", {})
        if not isinstance(per_class, dict) or not all(
            isinstance(v, dict) for v in per_class.values()
        ):
            raise InputError(
                f"{where}.per_class: expected an object of objects, got {short_repr(per_class)}"
            )
    return rows


def read_dataset(path: Path) -> dict[str, Any]:
    """dataset.json: the classes, channels, image size and split counts of the data used."""
    dataset = read_json_file(path, dict, {})
    classes = dataset.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise InputError(f"{path}: classes: expected a list of names, got {short_repr(classes)}")
    return dataset


def best_epoch(history: pd.DataFrame, objective: Objective) -> pd.Series | None:
    """The epoch row a trial is judged by (`Objective.best_epoch_index`: its best metric, the
    later epoch on ties); None when no epoch has a score."""
    index = objective.best_epoch_index(history.to_dict("records"))
    return None if index is None else history.iloc[index]


def _status(entry: dict[str, Any] | None, epochs_done: int, budget: int) -> tuple[str, str]:
    if entry and entry.get("status") not in (None, "RUNNING", "RETRYING"):
        return entry["status"], entry.get("error", "")
    return ("TERMINATED" if epochs_done >= budget else "INCOMPLETE"), ""


def _trial_rows(path: Path, spec: SweepSpec) -> tuple[list[dict], list[pd.DataFrame]]:
    ledger = read_ledger(path)
    rows, histories = [], []
    # A trial Ray errored before it started (a failed actor reuse) has no params.json; the
    # ledger names its directory (visiontune.sweep.ledger.reconcile_ledger).
    named = {
        path / entry["dir"]
        for entry in ledger.values()
        if entry.get("status") == "ERROR" and entry.get("dir")
    }
    for trial_path in sorted(
        p for p in path.iterdir() if p.is_dir() and ((p / "params.json").exists() or p in named)
    ):
        params = read_json_file(trial_path / "params.json", dict, {})
        results = read_result_lines(trial_path / "result.json")
        # a diverged trial's last report (trainables/tune_edge.py) is no epoch: it measured nothing
        results = [row for row in results if diverged_reason(row) is None]
        trial_id = trial_path.name.removeprefix("trial_")
        trial_id = results[0].get("trial_id", trial_id) if results else trial_id
        history = pd.DataFrame(results)
        if not history.empty:
            # an epoch re-trained after an interruption is reported twice: the later row counts
            history = history.drop_duplicates("training_iteration", keep="last")
            history = history.sort_values("training_iteration", kind="stable")
            history = history.reset_index(drop=True)
            history["trial_id"] = trial_id
            histories.append(history)
        status, error = _status(ledger.get(trial_id), len(history), spec.epochs)
        if status == "LOST":  # started by a killed driver, never restored: not part of the sweep
            continue
        row = {
            "trial_id": trial_id,
            "status": status,
            "seed": spec.seed_name(params) or "",
            "epochs": int(history["training_iteration"].max()) if not history.empty else 0,
            "error": error,
            "retries": len((ledger.get(trial_id) or {}).get("recoveries", [])),
            "dir": trial_path.name,
        }
        if trained_on(history):  # a column only for sweeps whose trials report it
            row["device"] = trained_on(history)
        best = best_epoch(history, spec.objective) if not history.empty else None
        if best is not None:
            row.update({"best_epoch": int(best["training_iteration"])})
            row.update({k: best[k] for k in best.index if k in _metric_names(spec)})
        row.update({f"config/{k}": v for k, v in params.items()})
        rows.append(row)
    return rows, histories


def trained_on(history: pd.DataFrame) -> str:
    """The devices a trial's epochs report (trainables/tune_edge.py: a GPU's name or "cpu"),
    in order, each once ("Tesla T4", or two names when a retry moved it); "" for a sweep that
    predates the `device` key."""
    if "device" not in history:
        return ""
    return ", ".join(dict.fromkeys(str(d) for d in history["device"].dropna()))


def _metric_names(spec: SweepSpec) -> tuple[str, ...]:
    from visiontune.trainables import load_task

    return tuple(m for m in load_task(spec.task).METRICS if m != "epoch")


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path).expanduser().resolve()
    if not (path / SPEC_FILE).is_file():
        raise InputError(f"{path}: not a visiontune experiment directory (no {SPEC_FILE})")
    spec = validate(read_yaml(path / SPEC_FILE), str(path / SPEC_FILE))
    rows, histories = _trial_rows(path, spec)
    if not rows:
        raise InputError(f"{path}: no trials found (no trial directories with params.json)")
    rank = spec.objective.rank_key
    rows.sort(key=lambda row: rank(row.get(spec.metric), row["trial_id"]))
    trials = pd.DataFrame(rows)
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return Experiment(
        path=path,
        spec=spec,
        trials=trials.reset_index(drop=True),
        history=history,
        test=read_test_results(path / TEST_FILE),
        summary=read_summary(path),
        dataset=read_dataset(path / DATASET_FILE),
    )


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
