"""The Ray cluster a sweep runs on: attach to it (or start an embedded local one), fail fast on
an address nothing answers at, count the trial slots (with those an autoscaler can still add:
visiontune.sweep.autoscale), and check that a local storage path is the same directory on every
node. Ray is imported inside the functions: `keep_ray_on_loopback` must be able to run before
it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from visiontune.errors import InputError
from visiontune.spec import SweepSpec
from visiontune.storage import Experiment
from visiontune.sweep.autoscale import (
    cluster_capacity,
    describe_pending,
    describe_refusal,
    read_autoscaling_config,
)


def check_address(address: str) -> None:
    """Fail at once (instead of Ray retrying for minutes) when nothing listens at a HOST:PORT or
    ray://HOST:PORT address; `auto` is left to Ray, which fails fast when it finds no cluster."""
    import socket

    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address: {address!r} is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise InputError(
            f"--address: nothing answers at {address} ({exc.strerror or exc})"
        ) from None


def start_ray(address: str | None) -> bool:
    """Attach to `address`, or start an embedded local Ray. Returns True if we started it."""
    import ray

    if ray.is_initialized():  # a task on the head: the driver of a ray:// sweep
        return False
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except ConnectionError as exc:
            raise InputError(f"--address: no Ray cluster at {address}: {exc}") from None
        return False
    ray.init(address="local", include_dashboard=False, log_to_driver=True)
    return True


def cluster_slots(spec: SweepSpec) -> int:
    """Trials that fit at once: on the nodes up now, and on the nodes the cluster's autoscaler
    can still add (visiontune.sweep.autoscale; says so on stderr when some slots are only
    that). Fails fast when the per-trial request fits no node and no node type."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpu, gpu = spec.cpus_per_trial, spec.gpus_per_trial
    config = read_autoscaling_config(nodes)
    capacity = cluster_capacity(nodes, config, cpu, gpu, spec.num_samples)
    if capacity.total == 0:
        raise InputError(describe_refusal(nodes, config, cpu, gpu))
    if capacity.addable:
        print(f"visiontune: {describe_pending(capacity, cpu, gpu)}", file=sys.stderr, flush=True)
    return capacity.total


def check_shared_storage(experiment: Experiment) -> None:
    """A local storage path must be the same directory on every node (NFS, or one machine):
    Ray's trials on other nodes write their checkpoints there. Each node that can run trials
    looks for a marker the driver wrote, at once, instead of trials failing at their first
    checkpoint."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if experiment.uri:
        return
    here = ray.get_runtime_context().get_node_id()
    others = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    if not others:
        return
    storage = experiment.local.parent
    created = not storage.exists()
    storage.mkdir(parents=True, exist_ok=True)
    token = os.urandom(8).hex()
    marker = storage / f".visiontune-shared-{token}"
    marker.write_text(token)
    try:
        blind = nodes_without(str(marker), token, others, NodeAffinitySchedulingStrategy)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        if created:
            storage.rmdir()  # refused: leave nothing behind
        raise InputError(
            f"--storage: {storage} is local to this machine, but {len(blind)} other node(s) of "
            f"the cluster cannot see it ({', '.join(n[:8] for n in blind)}); trials there could "
            "not save checkpoints: use a path every node mounts (NFS) or an s3:// / gs:// URI"
        )


def nodes_without(marker: str, token: str, node_ids: list[str], strategy: Any) -> list[str]:
    """The nodes (of `node_ids`) on which `marker` does not hold `token`."""
    import ray

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        try:
            return Path(path).read_text() == token
        except OSError:
            return False

    checks = [
        sees.options(scheduling_strategy=strategy(node_id, soft=False)).remote(marker)
        for node_id in node_ids
    ]
    return [node for node, ok in zip(node_ids, ray.get(checks, timeout=120), strict=True) if not ok]
