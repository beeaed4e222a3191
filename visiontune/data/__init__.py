"""Datasets: ImageFolder trees from disk, and embedded generators that work offline.

`load_dataset("ir-solar-modules")` generates the synthetic infrared module set into the cache
directory on first use ($VISIONTUNE_CACHE, else $XDG_CACHE_HOME/visiontune, else
~/.cache/visiontune) and decodes it like any other ImageFolder tree.
"""

from __future__ import annotations

import os
from pathlib import Path

from visiontune.data.imagefolder import ImageDataset, load_imagefolder
from visiontune.errors import InputError

EMBEDDED = ("ir-solar-modules",)
GENERATOR_VERSION = 1  # bump when a generator's output changes, so caches are rebuilt


def cache_dir() -> Path:
    if os.environ.get("VISIONTUNE_CACHE"):
        return Path(os.environ["VISIONTUNE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "visiontune"


def make_embedded(name: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write an embedded dataset to `out_dir` (refuses an existing non-empty directory)."""
    if name != "ir-solar-modules":
        raise InputError(f"data make: unknown dataset {name!r} (known: {', '.join(EMBEDDED)})")
    from visiontune.data import ir_solar

    return ir_solar.write_imagefolder(out_dir, seed=seed)


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


def load_dataset(
    source: str, image_size: tuple[int, int] | None = None, split_seed: int = 0
) -> ImageDataset:
    """Decode an embedded dataset (by name) or an ImageFolder directory (by path)."""
    root = embedded_path(source) if source in EMBEDDED else Path(source)
    dataset = load_imagefolder(root, image_size, split_seed)
    if source in EMBEDDED:
        return ImageDataset(dataset.classes, dataset.splits, source, dataset.mean, dataset.std)
    return dataset
