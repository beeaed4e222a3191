"""`visiontune confirm` (visiontune/confirm.py): what it picks from a finished sweep, the bad
input it refuses before writing anything, a finished confirmation left alone; and one real
confirmation of the shared finished sweep on Ray, reported on."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from support import classifier_test_accuracy, copy_fixture, hparams_plugin_values, visiontune
from tensorboard.plugins.hparams import metadata

from visiontune.analysis.results import is_number, load_experiment
from visiontune.cli import main
from visiontune.confirm import make_plan, pick_candidates, run_points
from visiontune.load import REPORT_CHECKPOINT, load_best

SEEDS = {"seed baseline": "83a65642", "seed custom": "ca4b25fb"}  # tests/fixtures/experiment
TUNED = ["40bf8aaf", "6d774a91", "74a56283"]  # its other trials, best val_acc first


def _params(exp: Path, trial: str) -> dict:
    return json.loads((exp / f"trial_{trial}" / "params.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _plugin_values(path: Path, tag: str) -> list[bytes]:
    return hparams_plugin_values(path, tag)


def _session_start(run_dir: Path):
    [content] = _plugin_values(run_dir, metadata.SESSION_START_INFO_TAG)
    return metadata.parse_session_start_info_plugin_data(content)


def _refused(capsys, exp: Path, *args: str) -> str:
    """Run `confirm` with bad input: exit 2, one line on stderr, the experiment unchanged."""
    before = _files(exp) if exp.exists() else None
    code = main(["confirm", str(exp), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("visiontune: error: ") and "\n" not in err, err
    assert (_files(exp) if exp.exists() else None) == before, "bad input must write nothing"
    return err


def test_the_seed_points_then_the_best_tuned_trials_are_picked(tmp_path):
    sweep = load_experiment(copy_fixture("experiment", tmp_path))
    picked = pick_candidates(sweep, top_k=2)
    assert [(c.role, c.trial_id) for c in picked] == [
        ("seed baseline", SEEDS["seed baseline"]), ("seed custom", SEEDS["seed custom"]),
        ("tuned #1", TUNED[0]), ("tuned #2", TUNED[1]),
    ]  # fmt: skip
    for candidate in picked:  # the sweep trial's config without its seed, at the full budget
        params = _params(sweep.path, candidate.trial_id)
        assert candidate.config == {k: v for k, v in params.items() if k != "seed"}
        assert candidate.config["epochs"] == sweep.spec.epochs


def test_a_top_k_beyond_the_sweep_takes_every_tuned_trial_an_early_stopped_one_too(tmp_path):
    sweep = load_experiment(copy_fixture("experiment", tmp_path))
    tuned = [c.trial_id for c in pick_candidates(sweep, top_k=10) if c.role.startswith("tuned")]
    assert tuned == TUNED  # 74a56283 was stopped by ASHA: it trains the full budget here


def test_a_tuned_trial_with_an_earlier_picks_config_is_passed_over(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    (exp / f"trial_{TUNED[1]}" / "params.json").write_text(json.dumps(_params(exp, TUNED[0])))
    picked = pick_candidates(load_experiment(exp), top_k=2)
    assert [c.trial_id for c in picked[2:]] == [TUNED[0], TUNED[2]]


def test_the_plan_runs_every_configuration_with_each_seed(tmp_path):
    picked = pick_candidates(load_experiment(copy_fixture("experiment", tmp_path)), top_k=1)
    points = run_points(make_plan(picked, top_k=1, seeds=3))
    assert len(points) == 3 * 3
    assert [p["seed"] for p in points] == [0, 1, 2] * 3


@pytest.mark.parametrize("top_k", ["0", "-2"])
def test_a_top_k_below_one_is_refused(capsys, tmp_path, top_k):
    err = _refused(capsys, copy_fixture("experiment", tmp_path), "--top-k", top_k)
    assert f"--top-k: must be >= 1 (tuned configurations to confirm), got {top_k}" in err


def test_fewer_than_two_seeds_are_refused(capsys, tmp_path):
    err = _refused(capsys, copy_fixture("experiment", tmp_path), "--seeds", "1")
    assert "--seeds: must be >= 2 (a spread needs two runs), got 1" in err


@pytest.mark.parametrize("make", [True, False], ids=["empty-dir", "missing"])
def test_a_directory_that_is_no_experiment_is_refused(capsys, tmp_path, make):
    target = tmp_path / "nothing"
    if make:
        target.mkdir()
    err = _refused(capsys, target)
    assert f"{target}: not a visiontune experiment directory (no spec.yaml)" in err
    assert not (tmp_path / "nothing" / "confirm").exists()


def test_an_unfinished_sweep_is_refused(capsys, tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    summary = json.loads((exp / "sweep.json").read_text())
    summary["runs"][-1]["interrupted"] = True
    (exp / "sweep.json").write_text(json.dumps(summary))
    err = _refused(capsys, exp)
    assert f"{exp}: the sweep has not finished" in err


def _saved_plan(exp: Path, top_k: int, seeds: int) -> None:
    plan = make_plan(pick_candidates(load_experiment(exp), top_k), top_k, seeds)
    (exp / "confirm").mkdir()
    (exp / "confirm" / "plan.json").write_text(json.dumps(plan))


def test_another_plan_than_the_saved_one_is_refused(capsys, tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    _saved_plan(exp, top_k=1, seeds=2)
    err = _refused(capsys, exp, "--top-k", "2", "--seeds", "2")
    assert "holds a confirmation of" in err and "--top-k 1 --seeds 2" in err


def test_a_finished_confirmation_trains_nothing(capsys, tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    _saved_plan(exp, top_k=1, seeds=2)
    (exp / "confirm.json").write_text("[]")
    before = _files(exp)
    assert main(["confirm", str(exp), "--top-k", "1", "--seeds", "2"]) == 0
    assert "the confirmation is done (6 runs in confirm.json); nothing to train" in (
        capsys.readouterr().out
    )
    assert _files(exp) == before


@pytest.mark.ray
@pytest.mark.slow
def test_confirm_runs_each_configuration_per_seed_and_the_report_tests_them(sweep, tmp_path):
    exp = Path(shutil.copytree(sweep["dir"], tmp_path / "small"))  # others read the original
    proc = visiontune("confirm", exp, "--top-k", "1", "--seeds", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((exp / "confirm.json").read_text())
    assert Counter(r["role"] for r in rows) == {"seed baseline": 2, "seed custom": 2, "tuned #1": 2}
    for row in rows:
        assert row["seed"] in (0, 1) and 1 <= row["epoch"] <= 3, row
        assert all(is_number(row[k]) for k in ("val_acc", "val_loss", "test_acc", "test_loss"))
        assert (exp / "confirm" / f"trial_{row['run_id']}" / "result.json").is_file()
        assert list((exp / "confirm" / f"trial_{row['run_id']}").glob("events.out.tfevents.*"))
    # seed 0 of a seed point is the sweep's own trial again: same config, seed and data
    tested = {r["role"]: r for r in json.loads((exp / "test_results.json").read_text())}
    for row in rows:
        if row["role"].startswith("seed") and row["seed"] == 0:
            assert row["trial_id"] == tested[row["role"]]["trial_id"]
            assert row["test_acc"] == pytest.approx(tested[row["role"]]["test_acc"], abs=1e-9)

    proc = visiontune("report", exp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (exp / "report" / "report.md").read_text()
    main_rows = report.split("## Confirmed over 2 training seeds", 1)[1].split("##", 1)[0]
    for label in ("seed baseline", "seed custom", "tuned best"):
        line = next(line for line in main_rows.splitlines() if line.startswith(f"| {label} "))
        assert line.count(" ± ") == 6, line  # train/val/test loss and accuracy
    assert re.search(r"gain in test_acc is (not )?significant at 0\.05 against", report)
    tuned = next(r["trial_id"] for r in rows if r["role"] == "tuned #1")
    text = (exp / "report" / "best_config.yaml").read_text()
    assert f"confirmed over 2 training seeds: tuned #1, sweep trial {tuned}" in text.splitlines()[0]
    assert yaml.safe_load(text) == _params(exp, tuned)  # its seed: the sweep's, 0

    # the model in hand is that configuration's seed-0 confirmation run: the run
    # best_config.yaml trains again, tested to confirm.json's numbers
    run = next(r for r in rows if r["role"] == "tuned #1" and r["seed"] == 0)
    assert f"(confirmation run {run['run_id']}), epoch {run['epoch']}" in text.splitlines()[1]
    best = load_best(exp)
    assert (best.role, best.seed, best.trial_id, best.epoch) == ("tuned #1", 0, tuned, run["epoch"])
    assert best.checkpoint.parent == exp / "confirm" / f"trial_{run['run_id']}"
    kept = exp / "report" / REPORT_CHECKPOINT / "checkpoint.pt"
    assert os.path.samefile(best.checkpoint / "checkpoint.pt", kept)
    assert classifier_test_accuracy(best, Path(sweep["data"]) / "test") == run["test_acc"]

    # TensorBoard's HParams tab: one session per run, grouped by configuration, the role declared
    runs_dirs = [d for d in (exp / "confirm").glob("trial_*") if d.is_dir()]
    sessions = [_session_start(run_dir) for run_dir in runs_dirs]
    assert Counter(s.group_name for s in sessions) == Counter(r["role"] for r in rows)
    for session in sessions:
        assert session.hparams["role"].string_value == session.group_name
        assert "seed" not in session.hparams and "lr" in session.hparams
    [declared] = _plugin_values(exp / "confirm", metadata.EXPERIMENT_TAG)
    infos = {i.name: i for i in metadata.parse_experiment_plugin_data(declared).hparam_infos}
    roles = [v.string_value for v in infos["role"].domain_discrete.values]
    assert roles == ["seed baseline", "seed custom", "tuned #1"] and "seed" not in infos

    # again: done, nothing trained; without confirm.json (killed while testing): the finished
    # runs are restored, none trained again, and tested to the same numbers
    runs = sorted(p.name for p in (exp / "confirm").glob("trial_*"))
    proc = visiontune("confirm", exp, "--top-k", "1", "--seeds", "2")
    assert proc.returncode == 0 and "the confirmation is done" in proc.stdout, proc.stderr[-3000:]
    (exp / "confirm.json").unlink()
    proc = visiontune("confirm", exp, "--top-k", "1", "--seeds", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (exp / "confirm").glob("trial_*")) == runs
    assert json.loads((exp / "confirm.json").read_text()) == rows


def test_confirm_has_help_naming_its_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["confirm", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal
    assert "--top-k" in out and "default 3" in out and "default 5, at least 2" in out
