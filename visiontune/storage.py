"""Where an experiment lives: a local (or NFS) directory, or a cloud URI (s3://, gs://).

Ray Tune writes its trial directories and checkpoints straight to the storage through pyarrow
filesystems. The project's own files (spec.yaml, the Optuna study in SQLite, the trial ledger,
TensorBoard events, test results, the summary, the report) need a local directory on the driver:
for a local storage it is the experiment directory itself; for a URI it is a mirror under the
cache directory, uploaded to STORAGE/NAME while the sweep runs and when it ends, so that
everything `visiontune report` needs is in the storage. A URI may carry pyarrow's options as a
query, e.g. `s3://bucket/runs?endpoint_override=minio.lan:9000&scheme=http`.

An experiment's name is one path component (`check_name`), checked before anything is created.
A new sweep claims STORAGE/NAME with one exclusive `mkdir` (`Experiment.claim`): of two sweeps
started at once with the same storage and name, exactly one gets it. For a URI storage the
claim is a check that STORAGE/NAME has no spec.yaml yet plus the local mirror's `mkdir`:
pyarrow offers no exclusive create on object stores, so two drivers on different machines
that start the same URI experiment within a few seconds of each other are not told apart.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from visiontune.errors import InputError
from visiontune.layout import SPEC_FILE
from visiontune.params import short_repr

SCHEMES = ("s3", "gs", "gcs")
NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")  # ASCII: the same name on every filesystem and bucket
MAX_NAME = 100


def check_name(name: str, source: str) -> str:
    """`name` if it is an experiment name: one path component of 1-100 ASCII letters, digits,
    `-`, `_` and `.`, not starting with a dot (no `..`, no `/`, no hidden directory). Else an
    InputError naming `source` (`--name`, or the spec file's `name`)."""
    if not isinstance(name, str) or not name:
        problem = "is empty"
    elif len(name) > MAX_NAME:
        problem = f"is longer than {MAX_NAME} characters"
    elif name.startswith("."):
        problem = "starts with '.'"
    elif not NAME_CHARS.fullmatch(name):
        bad = next(c for c in name if not NAME_CHARS.fullmatch(c))
        problem = f"contains {bad!r}"
    else:
        return name
    raise InputError(
        f"{source}: experiment name {short_repr(name)} {problem}; use letters, digits, "
        f"'-', '_' and '.' (one directory name, at most {MAX_NAME} characters)"
    )


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

    def check_writable(self) -> None:
        """A local storage must be a directory this process can create files in (or a path
        that can become one): checked by creating and removing a temporary file in the nearest
        existing directory on the way to STORAGE/NAME (permission bits alone do not tell, e.g.
        for root or on a read-only mount). Nothing is created. URIs are checked by `exists`."""
        if self.uri:
            return
        existing = self.local
        while not os.path.exists(existing) and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise InputError(f"--storage: {existing} is a file, not a directory")
        try:
            handle, probe = tempfile.mkstemp(prefix=".visiontune-probe-", dir=existing)
        except OSError as exc:
            raise InputError(
                f"--storage: cannot create files in {existing} ({exc.strerror or exc})"
            ) from None
        os.close(handle)
        os.unlink(probe)

    def claim(self) -> list[Path]:
        """Create the experiment's local directory for a new sweep, exclusively: a second
        sweep with the same storage and name (started at the same time or later) gets the
        one-line "already exists". Returns the directories created, for `release`."""
        if self.uri:
            if self.exists():
                raise self.exists_error()
            fresh_mirror(self)  # a stale mirror of an experiment deleted from the storage
        missing = [p for p in (self.local, *self.local.parents) if not os.path.exists(p)]
        try:
            self.local.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"--storage: cannot create {self.local.parent} ({exc.strerror or exc})"
            ) from None
        try:
            self.local.mkdir()
        except FileExistsError:
            raise self.exists_error() from None
        except OSError as exc:
            raise InputError(
                f"--storage: cannot create {self.local} ({exc.strerror or exc})"
            ) from None
        return missing[::-1]

    def release(self, created: list[Path]) -> None:
        """Undo `claim` for a sweep that ended before anything ran: remove the experiment's
        local directory and the empty parents `claim` created, so the name is free again."""
        shutil.rmtree(self.local, ignore_errors=True)
        for path in reversed(created[:-1]):
            try:
                path.rmdir()
            except OSError:
                return  # not empty: something else lives there now

    def exists_error(self) -> InputError:
        """The one-line error for a name already taken in this storage."""
        return InputError(
            f"{self.location}: experiment already exists; use --resume or another --name"
        )

    def mirror(self) -> Path:
        """The experiment's files on this machine: a local experiment is its own directory; a
        URI's local mirror is replaced by a fresh download of STORAGE/NAME (no checkpoints)."""
        if self.uri:
            fresh_mirror(self)
            self.download()
        return self.local

    def exists(self) -> bool:
        """Whether a sweep already started here (its directory, for a URI its spec, exists)."""
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


def open_experiment(storage: str | os.PathLike, name: str, source: str = "--name") -> Experiment:
    """Resolve STORAGE/NAME; `name` must be an experiment name (`check_name`, the error naming
    `source`); a URI's filesystem is created (and its options checked) here."""
    return _open(storage, check_name(name, source))


def _open(storage: str | os.PathLike, name: str) -> Experiment:
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
    experiment = _open(parent, path.rsplit("/", 1)[-1])  # an existing one: any name is read
    target = scratch / experiment.name
    experiment.download(target)
    return experiment, target


def fresh_mirror(experiment: Experiment) -> None:
    """Empty the local mirror of a URI experiment (what is in the storage is the truth)."""
    if experiment.uri and experiment.local.exists():
        shutil.rmtree(experiment.local)
