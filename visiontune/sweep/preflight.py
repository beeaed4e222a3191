"""Before `visiontune tune --resume` starts Ray: every file the resume will read is checked, so
that a damaged one is a one-line error naming it, and nothing has been changed yet.

A resume reads (in this order):
* spec.yaml, through the same validation as any spec (the search space is fixed on resume);
* sweep.json and trial_status.json (the driver runs and the ledger, `visiontune.sweep.ledger`);
* optuna.db, which must open as the study named after the experiment (checked on a copy:
  opening a SQLite file with Optuna can write to it);
* Ray Tune's saved state: tuner.pkl (what `tune.Tuner.can_restore` looks for), and the newest
  (greatest file name, as Ray picks it) experiment_state-*.json, search_gen_state-*.json and
  searcher-state-*.pkl, each non-empty and loading as Ray loads it; callback-states-*.pkl too
  where Ray wrote one.
Trial checkpoints are not read here: a damaged one fails its own trial (retried per
max_failures), not the sweep.

For a URI storage the checks run on the driver's fresh mirror of STORAGE/NAME (`mirror`).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from visiontune.errors import InputError
from visiontune.layout import SPEC_FILE, STUDY_FILE
from visiontune.params import clip
from visiontune.spec import SweepSpec, load_spec
from visiontune.storage import Experiment
from visiontune.sweep.ledger import read_ledger, read_summary, sweep_finished

TUNER_FILE = "tuner.pkl"  # ray.tune.impl.tuner_internal._TUNER_PKL
# The newest file of each pattern is what Ray's restore loads (ray 2.60.0): the trials and the
# controller (TuneController.CKPT_FILE_TMPL), the search algorithm (SearchGenerator's) and
# visiontune's StudySearcher (Searcher's); the callbacks' (CallbackList's) only where written.
RAY_STATE_FILES = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")
OPTIONAL_STATE_FILES = ("callback-states-*.pkl",)


def finished(experiment: Experiment) -> bool:
    """Whether the experiment's sweep already ran to its end (nothing to resume)."""
    if not experiment.local.is_dir():
        raise InputError(f"{experiment.location}: no experiment to resume")
    return sweep_finished(experiment.local)


def check_resumable(experiment: Experiment) -> SweepSpec:
    """The spec an interrupted sweep started with, once every file its resume reads has been
    checked (see the module docstring); InputError naming the first damaged or missing one."""
    exp_dir = experiment.local
    if not exp_dir.is_dir():
        raise InputError(f"{experiment.location}: no experiment to resume")
    spec = load_spec(exp_dir / SPEC_FILE)
    read_summary(exp_dir)
    read_ledger(exp_dir)
    check_ray_state(exp_dir)
    check_study(exp_dir / STUDY_FILE, experiment.name)
    return spec


def check_ray_state(exp_dir: Path) -> None:
    """Ray Tune's saved state in `exp_dir` is there and loads as Ray's restore loads it."""
    from ray import tune

    if not tune.Tuner.can_restore(str(exp_dir)):
        raise InputError(
            f"{exp_dir}: no Ray Tune state ({TUNER_FILE}) to resume from: the sweep stopped "
            "before its first trial; remove the directory or use another --name"
        )
    _check_loads(exp_dir / TUNER_FILE, _load_pickle)
    for pattern in RAY_STATE_FILES:
        newest = _newest(exp_dir, pattern)
        if newest is None:
            raise InputError(f"{exp_dir}: no {pattern} (Ray Tune's saved state) to resume from")
        experiment_state = pattern == RAY_STATE_FILES[0]
        _check_loads(newest, _load_experiment_state if experiment_state else _load_pickle)
    for pattern in OPTIONAL_STATE_FILES:
        newest = _newest(exp_dir, pattern)
        if newest is not None:
            _check_loads(newest, _load_pickle)


def _newest(exp_dir: Path, pattern: str) -> Path | None:
    """The file Ray picks among `pattern`'s matches: the greatest name (names carry the time)."""
    return max(exp_dir.glob(pattern), default=None)


def _check_loads(path: Path, load: Any) -> None:
    """`path` is a non-empty file that `load` turns into a mapping."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not content:
        raise InputError(f"{path}: empty file (Ray Tune's saved state is damaged)")
    try:
        state = load(path, content)
    except Exception as exc:  # any failure here is the one Ray's restore would meet later
        raise InputError(f"{path}: damaged, cannot be loaded ({_reason(exc)})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: damaged, holds a {type(state).__name__}, not Ray's state")


def _reason(exc: BaseException) -> str:
    return clip(" ".join(f"{type(exc).__name__}: {exc}".split()))


def _load_pickle(path: Path, content: bytes) -> Any:
    import ray.cloudpickle  # what Ray writes these with; unpickling needs Ray's classes loaded

    return ray.cloudpickle.loads(content)


def _load_experiment_state(path: Path, content: bytes) -> Any:
    """The experiment state as `ray.tune.ExperimentAnalysis` reads it: every saved trial is
    rebuilt from it (Ray's restore does the same), and each trial's results are read."""
    import pyarrow.fs as pafs
    from ray.tune import ExperimentAnalysis

    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # a trial without results is a warning, not damage
    try:
        analysis = ExperimentAnalysis(str(path), storage_filesystem=pafs.LocalFileSystem())
    finally:
        quiet.setLevel(level)
    return {trial.trial_id: trial for trial in analysis.trials}


def check_study(study_file: Path, name: str) -> None:
    """`study_file` is a SQLite database holding the Optuna study `name` whose trials load.
    Checked on a copy in a temporary directory: Optuna's storage creates or upgrades tables
    when it opens a file, and a resume must not change anything before it starts."""
    if not study_file.is_file():
        raise InputError(f"{study_file}: missing (the sweep's Optuna study)")
    with tempfile.TemporaryDirectory(prefix="visiontune-study-") as scratch:
        copy = Path(scratch) / study_file.name
        shutil.copyfile(study_file, copy)
        journal = study_file.with_name(study_file.name + "-journal")  # a hot journal after a kill
        if journal.is_file():
            shutil.copyfile(journal, copy.with_name(journal.name))
        _check_sqlite(copy, study_file)
        try:
            names = _load_study(copy, name)
        except Exception as exc:  # any failure here is the one the resumed searcher would meet
            raise InputError(
                f"{study_file}: not a readable Optuna study ({_reason(exc)})"
            ) from None
    if name not in names:
        raise InputError(f"{study_file}: no Optuna study named {name!r} (found {clip(str(names))})")


def _load_study(database: Path, name: str) -> list[str]:
    """The names of the studies in the SQLite file `database`; the trials of study `name`
    (if it is one of them) are loaded."""
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{database}")
    try:
        names = [study.study_name for study in storage.get_all_studies()]
        if name in names:
            optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        return names
    finally:
        storage.engine.dispose()


def _check_sqlite(copy: Path, original: Path) -> None:
    try:
        with closing(sqlite3.connect(copy)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{original}: not a readable SQLite database ({exc})") from None
    if verdict != "ok":
        raise InputError(f"{original}: damaged SQLite database ({clip(str(verdict))})")
