"""YOLOv5 detector trainable: ultralytics 8.4 (the anchor-free YOLOv5u), trained from scratch, offline.

Inside a sweep (`visiontune tune search_spaces/yolo.yaml`), `tune_edge.run_trial` drives `TASK` (the
trainable contract, trainables/contract.py) once per trial. `train` runs one configuration and calls
back once per validated epoch; `train_args` is the exact dict handed to ultralytics; `evaluate_checkpoint` scores saved weights
on a split with per-class numbers. Ultralytics is imported lazily, after `offline_ultralytics`
has made it offline-safe and silent towards Ray Tune.

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
download (`amp_setting`): bfloat16 on Ampere and later GPUs, float16 on older ones only when
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

import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import yaml
from pydantic import Field

from visiontune.data.detection import DetectionDataset, node_local_yolo_yaml
from visiontune.params import StrictModel, build_config
from visiontune.trainables.contract import EpochCallback, TrainContext

DATA_FORMAT = "yolo"  # visiontune.data.load_dataset reads a data.yaml with images/ and labels/
METRICS = ("precision", "recall", "map50", "map", "box_loss", "cls_loss", "dfl_loss", "lr", "epoch")
Optimizer = Literal["SGD", "AdamW"]  # never "auto": it ignores lr0 and momentum
OPTIMIZERS = get_args(Optimizer)
SPLITS = ("train", "val", "test")
WEIGHTS_FILE = "last.pt"  # the epoch's full ultralytics checkpoint (EMA, optimizer, train_args)
RUN_NAME = "train"  # ultralytics' run folder inside a trial's scratch directory
AMP_CHECK_WEIGHTS = "yolo26n.pt"  # what ultralytics' float16 check loads (downloads if absent)
# Ultralytics' per-epoch validation keys (fractions 0..1) -> our metric names.
VAL_KEYS = {
    "precision": "metrics/precision(B)",  # at the confidence that maximises mean F1
    "recall": "metrics/recall(B)",
    "map50": "metrics/mAP50(B)",
    "map": "metrics/mAP50-95(B)",  # COCO mAP@[.5:.95]: the sweep's objective
}
LOSSES = ("box_loss", "cls_loss", "dfl_loss")  # mean training losses of the epoch
# Everything ultralytics could phone home or hand to Ray with, switched off.
OFFLINE_SETTINGS = {
    "sync": False,  # usage analytics
    "raytune": False,  # its callback calls tune.report every epoch: results would double
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "wandb": False,
    "tensorboard": False,  # visiontune's TensorBoard callback writes every trial's curves
}


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
    # Mixed precision on a GPU where it needs no download (see `amp_setting`); CPU: float32.
    amp: bool = True
    seed: int = Field(0, ge=0)  # weight init, shuffling and augmentation draws
    # fmt: on


# --- ultralytics, offline ------------------------------------------------------------------


def offline_ultralytics(config_dir: str | os.PathLike[str] | None = None) -> Any:
    """Import ultralytics offline and without its Ray Tune callback; returns its settings.

    The environment must be set before the first `import ultralytics` (it decides then whether it
    is online and where its settings live), so call this before anything imports it. Safe to call
    again: later calls only re-assert the settings. `config_dir` defaults to the visiontune cache.
    """
    if "ultralytics" not in sys.modules:
        if config_dir is None:
            from visiontune.data import cache_dir

            config_dir = cache_dir() / "ultralytics"
        os.environ["YOLO_OFFLINE"] = "1"  # skip the DNS probe; nothing tries to download
        os.environ["YOLO_AUTOINSTALL"] = "0"  # never pip-install a missing requirement
        # Per-batch progress bars from every trial would flood Ray's driver log; warnings go too
        # (errors still raise). Export YOLO_VERBOSE=True to see ultralytics' own log.
        os.environ.setdefault("YOLO_VERBOSE", "False")
        os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(config_dir).expanduser().resolve()))
    from ultralytics import settings
    from ultralytics.utils import USER_CONFIG_DIR

    _install_font(USER_CONFIG_DIR / "Arial.ttf")
    wanted = {
        **OFFLINE_SETTINGS,
        # Only used for relative paths, which visiontune never passes: keep strays out of the cwd.
        "runs_dir": str(USER_CONFIG_DIR / "runs"),
        "datasets_dir": str(USER_CONFIG_DIR / "datasets"),
        "weights_dir": str(USER_CONFIG_DIR / "weights"),
    }
    if any(settings.get(key) != value for key, value in wanted.items()):
        settings.update(wanted)
    return settings


def _install_font(target: Path) -> None:
    """Ultralytics looks for Arial.ttf before plotting, even with plots=False, and downloads it
    when missing (a 3-s timeout offline); any TTF will do, and matplotlib ships one."""
    if target.exists():
        return
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(font, partial)
    os.replace(partial, target)  # atomic: concurrent trials never see half a font


def data_yaml(data: DetectionDataset) -> str:
    """The dataset's data.yaml as an absolute path, checked to resolve from any cwd."""
    path = Path(data.yolo_yaml)
    if not path.is_absolute():
        raise ValueError(f"yolo_yaml must be an absolute path, got {str(path)!r}")
    if not path.is_file():
        # ultralytics reads images and labels from disk; this node (of a multi-node sweep)
        # cannot see the driver's files, so it gets its own copy from the decoded dataset
        return str(node_local_yolo_yaml(data))
    root = (yaml.safe_load(path.read_text()) or {}).get("path")
    if root is not None and not Path(str(root)).is_absolute():
        # ultralytics resolves a relative `path:` against the cwd, which differs per trial
        raise ValueError(
            f"{path}: `path: {root}` must be absolute (ultralytics reads it from the cwd)"
        )
    return str(path)


def default_device() -> str:
    """Ultralytics' name of the device to use here: the first GPU Ray assigned to this worker
    (CUDA_VISIBLE_DEVICES lists just those), any GPU outside Ray, else the CPU."""
    from visiontune.trainables.device import local_device

    return "0" if local_device() == "cuda" else "cpu"


def amp_setting(amp: bool, device: str, weights_dir: Path | None = None) -> bool | str:
    """Ultralytics' `amp` argument for `device`, never one that makes it reach the network.

    With `amp=True` ultralytics trains in float16 only after `check_amp`, which compares float16
    with float32 detections of a yolo26n.pt that it downloads when missing from its weights dir
    (offline: a failed connection, a warning, and float16 unchecked). So, on a GPU:
    * native bfloat16 (Ampere and later): "bf16", bfloat16 autocast without loss scaling, for
      which ultralytics skips the check (bfloat16 has float32's range: the overflow to NaN the
      check guards against does not happen);
    * older GPUs (T4, V100): float16 (True) when yolo26n.pt is already in `weights_dir`
      (ultralytics' WEIGHTS_DIR by default), so the check runs offline; else float32 (False).
    """
    if not amp or device == "cpu":
        return False
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16"
    if weights_dir is None:
        offline_ultralytics()
        from ultralytics.utils import WEIGHTS_DIR  # where check_amp looks

        weights_dir = WEIGHTS_DIR
    return (Path(weights_dir) / AMP_CHECK_WEIGHTS).is_file()


def train_args(
    config: Config, data: DetectionDataset, trial_dir: str | os.PathLike[str], device: str = "cpu"
) -> dict[str, Any]:
    """The keyword arguments for `YOLO(config.model).train(...)`: every path absolute, nothing
    left to ultralytics' defaults that would download, plot, or accumulate gradients."""
    project = Path(trial_dir).resolve()
    return {
        "data": data_yaml(data),  # never omitted: the fallback is a dataset download
        "project": str(project),
        "name": RUN_NAME,
        "exist_ok": True,  # a restarted trial writes into the same folder
        "device": device,
        "amp": amp_setting(config.amp, device),
        "epochs": config.epochs,
        "imgsz": config.imgsz,
        "batch": config.batch,
        "nbs": config.batch,  # no gradient accumulation, no weight-decay rescaling
        "workers": config.workers,
        "optimizer": config.optimizer,
        "lr0": config.lr0,
        "lrf": config.lrf,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
        "warmup_epochs": config.warmup_epochs,
        "hsv_h": 0.0,  # a thermal frame has no hue or saturation to jitter
        "hsv_s": 0.0,
        "hsv_v": config.hsv_v,
        "degrees": config.degrees,
        "translate": config.translate,
        "scale": config.scale,
        "shear": config.shear,
        "fliplr": config.fliplr,
        "mosaic": config.mosaic,
        "mixup": config.mixup,
        "close_mosaic": config.close_mosaic,
        "seed": config.seed,
        "deterministic": True,
        "pretrained": False,  # from scratch: no weights can be downloaded
        "patience": 0,  # no early stopping inside a trial: the scheduler decides
        "val": True,  # every epoch is validated and reported
        "save": True,  # last.pt every epoch, the checkpoint each report carries
        "save_period": -1,
        "plots": False,
        "verbose": False,
    }


# --- training, no Ray ----------------------------------------------------------------------


def epoch_metrics(trainer: Any, seconds: float) -> dict[str, float]:
    """METRICS (plus images_per_s) from an ultralytics trainer right after an epoch's validation."""
    losses = trainer.label_loss_items(trainer.tloss, prefix="train")
    metrics = {name: float(trainer.metrics[key]) for name, key in VAL_KEYS.items()}
    metrics.update({name: float(losses[f"train/{name}"]) for name in LOSSES})
    metrics["lr"] = float(trainer.lr["lr/pg0"])  # conv weights' LR at the epoch's last step
    metrics["epoch"] = trainer.epoch + 1
    metrics["images_per_s"] = len(trainer.train_loader.dataset) / max(seconds, 1e-9)
    return metrics


def _trainer_class() -> type:
    from ultralytics.models.yolo.detect import DetectionTrainer

    class EpochTrainer(DetectionTrainer):
        """A DetectionTrainer without the closing re-validation of best.pt: every epoch was
        validated and reported already, and that extra pass would call on_fit_epoch_end again."""

        def final_eval(self) -> None:
            return None

    return EpochTrainer


def train(
    config: Config,
    data: DetectionDataset,
    out_dir: str | os.PathLike[str],
    on_epoch: EpochCallback,
    threads: int | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    device: str | None = None,
) -> None:
    """Train `config` on `data`, calling `on_epoch(metrics, last_pt)` once per epoch after that
    epoch's validation and checkpoint. `threads` defaults to the caller's torch setting
    (ultralytics would otherwise take min(8, cores - 1)); `resume_from` is a `prepare_resume`
    checkpoint, from whose next epoch training continues."""
    offline_ultralytics()
    from ultralytics import YOLO

    device = device or default_device()
    threads = threads or torch.get_num_threads()
    args = train_args(config, data, out_dir, device)
    model = YOLO(str(resume_from) if resume_from else config.model)
    started = [time.perf_counter()]

    def set_threads(trainer: Any) -> None:
        torch.set_num_threads(threads)

    def start_clock(trainer: Any) -> None:
        started[0] = time.perf_counter()

    def report(trainer: Any) -> None:
        on_epoch(epoch_metrics(trainer, time.perf_counter() - started[0]), Path(trainer.last))

    model.add_callback("on_train_start", set_threads)
    model.add_callback("on_train_epoch_start", start_clock)
    model.add_callback("on_fit_epoch_end", report)  # after validation and after last.pt is saved
    model.train(trainer=_trainer_class(), resume=bool(resume_from), **args)


def prepare_resume(
    checkpoint: str | os.PathLike[str],
    config: Config,
    data: DetectionDataset,
    out_dir: str,
    device: str = "cpu",
) -> Path | None:
    """Copy an epoch's last.pt into this trial's run folder with its paths rewritten, ready for
    `train(..., resume_from=...)` on `device`; None when that checkpoint already finished every
    epoch.

    Ultralytics resumes with the train_args stored in the checkpoint, including the folders of
    the run that wrote it, which may be another trial directory or another node, and its `amp`
    (a resume may not override it), which this node's GPU may not support without a download.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if state["epoch"] + 1 >= state["train_args"]["epochs"]:
        return None
    args = train_args(config, data, out_dir, device)
    save_dir = Path(args["project"]) / args["name"]
    state["train_args"] = {
        **state["train_args"],
        **{key: args[key] for key in ("data", "project", "name", "exist_ok", "amp")},
        "save_dir": str(save_dir),
    }
    target = save_dir / "weights" / WEIGHTS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return target


# --- evaluation ----------------------------------------------------------------------------


def evaluate_checkpoint(
    checkpoint_dir: str | os.PathLike[str], data: DetectionDataset, split: str
) -> dict[str, Any]:
    """Precision, recall, mAP50 and mAP50-95 (fractions) of a checkpoint's weights on `split`,
    overall (`<split>_map` etc.) and per class; a class with no box in the split maps to None."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    offline_ultralytics()
    from visiontune.trainables.device import local_device, releasing_memory

    threads = torch.get_num_threads()  # validation resets torch's thread count
    device = local_device()
    try:
        with (
            releasing_memory(device),
            tempfile.TemporaryDirectory(prefix="yolo-val-") as scratch,
        ):
            result = _validate(Path(checkpoint_dir) / WEIGHTS_FILE, data, split, device, scratch)
    finally:
        torch.set_num_threads(threads)
    return split_metrics(result, data.names, split)


def _validate(weights: Path, data: DetectionDataset, split: str, device: str, scratch: str) -> Any:
    """Ultralytics' DetMetrics of `weights` on `split`; the model lives in this frame only."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    trained = model.ckpt["train_args"]
    return model.val(
        data=data_yaml(data),
        split=split,
        imgsz=trained["imgsz"],
        batch=trained["batch"],
        device="0" if device == "cuda" else "cpu",
        project=scratch,
        name="val",
        exist_ok=True,
        workers=0,
        half=False,
        plots=False,
        save_json=False,
        verbose=False,
    )


def split_metrics(result: Any, names: tuple[str, ...], split: str) -> dict[str, Any]:
    """JSON-ready summary of an ultralytics DetMetrics."""
    box = result.box
    overall = {"precision": box.mp, "recall": box.mr, "map50": box.map50, "map": box.map}
    out: dict[str, Any] = {f"{split}_{key}": _number(value) for key, value in overall.items()}
    per_class: dict[str, dict[str, Any]] = {}
    present = {int(c): i for i, c in enumerate(result.ap_class_index)}
    counts = result.nt_per_class
    for index, name in enumerate(names):
        instances = int(counts[index]) if counts is not None and index < len(counts) else 0
        if index not in present:
            per_class[name] = {key: None for key in overall} | {"instances": instances}
            continue
        values = result.class_result(present[index])
        per_class[name] = dict(zip(overall, map(_number, values), strict=True))
        per_class[name]["instances"] = instances
    out["per_class"] = per_class
    return out


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# --- the trainable contract ----------------------------------------------------------------


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
        device = "0" if context.device == "cuda" else "cpu"  # ultralytics' name for the GPU
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


TASK = YoloTask()
