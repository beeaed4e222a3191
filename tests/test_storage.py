"""Where experiments live. Local paths: unit tests. Cloud storage: a sweep with `--storage s3://...` keeps everything in the bucket (Ray's trial
directories and checkpoints, the study, the ledger, TensorBoard events, test results, the report),
so `visiontune report s3://...` works from a machine that never saw the sweep. The bucket is a real
S3 API server (moto) on 127.0.0.1; the client side is pyarrow's S3 filesystem, as for AWS."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from support import CLASSIFIER_SPACE, no_network, visiontune

from visiontune.cli import main
from visiontune.errors import InputError
from visiontune.storage import (
    Experiment,
    fresh_mirror,
    is_uri,
    open_experiment,
    open_report_source,
)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local S3 server with an empty bucket; yields the query that points pyarrow at it."""
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        query = f"endpoint_override=http://{host}:{port}&region=us-east-1"
        fs = pafs.S3FileSystem(
            endpoint_override=f"http://{host}:{port}", region="us-east-1",
            allow_bucket_creation=True,
        )  # fmt: skip
        fs.create_dir("sweeps")
        yield query
    finally:
        server.stop()


def _files(fs: pafs.FileSystem, path: str) -> set[str]:
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return {i.path[len(path) + 1 :] for i in infos if i.type == pafs.FileType.File}


@pytest.mark.ray  # a moto S3 server and a local Ray
def test_sweep_on_s3_is_reported_from_anywhere(s3, tiny_imagefolder, tmp_path):
    storage = f"s3://sweeps/runs?{s3}"
    args = [
        "tune", CLASSIFIER_SPACE, "--storage", storage, "--name", "cloud", "--num-samples", 3,
        "--max-epochs", 2, "--data", tiny_imagefolder, "--set", "width=8",
    ]  # fmt: skip
    run = visiontune(*args, cwd=tmp_path, env={"VISIONTUNE_CACHE": str(tmp_path / "driver")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "s3://sweeps/runs/cloud" in run.stdout

    experiment = open_experiment(storage, "cloud")
    files = _files(experiment.filesystem, "sweeps/runs/cloud")
    for name in ("spec.yaml", "optuna.db", "trial_status.json", "sweep.json", "test_results.json"):
        assert name in files, sorted(files)
    trial_dirs = {f.split("/")[0] for f in files if f.startswith("trial_") and "/" in f}
    assert len(trial_dirs) == 3
    for trial in trial_dirs:  # Ray's results, a checkpoint and our live TensorBoard events
        assert {"result.json", "params.json"} <= {
            f.split("/")[-1] for f in files if f.startswith(trial)
        }
        assert any(f.startswith(f"{trial}/checkpoint_") for f in files), trial
        assert any("events.out.tfevents" in f for f in files if f.startswith(trial)), trial
    assert "report/report.md" in files  # written by `tune` at the end
    assert experiment.fetch("spec.yaml").read_text() == run_text(experiment, "spec.yaml")
    experiment.filesystem.delete_dir("sweeps/runs/cloud/report")

    # Another machine: a fresh cache, another directory, only the URI.
    elsewhere = tmp_path / "laptop"
    elsewhere.mkdir()
    report = visiontune(
        "report", f"s3://sweeps/runs/cloud?{s3}", cwd=elsewhere,
        env={"VISIONTUNE_CACHE": str(elsewhere / "cache")},
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Seed configurations vs tuned best" in report.stdout
    files = _files(experiment.filesystem, "sweeps/runs/cloud")
    assert {"report/report.md", "report/trials.csv", "report/best_config.yaml"} <= files
    assert list(elsewhere.iterdir()) == []  # nothing written locally without --out
    test_rows = json.loads(run_text(experiment, "test_results.json"))
    assert {r["role"] for r in test_rows} == {"seed baseline", "seed custom", "tuned best"}

    again = visiontune(*args, cwd=tmp_path)  # the name is taken in the bucket
    assert again.returncode == 2 and "already exists" in again.stderr


def run_text(experiment, name: str) -> str:
    with experiment.filesystem.open_input_stream(f"{experiment.remote_dir}/{name}") as f:
        return f.read().decode()


def test_storage_uri_errors_name_the_value(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["tune", str(CLASSIFIER_SPACE), "--storage", "ftp://host/runs"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "visiontune: error: --storage: 'ftp://host/runs' is not a local path or an s3/gs/gcs URI"
    )
    assert list(tmp_path.iterdir()) == []


# --- local paths and URIs, without a server --------------------------------------------------

S3 = "s3://sweeps/runs?endpoint_override=http://127.0.0.1:9&region=us-east-1"


def test_anything_with_a_scheme_but_file_is_a_uri(tmp_path):
    assert is_uri("s3://b/p") and is_uri("gs://b/p") and is_uri("ftp://host/p")
    assert not is_uri(tmp_path) and not is_uri(str(tmp_path)) and not is_uri("runs")
    assert not is_uri(f"file://{tmp_path}")


def test_a_local_experiment_is_storage_slash_name_for_ray_and_the_report(tmp_path):
    experiment = open_experiment(tmp_path / "runs", "exp")
    local = (tmp_path / "runs" / "exp").resolve()
    assert experiment.local == local and experiment.uri is None and experiment.remote_dir is None
    assert experiment.ray_storage_path == str(local.parent)
    assert experiment.ray_experiment_path == str(local)
    assert experiment.location == str(local)


def test_a_local_storage_may_be_relative_a_file_uri_or_under_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = {
        "runs": tmp_path / "runs" / "exp",
        f"file://{tmp_path}/runs": tmp_path / "runs" / "exp",
        "~/runs": tmp_path / "home" / "runs" / "exp",
    }
    for storage, local in expected.items():
        assert open_experiment(storage, "exp").local == local.resolve(), storage


def test_a_local_experiment_exists_once_its_directory_does(tmp_path):
    experiment = open_experiment(tmp_path, "exp")
    assert not experiment.exists()
    experiment.local.mkdir()
    assert experiment.exists()


def test_a_local_experiments_files_are_its_own_and_uploads_do_nothing(tmp_path):
    experiment = open_experiment(tmp_path, "exp")
    experiment.local.mkdir()
    (experiment.local / "spec.yaml").write_text("task: classifier\n")
    experiment.upload()
    assert experiment.fetch("spec.yaml") == experiment.local / "spec.yaml"
    assert experiment.download() == experiment.local
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["exp", "spec.yaml"]


def test_fresh_mirror_never_touches_a_local_experiment(tmp_path):
    experiment = open_experiment(tmp_path, "exp")
    experiment.local.mkdir()
    (experiment.local / "trial_status.json").write_text("{}")
    fresh_mirror(experiment)
    assert (experiment.local / "trial_status.json").read_text() == "{}"


def test_a_uri_experiment_is_opened_without_any_network_access():
    with no_network() as attempts:
        experiment = open_experiment(S3, "exp")
    assert attempts == []
    assert experiment.uri == "s3://sweeps/runs/exp?" + S3.split("?")[1]
    assert experiment.location == experiment.uri
    assert experiment.ray_storage_path == "sweeps/runs"
    assert experiment.ray_experiment_path == experiment.remote_dir == "sweeps/runs/exp"


def test_a_uri_experiment_is_mirrored_in_the_cache_one_dir_per_storage(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONTUNE_CACHE", str(tmp_path / "cache"))
    experiment = open_experiment(S3, "exp")
    other = open_experiment(S3.replace(":9", ":10"), "exp")
    assert experiment.local.is_relative_to(tmp_path / "cache") and experiment.local.name == "exp"
    assert experiment.local != other.local, "two endpoints must not share a mirror"
    assert open_experiment(S3, "exp").local == experiment.local


def test_fresh_mirror_empties_a_uri_experiments_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONTUNE_CACHE", str(tmp_path / "cache"))
    experiment = open_experiment(S3, "exp")
    experiment.local.mkdir(parents=True)
    (experiment.local / "optuna.db").write_text("stale")
    fresh_mirror(experiment)
    assert not experiment.local.exists()


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("ftp://host/runs", "'ftp://host/runs' is not a local path or an s3/gs/gcs URI"),
        ("s3://b/p?nonsense=1", "--storage: 's3://b/p[?]nonsense=1': .*'nonsense'"),
    ],
)
def test_a_bad_uri_is_an_input_error_naming_it(storage, message):
    with pytest.raises(InputError, match=message):
        open_experiment(storage, "exp")


def test_a_local_report_source_is_read_in_place(tmp_path):
    exp = tmp_path / "runs" / "exp"
    exp.mkdir(parents=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    experiment, local = open_report_source(str(exp), scratch)
    assert local == exp.resolve()
    assert experiment == Experiment(name="exp", local=exp.resolve())
    assert open_report_source(f"file://{exp}", scratch)[1] == exp.resolve()
    assert list(scratch.iterdir()) == []


# --- experiment names, the storage's writability, claiming a name -----------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../../escaped", "starts with '.'"),
        ("runs/../../escaped", "contains '/'"),
        ("/etc", "contains '/'"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("a/b", "contains '/'"),
        ("", "is empty"),
        ("x" * 101, "is longer than 100 characters"),
        ("my sweep", "contains ' '"),
        ("naïve", "contains 'ï'"),
        ("tab\tname", "contains '\\t'"),
    ],
)
def test_an_experiment_name_is_one_plain_path_component(tmp_path, name, problem):
    with pytest.raises(InputError) as info:
        open_experiment(tmp_path / "runs", name, "spec.yaml: name")
    message = str(info.value)
    assert message.startswith("spec.yaml: name: experiment name ") and problem in message
    assert len(message) < 250 and "\n" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["exp", "sweep-2_v1.0", "x" * 100, "9lives", "a..b", "-dash"])
def test_plain_names_are_accepted(tmp_path, name):
    assert open_experiment(tmp_path, name).local == tmp_path.resolve() / name


def test_a_name_is_checked_for_uri_storage_too():
    with pytest.raises(InputError, match="^--name: experiment name 'a/x' contains '/'"):
        open_experiment(S3, "a/x")


def _writable_error(storage) -> str:
    with pytest.raises(InputError) as info:
        open_experiment(storage, "exp").check_writable()
    return str(info.value)


def test_a_storage_that_is_a_file_is_refused(tmp_path):
    storage = tmp_path / "runs"
    storage.write_text("not a directory")
    assert _writable_error(storage) == f"--storage: {storage} is a file, not a directory"
    assert _writable_error(storage / "sub") == f"--storage: {storage} is a file, not a directory"
    assert storage.read_text() == "not a directory"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_directory_no_file_can_be_created_in_is_refused_even_for_root():
    # /proc exists and is a directory, but the kernel lets nobody (root included) create files in it.
    message = _writable_error("/proc/visiontune-storage")
    assert message.startswith("--storage: cannot create files in /proc (")


def test_checking_a_writable_storage_creates_nothing(tmp_path):
    open_experiment(tmp_path / "a" / "b", "exp").check_writable()
    assert list(tmp_path.iterdir()) == []


def test_a_claim_is_exclusive_and_the_second_gets_already_exists(tmp_path):
    first = open_experiment(tmp_path / "runs", "exp")
    created = first.claim()
    assert created == [tmp_path / "runs", tmp_path / "runs" / "exp"]
    with pytest.raises(InputError, match="experiment already exists; use --resume"):
        open_experiment(tmp_path / "runs", "exp").claim()
    assert first.local.is_dir() and list(first.local.iterdir()) == []


def test_a_released_claim_leaves_no_directory_it_made(tmp_path):
    experiment = open_experiment(tmp_path / "a" / "runs", "exp")
    created = experiment.claim()
    (experiment.local / "spec.yaml").write_text("task: classifier\n")
    experiment.release(created)
    assert list(tmp_path.iterdir()) == []


def test_a_release_keeps_parents_that_hold_other_experiments(tmp_path):
    experiment = open_experiment(tmp_path / "runs", "exp")
    created = experiment.claim()
    (tmp_path / "runs" / "other").mkdir()
    experiment.release(created)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["other"]


def test_claiming_under_a_file_is_one_line(tmp_path):
    (tmp_path / "runs").write_text("x")
    with pytest.raises(
        InputError, match=r"^--storage: cannot create .*runs/sub \(Not a directory\)$"
    ):
        open_experiment(tmp_path / "runs" / "sub", "exp").claim()


@pytest.mark.ray  # a moto S3 server
def test_a_uri_claim_is_refused_when_the_bucket_has_the_experiment(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONTUNE_CACHE", str(tmp_path / "cache"))
    storage = f"s3://sweeps/runs?{s3}"
    experiment = open_experiment(storage, "exp")
    (experiment.local).mkdir(parents=True)
    (experiment.local / "stale.txt").write_text("from an experiment deleted from the bucket")
    experiment.claim()
    assert list(experiment.local.iterdir()) == []  # the stale mirror is gone
    (experiment.local / "spec.yaml").write_text("task: classifier\n")
    experiment.upload()
    with pytest.raises(InputError, match="experiment already exists"):
        open_experiment(storage, "exp").claim()


def _upload_fixture(storage: str, name: str, interrupted: bool) -> Experiment:
    """The checked-in experiment in the bucket as STORAGE/NAME (optionally as a killed driver
    leaves it: the last run has no end, no totals)."""
    from support import FIXTURES

    experiment = open_experiment(storage, name)
    experiment.filesystem.create_dir(experiment.remote_dir, recursive=True)
    pafs.copy_files(str(FIXTURES / "experiment"), experiment.remote_dir,
                    destination_filesystem=experiment.filesystem)  # fmt: skip
    if interrupted:
        summary = json.loads(run_text(experiment, "sweep.json"))
        summary = {k: v for k, v in summary.items() if k not in ("wall_time_s", "num_trials")}
        summary["runs"][-1]["ended"] = None
        with experiment.filesystem.open_output_stream(f"{experiment.remote_dir}/sweep.json") as f:
            f.write(json.dumps(summary).encode())
    return experiment


@pytest.mark.ray  # a moto S3 server
def test_a_uri_resume_names_the_damaged_file_in_the_bucket_and_changes_nothing(
    s3, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("VISIONTUNE_CACHE", str(tmp_path / "cache"))
    storage = f"s3://sweeps/runs?{s3}"
    experiment = _upload_fixture(storage, "fixture", interrupted=True)
    with experiment.filesystem.open_output_stream(f"{experiment.remote_dir}/optuna.db") as f:
        f.write(b"not a database" * 50)
    before = {f: run_text(experiment, f) for f in ("sweep.json", "trial_status.json")}
    args = ["tune", str(CLASSIFIER_SPACE), "--storage", storage, "--name", "fixture", "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "visiontune: error: s3://sweeps/runs/fixture/optuna.db: not a readable SQLite database"
    ), err
    assert {f: run_text(experiment, f) for f in before} == before


@pytest.mark.ray  # a moto S3 server
def test_a_uri_resume_of_a_finished_sweep_says_so(s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VISIONTUNE_CACHE", str(tmp_path / "cache"))
    storage = f"s3://sweeps/runs?{s3}"
    experiment = _upload_fixture(storage, "fixture", interrupted=False)
    args = ["tune", str(CLASSIFIER_SPACE), "--storage", storage, "--name", "fixture", "--resume"]
    assert main(args) == 0
    assert "the sweep finished; nothing to resume" in capsys.readouterr().out
    assert experiment.exists()
