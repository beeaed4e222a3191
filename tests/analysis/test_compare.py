"""analysis/compare.py (`visiontune compare`) on copies of the two checked-in sweeps, which share
one objective (val_acc, max): `experiment` (TPE + ASHA, 5 trials) and `diverging` (random
search, one trial diverged). The expected budgets and best scores are counted from the trials'
result.json files here, not copied from the output."""

from __future__ import annotations

import io
import json
import logging
import statistics
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from support import copy_fixture

from visiontune.analysis.compare import best_so_far_curve
from visiontune.analysis.results import load_experiment
from visiontune.cli import main

FILES = {"compare.md", "compare.csv", "compare.png"}


def _epochs(exp: Path) -> list[dict]:
    """Every epoch the sweep's trials reported (a diverged trial's last report is no epoch)."""
    rows = []
    for result in sorted(exp.glob("trial_*/result.json")):
        lines = [json.loads(line) for line in result.read_text().splitlines()]
        rows += [row for row in lines if "diverged" not in row]
    return rows


def _table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _compare(*args: object) -> int:
    return main(["compare", *map(str, args)])


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sweeps")
    return {name: copy_fixture(name, root) for name in ("experiment", "diverging")}


@pytest.fixture(scope="module")
def compared(sweeps, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compared") / "out"
    assert _compare(sweeps["experiment"], sweeps["diverging"], "--out", out) == 0
    return out


def test_compare_writes_the_table_twice_and_the_figure(compared):
    assert {p.name for p in compared.iterdir()} == FILES


def test_each_sweep_is_one_row_with_its_budget_and_best_score(compared, sweeps):
    table = pd.read_csv(compared / "compare.csv").set_index("experiment")
    assert list(table.index) == ["experiment", "diverging"]
    for name, exp in sweeps.items():
        epochs = _epochs(exp)
        best = max(epochs, key=lambda row: row["val_acc"])
        assert table.loc[name, "trial_epochs"] == len(epochs)
        assert table.loc[name, "best_val_acc"] == best["val_acc"]
        assert table.loc[name, "best_trial"] == best["trial_id"]
        assert table.loc[name, "trials"] == len(list(exp.glob("trial_*/params.json")))
        summary = json.loads((exp / "sweep.json").read_text())
        assert table.loc[name, "wall_time_s"] == pytest.approx(summary["wall_time_s"])
    assert table.loc["experiment", "searcher"] == "optuna_tpe"
    assert table.loc["diverging", "searcher"] == "random"


def test_the_markdown_table_holds_the_same_rows(compared):
    table = pd.read_csv(compared / "compare.csv")
    rows = _table_rows((compared / "compare.md").read_text())
    assert [row[0] for row in rows] == list(table["experiment"])
    for row, budget, best in zip(rows, table["trial_epochs"], table["best_val_acc"], strict=True):
        assert str(budget) in row and f"{best:.4f}" in row


def test_a_sweep_without_confirm_json_has_no_confirmed_score(compared):
    table = pd.read_csv(compared / "compare.csv")
    assert table["confirmed_test_acc"].isna().all()
    assert (table["confirmed_seeds"] == 0).all()
    assert all(row[8] == "—" for row in _table_rows((compared / "compare.md").read_text()))


def test_the_figure_is_a_png_with_one_line_per_sweep(compared):
    data = (compared / "compare.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).reshape(-1, 3).astype(int)
    assert len(np.unique(image @ [65536, 256, 1])) > 10  # not blank
    for color in ("#1f77b4", "#ff7f0e"):  # matplotlib's C0 and C1: the two sweeps' lines
        rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(image - rgb).sum(axis=1) < 30).sum() > 200, color


def test_trial_epochs_are_counted_in_report_order(sweeps):
    experiment = load_experiment(sweeps["experiment"])
    curve = best_so_far_curve(experiment)
    assert list(curve["trial_epochs"]) == list(range(1, len(_epochs(sweeps["experiment"])) + 1))
    order = list(zip(curve["seconds"], curve["epoch"], curve["trial_id"], strict=True))
    assert order == sorted(order)  # timestamp, then epoch, then trial id (the fixture has ties)
    assert len(set(curve["seconds"])) < len(curve)  # ... and the ties are there to break
    assert list(curve["best_so_far"]) == list(curve["value"].cummax())
    started = experiment.summary["runs"][0]["started"]
    first = min(row["timestamp"] for row in _epochs(sweeps["experiment"]))
    assert curve["seconds"].iloc[0] == pytest.approx(max(0.0, first - started))


def test_the_confirmed_score_is_the_test_mean_of_the_confirmations_tuned_best(sweeps, tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    runs = {  # role: (validation, test) per seed; "tuned #2" has the better mean validation score
        "seed baseline": [(0.02, 0.9), (0.03, 0.9)],
        "tuned #1": [(0.30, 0.75), (0.20, 0.5)],
        "tuned #2": [(0.40, 0.25), (0.30, 0.5), (0.20, 0.125)],
    }
    rows = [
        {"role": role, "trial_id": None, "seed": seed, "val_acc": val, "test_acc": test}
        for role, scores in runs.items()
        for seed, (val, test) in enumerate(scores)
    ]
    (exp / "confirm.json").write_text(json.dumps(rows))
    assert _compare(exp, sweeps["diverging"], "--out", tmp_path / "out") == 0
    table = pd.read_csv(tmp_path / "out" / "compare.csv").set_index("experiment")
    assert table.loc["experiment", "confirmed_test_acc"] == pytest.approx(
        statistics.mean([0.25, 0.5, 0.125])
    )
    assert table.loc["experiment", "confirmed_seeds"] == 3
    assert "0.2917 (n=3)" in (tmp_path / "out" / "compare.md").read_text()


def test_a_file_uri_is_a_local_experiment(sweeps, tmp_path):
    args = [f"file://{sweeps['experiment']}", f"file://{sweeps['diverging']}"]
    assert _compare(*args, "--out", tmp_path / "out") == 0
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert list(table["experiment"]) == ["experiment", "diverging"]


def test_the_default_output_is_a_new_directory_here(sweeps, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _compare(sweeps["experiment"], sweeps["diverging"]) == 0
    (out,) = tmp_path.iterdir()
    assert out.name.startswith("compare-") and {p.name for p in out.iterdir()} == FILES


def test_two_experiments_with_one_name_are_labelled_by_location(sweeps, tmp_path):
    other = copy_fixture("experiment", tmp_path / "b")
    assert _compare(sweeps["experiment"], other, "--out", tmp_path / "out") == 0
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert list(table["experiment"]) == [str(sweeps["experiment"]), str(other)]


def _edited(tmp_path: Path, **changes: str) -> Path:
    exp = copy_fixture("diverging", tmp_path)
    spec = yaml.safe_load((exp / "spec.yaml").read_text())
    (exp / "spec.yaml").write_text(yaml.safe_dump({**spec, **changes}, sort_keys=False))
    return exp


def _refused(capsys, out: Path, *args: object) -> str:
    before = sorted(out.parent.iterdir())
    assert _compare(*args, "--out", out) == 2
    assert sorted(out.parent.iterdir()) == before  # nothing written
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("visiontune: error: "), err
    return err


def test_one_experiment_is_refused(sweeps, tmp_path, capsys):
    err = _refused(capsys, tmp_path / "out", sweeps["experiment"])
    assert "two or more experiments, got 1" in err


def test_the_same_experiment_twice_is_refused(sweeps, tmp_path, capsys):
    again = f"{sweeps['experiment']}/../experiment"
    err = _refused(capsys, tmp_path / "out", sweeps["experiment"], again)
    assert "is the same experiment as" in err


@pytest.mark.parametrize(
    "changes", [{"metric": "val_loss", "mode": "min"}, {"mode": "min"}], ids=["metric", "mode"]
)
def test_sweeps_of_another_objective_are_refused(sweeps, tmp_path, capsys, changes):
    other = _edited(tmp_path / "edited", **changes)
    err = _refused(capsys, tmp_path / "out", sweeps["experiment"], other)
    assert f"{other}: metric {changes.get('metric', 'val_acc')} ({changes['mode']})" in err
    assert "val_acc (max)" in err


def test_a_directory_that_is_no_experiment_is_refused(sweeps, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _refused(capsys, tmp_path / "out", sweeps["experiment"], empty)
    assert f"{empty}: not a visiontune experiment directory" in err


def test_an_epoch_without_its_timestamp_is_refused_naming_the_file(sweeps, tmp_path, capsys):
    exp = copy_fixture("experiment", tmp_path / "copy")
    result = exp / "trial_40bf8aaf" / "result.json"
    rows = [json.loads(line) for line in result.read_text().splitlines()]
    del rows[1]["timestamp"]
    result.write_text("".join(json.dumps(row) + "\n" for row in rows))
    err = _refused(capsys, tmp_path / "out", exp, sweeps["diverging"])
    assert f"{result}: epoch 2: timestamp: expected a time" in err


def test_an_out_that_is_a_file_is_refused(sweeps, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("mine")
    err = _refused(capsys, out, sweeps["experiment"], sweeps["diverging"])
    assert f"--out: {out} is a file" in err and out.read_text() == "mine"


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, str]]:
    """A local S3 server (moto, 127.0.0.1) with the bucket `sweeps`: (filesystem, URI query)."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        fs = pafs.S3FileSystem(
            endpoint_override=f"http://{host}:{port}", region="us-east-1",
            allow_bucket_creation=True,
        )  # fmt: skip
        fs.create_dir("sweeps")
        yield fs, f"endpoint_override=http://{host}:{port}&region=us-east-1"
    finally:
        server.stop()


@pytest.mark.ray  # a moto S3 server
def test_experiments_in_a_bucket_compare_like_local_ones(
    bucket, sweeps, compared, tmp_path, capsys
):
    import pyarrow.fs as pafs

    fs, query = bucket
    for name, exp in sweeps.items():
        pafs.copy_files(str(exp), f"sweeps/runs/{name}", destination_filesystem=fs)
    uris = [f"s3://sweeps/runs/{name}?{query}" for name in sweeps]
    assert _compare(*uris, "--out", tmp_path / "out") == 0
    remote = pd.read_csv(tmp_path / "out" / "compare.csv")
    local = pd.read_csv(compared / "compare.csv")
    assert list(remote["location"]) == [f"s3://sweeps/runs/{name}" for name in sweeps]
    columns = ["experiment", "trials", "trial_epochs", "best_val_acc", "best_trial"]
    pd.testing.assert_frame_equal(remote[columns], local[columns])

    missing = f"s3://sweeps/runs/nothing?{query}"
    err = _refused(capsys, tmp_path / "again", uris[0], missing)
    assert "s3://sweeps/runs/nothing" in err
