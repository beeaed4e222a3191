"""visiontune/sweep/preflight.py on copies of the checked-in experiment (tests/fixtures/experiment),
each with one file damaged: a resume names the damaged file in one line before it changes
anything, and says when there is nothing to resume. No Ray cluster (Ray's state files are read
as Ray's restore reads them)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from support import FIXTURES

from visiontune.errors import InputError
from visiontune.storage import open_experiment
from visiontune.sweep.preflight import check_resumable, finished


def _copy(tmp_path: Path, name: str = "fixture") -> Path:
    """The fixture under the name its sweep had (the study in optuna.db is named after it)."""
    return Path(shutil.copytree(FIXTURES / "experiment", tmp_path / "runs" / name))


def _interrupt(exp: Path) -> Path:
    """As a driver killed mid-sweep leaves it: the last run has no end and no totals."""
    summary = json.loads((exp / "sweep.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in ("wall_time_s", "num_trials")}
    summary["runs"][-1]["ended"] = None
    (exp / "sweep.json").write_text(json.dumps(summary))
    return exp


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    return _interrupt(_copy(tmp_path))


def _experiment(exp: Path):
    return open_experiment(exp.parent, exp.name)


def _snapshot(exp: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(exp)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(exp.rglob("*"))
        if p.is_file()
    }


def _refused(exp: Path) -> str:
    before = _snapshot(exp)
    with pytest.raises(InputError) as info:
        check_resumable(_experiment(exp))
    assert _snapshot(exp) == before, "a refused resume must not change any file"
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    return message


def _newest(exp: Path, pattern: str) -> Path:
    return max(exp.glob(pattern))


def test_an_interrupted_sweep_passes_and_gives_its_saved_spec(exp):
    before = _snapshot(exp)
    spec = check_resumable(_experiment(exp))
    assert spec.num_samples == 5 and spec.task == "classifier"
    assert spec.path == exp / "spec.yaml"
    assert _snapshot(exp) == before


def test_a_finished_sweep_is_finished_and_an_interrupted_one_is_not(tmp_path, exp):
    assert finished(_experiment(_copy(tmp_path / "done")))
    assert not finished(_experiment(exp))


def test_a_run_that_ended_in_an_interrupt_is_not_finished(tmp_path):
    done = _copy(tmp_path)
    summary = json.loads((done / "sweep.json").read_text())
    summary["runs"][-1]["interrupted"] = True
    (done / "sweep.json").write_text(json.dumps(summary))
    assert not finished(_experiment(done))


def test_no_experiment_is_nothing_to_resume(tmp_path):
    with pytest.raises(InputError, match="no experiment to resume"):
        finished(open_experiment(tmp_path, "none"))


@pytest.mark.parametrize(
    ("pattern", "content", "says"),
    [
        ("spec.yaml", b"task: [classifier\n", "malformed YAML"),
        ("sweep.json", b"[]", "expected a JSON object"),
        ("sweep.json", b'{"runs": [{"started": "noon"}]}', "runs[0].started: expected a number"),
        ("trial_status.json", b'{"3eeb5bf0": "RUNNING"}', "3eeb5bf0: expected an object"),
        ("trial_status.json", b'{"3eeb5bf0": {"status": "RUN', "not valid JSON"),
        ("optuna.db", b"SQLite format 3\x00" + b"\x00" * 200, "optuna.db: "),
        ("optuna.db", b"not a database" * 100, "not a readable SQLite database"),
        ("tuner.pkl", b"", "empty file"),
        ("tuner.pkl", b"\x80\x05garbage", "damaged, cannot be loaded"),
        ("experiment_state-*.json", b"", "empty file"),
        ("experiment_state-*.json", b"{not json", "damaged, cannot be loaded"),
        ("experiment_state-*.json", b"[1, 2, 3]", "damaged, cannot be loaded"),
        ("experiment_state-*.json", b'{"trial_data": 5}', "damaged, cannot be loaded"),
        ("search_gen_state-*.json", b"", "empty file"),
        ("search_gen_state-*.json", b"\x00\x01\x02", "damaged, cannot be loaded"),
        ("searcher-state-*.pkl", b"", "empty file"),
        ("searcher-state-*.pkl", pickle.dumps([1, 2]), "holds a list, not Ray's state"),
    ],
)
def test_a_damaged_file_is_named_before_anything_changes(exp, pattern, content, says):
    target = _newest(exp, pattern)
    target.write_bytes(content)
    message = _refused(exp)
    assert message.startswith(f"{target}: ") and says in message, message


def test_a_study_cut_in_half_is_named(exp):
    study = exp / "optuna.db"
    study.write_bytes(study.read_bytes()[: study.stat().st_size // 2])
    assert _refused(exp).startswith(f"{study}: ")


def test_an_empty_study_file_is_named_and_stays_empty(exp):
    (exp / "optuna.db").write_bytes(b"")  # SQLite would happily create tables in it
    message = _refused(exp)
    assert message == f"{exp / 'optuna.db'}: no Optuna study named 'fixture' (found [])"
    assert (exp / "optuna.db").read_bytes() == b""


def test_a_renamed_experiment_is_told_which_study_the_file_holds(tmp_path):
    exp = _interrupt(_copy(tmp_path, "renamed"))
    assert (
        _refused(exp) == f"{exp / 'optuna.db'}: no Optuna study named 'renamed' (found ['fixture'])"
    )


def test_the_newest_state_file_is_the_one_checked(exp):
    newest = _newest(exp, "experiment_state-*.json")
    newer = exp / "experiment_state-2099-01-01_00-00-00.json"
    newer.write_text("")  # what Ray would load, greatest name first
    assert _refused(exp).startswith(f"{newer}: empty file")
    newer.unlink()
    older = exp / "experiment_state-2000-01-01_00-00-00.json"
    older.write_text("")  # never read by Ray
    assert check_resumable(_experiment(exp)).num_samples == 5
    assert newest.stat().st_size > 0


@pytest.mark.parametrize("pattern", ["search_gen_state-*.json", "searcher-state-*.pkl"])
def test_a_missing_searcher_state_is_named(exp, pattern):
    _newest(exp, pattern).unlink()
    assert _refused(exp) == f"{exp}: no {pattern} (Ray Tune's saved state) to resume from"


def test_a_sweep_killed_before_ray_saved_anything_has_nothing_to_resume(exp):
    (exp / "tuner.pkl").unlink()
    assert _refused(exp).startswith(f"{exp}: no Ray Tune state (tuner.pkl) to resume from")


def test_a_missing_study_is_named(exp):
    (exp / "optuna.db").unlink()
    assert _refused(exp) == f"{exp / 'optuna.db'}: missing (the sweep's Optuna study)"


def test_a_damaged_callback_state_is_named_where_ray_wrote_one(exp):
    state = exp / "callback-states-2026-12-02_11-38-22.pkl"
    state.write_bytes(b"")
    assert _refused(exp).startswith(f"{state}: empty file")
