"""Import `visiontune.trainables` and `visiontune.analysis` from a source tree's root folders.

The pipeline's folders sit at the repository root (search_spaces/ -> trainables/ -> analysis/) and
install as `visiontune.trainables` / `visiontune.analysis` (pyproject.toml's package-dir). One case
needs help: `ray job submit --working-dir .` uploads the tree and puts it FIRST on the path of the
job's driver and workers, so `import visiontune` finds the uploaded visiontune/ folder, whose
directory holds no trainables/ or analysis/: the installed copy's mapping is never consulted, and
`visiontune.trainables` would fail (or, were the path searched further, mix two versions).

`map_pipeline_folders` puts a finder for exactly those two names in front of Python's import
system, and only when `visiontune` itself was imported from a source tree (a pyproject.toml and a
trainables/ package beside it). An installed copy, editable or not, is untouched, and no other
folder of the tree (tests/, benchmarks/, search_spaces/) becomes importable as `visiontune.*`.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

PIPELINE_FOLDERS = ("trainables", "analysis")


class PipelineFolderFinder(importlib.abc.MetaPathFinder):
    """Finds `<package>.trainables` and `<package>.analysis` in the source tree `root`."""

    def __init__(self, package: str, root: Path) -> None:
        self.package = package
        self.root = root

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        parent, _, name = fullname.partition(".")
        if parent != self.package or name not in PIPELINE_FOLDERS:
            return None  # submodules resolve through the folder's own __path__
        folder = self.root / name
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def source_root(package_file: str) -> Path | None:
    """The repository root when the package at `package_file` sits in a source tree."""
    root = Path(package_file).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "trainables" / "__init__.py").is_file():
        return root
    return None


def map_pipeline_folders(package: str, package_file: str) -> None:
    """Install the finder for a package imported from a source tree (once per process)."""
    root = source_root(package_file)
    if root is None:
        return
    if not any(isinstance(f, PipelineFolderFinder) and f.root == root for f in sys.meta_path):
        sys.meta_path.insert(0, PipelineFolderFinder(package, root))
