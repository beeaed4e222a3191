"""What a sweep ran with, so that any of its rows can be re-created: package versions, the code's
git commit, the machine, and a fingerprint of the data. `run_sweep` records it in sweep.json
under "provenance"; the report's last section ("Provenance") shows it.

Collecting never fails a sweep: whatever cannot be found out is recorded as "unknown" (a package
that is not installed as None). Nothing heavy is imported: versions come from the installed
packages' metadata, the commit from `git` run on this package's own source folder (so a copy
installed into a virtual environment inside some other checkout is not mistaken for it), the
machine from /proc/cpuinfo and torch.cuda.

The data fingerprint is a sha256 over the decoded dataset the trials trained on (the object
`visiontune.data.load_dataset` returns): class names, then per split every image's pixels and
every label (and box, for detection), each array with its dtype and shape. Paths are left out,
so the same images give the same fingerprint wherever they lie; what the pixels were decoded
from (PNG vs JPEG, another resize) shows in it, as it should. For the embedded 3000-image set it
takes milliseconds (decoding took ~1 s).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

UNKNOWN = "unknown"
PACKAGES = ("visiontune", "torch", "torchvision", "ray", "optuna", "ultralytics", "kornia", "numpy")
FINGERPRINT_METHOD = "sha256 of class names and each split's decoded pixels, labels and boxes (v1)"
GIT_TIMEOUT_S = 10  # a hung git (network filesystem, lock) must not hold the sweep


def collect_provenance(data: Any) -> dict[str, Any]:
    """Everything this module records, for sweep.json."""
    return {
        "packages": package_versions(),
        "code": code_version(),
        "machine": machine(),
        "data": data_fingerprint(data),
    }


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Python's version and each installed package's (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def source_dir() -> Path:
    """The folder this package is imported from."""
    return Path(__file__).resolve().parent


def code_version(where: Path | None = None) -> dict[str, Any]:
    """The git commit of the checkout `where` (default: this package's source folder) belongs
    to, and whether that checkout has uncommitted changes (untracked files count: a new module
    changes what runs). "unknown" when `where` is not tracked in a git checkout, git is
    missing, or it fails."""
    where = where or source_dir()
    unknown = {"commit": UNKNOWN, "dirty": UNKNOWN}
    # the folder must be tracked: an installed copy inside another repository's ignored .venv
    # would otherwise report that repository's commit
    if _git(where, "ls-files", "--error-unmatch", ".") is None:
        return unknown
    commit = _git(where, "rev-parse", "HEAD")
    status = _git(where, "status", "--porcelain", ":/")  # ":/": the whole checkout
    if commit is None or status is None:
        return unknown
    changed = [line for line in status.splitlines() if line.strip()]
    return {"commit": commit.strip(), "dirty": bool(changed), "changed_files": len(changed)}


def _git(where: Path, *args: str) -> str | None:
    """git's stdout, or None if git is missing, fails or hangs."""
    try:
        done = subprocess.run(
            ["git", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # status never takes the index lock
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def machine() -> dict[str, Any]:
    """The driver machine: OS, CPU model and count, and the GPUs torch sees (names)."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_names(),
    }


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first "model name" of /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def gpu_names() -> list[str] | str:
    """Names of the NVIDIA GPUs on this machine ([] for none); "unknown" if nvidia-smi is there
    but cannot tell. Asked of nvidia-smi, not torch: torch would create a CUDA context in the
    driver process, which holds GPU memory for the whole sweep on a GPU head node. Each trial
    records the device it used itself (trainables/device.py)."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):  # a broken driver must not fail the sweep
        return UNKNOWN
    return [line.strip() for line in out.splitlines() if line.strip()]


def data_fingerprint(data: Any) -> dict[str, Any]:
    """The dataset's sha256 (see the module docstring) with its split sizes; "unknown" for an
    object that is not a decoded visiontune dataset (no `splits`)."""
    splits = getattr(data, "splits", None)
    names = getattr(data, "classes", None) or getattr(data, "names", None)
    if not isinstance(splits, Mapping) or names is None:
        return {"sha256": UNKNOWN}
    digest = hashlib.sha256()
    _update(digest, "classes", "\n".join(map(str, names)).encode())
    for split in sorted(splits):
        for field in ("images", "labels", "boxes"):
            value = getattr(splits[split], field, None)
            if value is not None:
                _update_arrays(digest, f"{split}/{field}", value)
    return {
        "sha256": digest.hexdigest(),
        "method": FINGERPRINT_METHOD,
        "source": str(getattr(data, "source", UNKNOWN)),
        "images": {split: len(getattr(splits[split], "labels", ())) for split in sorted(splits)},
    }


def _update_arrays(digest: Any, name: str, value: Any) -> None:
    """One array, or a list of arrays (a detection split keeps one per image)."""
    if isinstance(value, np.ndarray):
        _update_array(digest, name, value)
        return
    _update(digest, f"{name}/count", str(len(value)).encode())
    for array in value:
        _update_array(digest, name, np.asarray(array))


def _update_array(digest: Any, name: str, array: np.ndarray) -> None:
    # little-endian, C order: the same numbers hash the same on any machine
    canonical = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    _update(digest, f"{name}/{canonical.dtype.str}/{canonical.shape}", memoryview(canonical))


def _update(digest: Any, label: str, payload: bytes | memoryview) -> None:
    # each part is framed by its label and length, so no two datasets share a byte stream
    size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    digest.update(f"{label}:{size}:".encode())
    digest.update(payload)


def provenance_lines(summary: Mapping[str, Any]) -> list[str]:
    """The report's "Provenance" section, from sweep.json."""
    record = summary.get("provenance")
    if not isinstance(record, Mapping):
        return ["- not recorded (the sweep ran before visiontune recorded provenance)"]
    packages = record.get("packages") or {}
    code = record.get("code") or {}
    host = record.get("machine") or {}
    data = record.get("data") or {}
    return [
        f"- code: {_code_text(code)}",
        "- packages: "
        + ", ".join(f"{name} {version or 'not installed'}" for name, version in packages.items()),
        f"- machine: {host.get('cpu', UNKNOWN)}, {host.get('cpu_count', UNKNOWN)} CPUs, "
        f"GPUs: {_gpus_text(host.get('gpus', UNKNOWN))}; {host.get('platform', UNKNOWN)}",
        f"- data: `{data.get('source', UNKNOWN)}`, sha256 `{data.get('sha256', UNKNOWN)}`"
        + _images_text(data.get("images")),
    ]


def _code_text(code: Mapping[str, Any]) -> str:
    commit, dirty = code.get("commit", UNKNOWN), code.get("dirty", UNKNOWN)
    if commit == UNKNOWN:
        return "git commit unknown (not run from a git checkout)"
    if dirty is True:
        return f"git commit `{commit}` with uncommitted changes ({code.get('changed_files', '?')} files)"
    return f"git commit `{commit}`" + ("" if dirty is False else ", uncommitted changes unknown")


def _gpus_text(gpus: Any) -> str:
    if isinstance(gpus, list):
        return ", ".join(map(str, gpus)) or "none"
    return str(gpus)


def _images_text(images: Any) -> str:
    if not isinstance(images, Mapping) or not images:
        return ""
    return " (" + ", ".join(f"{split} {count}" for split, count in images.items()) + " images)"
