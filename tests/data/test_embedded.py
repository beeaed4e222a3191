"""Tests for visiontune.data: the embedded datasets' one entry point (`visiontune data make`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PIL import Image

from visiontune.data import make_embedded
from visiontune.data.pv_arrays import DEFAULT_NUM_IMAGES, IMAGE_SIZE, NAMES
from visiontune.errors import InputError


def test_make_embedded_writes_the_default_pv_arrays_set_and_then_refuses_it(
    tmp_path: Path,
) -> None:
    root = make_embedded("pv-arrays", tmp_path / "ds")
    assert root == (tmp_path / "ds").resolve()
    assert yaml.safe_load((root / "data.yaml").read_text())["names"] == dict(enumerate(NAMES))
    for split, count in DEFAULT_NUM_IMAGES.items():
        assert len(list((root / "images" / split).glob("*.png"))) == count
        assert len(list((root / "labels" / split).glob("*.txt"))) == count
    with Image.open(root / "images" / "val" / "val_00000.png") as img:
        assert img.size == (IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(InputError, match="already exists"):
        make_embedded("pv-arrays", root)


def test_make_embedded_names_an_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'pv-array'.*ir-solar-modules, pv-arrays"):
        make_embedded("pv-array", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
