"""YOLOv5 detector trainable: ultralytics 8.4 (the anchor-free YOLOv5u), trained from scratch, offline.

Inside a sweep (`visiontune tune search_spaces/yolo.yaml`), `tune_edge.run_trial` drives `TASK` (the
trainable contract, trainables/contract.py) once per trial. The package, one job per module:
`engine.train` runs one configuration and calls back once per validated epoch, and
`engine.train_args` is the exact dict handed to ultralytics; `evaluate.evaluate_checkpoint` scores
saved weights on a split with per-class numbers. Ultralytics is imported lazily, after
`offline.offline_ultralytics` has made it offline-safe and silent towards Ray Tune; this module
holds the config and `TASK`.

Defaults are ultralytics' own hyperparameters (SGD 0.01, linear decay to 1%, momentum 0.937,
weight decay 5e-4, 3 warmup epochs, mosaic on, flips) at the seed's 416 px and batch 16, because
those are what the seed's YOLOv5 run used. Thermal images carry one intensity channel, so hue and
saturation jitter are fixed at 0 and only `hsv_v` (brightness) is searched. `nbs` (the batch that
ultralytics accumulates gradients up to) always equals `batch`, so a step is a step and weight
decay is not rescaled. A restored trial continues at the next epoch with that epoch's optimizer,
EMA and LR schedule (warmup included) from its last.pt; as with `yolo train resume`, the weights
restart from the EMA (ultralytics stores both at half precision) and no RNG state is kept, so a
resumed run draws different augmentations than an uninterrupted one.

On a GPU (a trial with `resources.gpu`) training runs in mixed precision wherever that needs no
download (`offline.amp_setting`): bfloat16 on Ampere and later GPUs, float16 on older ones only when
ultralytics' AMP-check weights are already on disk; `amp: false` keeps float32, as does the CPU.

CPU cost, measured on this 2-core machine (no GPU) on the embedded pv-arrays set (96 train / 32 val
images of 128x128 px, ~1,500 train boxes), YOLOv5n, imgsz 128, batch 8, one thread per trial:
  one epoch (train + val + checkpoint) ~ 3.5 s alone, ~ 7 s each with two trials side by side;
  the first epoch adds ~ 10 s (model build, label scan);
  `2 trials x 2 epochs` in Ray Tune (2 concurrent, 1 CPU each): ~ 28 s of Tune time;
  `visiontune tune search_spaces/yolo.yaml --num-samples 2 --max-epochs 2`: 87 s end to end
  (Ray start, both trials, test-split evaluation, report);
  the default sweep (search_spaces/yolo.yaml: 8 trials of up to 30 epochs, ASHA): 8.4 min of Tune
  time, 9.1 min end to end; test mAP50-95 0.187 for the tuned best vs 0.120 for the seed point.
At the seed's imgsz 416, batch 16 an epoch takes ~ 48 s on one thread (about 13x).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field

from visiontune.data.detection import DetectionDataset
from visiontune.params import StrictModel, build_config
from visiontune.trainables.contract import InferenceModel, TrainContext
from visiontune.trainables.device import ultralytics_device
from visiontune.trainables.yolo.engine import WEIGHTS_FILE, prepare_resume, train
from visiontune.trainables.yolo.evaluate import evaluate_checkpoint, load_detector

DATA_FORMAT = "yolo"  # visiontune.data.load_dataset reads a data.yaml with images/ and labels/
METRICS = ("precision", "recall", "map50", "map", "box_loss", "cls_loss", "dfl_loss", "lr", "epoch")
Optimizer = Literal["SGD", "AdamW"]  # never "auto": it ignores lr0 and momentum
OPTIMIZERS = get_args(Optimizer)


class Config(StrictModel):
    """YOLO's hyperparameters (ultralytics' names) with their defaults and bounds."""

    # fmt: off
    model: Literal["yolov5n.yaml", "yolov5s.yaml"] = "yolov5n.yaml"  # architecture, built from YAML (no weights exist offline); "yolov5s.yaml" is ~3.5x the compute
    imgsz: int = Field(416, ge=32, multiple_of=32)  # px, square training/validation size; the seed's size (a multiple of 32, YOLO's stride)
    batch: int = Field(16, ge=1)  # images per optimizer step (nbs = batch: no gradient accumulation)
    epochs: int = Field(100, ge=1)  # ultralytics' default budget; sweeps fix their own in the YAML
    optimizer: Optimizer = "SGD"
    lr0: float = Field(0.01, gt=0, le=1)  # initial learning rate after warmup
    lrf: float = Field(0.01, gt=0, le=1)  # final learning rate as a fraction of lr0 (linear decay over `epochs`)
    momentum: float = Field(0.937, ge=0, lt=1)  # SGD momentum / Adam beta1
    weight_decay: float = Field(5e-4, ge=0, le=1)  # on conv/linear weights only (not biases or BatchNorm)
    warmup_epochs: float = Field(3.0, ge=0)  # epochs of linear LR/momentum warmup (capped at epochs - 1)
    hsv_v: float = Field(0.4, ge=0, le=1)  # brightness jitter, fraction; hue and saturation stay 0 for thermal frames
    degrees: float = Field(0.0, ge=0, le=180)  # rotation, degrees, angle ~ U(-degrees, degrees)
    translate: float = Field(0.1, ge=0, le=1)  # shift, fraction of the image size
    scale: float = Field(0.5, ge=0, lt=1)  # zoom gain ~ U(1 - scale, 1 + scale)
    shear: float = Field(0.0, ge=0, lt=90)  # degrees
    fliplr: float = Field(0.5, ge=0, le=1)  # probability of a left-right flip
    mosaic: float = Field(1.0, ge=0, le=1)  # probability of a 4-image mosaic
    mixup: float = Field(0.0, ge=0, le=1)  # probability of mixing two images
    close_mosaic: int = Field(10, ge=0)  # mosaic is off for the last N epochs (0 = never turned off)
    workers: int = Field(0, ge=0)  # dataloader processes; 0 = in the trial's process (forced on CPU)
    # Mixed precision on a GPU where it needs no download (`offline.amp_setting`); CPU: float32.
    amp: bool = True
    seed: int = Field(0, ge=0)  # weight init, shuffling and augmentation draws
    # fmt: on


class YoloTask:
    """The trainable contract (trainables/contract.py) over ultralytics' own training loop."""

    name = "yolo"
    Config = Config
    METRICS = METRICS
    DATA_FORMAT = DATA_FORMAT

    def build_config(self, values: Mapping[str, Any], where: str) -> Config:
        return build_config(Config, values, where)

    def train(self, config: Config, data: DetectionDataset, context: TrainContext) -> None:
        """One `on_epoch` per validated epoch with a directory holding that epoch's last.pt; a
        `restore` directory's last.pt resumes at the next epoch. Ultralytics' own files
        (args.yaml, results.csv, weights) stay in `workdir`: what lasts is what is handed over."""
        device = ultralytics_device(context.device)  # "0" for cuda (or its index), "cpu"
        workdir, resume_from = context.workdir, None
        if context.restore is not None:
            weights = context.restore / WEIGHTS_FILE
            resume_from = prepare_resume(weights, config, data, str(workdir), device)
            if resume_from is None:
                return  # the checkpoint is the final epoch: nothing left to train

        def hand_over(metrics: dict[str, float], last: Path) -> None:
            with tempfile.TemporaryDirectory(prefix="epoch-") as directory:
                shutil.copyfile(last, Path(directory) / WEIGHTS_FILE)
                context.on_epoch(metrics, Path(directory))

        train(config, data, workdir, hand_over, None, resume_from, device)

    def evaluate_checkpoint(
        self, checkpoint_dir: Path, data: DetectionDataset, split: str
    ) -> dict[str, Any]:
        return evaluate_checkpoint(checkpoint_dir, data, split)

    def load_model(
        self, checkpoint_dir: Path, data: DetectionDataset, device: str = "cpu"
    ) -> InferenceModel:
        """The checkpoint's last.pt through ultralytics' predictor (`evaluate.Detector`); the
        class names and image size come from the checkpoint, so `data` is not needed."""
        return load_detector(checkpoint_dir, device)


TASK = YoloTask()
