"""Classifier sweep throughput (trials/hour) on one GPU: 0.25 GPU per trial vs 1 GPU per trial.

Run on a machine with a CUDA GPU (from the repository root):

    .venv/bin/python benchmarks/gpu_packing.py                   # 8 trials x 4 epochs, 2 rounds
    .venv/bin/python benchmarks/gpu_packing.py --quick           # 4 trials x 2 epochs, 1 round
    .venv/bin/python benchmarks/gpu_packing.py --quick --fake-gpu   # CPU only: checks the script

Goal: packing four classifier trials on one GPU (`--gpus-per-trial 0.25`) gives >= 3x the
trials/hour of one trial per GPU (`--gpus-per-trial 1`) on the same card.

Both sweeps run the classifier search space with FIFO scheduling (every trial trains every
epoch) on the embedded IR set, attached with `--address` to a one-node loopback Ray cluster that
declares the machine's GPU (Ray pins each trial to it with CUDA_VISIBLE_DEVICES); each trial gets
CPUs / 4 cores in both sweeps, so only the GPU share differs. Throughput = trials / the sweep's
wall time (sweep.json). `--fake-gpu` declares one GPU to Ray on a CPU-only machine: trials then
train on the CPU, so its numbers say nothing about a GPU; it only exercises the script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch
from cluster_throughput import benchmark_spec, run_layout

from visiontune.sweep import keep_ray_on_loopback

GOAL = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=min(os.cpu_count() or 4, 16))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fake-gpu", action="store_true", help="declare a GPU on a CPU machine")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.rounds = 4, 2, 1
    if not torch.cuda.is_available() and not args.fake_gpu:
        raise SystemExit("gpu_packing: no CUDA GPU here (use --fake-gpu to exercise the script)")
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (--fake-gpu)"
    keep_ray_on_loopback()
    os.environ.setdefault("RAY_worker_niceness", "0")
    cpus_per_trial = max(1, args.cpus // 4)
    shares = {"1 GPU per trial": 1.0, "0.25 GPU per trial": 0.25}
    with tempfile.TemporaryDirectory(prefix="visiontune-bench-") as scratch:
        scratch = Path(scratch)
        spec = benchmark_spec(scratch)
        runs: dict[str, list[dict]] = {name: [] for name in shares}
        for round_ in range(args.rounds):
            for index, (name, share) in enumerate(shares.items()):
                extra = ["--gpus-per-trial", str(share), "--cpus-per-trial", str(cpus_per_trial)]
                result = run_layout((args.cpus,), args, spec, None, scratch,
                                    f"r{round_}-{index}", extra=extra, head_gpus=1)  # fmt: skip
                runs[name].append(result)
                print(f"round {round_ + 1} {name:18s}: {result['slots']} slots, fit "
                      f"{result['fit_s']:.1f} s", flush=True)  # fmt: skip
    print(f"\n{card}; {args.cpus} CPUs, {cpus_per_trial} per trial; {args.trials} trials x "
          f"{args.epochs} epochs (FIFO); median of {args.rounds} round(s):")  # fmt: skip
    rate = {
        n: args.trials / statistics.median(r["fit_s"] for r in rs) * 3600 for n, rs in runs.items()
    }
    for name, value in rate.items():
        print(f"  {name:18s}: {value:7.0f} trials/hour")
    ratio = rate["0.25 GPU per trial"] / rate["1 GPU per trial"]
    verdict = "met" if ratio >= GOAL else "MISSED"
    print(f"\n0.25 / 1 GPU per trial: {ratio:.2f}x trials/hour (goal >= {GOAL}x: {verdict})")


if __name__ == "__main__":
    main()
