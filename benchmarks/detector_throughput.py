"""Detector training throughput inside a Ray Tune trial vs the same training run directly.

Run (from the repository root):

    .venv/bin/python benchmarks/detector_throughput.py            # Faster R-CNN 3, YOLO 8 epochs a side
    .venv/bin/python benchmarks/detector_throughput.py --quick    # 32 train images, YOLO only at 2 epochs

Goal: images/s inside Tune >= 0.95x the direct run, for Faster R-CNN and for YOLOv5.

Both sides train the same configuration (the search space's seed point over its fixed settings) on
the same data (the embedded pv-arrays set, or its first --train-images training images), on one
thread:
  - direct: the task's `train(config, data, TrainContext("cpu", workdir, on_epoch))` (the
    trainable contract, trainables/contract.py; ultralytics' own loop for YOLO) in this process,
    each epoch's checkpoint handed to `on_epoch` as in a trial;
  - Tune: `run_trial` (trainables/tune_edge.py, the sweep's one Ray edge) as one trial,
    `with_resources(with_parameters(run_trial, task=NAME, data=data), cpu=1)`, reporting and
    checkpointing every epoch as in a sweep.
The rate is the `images_per_s` each epoch reports (train images / epoch seconds, val included for
Faster R-CNN, the training pass for YOLO: the same definition on both sides). Epoch 1 is warm-up
and skipped; the median of the rest is compared. Ray's workers run at nice 15 by default; this
benchmark sets RAY_worker_niceness=0 so both sides have the same CPU priority on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from visiontune.sweep import keep_ray_on_loopback

GOAL = 0.95
REPO = Path(__file__).resolve().parents[1]


def load(task_name: str, train_images: int | None, epochs: int) -> tuple[Any, Any, Any]:
    from visiontune.data import load_dataset
    from visiontune.data.detection import DetectionDataset
    from visiontune.spec import load_spec
    from visiontune.trainables import load_task

    spec = load_spec(REPO / "search_spaces" / f"{task_name}.yaml", {"max_epochs": epochs})
    task = load_task(spec.task)
    data = load_dataset(task.DATA_FORMAT, spec.data_source, spec.data_options)
    if train_images:
        train = data.splits["train"]
        subset = type(train)(
            *(getattr(train, f)[:train_images] for f in train.__dataclass_fields__)
        )
        data = DetectionDataset(
            data.names, {**data.splits, "train": subset}, data.source, data.yolo_yaml
        )
    config = task.build_config(next(iter(spec.seeds.values())) | spec.fixed, "benchmark")
    return task, config, data


def direct_rates(task: Any, config: Any, data: Any) -> list[float]:
    """images/s per epoch of the task trained through its contract in this process, checkpoints
    handed over as a trial would."""
    import torch

    from visiontune.trainables.contract import TrainContext

    torch.set_num_threads(1)
    rates: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        keep = lambda metrics, _checkpoint: rates.append(metrics["images_per_s"])  # noqa: E731
        task.train(config, data, TrainContext("cpu", Path(out), keep))
    return rates


def tune_rates(task: Any, config: Any, data: Any) -> list[float]:
    from ray import tune

    from visiontune.trainables.tune_edge import run_trial

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, task=task.name, data=data), {"cpu": 1}
    )
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            trainable,
            param_space=config.model_dump(),
            run_config=tune.RunConfig(storage_path=storage, name="bench", verbose=0),
        )
        result = tuner.fit()[0]
        if result.error:
            raise result.error
        return list(result.metrics_dataframe["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per side (>= 2)")
    # YOLO epochs take ~2 s here: one or two measured epochs are too few to see through noise.
    parser.add_argument("--train-images", type=int, default=None)
    parser.add_argument("--tasks", nargs="+", default=None, choices=["faster_rcnn", "yolo"])
    args = parser.parse_args()
    default_epochs = {"faster_rcnn": 3, "yolo": 8}
    train_images = args.train_images or (32 if args.quick else None)
    tasks = args.tasks or (["yolo"] if args.quick else ["faster_rcnn", "yolo"])

    keep_ray_on_loopback()
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        print(
            f"{'task':<12} {'direct img/s':>13} {'in Tune img/s':>14} {'ratio':>7}  goal >= {GOAL}"
        )
        for name in tasks:
            epochs = args.epochs or (2 if args.quick else default_epochs[name])
            task, config, data = load(name, train_images, epochs)
            start = time.perf_counter()
            direct = statistics.median(direct_rates(task, config, data)[1:])
            tuned = statistics.median(tune_rates(task, config, data)[1:])
            ratio = tuned / direct
            verdict = "met" if ratio >= GOAL else "MISSED"
            print(
                f"{name:<12} {direct:>13.1f} {tuned:>14.1f} {ratio:>7.3f}  {verdict} "
                f"({len(data.splits['train'])} train images, {epochs} epochs/side, "
                f"{time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
