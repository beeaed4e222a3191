"""What a sweep records about what it ran with (visiontune/provenance.py): package versions, the
code's git commit, the machine, the data's fingerprint, and the report's "Provenance" section.
Fast: real git repositories in tmp_path, tiny in-memory datasets, the checked-in experiment."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support import copy_fixture
from tiny_data import classification_dataset, write_detection_dataset

from visiontune import provenance
from visiontune.analysis.report import write_report
from visiontune.data.imagefolder import ImageDataset, Split
from visiontune.provenance import (
    UNKNOWN,
    code_version,
    collect_provenance,
    cpu_model,
    data_fingerprint,
    package_versions,
    provenance_lines,
)

# --- packages ------------------------------------------------------------------------------


def test_versions_are_python_and_each_installed_package_and_none_for_a_missing_one():
    versions = package_versions(("numpy", "no-such-package-visiontune"))
    assert versions == {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "no-such-package-visiontune": None,
    }


def test_the_default_packages_are_the_ones_a_rerun_needs():
    versions = package_versions()
    for name in ("python", "torch", "torchvision", "ray", "optuna", "ultralytics", "kornia"):
        assert isinstance(versions[name], str) and versions[name], name


# --- code ----------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout with one committed package folder and an ignored .venv."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text(".venv/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    return repo


def test_a_clean_checkout_gives_its_commit_and_no_changes(checkout):
    assert code_version(checkout / "pkg") == {
        "commit": _git(checkout, "rev-parse", "HEAD"),
        "dirty": False,
        "changed_files": 0,
    }


def test_an_edited_file_anywhere_in_the_checkout_counts_as_uncommitted(checkout):
    (checkout / ".gitignore").write_text(".venv/\n*.tmp\n")
    assert code_version(checkout / "pkg")["dirty"] is True
    assert code_version(checkout / "pkg")["changed_files"] == 1


def test_a_new_untracked_module_counts_as_uncommitted(checkout):
    (checkout / "pkg" / "new.py").write_text("y = 2\n")
    assert code_version(checkout / "pkg")["dirty"] is True


def test_a_folder_outside_any_checkout_is_unknown(tmp_path):
    (tmp_path / "pkg").mkdir()
    assert code_version(tmp_path / "pkg") == {"commit": UNKNOWN, "dirty": UNKNOWN}


def test_a_copy_installed_into_an_ignored_venv_of_another_checkout_is_unknown(checkout):
    installed = checkout / ".venv" / "lib" / "site-packages" / "pkg"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("x = 1\n")
    assert code_version(installed) == {"commit": UNKNOWN, "dirty": UNKNOWN}


def test_without_git_on_the_path_the_code_version_is_unknown(checkout, monkeypatch):
    monkeypatch.setenv("PATH", str(checkout / "no-bin"))
    assert code_version(checkout / "pkg") == {"commit": UNKNOWN, "dirty": UNKNOWN}


def test_this_package_reports_the_commit_of_the_checkout_it_runs_from():
    repo = Path(provenance.__file__).resolve().parents[1]
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    expected = head.stdout.strip() if head.returncode == 0 else UNKNOWN  # e.g. a copied tree
    assert code_version()["commit"] == expected


# --- machine -------------------------------------------------------------------------------


def test_the_cpu_model_is_the_first_model_name_of_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
    )
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"


def test_without_cpuinfo_the_cpu_model_comes_from_platform(tmp_path):
    assert cpu_model(tmp_path / "missing") == (
        platform.processor() or platform.machine() or UNKNOWN
    )


def _nvidia_smi(tmp_path, monkeypatch, script: str) -> None:
    """An nvidia-smi executable first on PATH (this machine has no NVIDIA driver)."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(f"#!/bin/sh\n{script}\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")


def test_gpu_names_are_none_without_an_nvidia_driver(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    assert provenance.gpu_names() == []


def test_gpu_names_are_what_nvidia_smi_lists(monkeypatch, tmp_path):
    _nvidia_smi(tmp_path, monkeypatch, "printf 'NVIDIA H200\\nNVIDIA H200\\n'")
    assert provenance.gpu_names() == ["NVIDIA H200", "NVIDIA H200"]


def test_gpu_names_are_unknown_when_nvidia_smi_fails(monkeypatch, tmp_path):
    _nvidia_smi(
        tmp_path, monkeypatch, "echo 'Failed to initialize NVML: Driver mismatch' >&2; exit 9"
    )
    assert provenance.gpu_names() == UNKNOWN


def test_gpu_names_do_not_initialise_cuda_in_the_driver():
    import torch

    provenance.gpu_names()
    assert not torch.cuda.is_initialized()


# --- data ----------------------------------------------------------------------------------


def _with(dataset: ImageDataset, split: str, **changes: np.ndarray) -> ImageDataset:
    splits = dict(dataset.splits)
    splits[split] = dataclasses.replace(splits[split], **changes)
    return dataclasses.replace(dataset, splits=splits)


def test_the_same_data_decoded_twice_has_the_same_fingerprint():
    first, second = classification_dataset(seed=0), classification_dataset(seed=0)
    assert first.splits["train"].images is not second.splits["train"].images
    assert data_fingerprint(first) == data_fingerprint(second)


def test_the_fingerprint_is_the_sha256_of_the_documented_byte_stream():
    """The stream, spelled out: changing it must change FINGERPRINT_METHOD, since fingerprints
    recorded by earlier sweeps are compared with new ones (visiontune.load.check_same_data)."""
    images = np.arange(2 * 1 * 2 * 3, dtype=np.uint8).reshape(2, 1, 2, 3)
    labels = np.array([0, 1], dtype=np.int64)
    split = Split(images, labels)
    dataset = ImageDataset(("a", "b"), {"train": split, "val": split, "test": split}, "x")
    stream = b"classes:3:a\nb"
    for name in ("test", "train", "val"):  # sorted
        stream += f"{name}/images/|u1/(2, 1, 2, 3):12:".encode() + images.tobytes()
        stream += f"{name}/labels/<i8/(2,):16:".encode() + labels.astype("<i8").tobytes()
    fingerprint = data_fingerprint(dataset)
    assert fingerprint["method"] == provenance.FINGERPRINT_METHOD
    assert fingerprint["sha256"] == hashlib.sha256(stream).hexdigest()


@pytest.mark.parametrize(
    "change",
    ["one pixel", "one label", "a class name", "an image moved between splits", "byte order"],
)
def test_any_change_to_pixels_labels_classes_or_splits_changes_the_fingerprint(change):
    data = classification_dataset(seed=0)
    train, val = data.splits["train"], data.splits["val"]
    if change == "one pixel":
        images = train.images.copy()
        images[3, 0, 5, 7] ^= 1
        changed = _with(data, "train", images=images)
    elif change == "one label":
        labels = train.labels.copy()
        labels[0] = 1 - labels[0]
        changed = _with(data, "train", labels=labels)
    elif change == "a class name":
        changed = dataclasses.replace(data, classes=("dark", "Bright"))
    elif change == "an image moved between splits":
        moved = _with(data, "train", images=train.images[1:], labels=train.labels[1:])
        changed = _with(
            moved,
            "val",
            images=np.concatenate([train.images[:1], val.images]),
            labels=np.concatenate([train.labels[:1], val.labels]),
        )
    else:  # the same numbers stored big-endian hash the same
        changed = _with(data, "train", labels=train.labels.astype(">i8"))
        assert data_fingerprint(changed) == data_fingerprint(data)
        return
    assert data_fingerprint(changed)["sha256"] != data_fingerprint(data)["sha256"]


def test_the_fingerprint_does_not_depend_on_where_the_data_lies(tmp_path):
    here = write_detection_dataset(tmp_path / "here")
    there = write_detection_dataset(tmp_path / "elsewhere" / "there")
    assert here.splits["train"].files != there.splits["train"].files
    assert data_fingerprint(here)["sha256"] == data_fingerprint(there)["sha256"]
    assert data_fingerprint(here)["images"] == {"test": 8, "train": 16, "val": 8}


def test_detection_boxes_are_part_of_the_fingerprint(tmp_path):
    data = write_detection_dataset(tmp_path / "det")
    boxes = [b.copy() for b in data.splits["val"].boxes]
    boxes[0][0, 0] += 0.01
    moved = dataclasses.replace(
        data, splits={**data.splits, "val": dataclasses.replace(data.splits["val"], boxes=boxes)}
    )
    assert data_fingerprint(moved)["sha256"] != data_fingerprint(data)["sha256"]


def test_an_object_that_is_no_decoded_dataset_has_an_unknown_fingerprint():
    assert data_fingerprint(object()) == {"sha256": UNKNOWN}
    assert data_fingerprint({"splits": {}}) == {"sha256": UNKNOWN}


def test_fingerprinting_a_set_the_size_of_the_embedded_one_takes_well_under_a_second():
    rng = np.random.default_rng(0)
    counts = {"train": 2096, "val": 452, "test": 452}  # ir-solar-modules: 3000 images, 40x24
    splits = {
        name: Split(
            rng.integers(0, 256, (n, 1, 40, 24), dtype=np.uint8),
            rng.integers(0, 12, n).astype(np.int64),
        )
        for name, n in counts.items()
    }
    dataset = ImageDataset(tuple(f"c{i}" for i in range(12)), splits, "embedded")
    start = time.perf_counter()
    data_fingerprint(dataset)
    assert time.perf_counter() - start < 1.0


# --- the record and the report -------------------------------------------------------------


def test_the_record_is_plain_json_with_its_four_parts():
    record = collect_provenance(classification_dataset())
    assert json.loads(json.dumps(record)) == record  # no default=str needed
    assert set(record) == {"packages", "code", "machine", "data"}
    assert record["machine"]["cpu_count"] >= 1
    assert record["data"]["images"] == {"test": 16, "train": 32, "val": 16}


def test_the_report_ends_with_the_provenance_sweep_json_records(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    summary = json.loads((exp / "sweep.json").read_text())
    record = collect_provenance(classification_dataset())
    (exp / "sweep.json").write_text(json.dumps({**summary, "provenance": record}))
    report = (write_report(exp, tmp_path / "r") / "report.md").read_text()
    last = report[report.rindex("\n## ") + 1 :]
    assert last.startswith("## Provenance\n")
    assert record["data"]["sha256"] in last and f"torch {record['packages']['torch']}" in last
    assert str(record["code"]["commit"]) in last and record["machine"]["cpu"] in last


def test_a_sweep_without_a_record_says_so_in_the_report(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    report = (write_report(exp, tmp_path / "r") / "report.md").read_text()
    assert report.endswith(
        "## Provenance\n\n- not recorded (the sweep ran before visiontune recorded provenance)\n"
    )


def test_provenance_lines_name_uncommitted_changes_and_missing_packages():
    record = {
        "packages": {"python": "3.11.7", "ultralytics": None},
        "code": {"commit": "abc", "dirty": True, "changed_files": 3},
        "machine": {"cpu": "CPU X", "cpu_count": 2, "gpus": ["NVIDIA H200"], "platform": "L"},
        "data": {"sha256": "f00", "source": "ir", "images": {"train": 5}},
    }
    assert provenance_lines({"provenance": record}) == [
        "- code: git commit `abc` with uncommitted changes (3 files)",
        "- packages: python 3.11.7, ultralytics not installed",
        "- machine: CPU X, 2 CPUs, GPUs: NVIDIA H200; L",
        "- data: `ir`, sha256 `f00` (train 5 images)",
    ]
