"""Shared fixtures. Every Ray node a test starts stays on 127.0.0.1 (set before Ray is imported)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import CLASSIFIER_SPACE, SWEEP_EPOCHS, SWEEP_SAMPLES, visiontune

from visiontune.sweep.compat import keep_ray_on_loopback

keep_ray_on_loopback()  # before any test imports Ray


@pytest.fixture(scope="session")
def tiny_imagefolder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small copy of the embedded IR set (same generator, fewer images) in ImageFolder layout."""
    from visiontune.data import ir_solar

    return ir_solar.write_imagefolder(
        tmp_path_factory.mktemp("data") / "ir", num_images=360, seed=3
    )


@pytest.fixture(scope="session")
def sweep(tiny_imagefolder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One finished real classifier sweep (SWEEP_SAMPLES trials of SWEEP_EPOCHS epochs on the
    tiny set, width 8), run through the console script, shared by every test that only reads a
    finished sweep's files (copy it before changing anything in it). {"dir", "stdout", "data"}."""
    storage = tmp_path_factory.mktemp("storage")
    proc = visiontune(
        "tune", CLASSIFIER_SPACE, "--num-samples", SWEEP_SAMPLES, "--max-epochs", SWEEP_EPOCHS,
        "--data", tiny_imagefolder, "--storage", storage, "--name", "small", "--set", "width=8",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"dir": storage / "small", "stdout": proc.stdout, "data": tiny_imagefolder}


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
