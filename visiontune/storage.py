"""Where an experiment lives: a local (or NFS) directory, or a cloud URI (s3://, gs://).

Ray Tune writes its trial directories and checkpoints straight to the storage through pyarrow
filesystems. The project's own files (spec.yaml, the Optuna study in SQLite, the trial ledger,
TensorBoard events, test results, the summary, the report) need a local directory on the driver:
for a local storage it is the experiment directory itself; for a URI it is a mirror under the
cache directory, uploaded to STORAGE/NAME while the sweep runs and when it ends, so that
everything `visiontune report` needs is in the storage. A URI may carry pyarrow's options as a
query, e.g. `s3://bucket/runs?endpoint_override=minio.lan:9000&scheme=http`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from visiontune.errors import InputError
from visiontune.layout import SPEC_FILE

SCHEMES = ("s3", "gs", "gcs")


def is_uri(storage: str | os.PathLike) -> bool:
    return "://" in str(storage) and not str(storage).startswith("file://")


def _cache_root() -> Path:
    root = os.environ.get("VISIONTUNE_CACHE") or Path.home() / ".cache" / "visiontune"
    return Path(root).expanduser() / "experiments"


@dataclass(frozen=True)
class Experiment:
    """An experiment's places. `local` is where the driver reads and writes the project's files;
    `uri` (None for a local storage) is STORAGE/NAME in the cloud, `filesystem`/`fs_path` the
    pyarrow filesystem and path Ray Tune gets for STORAGE."""

    name: str
    local: Path
    uri: str | None = None
    filesystem: Any = None
    fs_path: str | None = None

    @property
    def remote_dir(self) -> str | None:
        return f"{self.fs_path}/{self.name}" if self.uri else None

    @property
    def ray_storage_path(self) -> str:
        return self.fs_path if self.uri else str(self.local.parent)

    @property
    def ray_experiment_path(self) -> str:
        return self.remote_dir if self.uri else str(self.local)

    @property
    def location(self) -> str:
        """What a user passes to `visiontune report` from any machine."""
        return self.uri or str(self.local)

    def exists(self) -> bool:
        """Whether a sweep already started here (its spec was written)."""
        if not self.uri:
            return self.local.exists()
        import pyarrow.fs as pafs

        try:
            info = self.filesystem.get_file_info(f"{self.remote_dir}/{SPEC_FILE}")
        except OSError as exc:  # no such bucket, no credentials, endpoint unreachable
            raise InputError(f"--storage: {self.uri}: {exc}") from None
        return info.type != pafs.FileType.NotFound

    def upload(self) -> None:
        """Copy the driver's files to the storage (no-op for a local storage)."""
        if not self.uri or not self.local.is_dir():
            return
        import pyarrow.fs as pafs

        self.filesystem.create_dir(self.remote_dir, recursive=True)
        pafs.copy_files(
            str(self.local),
            self.remote_dir,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.filesystem,
        )

    def upload_dir(self, source: Path, relative: str) -> None:
        """Copy a local directory to STORAGE/NAME/RELATIVE."""
        import pyarrow.fs as pafs

        self.filesystem.create_dir(f"{self.remote_dir}/{relative}", recursive=True)
        pafs.copy_files(
            str(source),
            f"{self.remote_dir}/{relative}",
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.filesystem,
        )

    def fetch(self, relative: str) -> Path:
        """One file STORAGE/NAME/RELATIVE on this machine: the file itself for a local storage,
        else a copy in a new temporary directory."""
        if not self.uri:
            return self.local / relative
        import tempfile

        import pyarrow.fs as pafs

        target = Path(tempfile.mkdtemp(prefix="visiontune-")) / Path(relative).name
        pafs.copy_files(
            f"{self.remote_dir}/{relative}",
            str(target),
            source_filesystem=self.filesystem,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        return target

    def download(self, target: Path | None = None, checkpoints: bool = False) -> Path:
        """Copy STORAGE/NAME into `target` (default: the local mirror), without checkpoint
        directories unless asked; returns the local directory."""
        target = target or self.local
        if not self.uri:
            return self.local
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.remote_dir, recursive=True, allow_not_found=True)
        infos = self.filesystem.get_file_info(selector)
        if not infos:
            raise InputError(f"{self.uri}: no experiment there")
        local = pafs.LocalFileSystem()
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[len(self.remote_dir) :].lstrip("/")
            if not checkpoints and any(p.startswith("checkpoint_") for p in relative.split("/")):
                continue
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(
                info.path,
                str(destination),
                source_filesystem=self.filesystem,
                destination_filesystem=local,
            )
        return target


def open_experiment(storage: str | os.PathLike, name: str) -> Experiment:
    """Resolve STORAGE/NAME; a URI's filesystem is created (and its options checked) here."""
    if not is_uri(storage):
        path = str(storage).removeprefix("file://")
        return Experiment(name=name, local=Path(path).expanduser().resolve() / name)
    storage = str(storage)
    parts = urlsplit(storage)
    if parts.scheme not in SCHEMES:
        raise InputError(
            f"--storage: {storage!r} is not a local path or an {'/'.join(SCHEMES)} URI"
        )
    import pyarrow.fs as pafs

    try:
        filesystem, fs_path = pafs.FileSystem.from_uri(storage)
    except (ValueError, OSError) as exc:
        raise InputError(f"--storage: {storage!r}: {exc}") from None
    fs_path = fs_path.rstrip("/")
    bare = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    digest = hashlib.sha1(storage.encode()).hexdigest()[:10]
    mirror = _cache_root() / f"{parts.scheme}-{parts.netloc}-{digest}" / name
    return Experiment(
        name=name,
        local=mirror,
        uri=f"{bare}/{name}" + (f"?{parts.query}" if parts.query else ""),
        filesystem=filesystem,
        fs_path=fs_path,
    )


def open_report_source(location: str | os.PathLike, scratch: Path) -> tuple[Experiment, Path]:
    """For `visiontune report LOCATION`: the experiment and a local directory holding its files
    (downloaded into `scratch` when LOCATION is a URI)."""
    if not is_uri(location):
        path = Path(str(location).removeprefix("file://")).expanduser().resolve()
        return Experiment(name=path.name, local=path), path
    parts = urlsplit(str(location))
    path = parts.path.rstrip("/")
    parent = urlunsplit((parts.scheme, parts.netloc, path.rsplit("/", 1)[0], parts.query, ""))
    experiment = open_experiment(parent, path.rsplit("/", 1)[-1])
    target = scratch / experiment.name
    experiment.download(target)
    return experiment, target


def fresh_mirror(experiment: Experiment) -> None:
    """Empty the local mirror of a URI experiment (what is in the storage is the truth)."""
    if experiment.uri and experiment.local.exists():
        shutil.rmtree(experiment.local)
