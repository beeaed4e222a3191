"""A YOLO checkpoint scored on a split: ultralytics' validator, summarised overall and per class as
JSON-ready numbers; and the same checkpoint loaded for prediction (`load_detector`)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visiontune.data.detection import DetectionDataset
from visiontune.trainables.contract import InferenceModel
from visiontune.trainables.device import local_device, releasing_memory, ultralytics_device
from visiontune.trainables.session import decoded_images
from visiontune.trainables.yolo.engine import WEIGHTS_FILE, data_yaml
from visiontune.trainables.yolo.offline import offline_ultralytics

SPLITS = ("train", "val", "test")


def evaluate_checkpoint(
    checkpoint_dir: str | os.PathLike[str], data: DetectionDataset, split: str
) -> dict[str, Any]:
    """Precision, recall, mAP50 and mAP50-95 (fractions) of a checkpoint's weights on `split`,
    overall (`<split>_map` etc.) and per class; a class with no box in the split maps to None."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    offline_ultralytics()
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
        device=ultralytics_device(device),
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


class Detector:
    """A YOLO checkpoint as the detector of an InferenceModel: BGR images (`bgr_images`) -> one
    dict per image, "boxes" (x1 y1 x2 y2 in the image's own pixels), "scores", "labels" (class
    indices). Ultralytics' own predictor: letterboxed to the training size, its NMS, and its
    predict-time confidence threshold `conf` (0.25; validation, and so mAP, uses 0.001)."""

    def __init__(self, yolo: Any, imgsz: int, device: str, conf: float = 0.25) -> None:
        self.yolo, self.imgsz, self.device, self.conf = yolo, imgsz, device, conf

    def eval(self) -> Detector:
        self.yolo.model.eval()
        return self

    def __call__(self, images: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        threads = torch.get_num_threads()  # ultralytics' predictor may reset it, as validation does
        try:
            results = self.yolo.predict(
                list(images), imgsz=self.imgsz, conf=self.conf, device=self.device, verbose=False
            )
        finally:
            torch.set_num_threads(threads)
        return [
            {
                "boxes": r.boxes.xyxy.float(),
                "scores": r.boxes.conf.float(),
                "labels": r.boxes.cls.long(),
            }
            for r in results
        ]


def bgr_images(images: Any) -> list[np.ndarray]:
    """Decoded images (see `session.decoded_images`) as the H x W x 3 BGR uint8 arrays
    ultralytics reads image files into (cv2), which is how it trained and validated."""
    return [np.ascontiguousarray(rgb[:, :, ::-1]) for rgb in decoded_images(images, 3)]


def load_detector(checkpoint_dir: str | os.PathLike[str], device: str = "cpu") -> InferenceModel:
    """The checkpoint's weights (its EMA, as ultralytics saves and validates them) as an
    InferenceModel on `device` ("cpu" or "cuda"), with the class names stored in it."""
    offline_ultralytics()
    from ultralytics import YOLO

    yolo = YOLO(str(Path(checkpoint_dir) / WEIGHTS_FILE))
    imgsz = yolo.ckpt["train_args"]["imgsz"]
    detector = Detector(yolo, imgsz, ultralytics_device(device)).eval()
    return InferenceModel(detector, bgr_images, tuple(yolo.names[i] for i in sorted(yolo.names)))
