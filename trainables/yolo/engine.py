"""YOLO training with ultralytics' own loop, no Ray: the arguments it is given, one callback per
validated epoch, and resuming from an epoch's last.pt."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from visiontune.data.detection import DetectionDataset
from visiontune.data.yolo_tree import node_local_yolo_yaml
from visiontune.trainables.contract import EpochCallback
from visiontune.trainables.yolo.offline import amp_setting, offline_ultralytics

if TYPE_CHECKING:
    from visiontune.trainables.yolo import Config

WEIGHTS_FILE = "last.pt"  # the epoch's full ultralytics checkpoint (EMA, optimizer, train_args)
RUN_NAME = "train"  # ultralytics' run folder inside a trial's scratch directory
# Ultralytics' per-epoch validation keys (fractions 0..1) -> our metric names.
VAL_KEYS = {
    "precision": "metrics/precision(B)",  # at the confidence that maximises mean F1
    "recall": "metrics/recall(B)",
    "map50": "metrics/mAP50(B)",
    "map": "metrics/mAP50-95(B)",  # COCO mAP@[.5:.95]: the sweep's objective
}
LOSSES = ("box_loss", "cls_loss", "dfl_loss")  # mean training losses of the epoch


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
    """Ultralytics' name of the device to use here: the GPU Ray assigned to this worker, any
    GPU outside Ray, else the CPU (trainables/device.py: local_device)."""
    from visiontune.trainables.device import local_device, ultralytics_device

    return ultralytics_device(local_device())


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
