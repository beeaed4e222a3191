"""Writing a generated dataset tree so that its folder is either absent or complete."""

from __future__ import annotations

import os
import pathlib
import shutil
import uuid
from collections.abc import Callable

from visiontune.errors import InputError


def refuse_existing(target: pathlib.Path) -> None:
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise InputError(
            f"{target} already exists and is not an empty directory; refusing to overwrite it"
        )


def move_into_place(staging: pathlib.Path, target: pathlib.Path) -> None:
    refuse_existing(target)
    if target.is_dir():
        target.rmdir()  # an empty directory; os.replace cannot replace one on Windows
    try:
        os.replace(staging, target)
    except OSError as exc:
        # Someone filled the target while we were writing; theirs wins, ours is discarded.
        raise InputError(f"{target} appeared while writing; refusing to overwrite it") from exc


def write_tree_atomically(
    out_dir: str | os.PathLike[str], write: Callable[[pathlib.Path], None]
) -> pathlib.Path:
    """Call `write(staging)` on a hidden sibling of `out_dir`, then rename it into place in one
    step; refuses a non-empty `out_dir`. Returns the resolved `out_dir`."""
    target = pathlib.Path(out_dir).expanduser().resolve()
    refuse_existing(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same parent keeps the final rename on one filesystem, where it is atomic.
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        write(staging)
        move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
