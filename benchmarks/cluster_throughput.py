"""Sweep throughput (trials/hour) on a 2-node Ray cluster vs 1 node, for the same sweep.

Run (from the repository root):

    .venv/bin/python benchmarks/cluster_throughput.py              # 8 trials x 3 epochs, 2 rounds
    .venv/bin/python benchmarks/cluster_throughput.py --quick      # 4 trials x 2 epochs, 1 round

Each layout is a real Ray cluster on 127.0.0.1 (`ray.cluster_utils.Cluster`: a head node plus,
for the 2-node layouts, a worker node with its own raylet and object store), and the sweep is the
command a user runs against it: `visiontune tune SPEC --address HEAD ...` in a subprocess.
Layouts, interleaved round by round so that machine load hits all of them alike:
  - 1 node x 1 CPU     (one trial slot)
  - 2 nodes x 1 CPU    (two slots, one per node)
  - 1 node x 2 CPUs    (two slots on one node: the same CPUs as the 2-node layout)
The sweep: the classifier search space with FIFO scheduling (every trial trains every epoch, so
each layout does the same work; ASHA's decisions would depend on timing), width 8, on a generated
ImageFolder set of --images images. Throughput = trials / the sweep's wall time from sweep.json
(Ray Tune's fit; the driver's start-up and the test-split evaluation are reported beside it).
Ratios printed: 2 nodes / 1 node (scaling with a second node) and 2 nodes / 1 node at the same
CPUs (what spreading trials over nodes costs). On a 2-core machine both 2-slot layouts share the
same two cores, so the scaling ratio is bounded by 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from visiontune.sweep import keep_ray_on_loopback

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = {  # name -> CPUs of each node (the first is the head)
    "1 node x 1 CPU": (1,),
    "2 nodes x 1 CPU": (1, 1),
    "1 node x 2 CPUs": (2,),
}


def benchmark_spec(out: Path) -> Path:
    spec = yaml.safe_load((REPO / "search_spaces" / "classifier.yaml").read_text())
    spec["scheduler"] = {"type": "fifo"}
    path = out / "classifier_fifo.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_layout(nodes: tuple[int, ...], args: argparse.Namespace, spec: Path, data: Path | None,
               storage: Path, name: str, extra: Sequence[str] = ("--set", "width=8"),
               head_gpus: int = 0) -> dict:  # fmt: skip
    """One sweep on a fresh loopback cluster whose nodes have `nodes` CPUs (the head also
    `head_gpus` GPUs); `extra` are further `visiontune tune` arguments."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": nodes[0], "num_gpus": head_gpus, "include_dashboard": False},
        shutdown_at_exit=False,
    )
    try:
        for cpus in nodes[1:]:
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        exe = str(Path(sys.executable).with_name("visiontune"))
        command = [
            exe, "tune", str(spec), "--address", cluster.address, "--num-samples",
            str(args.trials), "--max-epochs", str(args.epochs),
            *(["--data", str(data)] if data else []),  # default: the spec's embedded set
            "--storage", str(storage), "--name", name, *extra,
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        total = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"sweep failed on {nodes}:\n{done.stderr[-3000:]}")
    finally:
        cluster.shutdown()
    summary = json.loads((storage / name / "sweep.json").read_text())
    return {"fit_s": summary["wall_time_s"], "command_s": total, "slots": summary["slots"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.rounds = 4, 2, 1
    keep_ray_on_loopback()
    os.environ.setdefault("RAY_worker_niceness", "0")
    from visiontune.data import ir_solar

    with tempfile.TemporaryDirectory(prefix="visiontune-bench-") as scratch:
        scratch = Path(scratch)
        data = ir_solar.write_imagefolder(scratch / "ir", num_images=args.images, seed=3)
        spec = benchmark_spec(scratch)
        runs: dict[str, list[dict]] = {name: [] for name in LAYOUTS}
        for round_ in range(args.rounds):
            for index, (name, nodes) in enumerate(LAYOUTS.items()):
                result = run_layout(nodes, args, spec, data, scratch, f"r{round_}-{index}")
                runs[name].append(result)
                print(
                    f"round {round_ + 1} {name:16s}: {result['slots']} slots, fit "
                    f"{result['fit_s']:.1f} s, whole command {result['command_s']:.1f} s",
                    flush=True,
                )
    print(f"\n{args.trials} trials x {args.epochs} epochs (FIFO), {args.images} images, "
          f"median of {args.rounds} round(s):")  # fmt: skip
    rate = {}
    for name, results in runs.items():
        fit = statistics.median(r["fit_s"] for r in results)
        command = statistics.median(r["command_s"] for r in results)
        rate[name] = args.trials / fit * 3600
        print(
            f"  {name:16s}: {rate[name]:7.0f} trials/hour (fit {fit:.1f} s, command {command:.1f} s)"
        )
    one, two, same = (rate[n] for n in LAYOUTS)
    print(f"\n2 nodes / 1 node (1 CPU each):        {two / one:.2f}x trials/hour")
    print(f"2 nodes x 1 CPU / 1 node x 2 CPUs:    {two / same:.2f}x trials/hour")


if __name__ == "__main__":
    main()
