"""`visiontune.trainables`/`visiontune.analysis` from an uploaded source tree (visiontune/_source_tree.py):
the case `ray job submit --working-dir .` creates, checked without Ray in a plain subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from support import REPO

PROBE = """
import importlib, importlib.util, json
found = {}
for name in ("visiontune", "visiontune.trainables", "visiontune.trainables.contract",
             "visiontune.analysis", "visiontune.tests", "visiontune.search_spaces",
             "visiontune.benchmarks"):
    try:
        found[name] = importlib.import_module(name).__file__
    except ImportError:
        found[name] = None
# a task's subpackage, found but not run (running it would import torch)
found["visiontune.trainables.yolo"] = importlib.util.find_spec("visiontune.trainables.yolo").origin
print(json.dumps(found))
"""


def _copy_tree(target: Path, with_pyproject: bool = True) -> Path:
    for folder in ("visiontune", "trainables", "analysis", "tests", "search_spaces"):
        shutil.copytree(
            REPO / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    if with_pyproject:
        shutil.copy(REPO / "pyproject.toml", target)
    return target


def _imports_from(cwd: Path) -> dict[str, str | None]:
    """What a Python started in `cwd` (first on its path, as in a Ray job's working_dir) imports."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_an_uploaded_tree_imports_its_own_pipeline_folders_and_nothing_else(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "job")
    found = _imports_from(tree)
    assert found["visiontune"] == str(tree / "visiontune" / "__init__.py")
    assert found["visiontune.trainables"] == str(tree / "trainables" / "__init__.py")
    assert found["visiontune.trainables.contract"] == str(tree / "trainables" / "contract.py")
    # a task's subpackage resolves through the folder's own __path__
    assert found["visiontune.trainables.yolo"] == str(tree / "trainables" / "yolo" / "__init__.py")
    assert found["visiontune.analysis"] == str(tree / "analysis" / "__init__.py")
    # the tree's other folders do not become part of the package
    assert found["visiontune.tests"] is None
    assert found["visiontune.search_spaces"] is None
    assert found["visiontune.benchmarks"] is None


def test_a_package_outside_a_source_tree_is_left_to_its_installation(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "job", with_pyproject=False)
    found = _imports_from(tree)
    assert found["visiontune"] == str(tree / "visiontune" / "__init__.py")
    # no mapping: the pipeline folders come from the installed package, not from this tree
    assert found["visiontune.trainables"] != str(tree / "trainables" / "__init__.py")
