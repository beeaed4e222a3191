"""Small file helpers every part of visiontune shares: atomic writes, and JSON reads that are
tolerant (`read_json`: a default for anything unreadable) or strict (`read_json_file`: a missing
file is the default, a damaged one a one-line error naming it).

An experiment directory is read while a sweep writes it (TensorBoard, `visiontune report`, a
resumed driver), and a driver can be killed at any instant: every file is written to a hidden
sibling first and renamed into place, so a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from visiontune.errors import InputError
from visiontune.params import short_repr


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


def read_json_file(
    path: str | os.PathLike[str], expected: type[dict] | type[list], default: Any
) -> Any:
    """The JSON in `path`, which must be an object (`expected=dict`) or an array (`list`);
    `default` when the file does not exist. A file that cannot be read, is not JSON, or holds
    another shape is an InputError naming it: the files visiontune writes are written whole
    (`write_atomic`), so such a file was damaged, not caught half-written."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return default
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise InputError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(payload, expected):
        shape = "object" if expected is dict else "array"
        raise InputError(f"{path}: expected a JSON {shape}, got {short_repr(payload)}")
    return payload
