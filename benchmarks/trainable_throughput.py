"""Classifier epochs inside a Ray Tune trial vs the same epochs in a bare PyTorch loop.

Run (from the repository root):

    .venv/bin/python benchmarks/trainable_throughput.py          # 2000 train images, ABBA order
    .venv/bin/python benchmarks/trainable_throughput.py --quick  # 1000 images, one A/B pair

Goal: the median epoch images/s inside Tune is at least 0.95x the bare loop's.

Both sides train the seed's Config defaults (custom ResNet, width 16, batch 32, kornia Keras-style
augmentation, Adam) for 3 epochs on the same synthetic in-memory ImageDataset of the real shape
(1x40x24 uint8, 12 classes), on one thread:
  - Tune: `tune.with_resources(tune.with_parameters(run_trial, task="classifier", data=dataset),
    {"cpu": 1})`, one trial; `run_trial` (trainables/tune_edge.py, the sweep's one Ray edge) sets
    torch threads to the trial's CPUs (1) and reports + checkpoints every epoch.
  - bare: the classifier's `Session(config, data).train_epoch()` in this process with
    `torch.set_num_threads(1)`, saving the same checkpoint file after each epoch.
The metric is the `images_per_s` that `Session.train_epoch` reports on both sides: train images /
(train pass + val evaluation) seconds. Epoch 1 of each run is warm-up and skipped. A second,
end-to-end rate divides train images by the whole epoch as the loop sees it: Tune's
`time_this_iter_s` (train, val, checkpoint save, report round trip) vs, in the bare loop, train_epoch
plus the same checkpoint save.

Runs alternate bare, Tune, Tune, bare (ABBA) so drift in machine load hits both sides alike.
Ray starts its workers at nice 15 (`RAY_worker_niceness`) while this process, which runs the bare
loop, stays at 0: on a busy machine that alone can tilt the ratio. `--compare-niceness` repeats
everything in a second Ray session with `RAY_worker_niceness=0` (the bare loop's priority).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from visiontune.data.imagefolder import ImageDataset, Split
from visiontune.sweep import keep_ray_on_loopback

GOAL = 0.95
NICENESS_VAR = "RAY_worker_niceness"  # Ray's spelling; the raylet reads it at ray.init
HEIGHT, WIDTH, CLASSES = 40, 24, 12


def synthetic_dataset(train: int, seed: int = 0) -> ImageDataset:
    """Random uint8 images with a class-dependent brightness, so training is not pure noise."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        labels = rng.integers(0, CLASSES, size=n)
        base = (labels * 255 // CLASSES)[:, None, None, None]
        noise = rng.integers(-40, 40, size=(n, 1, HEIGHT, WIDTH))
        return Split(np.clip(base + noise, 0, 255).astype(np.uint8), labels.astype(np.int64))

    splits = {"train": split(train), "val": split(train * 15 // 70), "test": split(16)}
    pixels = splits["train"].images.astype(np.float32) / 255.0
    classes = tuple(f"c{i}" for i in range(CLASSES))
    return ImageDataset(
        classes, splits, "synthetic", (float(pixels.mean()),), (float(pixels.std()),)
    )


def run_bare(data: ImageDataset, epochs: int) -> list[tuple[float, float]]:
    """(images_per_s, end-to-end images/s) per epoch of a Session in this process."""
    import torch

    from visiontune.trainables.classifier import Config, Session
    from visiontune.trainables.session import CHECKPOINT_FILE

    torch.set_num_threads(1)
    session = Session(Config(epochs=epochs), data)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(epochs):
            start = time.perf_counter()
            metrics = session.train_epoch()
            session.save(Path(directory) / CHECKPOINT_FILE)  # what a trial does before reporting
            wall = time.perf_counter() - start
            rows.append((metrics["images_per_s"], len(data.splits["train"].labels) / wall))
    return rows


def run_tune(data: ImageDataset, epochs: int, storage: Path) -> list[tuple[float, float]]:
    """(images_per_s, end-to-end images/s) per epoch of one Tune trial of `run_trial`."""
    from ray import tune

    from visiontune.trainables.tune_edge import run_trial

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, task="classifier", data=data), {"cpu": 1}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"epochs": epochs},
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=str(storage),
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="val_acc", checkpoint_score_order="max"
            ),
        ),
    )
    result = tuner.fit()[0]
    if result.error is not None:
        raise RuntimeError(f"Tune trial failed: {result.error}")
    frame = result.metrics_dataframe.sort_values("epoch")
    images = len(data.splits["train"].labels)
    return [
        (float(row.images_per_s), images / float(row.time_this_iter_s))
        for row in frame.itertuples()
    ]


@contextlib.contextmanager
def console_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (Tune's and the workers' logs) to `path`, so the
    benchmark's own output stays readable."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    failed = False
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if failed:  # the log is about to be deleted with its directory: show its end
                tail = path.read_text(errors="replace").splitlines()[-40:]
                print("\n".join(["--- end of the captured console output ---", *tail]))


def summarize(label: str, runs: list[list[tuple[float, float]]]) -> tuple[float, float]:
    steady = [epoch for rows in runs for epoch in rows[1:]]  # skip each run's warm-up epoch
    metric = statistics.median(e[0] for e in steady)
    end_to_end = statistics.median(e[1] for e in steady)
    per_epoch = "  ".join(" ".join(f"{e[0]:.0f}" for e in rows) for rows in runs)
    print(f"{label:<6}{metric:>14.1f}{end_to_end:>16.1f}   {per_epoch}")
    return metric, end_to_end


def run_order(pairs: int) -> str:
    """The sides in the order `compare` runs them: bare tune, tune bare, bare tune, ..."""
    return " ".join("bare tune" if pair % 2 == 0 else "tune bare" for pair in range(pairs))


def compare(data: ImageDataset, epochs: int, pairs: int, niceness: str | None) -> None:
    """One Ray session: `pairs` ABBA rounds of bare and Tune runs, then their table."""
    import ray

    if niceness is None:
        os.environ.pop(NICENESS_VAR, None)
    else:
        os.environ[NICENESS_VAR] = niceness
    bare: list[list[tuple[float, float]]] = []
    tuned: list[list[tuple[float, float]]] = []
    load_before = os.getloadavg()[0]
    # Ray's and the workers' logs go to a file for the whole session (some arrive late)
    with (
        tempfile.TemporaryDirectory(prefix="vt_throughput_") as storage,
        console_to(Path(storage) / "ray_console.log"),
    ):
        ray.init(address="local", include_dashboard=False, num_cpus=2)
        try:
            for side in run_order(pairs).split():
                if side == "bare":
                    bare.append(run_bare(data, epochs))
                else:
                    tuned.append(run_tune(data, epochs, Path(storage)))
        finally:
            ray.shutdown()
    print(
        f"\nRay worker niceness: {niceness or 'Ray default (15)'}, bare loop (this process): "
        f"{os.nice(0)}; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(f"{'side':<6}{'images_per_s':>14}{'end-to-end/s':>16}   per-epoch images_per_s by run")
    bare_metric, bare_e2e = summarize("bare", bare)
    tune_metric, tune_e2e = summarize("tune", tuned)
    ratio = tune_metric / bare_metric
    print(
        f"ratio {ratio:>14.3f}{tune_e2e / bare_e2e:>16.3f}   "
        f"goal tune/bare >= {GOAL} on images_per_s: {'MET' if ratio >= GOAL else 'missed'}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1000 images, one pair (< 60 s)")
    parser.add_argument("--train-images", type=int, default=None, help="default 2000 (1000 quick)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=None, help="A/B pairs, default 2 (1 quick)")
    parser.add_argument(
        "--compare-niceness",
        action="store_true",
        help="then repeat everything in a second Ray session with RAY_worker_niceness=0",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.epochs < 2:
        raise SystemExit(
            f"--epochs must be >= 2 (epoch 1 is skipped as warm-up), got {args.epochs}"
        )
    train_images = args.train_images or (1000 if args.quick else 2000)
    pairs = args.pairs or (1 if args.quick else 2)
    keep_ray_on_loopback()
    import ray
    import torch

    data = synthetic_dataset(train_images)
    print(
        f"python {sys.version.split()[0]}, ray {ray.__version__}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{train_images} train + {len(data.splits['val'].labels)} val images "
        f"{data.channels}x{HEIGHT}x{WIDTH}, {CLASSES} classes, Config defaults, "
        f"{args.epochs} epochs per run, order: {run_order(pairs)}"
    )
    for niceness in [None, "0"] if args.compare_niceness else [None]:
        compare(data, args.epochs, pairs, niceness)
    print(
        "\nmedians over epochs 2.. of every run; images_per_s = train images / (train + val) s "
        "(Session.train_epoch);\nend-to-end adds checkpoint save (both) and the report round "
        "trip (Tune: time_this_iter_s)."
    )


if __name__ == "__main__":
    main()
