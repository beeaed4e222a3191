"""Small file helpers every part of visiontune shares: atomic writes and tolerant JSON reads.

An experiment directory is read while a sweep writes it (TensorBoard, `visiontune report`, a
resumed driver), and a driver can be killed at any instant: every file is written to a hidden
sibling first and renamed into place, so a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], content: str | bytes) -> None:
    """Write `content` to `path` through a temporary sibling and one rename (atomic on POSIX).
    The temporary name carries the pid, so concurrent writers never share one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """`payload` as indented JSON, atomically (values JSON cannot hold are written as str)."""
    write_atomic(path, json.dumps(payload, indent=1, default=str))


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    """The JSON in `path`, or `default` when the file is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default
