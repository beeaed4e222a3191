"""Command line: bad input answers with one line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import CLASSIFIER_SPACE, FIXTURES, visiontune

from visiontune.cli import main


def _image_tree(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((40, 24), 10 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _run_bad(capsys, tmp_path: Path, *args: str) -> str:
    storage = tmp_path / "storage"
    code = main(
        [*args, "--storage", str(storage), "--name", "exp"] if args[0] == "tune" else list(args)
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("visiontune: error: ") and "\n" not in err, err
    assert not storage.exists(), "bad input must not create the experiment directory"
    return err


def test_missing_data_directory(capsys, tmp_path):
    err = _run_bad(
        capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--data", str(tmp_path / "nope")
    )
    assert f"{tmp_path / 'nope'}: data directory does not exist" in err


def test_empty_class_folder(capsys, tmp_path):
    root = _image_tree(tmp_path / "data", {"Cell": 5, "No-Anomaly": 5})
    (root / "Soiling").mkdir()
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--data", str(root))
    assert f"{root / 'Soiling'}: class folder has no images" in err


def test_unreadable_image_file(capsys, tmp_path):
    root = _image_tree(tmp_path / "data", {"Cell": 5, "No-Anomaly": 5})
    (root / "Cell" / "broken.png").write_bytes(b"this is not a png")
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--data", str(root))
    assert f"{root / 'Cell' / 'broken.png'}: cannot read image" in err


def test_fewer_than_two_classes(capsys, tmp_path):
    root = _image_tree(tmp_path / "data", {"Cell": 8})
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--data", str(root))
    assert "found 1 class folder(s) ['Cell']; need at least 2" in err


def test_unknown_key_in_spec(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(CLASSIFIER_SPACE.read_text() + "\nlearning_rate: 0.1  # typo\n")
    err = _run_bad(capsys, tmp_path, "tune", str(space))
    assert f"{space}: unknown key 'learning_rate'" in err


def test_malformed_yaml(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("task: [classifier\n")
    err = _run_bad(capsys, tmp_path, "tune", str(space))
    assert f"{space}: line" in err and "malformed YAML" in err


def test_unknown_parameter_in_set(capsys, tmp_path):
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--set", "dropuot=0.3")
    assert "unknown parameter 'dropuot'" in err


def test_existing_experiment_is_refused_and_left_alone(capsys, tmp_path):
    existing = tmp_path / "storage" / "exp"
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("finished results")
    code = main(
        ["tune", str(CLASSIFIER_SPACE), "--storage", str(tmp_path / "storage"), "--name", "exp"]
    )
    assert code == 2
    assert "experiment already exists" in capsys.readouterr().err
    assert (existing / "keep.txt").read_text() == "finished results"
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]


def test_report_of_a_directory_that_is_no_experiment(capsys, tmp_path):
    code = main(["report", str(tmp_path)])
    assert code == 2
    assert f"{tmp_path}: not a visiontune experiment directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_train_config_with_unknown_parameter(capsys, tmp_path):
    config = tmp_path / "best_config.yaml"
    config.write_text("lr: 0.001\nwarmup: 3\n")
    assert main(["train", str(CLASSIFIER_SPACE), "--config", str(config)]) == 2
    assert f"{config}: unknown parameter 'warmup'" in capsys.readouterr().err


def test_data_make_refuses_a_non_empty_directory(capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    assert main(["data", "make", "ir-solar-modules", "--out", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_console_script_exits_2_with_one_line(tmp_path):
    proc = visiontune("tune", tmp_path / "missing.yaml", "--storage", tmp_path / "s")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"visiontune: error: {tmp_path / 'missing.yaml'}: file not found"
    assert not (tmp_path / "s").exists()


def test_data_make_writes_the_embedded_set(tmp_path):
    out = tmp_path / "ir"
    assert main(["data", "make", "ir-solar-modules", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "val"]
    assert len(list((out / "train").iterdir())) == 12


@pytest.mark.parametrize("command", ["tune", "report", "train", "data"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: visiontune" in capsys.readouterr().out


def _yolo_tree(root: Path, label: str) -> Path:
    for split in ("train", "val", "test"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(root / "images" / split / "a.png")
        (root / "labels" / split / "a.txt").write_text(label)
    names = "names: [No-Anomaly, Shadowing]\n"
    (root / "data.yaml").write_text(
        f"path: .\ntrain: images/train\nval: images/val\ntest: images/test\n{names}"
    )
    return root / "data.yaml"


@pytest.mark.parametrize("space", ["faster_rcnn.yaml", "yolo.yaml"])
def test_detection_label_with_unknown_class_names_file_and_line(capsys, tmp_path, space):
    data = _yolo_tree(tmp_path / "det", "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    err = _run_bad(
        capsys, tmp_path, "tune", str(CLASSIFIER_SPACE.with_name(space)), "--data", str(data)
    )
    assert str(tmp_path / "det" / "labels" / "train" / "a.txt") in err and "7" in err


def test_detection_box_outside_the_image_is_refused(capsys, tmp_path):
    data = _yolo_tree(tmp_path / "det", "0 0.5 0.5 1.4 0.2\n")
    err = _run_bad(
        capsys, tmp_path, "tune", str(CLASSIFIER_SPACE.with_name("yolo.yaml")), "--data", str(data)
    )
    assert "a.txt" in err


def test_detection_spec_value_the_trainable_rejects(capsys, tmp_path):
    err = _run_bad(
        capsys, tmp_path, "tune", str(CLASSIFIER_SPACE.with_name("yolo.yaml")), "--set", "imgsz=100"
    )
    assert "--set imgsz=100" in err


def test_classifier_space_cannot_read_a_detection_dataset(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        CLASSIFIER_SPACE.read_text().replace("source: ir-solar-modules", "source: pv-arrays")
    )
    err = _run_bad(capsys, tmp_path, "tune", str(space))
    assert "'pv-arrays' is a yolo dataset" in err


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:1", "--address: nothing answers at 127.0.0.1:1"),
        ("ray://127.0.0.1:1", "--address: nothing answers at ray://127.0.0.1:1"),
        ("nonsense", "--address: 'nonsense' is not auto, HOST:PORT or ray://HOST:PORT"),
    ],
)
def test_an_address_without_a_cluster_fails_at_once(capsys, tmp_path, address, message):
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--address", address)
    assert message in err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-failures", "-1", "--max-failures: must be >= 0, got -1"),
        ("--num-samples", "0", "--num-samples: must be >= 1, got 0"),
        ("--max-epochs", "0", "--max-epochs: must be >= 1, got 0"),
        ("--cpus-per-trial", "0", "--cpus-per-trial: must be > 0, got 0.0"),
        ("--gpus-per-trial", "-1", "--gpus-per-trial: must be >= 0, got -1.0"),
        (
            "--gpus-per-trial",
            "2",
            "--gpus-per-trial: every trainer trains on one GPU, so more per trial would sit "
            "idle; use at most 1 (a fraction packs trials on a GPU), got 2",
        ),
        ("--max-concurrent", "0", "--max-concurrent: must be >= 1, got 0"),
        ("--seed", "-1", "--seed: must be >= 0, got -1"),
    ],
)
def test_a_bad_command_line_value_is_named_by_its_flag(capsys, tmp_path, flag, value, message):
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), flag, value)
    assert err == f"visiontune: error: {message}"


def test_the_files_own_bad_value_is_still_blamed_on_the_file(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(CLASSIFIER_SPACE.read_text().replace("grace_period: 2", "grace_period: 0"))
    assert "grace_period: 0" in space.read_text()
    err = _run_bad(capsys, tmp_path, "tune", str(space), "--max-epochs", "2")
    assert err == f"visiontune: error: {space}: scheduler.grace_period: must be >= 1, got 0"


# --- experiment names and storage: refused before anything is created ----------------------


def _tune_err(capsys, space: Path, *args: str) -> str:
    code = main(["tune", str(space), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("visiontune: error: ") and "\n" not in err, err
    return err.removeprefix("visiontune: error: ")


@pytest.mark.parametrize("name", ["../../escaped", "/etc", "..", ".hidden", "a/b", ""])
def test_a_name_that_is_not_one_directory_is_refused_and_nothing_is_created(
    capsys, tmp_path, monkeypatch, name
):
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    err = _tune_err(capsys, CLASSIFIER_SPACE, "--storage", "runs", "--name", name)
    assert err.startswith("--name: experiment name ")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "work"]


def test_a_bad_name_in_the_spec_file_names_the_file_and_key(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(CLASSIFIER_SPACE.read_text() + "\nname: ../escaped  # where it lands\n")
    err = _tune_err(capsys, space, "--storage", str(tmp_path / "s"))
    assert err.startswith(f"{space}: name: experiment name '../escaped' starts with '.'")
    assert not (tmp_path / "s").exists()


def test_a_spec_file_name_that_cannot_be_a_name_asks_for_one(capsys, tmp_path):
    space = tmp_path / "my sweep.yaml"
    space.write_text(CLASSIFIER_SPACE.read_text())
    err = _tune_err(capsys, space, "--storage", str(tmp_path / "s"))
    assert err.startswith(f"{space}: the file's name (the default experiment name; use --name)")
    assert "contains ' '" in err


@pytest.mark.parametrize("under", ["", "sub"])
def test_a_storage_that_is_a_file_fails_before_ray_starts(capsys, tmp_path, under):
    import ray

    taken = tmp_path / "runs"
    taken.write_text("a file")
    err = _tune_err(capsys, CLASSIFIER_SPACE, "--storage", str(taken / under), "--name", "exp")
    assert err == f"--storage: {taken} is a file, not a directory"
    assert not ray.is_initialized() and taken.read_text() == "a file"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_storage_no_file_can_be_written_in_fails_before_ray_starts(capsys):
    err = _tune_err(capsys, CLASSIFIER_SPACE, "--storage", "/proc/visiontune-runs")
    assert err.startswith("--storage: cannot create files in /proc (")


# --- report: damaged experiment files, unfinished sweeps -------------------------------------


def _fixture(tmp_path: Path) -> Path:
    """A copy of the checked-in experiment, named as the sweep was (its study is `fixture`)."""
    return Path(shutil.copytree(FIXTURES / "experiment", tmp_path / "runs" / "fixture"))


def _trial(exp: Path) -> Path:
    return sorted(exp.glob("trial_*/"))[0]


DAMAGES = {  # what is written where -> the file the error must name
    "ledger is a list": (lambda e: e / "trial_status.json", "[1, 2]"),
    "ledger entry is a number": (lambda e: e / "trial_status.json", '{"abc": 5}'),
    "ledger cut short": (lambda e: e / "trial_status.json", '{"abc": {"status": "RUN'),
    "test results are an object": (lambda e: e / "test_results.json", '{"role": "tuned best"}'),
    "test row without a role": (lambda e: e / "test_results.json", '[{"trial_id": "x"}]'),
    "summary is a list": (lambda e: e / "sweep.json", "[]"),
    "summary runs are text": (lambda e: e / "sweep.json", '{"runs": "yesterday"}'),
    "dataset is a list": (lambda e: e / "dataset.json", '["Cell"]'),
    "params are a list": (lambda e: _trial(e) / "params.json", "[0.1, 4]"),
    "result line is a number": (lambda e: _trial(e) / "result.json", "42\n"),
    "result line without epoch": (lambda e: _trial(e) / "result.json", '{"val_acc": 0.5}\n'),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_report_of_a_damaged_file_names_it_and_writes_nothing(capsys, tmp_path, damage):
    exp = _fixture(tmp_path)
    where, content = DAMAGES[damage]
    where(exp).write_text(content)
    out = tmp_path / "out" / "report"
    assert main(["report", str(exp), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"visiontune: error: {where(exp)}: ") and "\n" not in err, err
    assert len(err) < 300
    assert not (tmp_path / "out").exists() and not (exp / "report").exists()


def test_report_of_an_unfinished_sweep_does_not_claim_a_best_config(capsys, tmp_path):
    exp = _fixture(tmp_path)
    (exp / "test_results.json").unlink()  # killed before its test evaluation
    (exp / "report").mkdir()
    (exp / "report" / "best_config.yaml").write_text("lr: 0.1  # from an earlier report\n")
    assert main(["report", str(exp)]) == 0
    out = capsys.readouterr().out
    written = next(line for line in out.splitlines() if line.startswith("Written: "))
    assert written.startswith(f"Written: {exp / 'report'}/report.md, trials.csv, report.tex")
    assert "best_config" not in written and "No best_config.yaml" in out
    assert not (exp / "report" / "best_config.yaml").exists()


def test_report_of_a_finished_sweep_lists_its_three_files(capsys, tmp_path):
    exp = _fixture(tmp_path)
    assert main(["report", str(exp)]) == 0
    out = capsys.readouterr().out
    assert f"Written: {exp / 'report'}/report.md, trials.csv, best_config.yaml" in out


def test_report_to_an_out_that_is_a_file_is_one_line(capsys, tmp_path):
    exp = _fixture(tmp_path)
    (tmp_path / "taken").write_text("x")
    assert main(["report", str(exp), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"visiontune: error: --out: cannot write {tmp_path / 'taken'} (")


# --- --resume: a finished sweep, damaged files: nothing changes, Ray never starts -------------


def _snapshot(exp: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(exp)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(exp.rglob("*"))
        if p.is_file()
    }


def _interrupted(exp: Path) -> Path:
    """The fixture as a driver killed mid-sweep leaves it: its run has no end, no totals."""
    summary = json.loads((exp / "sweep.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in ("wall_time_s", "num_trials")}
    summary["runs"][-1]["ended"] = None
    (exp / "sweep.json").write_text(json.dumps(summary))
    return exp


def _resume(exp: Path) -> list[str]:
    return ["tune", str(CLASSIFIER_SPACE), "--storage", str(exp.parent), "--name", exp.name,
            "--resume"]  # fmt: skip


def test_resume_of_a_finished_sweep_says_so_and_changes_nothing(capsys, tmp_path):
    import ray

    exp = _fixture(tmp_path)
    before = _snapshot(exp)
    assert main(_resume(exp)) == 0
    out = capsys.readouterr().out.strip()
    assert out == (
        f"{exp}: the sweep finished; nothing to resume. Its report: visiontune report {exp}"
    )
    assert _snapshot(exp) == before and not ray.is_initialized()


RESUME_DAMAGES = {
    "study is not a database": ("optuna.db", b"not sqlite at all" * 100),
    "study cut in half": ("optuna.db", None),
    "newest experiment state is empty": ("experiment_state-*.json", b""),
    "searcher state is garbage": ("searcher-state-*.pkl", b"\x80\x05garbage"),
    "ledger is a list": ("trial_status.json", b"[]"),
}


@pytest.mark.parametrize("damage", RESUME_DAMAGES)
def test_resume_with_a_damaged_file_names_it_before_changing_anything(capsys, tmp_path, damage):
    import ray

    exp = _interrupted(_fixture(tmp_path))
    pattern, content = RESUME_DAMAGES[damage]
    target = max(exp.glob(pattern))
    if content is None:
        content = target.read_bytes()[: target.stat().st_size // 2]
    target.write_bytes(content)
    before = _snapshot(exp)
    assert main(_resume(exp)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"visiontune: error: {target}: ") and "\n" not in err, err
    assert len(err) < 300
    assert _snapshot(exp) == before and not ray.is_initialized()


# --- two sweeps at once, a sweep refused after Ray started -----------------------------------


@pytest.mark.ray  # the winner runs a one-trial sweep on a local Ray
def test_of_two_sweeps_started_at_once_with_one_name_exactly_one_runs(tmp_path, tiny_imagefolder):
    args = [
        "tune", CLASSIFIER_SPACE, "--storage", tmp_path / "runs", "--name", "same",
        "--num-samples", 1, "--max-epochs", 1, "--data", tiny_imagefolder, "--set", "width=4",
    ]  # fmt: skip
    exe = Path(sys.executable).with_name("visiontune")
    procs = [
        subprocess.Popen(
            [str(exe), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )  # fmt: skip
        for _ in range(2)
    ]
    runs = [(proc, *proc.communicate(timeout=600)) for proc in procs]
    codes = sorted(proc.returncode for proc, _, _ in runs)
    assert codes == [0, 2], [(p.returncode, err[-2000:]) for p, _, err in runs]
    _, _, lost = next(run for run in runs if run[0].returncode == 2)
    assert lost.strip() == (
        f"visiontune: error: {tmp_path / 'runs' / 'same'}: experiment already exists; "
        "use --resume or another --name"
    )
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["same"]
    assert (tmp_path / "runs" / "same" / "test_results.json").is_file()


@pytest.mark.ray  # Ray starts, then finds no node that fits a trial
def test_a_sweep_refused_after_ray_started_leaves_the_name_free(capsys, tmp_path):
    storage = tmp_path / "runs"
    args = ["tune", str(CLASSIFIER_SPACE), "--storage", str(storage), "--name", "exp",
            "--cpus-per-trial", "1000"]  # fmt: skip
    assert main(args) == 2
    assert "no node has that much" in capsys.readouterr().err
    assert not storage.exists(), "a sweep that never ran must give its name back"
