"""Datasets: ImageFolder trees and YOLO-layout detection sets from disk, and embedded synthetic
generators that work offline.

Embedded datasets are generated into the cache directory on first use ($VISIONTUNE_CACHE, else
$XDG_CACHE_HOME/visiontune, else ~/.cache/visiontune) and then decoded like any other dataset:
- `ir-solar-modules`: infrared crops of single solar modules, 12 classes (ImageFolder, classifier);
- `pv-arrays`: thermal images of PV arrays, every module boxed, 5 classes (YOLO layout, detectors).
Both are rendered with the same physics (`thermal.py`); `visiontune data make NAME --out DIR`
(`make_embedded`) writes one as files, and is the generators' only command-line entry point.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from visiontune.errors import InputError
from visiontune.params import short_repr

EMBEDDED = {"ir-solar-modules": "imagefolder", "pv-arrays": "yolo"}  # name -> format
GENERATOR_VERSION = 1  # bump when a generator's output changes, so caches are rebuilt


def cache_dir() -> Path:
    if os.environ.get("VISIONTUNE_CACHE"):
        return Path(os.environ["VISIONTUNE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "visiontune"


def make_embedded(name: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write an embedded dataset to `out_dir` (refuses an existing non-empty directory)."""
    if name == "ir-solar-modules":
        from visiontune.data import ir_solar

        return ir_solar.write_imagefolder(out_dir, seed=seed)
    if name == "pv-arrays":
        from visiontune.data import pv_arrays

        return pv_arrays.write_yolo(out_dir, seed=seed)
    raise InputError(
        f"data make: unknown dataset {short_repr(name)} (known: {', '.join(EMBEDDED)})"
    )


def embedded_path(name: str) -> Path:
    """The cached copy of an embedded dataset, generated on first use."""
    path = cache_dir() / f"{name}-v{GENERATOR_VERSION}"
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            make_embedded(name, path)
        except InputError:
            if not path.is_dir():  # another process won the race: its copy is complete
                raise
    return path


def load_dataset(data_format: str, source: str, options: dict[str, Any] | None = None) -> Any:
    """Decode an embedded dataset (by name) or one on disk (by path), once per sweep."""
    options = options or {}
    root = embedded_path(source) if source in EMBEDDED else Path(source)
    if data_format == "imagefolder":
        from visiontune.data.imagefolder import load_imagefolder

        dataset = load_imagefolder(root, options.get("image_size"), options.get("split_seed", 0))
    else:
        from visiontune.data.detection import load_yolo

        dataset = load_yolo(root / "data.yaml" if root.is_dir() else root)
    if source in EMBEDDED:
        return type(dataset)(**{**dataset.__dict__, "source": source})
    return dataset
