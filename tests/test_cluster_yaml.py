"""cluster.yaml is valid for Ray's cluster launcher (its own schema), keeps the cluster closed, and
boots GPU workers whose NVIDIA driver runs the CUDA build of the pinned torch
(trainables/cuda_versions.py holds the versions and their sources)."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import ray
import torch
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from support import REPO, uncommented_keys

from visiontune.trainables.cuda_versions import (
    AMI_DRIVERS,
    MIN_DRIVER,
    driver_runs,
    image_cuda,
    version_tuple,
)

CLUSTER = REPO / "cluster.yaml"


@pytest.fixture
def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_passes_rays_cluster_config_schema(config):
    validate_config(prepare_config(copy.deepcopy(config)))


def test_a_broken_copy_fails_the_same_schema(config):
    config["available_node_types"]["gpu_worker"]["max_workers"] = "four"
    with pytest.raises(jsonschema.ValidationError, match="'four' is not of type 'integer'"):
        validate_config(prepare_config(config))


def test_gpu_workers_autoscale_from_zero_on_g4dn(config):
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["node_config"]["InstanceType"] == "g4dn.xlarge"
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1
    assert config["head_node_type"] == "head"
    assert "GPU" not in config["available_node_types"]["head"]["resources"]


def test_image_runs_the_same_ray_as_this_checkout(config):
    image = config["docker"]["image"]
    assert image.startswith(f"rayproject/ray:{ray.__version__}-py311-cu"), image


def _node_amis(config: dict) -> dict[str, str]:
    return {
        name: node["node_config"].get("ImageId", "")
        for name, node in config["available_node_types"].items()
    }


def test_the_pinned_torch_is_the_one_whose_cuda_build_is_checked():
    pinned = next(
        line.strip().strip('",')
        for line in (REPO / "pyproject.toml").read_text().splitlines()
        if line.strip().startswith('"torch==')
    )
    assert torch.__version__.split("+")[0] == pinned.removeprefix("torch=="), pinned
    assert torch.version.cuda in MIN_DRIVER, f"add torch's CUDA {torch.version.cuda} to MIN_DRIVER"


def test_every_node_boots_an_ami_whose_driver_runs_torchs_cuda_build(config):
    cuda = torch.version.cuda  # 13.0 for torch 2.14.1 from PyPI
    for name, ami in _node_amis(config).items():
        assert ami in AMI_DRIVERS, f"{name}: ImageId {ami!r}: add its driver to AMI_DRIVERS"
        driver, source = AMI_DRIVERS[ami]
        assert driver_runs(driver, cuda), (
            f"{name}: {ami} has driver {driver} ({source}); torch's CUDA {cuda} needs "
            f">= {MIN_DRIVER[cuda]}"
        )


def test_the_image_cuda_runs_on_that_driver_too(config):
    cuda = image_cuda(config["docker"]["image"])
    assert cuda in MIN_DRIVER, f"{config['docker']['image']}: name its CUDA (-cuXYZ, not -gpu)"
    for name, ami in _node_amis(config).items():
        assert driver_runs(AMI_DRIVERS[ami][0], cuda), name


def test_rays_latest_dlami_would_fail_the_pairing():
    # the check above can fail: Ray 2.60's `latest_dlami` is a 2021 CUDA 11.2 AMI (driver 460)
    driver, _ = AMI_DRIVERS["latest_dlami"]
    assert not driver_runs(driver, "13.0") and not driver_runs(driver, "12.8")
    assert driver_runs(driver, "11.2")


def test_the_table_reads_versions_and_image_tags():
    assert version_tuple("580.65.06") > version_tuple("580.9.99") > version_tuple("575.57")
    assert image_cuda("rayproject/ray:2.60.0-py311-cu128") == "12.8"
    assert image_cuda("rayproject/ray:2.60.0-py311-cu130") == "13.0"
    assert image_cuda("rayproject/ray:2.60.0-py311-gpu") is None


def test_dashboard_binds_to_loopback_on_the_head(config):
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head


def test_every_key_of_cluster_yaml_has_a_comment():
    assert uncommented_keys(CLUSTER) == []
