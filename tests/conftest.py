"""Shared fixtures. Every Ray node a test starts stays on 127.0.0.1 (set before Ray is imported)."""

from __future__ import annotations

from pathlib import Path

import pytest

from visiontune.sweep.compat import keep_ray_on_loopback

keep_ray_on_loopback()  # before any test imports Ray


@pytest.fixture(scope="session")
def tiny_imagefolder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small copy of the embedded IR set (same generator, fewer images) in ImageFolder layout."""
    from visiontune.data import ir_solar

    return ir_solar.write_imagefolder(
        tmp_path_factory.mktemp("data") / "ir", num_images=360, seed=3
    )


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
