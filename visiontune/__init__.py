"""visiontune: Ray Tune + Optuna hyperparameter sweeps for vision models."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# The pipeline's folders (trainables/, analysis/) sit at the repository root and install as
# visiontune.trainables / visiontune.analysis. When this package is imported from a source tree
# instead of the installed copy (a Ray job's --working-dir puts the uploaded tree first on the
# path), let those names resolve to the same tree's folders, not to another installed copy.
_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "trainables" / "__init__.py").is_file():
    __path__.append(str(_root))  # noqa: F821 (a package's __path__)
