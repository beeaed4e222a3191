"""Sweeps on a real multi-node Ray cluster on loopback: `visiontune tune --address` attaches to it,
and a worker node killed mid-sweep costs no trial and no reported result: trials on the dead node
are retried from their last checkpoint epoch (max_failures) on the node that replaces it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from support import CLASSIFIER_SPACE, read_ledger, visiontune

pytestmark = pytest.mark.ray  # every test here starts Ray clusters

NUM_SAMPLES = 6
EPOCHS = 3


@pytest.fixture
def cluster() -> Iterator[object]:
    """A head node without CPUs (so every trial runs on a worker node) and one 2-CPU worker."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
        shutdown_at_exit=False,
    )
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()  # stops only this cluster's processes


def _worker(cluster) -> object:
    return next(node for node in cluster.list_all_nodes() if node is not cluster.head_node)


def test_sweep_survives_losing_its_worker_node(cluster, tiny_imagefolder, tmp_path):
    exe = str(Path(sys.executable).with_name("visiontune"))
    args = [
        exe, "tune", CLASSIFIER_SPACE, "--address", cluster.address,
        "--num-samples", NUM_SAMPLES, "--max-epochs", EPOCHS, "--data", tiny_imagefolder,
        "--storage", tmp_path, "--name", "n", "--set", "width=8", "--set", "batch_size=16",
    ]  # fmt: skip
    exp = tmp_path / "n"
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        proc = subprocess.Popen(list(map(str, args)), stdout=out, stderr=subprocess.STDOUT)
        try:
            # Kill the worker once a trial on it is mid-way: one checkpointed epoch, two to go.
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None:
                ledger = read_ledger(exp)
                if any(
                    e["status"] == "RUNNING" and e.get("epochs", 0) == 1 for e in ledger.values()
                ):
                    break
                time.sleep(0.2)
            assert proc.poll() is None, "the sweep ended before the node could be killed"
            running_at_kill = {
                tid for tid, e in read_ledger(exp).items() if e["status"] == "RUNNING"
            }
            cluster.remove_node(_worker(cluster), allow_graceful=False)
            time.sleep(3)
            cluster.add_node(num_cpus=2)  # the replacement worker
            assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()

    ledger = read_ledger(exp)
    assert len(ledger) == NUM_SAMPLES
    assert {e["status"] for e in ledger.values()} <= {"TERMINATED", "STOPPED"}, ledger
    retried = {tid: e["recoveries"] for tid, e in ledger.items() if e.get("recoveries")}
    assert retried, f"no trial was retried after the node loss (running then: {running_at_kill})"
    recoveries = [r for trial in retried.values() for r in trial]
    # The first epoch after a retry follows the epoch of the checkpoint Ray restored (not epoch
    # 1 again); that is the last epoch reported, or the one before when the node died between
    # a result and the registration of its checkpoint ...
    # (a trial killed after its last epoch has none left: restored, it ends without training)
    assert all(
        r["resumed_at"] == (r["checkpoint_epoch"] + 1 if r["checkpoint_epoch"] < EPOCHS else None)
        for r in recoveries
    ), retried
    assert all(
        r["failed_after"] - 1 <= r["checkpoint_epoch"] <= r["failed_after"] for r in recoveries
    )
    # ... and the kill caught at least one trial mid-way: restored from a checkpointed epoch, it
    # trained on from there.
    assert any(1 <= r["checkpoint_epoch"] < EPOCHS for r in recoveries), retried
    trials = pd.read_csv(exp / "report" / "trials.csv")
    assert len(trials) == NUM_SAMPLES
    assert set(trials["status"]) <= {"TERMINATED", "STOPPED"}
    for _, row in trials.iterrows():  # every epoch a trial trained is in the report's history
        assert row["epochs"] == ledger[row["trial_id"]]["epochs"]
    summary = json.loads((exp / "sweep.json").read_text())
    assert summary["address"] == cluster.address and summary["errored"] == 0


@pytest.fixture
def client_head() -> Iterator[tuple[object, int]]:
    """A 2-CPU head node that also serves Ray Client (ray://) on a free loopback port."""
    from ray.cluster_utils import Cluster

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False, "ray_client_server_port": port},
        shutdown_at_exit=False,
    )
    try:
        yield cluster, port
    finally:
        cluster.shutdown()


@pytest.mark.parametrize("how", ["auto", "ray://"])
def test_tune_attaches_to_a_running_cluster(how, client_head, tiny_imagefolder, tmp_path):
    cluster, client_port = client_head
    if how == "auto":  # `auto` finds the cluster named in RAY_ADDRESS (as on a cluster node)
        address, env = "auto", {"RAY_ADDRESS": cluster.address}
    else:  # Ray Client: the driver runs as a task on the head, and writes its files there
        address, env = f"ray://127.0.0.1:{client_port}", {}
    result = visiontune(
        "tune", CLASSIFIER_SPACE, "--address", address, "--num-samples", 3, "--max-epochs", 2,
        "--data", tiny_imagefolder, "--storage", tmp_path, "--name", "a", "--set", "width=8",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tuned best" in result.stdout
    summary = json.loads((tmp_path / "a" / "sweep.json").read_text())
    assert summary["address"] == address and summary["num_trials"] == 3
    trials = pd.read_csv(tmp_path / "a" / "report" / "trials.csv")
    assert len(trials) == 3


def test_storage_check_asks_every_other_node(cluster, tmp_path):
    """The pre-flight check really runs on the other node: there it finds the driver's marker
    (one machine: one disk), and a node that does not find it is named."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from visiontune.storage import open_experiment
    from visiontune.sweep import check_shared_storage, nodes_without

    ray.init(address=cluster.address)
    try:
        worker = _worker(cluster).node_id
        check_shared_storage(open_experiment(tmp_path / "runs", "x"))  # no error: same disk
        assert list((tmp_path / "runs").iterdir()) == []  # its marker is gone again
        marker = tmp_path / "marker"
        marker.write_text("driver's token")
        strategy = NodeAffinitySchedulingStrategy
        assert nodes_without(str(marker), "driver's token", [worker], strategy) == []
        assert nodes_without(str(marker), "another token", [worker], strategy) == [worker]
        assert nodes_without(str(tmp_path / "absent"), "t", [worker], strategy) == [worker]
    finally:
        ray.shutdown()
