"""`ray job submit --working-dir .` of a sweep to a running head node, as the README tells cluster
users: the job attaches to the cluster (RAY_ADDRESS), runs the sweep, and `visiontune report`
reads the result afterwards. The head node is real (GCS, raylet, dashboard with the job server),
started by this test on 127.0.0.1 and stopped by it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO, visiontune

pytestmark = pytest.mark.ray  # every test here starts a Ray head node with its job server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A 2-CPU head node with its dashboard (job server) on 127.0.0.1; yields the dashboard URL."""
    from ray.cluster_utils import Cluster

    bin_dir = str(Path(sys.executable).parent)  # the job's entrypoint finds `visiontune` here
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    port = _free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2, "include_dashboard": True,
            "dashboard_host": "127.0.0.1", "dashboard_port": port,
        },
        shutdown_at_exit=False,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        cluster.shutdown()


def test_ray_job_submit_runs_a_sweep_and_report_reads_it(head, tiny_imagefolder, tmp_path):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    submit = subprocess.run(
        [
            ray_cli, "job", "submit", "--address", head, "--working-dir", str(REPO), "--",
            "visiontune", "tune", "search_spaces/classifier.yaml", "--num-samples", "3",
            "--max-epochs", "2", "--data", str(tiny_imagefolder), "--storage", str(tmp_path),
            "--name", "job", "--set", "width=8",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-4000:]
    assert "succeeded" in submit.stdout.lower(), submit.stdout[-3000:]
    # The job's own log (tailed by `ray job submit`) ends with the sweep's table.
    assert "tuned best" in submit.stdout

    exp = tmp_path / "job"
    summary = json.loads((exp / "sweep.json").read_text())
    assert summary["address"] not in ("local", None)  # attached to the head, not a new Ray
    assert summary["num_trials"] == 3 and summary["errored"] == 0

    report = visiontune("report", exp)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Seed configurations vs tuned best" in report.stdout
    assert (exp / "report" / "trials.csv").read_text().count("\n") == 4  # header + 3 trials
