"""Helpers shared by tests (import as `from support import ...`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CLASSIFIER_SPACE = REPO / "search_spaces" / "classifier.yaml"
FIXTURES = REPO / "tests" / "fixtures"  # experiment dirs made by fixtures/make_experiment.py


def visiontune(
    *args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the installed console script as a user would; returns the completed process.
    `env` adds to (or replaces) variables of this process's environment."""
    exe = Path(sys.executable).with_name("visiontune")
    environ = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(exe), *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=environ,
    )  # fmt: skip


@contextmanager
def no_network() -> Iterator[list[str]]:
    """Every way out of the process records its target and fails, as on an offline machine."""
    attempts: list[str] = []

    def refuse(name: str):
        def blocked(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
            raise OSError(f"network blocked in tests: {name}")

        return blocked

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse("socket.connect"))
        patch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
        patch.setattr(socket, "create_connection", refuse("create_connection"))
        patch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        yield attempts


def uncommented_keys(path: Path) -> list[str]:
    """Lines of a YAML file that set a key without a trailing comment saying what it is.
    Keys inside a multi-line {flow mapping} are documented by the line that opens it."""
    missing, depth = [], 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        opened = depth
        depth += code.count("{") - code.count("}")
        stripped = code.strip()
        if opened or not stripped or stripped.startswith(("{", "-")) or ":" not in code:
            continue
        if "#" not in line:
            missing.append(f"{path.name}:{number}: {line.strip()}")
    return missing


def read_ledger(exp: Path) -> dict[str, dict]:
    """The sweep's trial ledger (trial_status.json); {} while it does not exist yet."""
    import json

    try:
        return json.loads((exp / "trial_status.json").read_text())
    except (OSError, ValueError):
        return {}


def copy_fixture(name: str, target: Path) -> Path:
    """A writable copy of the checked-in experiment directory tests/fixtures/NAME (`experiment`:
    a 5-trial classifier sweep with ASHA stops; `diverging`: a sweep with an errored trial)."""
    return Path(shutil.copytree(FIXTURES / name, target / name))
