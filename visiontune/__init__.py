"""visiontune: Ray Tune + Optuna hyperparameter sweeps for vision models."""

__version__ = "0.1.0"
