"""The trial slots of a cluster whose autoscaler can add nodes: the nodes up now, plus what the
node types it may still add could hold, up to their `max_workers`.

cluster.yaml's head has no GPU and its GPU workers start at `min_workers: 0`: counting only the
nodes up, a sweep asking `--gpus-per-trial 0.25` would be refused at once, and with one GPU
worker up Tune would never ask for more trials than that worker holds, so the autoscaler would
never see the demand that makes it add the others. With the autoscaling config known, a request
fits if some node type (up or addable) holds it, and the concurrency counts the addable nodes'
slots: Tune's pending trials are the demand the autoscaler scales up for.

The config comes from the GCS (`compat.reported_cluster_config`) or, failing that, from the file
the head's autoscaler was started with (`compat.autoscaling_config_here`, read on the head).
Without either (no autoscaler, KubeRay, a file nobody can read) only the nodes up count.
The arithmetic below takes plain dicts, so it is tested without Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from visiontune.sweep.compat import autoscaling_config_here, reported_cluster_config

HEAD_RESOURCE = "node:__internal_head__"  # every Ray head node has this resource


@dataclass(frozen=True)
class NodeType:
    """A node type the autoscaler launches: its declared resources and its most workers
    (None: no limit of its own)."""

    name: str
    resources: dict[str, float]
    max_workers: int | None


@dataclass(frozen=True)
class AutoscalingConfig:
    """The node types of a cluster's autoscaling config and its cluster-wide worker limit."""

    node_types: tuple[NodeType, ...]
    max_workers: int | None = None  # worker nodes in all, head excluded; None: no limit
    head_in_types: bool = False  # the head counts against the type it matches (Ray's groups)


@dataclass(frozen=True)
class Addable:
    """Nodes of one type the autoscaler can still add, and the trials each would hold."""

    node_type: NodeType
    count: int
    trials_each: int

    @property
    def slots(self) -> int:
        return self.count * self.trials_each


@dataclass(frozen=True)
class Capacity:
    """Trial slots on the nodes up now (`live_slots`, from `fitting_nodes` of them) and on the
    nodes the autoscaler can add."""

    live_slots: int
    fitting_nodes: int
    addable: tuple[Addable, ...] = field(default=())

    @property
    def total(self) -> int:
        return self.live_slots + sum(a.slots for a in self.addable)


def trials_per_node(resources: dict[str, float], cpu: float, gpu: float) -> int:
    """How many trials asking `cpu` CPUs and `gpu` GPUs a node with `resources` holds."""
    fits = math.floor(resources.get("CPU", 0) / cpu + 1e-9) if cpu else math.inf
    if gpu:
        fits = min(fits, math.floor(resources.get("GPU", 0) / gpu + 1e-9))
    return 0 if fits == math.inf else int(fits)


def config_from_yaml(config: dict[str, Any]) -> AutoscalingConfig:
    """The node types of a cluster-launcher config (cluster.yaml, or the file `ray up` writes
    to the head). As Ray fills it in (`fill_node_type_min_max_workers`): a type without
    `max_workers` may grow to the cluster's `max_workers`; the head type adds no workers."""
    cluster_max = config.get("max_workers")
    head = config.get("head_node_type")
    types = []
    for name, spec in (config.get("available_node_types") or {}).items():
        spec = spec or {}
        most = 0 if name == head else spec.get("max_workers", cluster_max)
        types.append(NodeType(name, dict(spec.get("resources") or {}), most))
    return AutoscalingConfig(tuple(types), cluster_max)


def config_from_reported(config: Any) -> AutoscalingConfig:
    """The node groups of Ray's `autoscaler_pb2.ClusterConfig` (max_count -1: no limit)."""
    types = tuple(
        NodeType(
            group.name,
            {key: float(value) for key, value in group.resources.items()},
            None if group.max_count < 0 else group.max_count,
        )
        for group in config.node_group_configs
    )
    return AutoscalingConfig(types, head_in_types=True)  # no group is marked as the head's


def _node_type_of(resources: dict[str, float], types: tuple[NodeType, ...], used: dict) -> Any:
    """The node type (with room left under its max_workers) that a live node's CPUs and GPUs
    match; None when none does (a node added by hand, the head)."""
    for node_type in types:
        declared = node_type.resources
        if not declared or node_type.max_workers == 0:
            continue
        same = all(
            math.isclose(resources.get(key, 0), declared.get(key, 0)) for key in ("CPU", "GPU")
        )
        room = node_type.max_workers is None or used[node_type.name] < node_type.max_workers
        if same and room:
            return node_type
    return None


def cluster_capacity(
    nodes: list[dict[str, Any]],
    config: AutoscalingConfig | None,
    cpu: float,
    gpu: float,
    limit: int,
) -> Capacity:
    """The slots of the live `nodes` (dicts as `ray.nodes()` gives them, alive ones) and of the
    nodes `config` lets the autoscaler add for trials asking `cpu`/`gpu`. A live node counts
    against the type whose CPUs and GPUs it has. A type without a limit adds the nodes that
    `limit` trials still need (no sweep runs more trials at once than it has)."""
    per_node = [trials_per_node(n.get("Resources", {}), cpu, gpu) for n in nodes]
    live = Capacity(sum(per_node), sum(1 for fits in per_node if fits))
    if config is None:
        return live
    used = dict.fromkeys((t.name for t in config.node_types), 0)
    workers = 0
    for node in nodes:
        resources = node.get("Resources", {})
        is_head = HEAD_RESOURCE in resources
        if is_head and not config.head_in_types:
            continue
        workers += not is_head
        node_type = _node_type_of(resources, config.node_types, used)
        if node_type is not None:
            used[node_type.name] += 1
    room = None if config.max_workers is None else max(config.max_workers - workers, 0)
    addable = []
    candidates = [(t, trials_per_node(t.resources, cpu, gpu)) for t in config.node_types]
    for node_type, each in sorted(candidates, key=lambda c: -c[1]):  # biggest first
        if each == 0 or room == 0:
            continue
        if node_type.max_workers is None:  # enough for the trials the others leave over
            planned = live.live_slots + sum(a.slots for a in addable)
            count = math.ceil(max(limit - planned, 0) / each)
        else:
            count = max(node_type.max_workers - used[node_type.name], 0)
        if room is not None:
            count = min(count, room)
            room -= count
        if count:
            addable.append(Addable(node_type, count, each))
    return Capacity(live.live_slots, live.fitting_nodes, tuple(addable))


def _resources_text(resources: dict[str, float]) -> str:
    shown = {key: resources[key] for key in ("CPU", "GPU") if key in resources}
    return ", ".join(f"{key} {value:g}" for key, value in shown.items()) or "resources unknown"


def _request_text(cpu: float, gpu: float) -> str:
    return f"cpu={cpu:g} gpu={gpu:g}"


def describe_pending(capacity: Capacity, cpu: float, gpu: float) -> str:
    """One line: what is up now and what the autoscaler can add for this sweep's trials."""
    adds = "; ".join(
        f"{a.count} x {a.node_type.name} ({_resources_text(a.node_type.resources)} each, "
        f"{a.trials_each} trial(s) each)"
        for a in capacity.addable
    )
    return (
        f"{capacity.fitting_nodes} node(s) up can hold a trial asking {_request_text(cpu, gpu)} "
        f"({capacity.live_slots} slot(s)); the autoscaler can add up to {adds}: up to "
        f"{capacity.total} trials at once, the rest waiting while those nodes start"
    )


def describe_refusal(
    nodes: list[dict[str, Any]], config: AutoscalingConfig | None, cpu: float, gpu: float
) -> str:
    """One line: the request, the live nodes' resources and, where known, the node types."""
    have = [{k: v for k, v in n.get("Resources", {}).items() if k in ("CPU", "GPU")} for n in nodes]
    types = ""
    if config is not None:
        listed = ", ".join(
            f"{t.name} ({_resources_text(t.resources)}, max_workers "
            f"{'unlimited' if t.max_workers is None else t.max_workers})"
            for t in config.node_types
        )
        types = f"; the autoscaler's node types: {listed or 'none'}"
    return (
        f"resources: a trial asks for {_request_text(cpu, gpu)} but no node has that much "
        f"(nodes: {have}{types}); lower --cpus-per-trial/--gpus-per-trial"
    )


def read_autoscaling_config(nodes: list[dict[str, Any]]) -> AutoscalingConfig | None:
    """The connected cluster's autoscaling config, or None when it cannot be known: reported
    to the GCS, else the file of the head's autoscaler, read on the head node (this process
    when the driver runs there, else a small task pinned to it)."""
    import ray

    reported = reported_cluster_config()
    if reported is not None and reported.node_group_configs:
        return config_from_reported(reported)
    context = ray.get_runtime_context()
    gcs_address = context.gcs_address
    head = next((n["NodeID"] for n in nodes if HEAD_RESOURCE in n.get("Resources", {})), None)
    if head is None or head == context.get_node_id():
        found = autoscaling_config_here(gcs_address)
    else:
        found = read_config_on_node(head, gcs_address)
    return None if found is None else config_from_yaml(found)


def read_config_on_node(node_id: str, gcs_address: str) -> dict | None:
    """`compat.autoscaling_config_here` run on the node `node_id`; None if it cannot run."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    reader = ray.remote(num_cpus=0, max_retries=0)(autoscaling_config_here)
    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
    try:
        return ray.get(
            reader.options(scheduling_strategy=strategy).remote(gcs_address), timeout=120
        )
    except (ray.exceptions.RayError, TimeoutError):
        return None
