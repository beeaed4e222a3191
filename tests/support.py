"""Helpers shared by tests (import as `from support import ...`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLASSIFIER_SPACE = REPO / "search_spaces" / "classifier.yaml"


def visiontune(
    *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the installed console script as a user would; returns the completed process."""
    exe = Path(sys.executable).with_name("visiontune")
    return subprocess.run(
        [str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
