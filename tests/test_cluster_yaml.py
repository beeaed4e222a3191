"""cluster.yaml is valid for Ray's cluster launcher (its own schema) and keeps the cluster closed."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from support import REPO, uncommented_keys

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
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"


def test_dashboard_binds_to_loopback_on_the_head(config):
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head


def test_every_key_of_cluster_yaml_has_a_comment():
    assert uncommented_keys(CLUSTER) == []
