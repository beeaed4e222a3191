"""Writing the YOLO layout: label-file text, the absolute data.yaml copy that ultralytics reads
from any working directory, and a whole tree from a decoded dataset for a node that cannot see the
files the driver read."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from visiontune.data.files import write_tree_atomically
from visiontune.errors import InputError
from visiontune.fileio import write_atomic

if TYPE_CHECKING:
    from visiontune.data.detection import DetectionDataset

SPLITS = ("train", "val", "test")  # a data.yaml's split keys, read and written in this order
YOLO_YAML_CACHE = "visiontune-yolo"  # folder under tempfile.gettempdir() for yolo_yaml copies


def write_yolo_yaml(
    yaml_path: Path,
    data: dict[str, Any],
    root: Path,
    split_dirs: dict[str, Path],
    names: tuple[str, ...],
) -> Path:
    """An absolute copy of data.yaml under the temp dir, keyed by the data.yaml's path."""
    digest = hashlib.sha1(str(yaml_path).encode("utf-8")).hexdigest()
    folder = Path(tempfile.gettempdir()) / YOLO_YAML_CACHE / digest
    folder.mkdir(parents=True, exist_ok=True)
    # `download` would let ultralytics try to fetch a missing split; we run offline.
    rest = {k: v for k, v in data.items() if k not in {"path", *SPLITS, "names", "download"}}
    copy = {
        "path": str(root),
        **{split: str(split_dirs[split]) for split in SPLITS},
        "names": dict(enumerate(names)),
        **rest,
    }
    target = folder / "data.yaml"
    # Trials may load the same dataset at once: each one writes aside and renames in one step.
    write_atomic(target, yaml.safe_dump(copy, sort_keys=False, allow_unicode=True).encode())
    return target


def format_labels(boxes: np.ndarray, labels: np.ndarray) -> str:
    """YOLO label file text: one ``class cx cy w h`` line per box, 6 decimals."""
    return "".join(
        f"{int(label)} {box[0]:.6f} {box[1]:.6f} {box[2]:.6f} {box[3]:.6f}\n"
        for box, label in zip(boxes.tolist(), labels.tolist(), strict=True)
    )


def node_local_yolo_yaml(data: DetectionDataset) -> Path:
    """A data.yaml for ultralytics on a node that cannot see the files the driver read (a
    multi-node sweep without shared storage): the decoded dataset is written once per node as a
    YOLO tree under the temp dir, keyed by its content, and reused by later trials there."""
    digest = hashlib.sha1(repr(data.names).encode())
    for split in SPLITS:
        for image, boxes, labels in zip(
            data.splits[split].images, data.splits[split].boxes, data.splits[split].labels,
            strict=True,
        ):  # fmt: skip
            for array in (image, boxes, labels):
                digest.update(repr(array.shape).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
    root = Path(tempfile.gettempdir()) / YOLO_YAML_CACHE / f"tree-{digest.hexdigest()}"
    if not (root / "data.yaml").is_file():
        try:
            write_tree_atomically(root, lambda staging: _write_yolo_tree(staging, data, root))
        except InputError:
            if not (root / "data.yaml").is_file():  # not just another trial finishing first
                raise
    return root / "data.yaml"


def _write_yolo_tree(staging: Path, data: DetectionDataset, root: Path) -> None:
    from PIL import Image

    for split in SPLITS:
        images, labels_dir = staging / "images" / split, staging / "labels" / split
        images.mkdir(parents=True)
        labels_dir.mkdir(parents=True)
        part = data.splits[split]
        for index, (image, boxes, labels) in enumerate(
            zip(part.images, part.boxes, part.labels, strict=True)
        ):
            Image.fromarray(image).save(images / f"{index:06d}.png")
            (labels_dir / f"{index:06d}.txt").write_text(format_labels(boxes, labels))
    layout = {
        "path": str(root),  # the final place: the tree is renamed there when complete
        **{split: str(root / "images" / split) for split in SPLITS},
        "names": dict(enumerate(data.names)),
    }
    (staging / "data.yaml").write_text(yaml.safe_dump(layout, sort_keys=False, allow_unicode=True))
