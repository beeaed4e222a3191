"""The slot arithmetic of an autoscaling cluster (visiontune/sweep/autoscale.py) on hand-made
node lists (as `ray.nodes()` gives them) and configs (cluster.yaml as `ray up` fills it in), and
how the head's autoscaler config file is found. No Ray cluster."""

from __future__ import annotations

import pytest
import yaml
from support import REPO

from visiontune.sweep.autoscale import (
    AutoscalingConfig,
    NodeType,
    cluster_capacity,
    config_from_reported,
    config_from_yaml,
    describe_pending,
    describe_refusal,
    trials_per_node,
)
from visiontune.sweep.compat import monitor_config_path

G4DN = {"CPU": 4, "GPU": 1}  # what `ray up` fills in for a g4dn.xlarge gpu_worker
HEAD = {"CPU": 4.0, "memory": 1e10, "node:__internal_head__": 1.0, "node:10.0.0.1": 1.0}


def _node(resources: dict, node_id: str = "n") -> dict:
    return {"NodeID": node_id, "Alive": True, "Resources": dict(resources)}


@pytest.fixture(scope="module")
def shipped() -> AutoscalingConfig:
    """The repo's cluster.yaml with the resources `ray up` detects from the instance types."""
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["available_node_types"]["head"]["resources"] = {"CPU": 4}
    config["available_node_types"]["gpu_worker"]["resources"] = dict(G4DN)
    return config_from_yaml(config)


def test_trials_per_node_is_bounded_by_the_scarcer_resource():
    assert trials_per_node({"CPU": 4, "GPU": 1}, 1, 0.25) == 4
    assert trials_per_node({"CPU": 4, "GPU": 1}, 2, 0.25) == 2
    assert trials_per_node({"CPU": 4}, 1, 0.25) == 0  # no GPU
    assert trials_per_node({"CPU": 4, "GPU": 1}, 0.5, 0) == 8  # the GPU is not asked for
    assert trials_per_node({"CPU": 0.3 * 10}, 0.3, 0) == 10  # no float shortfall


def test_shipped_cluster_yaml_reads_as_a_head_and_four_gpu_workers(shipped):
    assert shipped.max_workers == 4
    assert shipped.node_types == (
        NodeType("head", {"CPU": 4}, 0),
        NodeType("gpu_worker", G4DN, 4),
    )


def test_a_gpu_request_fits_when_only_the_cpu_head_is_up(shipped):
    capacity = cluster_capacity([_node(HEAD, "head")], shipped, 1, 0.25, limit=100)
    assert (capacity.live_slots, capacity.total) == (0, 16)  # 4 addable workers x 4 trials
    assert [(a.node_type.name, a.count, a.trials_each) for a in capacity.addable] == [
        ("gpu_worker", 4, 4)
    ]
    assert describe_pending(capacity, 1, 0.25) == (
        "0 node(s) up can hold a trial asking cpu=1 gpu=0.25 (0 slot(s)); the autoscaler can "
        "add up to 4 x gpu_worker (CPU 4, GPU 1 each, 4 trial(s) each): up to 16 trials at "
        "once, the rest waiting while those nodes start"
    )


def test_workers_up_count_against_their_type_and_the_rest_stay_addable(shipped):
    worker = {**G4DN, "memory": 1.2e10, "node:10.0.0.7": 1.0}
    nodes = [_node(HEAD, "head"), _node(worker, "w1")]
    capacity = cluster_capacity(nodes, shipped, 1, 0.25, limit=100)
    assert (capacity.live_slots, capacity.fitting_nodes) == (4, 1)
    assert [(a.count, a.slots) for a in capacity.addable] == [(3, 12)]
    assert capacity.total == 16  # the same ceiling: nodes up plus those still addable


def test_a_full_cluster_has_nothing_pending(shipped):
    nodes = [_node(HEAD, "head")] + [_node(G4DN, f"w{i}") for i in range(4)]
    capacity = cluster_capacity(nodes, shipped, 1, 0.25, limit=100)
    assert (capacity.live_slots, capacity.addable, capacity.total) == (16, (), 16)


def test_the_cluster_wide_max_workers_caps_the_addable_nodes_biggest_first():
    config = AutoscalingConfig(
        (NodeType("small", {"CPU": 2, "GPU": 1}, 3), NodeType("big", {"CPU": 8, "GPU": 4}, 3)),
        max_workers=4,
    )
    nodes = [_node(HEAD, "head"), _node({"CPU": 2, "GPU": 1}, "s1")]  # one worker up
    capacity = cluster_capacity(nodes, config, 1, 0.5, limit=100)
    # 3 workers left in all: the 3 big ones (8 trials each) before any small one
    assert [(a.node_type.name, a.count, a.trials_each) for a in capacity.addable] == [("big", 3, 8)]
    assert capacity.total == 2 + 24


def test_a_type_without_a_limit_adds_what_the_sweep_can_use():
    config = AutoscalingConfig((NodeType("gpu", {"CPU": 4, "GPU": 1}, None),))
    capacity = cluster_capacity([_node(HEAD, "head")], config, 1, 0.25, limit=10)
    assert [(a.count, a.trials_each) for a in capacity.addable] == [(3, 4)]  # 12 >= 10
    nodes = [_node(HEAD, "head"), _node({"CPU": 2, "GPU": 1}, "w")]  # 2 trials up already
    assert cluster_capacity(nodes, config, 1, 0.25, limit=10).addable[0].count == 2


def test_without_a_config_only_the_nodes_up_count():
    nodes = [_node(HEAD, "head"), _node({"CPU": 2}, "w")]
    capacity = cluster_capacity(nodes, None, 1, 0, limit=100)
    assert (capacity.live_slots, capacity.addable, capacity.total) == (6, (), 6)
    assert cluster_capacity(nodes, None, 1, 0.25, limit=100).total == 0


def test_a_request_no_node_type_holds_is_refused_naming_nodes_and_types(shipped):
    nodes = [_node(HEAD, "head")]
    capacity = cluster_capacity(nodes, shipped, 1, 2, limit=100)  # 2 GPUs: a g4dn has one
    assert capacity.total == 0
    assert describe_refusal(nodes, shipped, 1, 2) == (
        "resources: a trial asks for cpu=1 gpu=2 but no node has that much (nodes: "
        "[{'CPU': 4.0}]; the autoscaler's node types: head (CPU 4, max_workers 0), "
        "gpu_worker (CPU 4, GPU 1, max_workers 4)); lower --cpus-per-trial/--gpus-per-trial"
    )
    assert describe_refusal(nodes, None, 1, 2) == (
        "resources: a trial asks for cpu=1 gpu=2 but no node has that much (nodes: "
        "[{'CPU': 4.0}]); lower --cpus-per-trial/--gpus-per-trial"
    )


def test_a_type_at_max_workers_zero_or_of_unknown_size_adds_nothing():
    config = AutoscalingConfig(
        (NodeType("off", {"CPU": 4, "GPU": 1}, 0), NodeType("unknown", {}, 4)), max_workers=4
    )
    capacity = cluster_capacity([_node(HEAD, "head")], config, 1, 0.25, limit=100)
    assert capacity.total == 0


def test_config_from_yaml_fills_max_workers_as_ray_does():
    config = {
        "max_workers": 5,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 2}},  # the head adds no workers
            "cpu": {"resources": {"CPU": 8}},  # no limit of its own: the cluster's
            "gpu": {"resources": G4DN, "max_workers": 2},
        },
    }
    assert config_from_yaml(config) == AutoscalingConfig(
        (
            NodeType("head", {"CPU": 2}, 0),
            NodeType("cpu", {"CPU": 8}, 5),
            NodeType("gpu", G4DN, 2),
        ),
        max_workers=5,
    )


def test_config_from_the_cluster_config_an_autoscaler_reports():
    from ray.core.generated import autoscaler_pb2

    reported = autoscaler_pb2.ClusterConfig()
    group = reported.node_group_configs.add(name="gpu", min_count=0, max_count=-1)
    group.resources.update({"CPU": 4, "GPU": 1})
    reported.node_group_configs.add(name="cpu", min_count=0, max_count=3).resources["CPU"] = 8
    reported.node_group_configs.add(name="head", max_count=1).resources["CPU"] = 4
    config = config_from_reported(reported)
    assert config == AutoscalingConfig(
        (
            NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, None),
            NodeType("cpu", {"CPU": 8.0}, 3),
            NodeType("head", {"CPU": 4.0}, 1),
        ),
        head_in_types=True,
    )
    # No group says it is the head's: the head node up fills its own group.
    capacity = cluster_capacity([_node(HEAD, "head")], config, 4, 0, limit=10)
    # the head holds 1 trial, 3 cpu nodes 2 each, then gpu nodes (1 each) for the 3 left of 10
    assert [(a.node_type.name, a.count) for a in capacity.addable] == [("cpu", 3), ("gpu", 3)]
    assert capacity.total == 10


MONITOR = "/venv/lib/python3.11/site-packages/ray/autoscaler/_private/monitor.py"


def _monitor(gcs: str, *extra: str) -> list[str]:
    return ["/venv/bin/python", "-u", MONITOR, "--logs-dir=/tmp/ray/s/logs",
            f"--gcs-address={gcs}", *extra]  # fmt: skip


def test_the_config_path_is_the_one_of_this_clusters_monitor(monkeypatch):
    monkeypatch.setenv("HOME", "/home/ray")
    processes = [
        (["/venv/bin/python", "train.py", "--gcs-address=10.0.0.1:6379"], "/"),  # no monitor
        (_monitor("10.0.0.1:7000", "--autoscaling-config=/other.yaml"), "/"),  # another cluster
        (_monitor("10.0.0.1:6379", "--autoscaling-config=~/ray_bootstrap_config.yaml"), "/"),
    ]
    assert monitor_config_path(processes, "10.0.0.1:6379") == "/home/ray/ray_bootstrap_config.yaml"
    assert monitor_config_path(processes, "10.0.0.1:7000") == "/other.yaml"
    assert monitor_config_path(processes, "10.0.0.1:8000") is None


def test_a_relative_config_path_is_the_monitors_and_no_flag_means_none():
    v2 = [arg.replace("_private", "v2") for arg in _monitor("h:1", "--autoscaling-config=c.yaml")]
    assert monitor_config_path([(v2, "/srv/ray")], "h:1") == "/srv/ray/c.yaml"
    assert monitor_config_path([(_monitor("h:1"), "/")], "h:1") is None  # read-only autoscaler
