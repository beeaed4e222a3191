"""The distributed-sweeps acceptance run, as a user would do it: a 2-node Ray cluster on
127.0.0.1, the README's classifier sweep attached to it with `--address`, and the worker node
killed and restarted midway. Prints what the sweep recorded: trials, retries, wall time.

Run (from the repository root):

    .venv/bin/python benchmarks/node_loss.py                   # 6 trials x 3 epochs, embedded data
    .venv/bin/python benchmarks/node_loss.py --quick           # 4 trials x 2 epochs, 720 images

The command under test is exactly
    visiontune tune search_spaces/classifier.yaml --address 127.0.0.1:PORT --num-samples 6
        --max-epochs 3 --storage S --name N
(the shipped YAML retries a trial up to 3 times: `max_failures: 3`). The head node and the worker
node have 1 CPU each, so trials run on both; the worker is killed (no graceful shutdown) once two
trials have reported an epoch, and a new worker joins 5 s later.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from visiontune.sweep import keep_ray_on_loopback

REPO = Path(__file__).resolve().parents[1]


def _ledger(exp: Path) -> dict:
    try:
        return json.loads((exp / "trial_status.json").read_text())
    except (OSError, ValueError):
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    keep_ray_on_loopback()
    from ray.cluster_utils import Cluster

    samples, epochs = (4, 2) if args.quick else (6, 3)
    with tempfile.TemporaryDirectory(prefix="visiontune-node-loss-") as scratch:
        scratch = Path(scratch)
        extra = []
        if args.quick:
            from visiontune.data import ir_solar

            data = ir_solar.write_imagefolder(scratch / "ir", num_images=720, seed=3)
            extra = ["--data", str(data), "--set", "width=8"]
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "include_dashboard": False},
            shutdown_at_exit=False,
        )
        try:
            worker = cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            exp = scratch / "runs" / "node-loss"
            command = [
                str(Path(sys.executable).with_name("visiontune")), "tune",
                "search_spaces/classifier.yaml", "--address", cluster.address,
                "--num-samples", str(samples), "--max-epochs", str(epochs),
                "--storage", str(scratch / "runs"), "--name", "node-loss", *extra,
            ]  # fmt: skip
            print("$", " ".join(command[1:]), flush=True)
            start = time.monotonic()
            log = (scratch / "driver.log").open("w")
            proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            while proc.poll() is None and (
                sum(e.get("epochs", 0) >= 1 for e in _ledger(exp).values()) < 2
            ):  # both slots (one per node) have a trial with a checkpointed epoch
                time.sleep(0.2)
            killed_at = time.monotonic() - start
            cluster.remove_node(worker, allow_graceful=False)
            print(f"worker node killed at {killed_at:.1f} s", flush=True)
            time.sleep(5)
            cluster.add_node(num_cpus=1)
            print(f"new worker node joined at {time.monotonic() - start:.1f} s", flush=True)
            code = proc.wait()
            log.close()
            print(f"visiontune tune exited {code} after {time.monotonic() - start:.1f} s")
            if code != 0:
                print((scratch / "driver.log").read_text()[-3000:])
                raise SystemExit(1)
        finally:
            cluster.shutdown()
        ledger = _ledger(exp)
        trials = pd.read_csv(exp / "report" / "trials.csv")
        print(f"\ntrials in the report: {len(trials)} of {samples}; statuses: "
              f"{trials['status'].value_counts().to_dict()}")  # fmt: skip
        for trial_id, entry in sorted(ledger.items()):
            for r in entry.get("recoveries", []):
                print(f"  trial {trial_id}: failed after epoch {r['failed_after']}, restored "
                      f"from the epoch-{r['checkpoint_epoch']} checkpoint, next epoch "
                      f"{r['resumed_at']}")  # fmt: skip
        lines = (exp / "report" / "report.md").read_text().splitlines()
        print("\n".join(line for line in lines if line.startswith("- ")))


if __name__ == "__main__":
    main()
