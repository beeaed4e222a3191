"""visiontune: Ray Tune + Optuna hyperparameter sweeps for vision models."""

from visiontune._source_tree import map_pipeline_folders as _map_pipeline_folders

__version__ = "0.1.0"

# Run from a source tree (a Ray job's `--working-dir .` puts the uploaded tree first on the path
# of the job and of every worker), `visiontune.trainables` and `visiontune.analysis` must be that
# tree's root folders trainables/ and analysis/, not another installed copy's. Nothing else is
# mapped; an installed visiontune is left as it is. See visiontune/_source_tree.py.
_map_pipeline_folders(__name__, __file__)


def __getattr__(name: str) -> object:
    """`visiontune.load_best` and `visiontune.load_checkpoint` (visiontune/load.py), imported
    on first use: importing visiontune stays free of torch and the trainables."""
    if name in ("load_best", "load_checkpoint"):
        from visiontune import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
