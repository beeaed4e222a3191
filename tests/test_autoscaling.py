"""A GPU sweep on an autoscaling cluster whose head has no GPU and whose GPU workers start at
zero (cluster.yaml's shape): `visiontune tune --gpus-per-trial 0.25` starts instead of being
refused, counts the slots of the workers the autoscaler can add, and the autoscaler adds them.

The cluster is real, on 127.0.0.1: a head started by `ray start --head --autoscaling-config`
with Ray's fake multi-node provider (`fake_multinode`, what Ray's own autoscaler tests use
through `ray.cluster_utils.AutoscalingCluster`, whose start and shutdown run `ray stop --force`
and would end every Ray on the machine). Its worker nodes declare a GPU that does not exist:
VISIONTUNE_ALLOW_FAKE_GPUS=1 lets a trial given one train on the CPU. Everything started here
runs in one new session (`start_new_session`): the head's daemons and the worker nodes the
autoscaler starts, and the teardown stops that session's processes only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from support import CLASSIFIER_SPACE, read_ledger, visiontune

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WORKER = {"CPU": 1, "GPU": 1}  # two trials asking cpu 0.5 gpu 0.25 each
MAX_WORKERS = 2
NUM_SAMPLES = 3  # more than one worker holds: the concurrency must count the addable ones
CLUSTER_ENV = {
    "RAY_FAKE_CLUSTER": "1",  # the fake provider refuses to run without it
    "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the autoscaler looks at the demand every second
    "RAY_AUTH_MODE": "disabled",  # `ray start` turns token auth on by default (ray 2.60.0)
    "VISIONTUNE_ALLOW_FAKE_GPUS": "1",  # trials given a declared-only GPU train on the CPU
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _autoscaling_config(gcs_address: str) -> dict:
    """A cluster-launcher config for the fake provider: a 1-CPU head, GPU workers from 0 to 2."""
    return {
        "cluster_name": "visiontune-test",
        "max_workers": MAX_WORKERS,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,  # the provider's default is port 6379
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {
                "resources": WORKER,
                "node_config": {},
                "min_workers": 0,
                "max_workers": MAX_WORKERS,
            },
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,  # the workers stay for the test-split evaluation
        "auth": {"ssh_user": "nobody"},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def _session_processes(session: int) -> list[int]:
    """The live (not zombie) processes of `session`."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            if os.getsid(int(entry.name)) == session and stat.rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return pids


def _stop_session(session: int) -> list[int]:
    """Stop every process of `session` (SIGTERM, then SIGKILL); returns any still running."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
        for pid in _session_processes(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _session_processes(session) and time.monotonic() < deadline:
            time.sleep(0.5)
    return _session_processes(session)


@pytest.fixture
def autoscaling_head(tmp_path: Path) -> Iterator[str]:
    """The head of a fake autoscaling cluster on 127.0.0.1; yields its GCS address."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    config = tmp_path / "autoscaling.json"
    config.write_text(json.dumps(_autoscaling_config(address)))
    ray_cli = str(Path(sys.executable).with_name("ray"))
    args = [
        ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
        "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
        f"--ray-client-server-port={_free_port()}", f"--autoscaling-config={config}",
    ]  # fmt: skip
    log = tmp_path / "ray_start.log"
    with log.open("w") as out:
        start = subprocess.Popen(
            args,
            env={**os.environ, **CLUSTER_ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the head and every worker node the autoscaler adds
        )
    session = start.pid
    try:
        assert start.wait(timeout=600) == 0, log.read_text()[-3000:]
        yield address
    finally:
        if start.poll() is None:
            start.kill()
        left = _stop_session(session)
        assert not left, f"processes of the test cluster still running: {left}"


PROBE = """
import json, sys, ray
from visiontune.sweep.autoscale import HEAD_RESOURCE, read_config_on_node
ray.init(address=sys.argv[1])
nodes = ray.nodes()
head = next(n["NodeID"] for n in nodes if HEAD_RESOURCE in n["Resources"])
config = read_config_on_node(head, ray.get_runtime_context().gcs_address)
print(json.dumps({"nodes": nodes, "config": config}))
"""


def _probe(address: str) -> dict:
    """Every node the cluster's GCS has known (dead ones included), and the autoscaling config
    as a task on the head reads it (the way a driver that is not on the head does)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, address],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_gpu_sweep_on_a_cpu_head_gets_gpu_workers_from_the_autoscaler(
    autoscaling_head, tiny_imagefolder, tmp_path
):
    address = autoscaling_head
    result = visiontune(
        "tune", CLASSIFIER_SPACE, "--address", address, "--gpus-per-trial", 0.25,
        "--cpus-per-trial", 0.5, "--num-samples", NUM_SAMPLES, "--max-epochs", 1,
        "--data", tiny_imagefolder, "--storage", tmp_path, "--name", "auto",
        "--set", "width=4", env={"RAY_AUTH_MODE": "disabled", "VISIONTUNE_ALLOW_FAKE_GPUS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    # Not refused: no GPU node was up, and the warning names the ones the autoscaler can add.
    assert (
        "0 node(s) up can hold a trial asking cpu=0.5 gpu=0.25 (0 slot(s)); the autoscaler can "
        f"add up to {MAX_WORKERS} x gpu_worker (CPU 1, GPU 1 each, 2 trial(s) each)"
    ) in result.stderr, result.stderr[-3000:]
    exp = tmp_path / "auto"
    summary = json.loads((exp / "sweep.json").read_text())
    # Tune was allowed every addable slot, more than one worker holds.
    assert summary["slots"] == MAX_WORKERS * 2 and summary["errored"] == 0

    # The autoscaler added GPU workers, and only they could run the trials (the head has no GPU).
    probe = _probe(address)
    gpu_workers = [n for n in probe["nodes"] if n["Resources"].get("GPU", 0) > 0]
    assert 1 <= len(gpu_workers) <= MAX_WORKERS, probe["nodes"]
    for result_file in exp.glob("trial_*/result.json"):  # each trial was given a (fake) GPU
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line]
        assert rows and all("GPU" in row["device"] for row in rows), (result_file, rows)
    ledger = read_ledger(exp)
    assert len(ledger) == NUM_SAMPLES
    assert {e["status"] for e in ledger.values()} <= {"TERMINATED", "STOPPED"}, ledger
    # The report the sweep wrote (`visiontune report` is the same code) lists every trial.
    trials = pd.read_csv(exp / "report" / "trials.csv")
    assert len(trials) == NUM_SAMPLES
    assert set(trials["status"]) <= {"TERMINATED", "STOPPED"}
    assert "Seed configurations vs tuned best" in (exp / "report" / "report.md").read_text()
    # A driver elsewhere than on the head reads the same config through a task there.
    assert probe["config"]["available_node_types"]["gpu_worker"]["resources"] == WORKER
