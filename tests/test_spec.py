"""Spec loading: the real search space validates; every kind of bad value is named in one line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from support import CLASSIFIER_SPACE, uncommented_keys

from visiontune.errors import InputError
from visiontune.spec import load_spec, validate

RAW = yaml.safe_load(CLASSIFIER_SPACE.read_text())


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _edited(tmp_path: Path, edit) -> Path:
    raw = copy.deepcopy(RAW)
    edit(raw)
    return _write(tmp_path, raw)


def test_classifier_space_loads_with_both_seed_points_inside_their_ranges():
    spec = load_spec(CLASSIFIER_SPACE)
    assert list(spec.seeds) == ["seed baseline", "seed custom"]
    assert spec.seeds["seed baseline"]["l2"] == 1e-5 and spec.seeds["seed custom"]["l2"] == 1e-4
    for point in spec.seeds.values():
        assert set(point) == set(spec.search)
        assert all(spec.search[k].contains(v) for k, v in point.items())
    assert spec.metric == "val_acc" and spec.mode == "max"
    assert "epochs" in spec.fixed and "lr" not in spec.fixed


@pytest.mark.parametrize("space", ["classifier.yaml", "faster_rcnn.yaml", "yolo.yaml"])
def test_every_key_of_every_search_space_has_a_comment(space):
    assert uncommented_keys(CLASSIFIER_SPACE.with_name(space)) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r.update(learning_rate=1), "unknown key 'learning_rate'"),
        (lambda r: r["fixed"].update(lrr=0.1), "unknown parameter 'lrr'"),
        (
            lambda r: r["search"].update(momentum={"distribution": "uniform", "low": 0, "high": 1}),
            "search.momentum",
        ),
        (lambda r: r["search"]["lr"].update(low=0.1, high=0.01), "low 0.1 > high 0.01"),
        (lambda r: r["search"]["l2"].update(low=0.0), "needs low > 0, got 0.0"),
        (
            lambda r: r["search"]["lr"].update(distribution="gaussian"),
            "unknown distribution 'gaussian'",
        ),
        (lambda r: r["scheduler"].update(type="hyperband"), "unknown scheduler 'hyperband'"),
        (lambda r: r["searcher"].update(type="bohb"), "unknown searcher 'bohb'"),
        (
            lambda r: r["search"]["block_dropout"].update(high=1.5),
            "block_dropout must be in [0, 1), got 1.5",
        ),
        (lambda r: r["search"]["arch"].update(values=["baseline", "vit"]), "arch must be one of"),
        (
            lambda r: r["points_to_evaluate"]["seed custom"].update(lr=0.5),
            "seed custom.lr: 0.5 outside",
        ),
        (
            lambda r: r["points_to_evaluate"]["seed custom"].pop("zoom"),
            "missing searched parameter 'zoom'",
        ),
        (
            lambda r: r["fixed"].update(batch_size="big"),
            "fixed.batch_size: expected int, got 'big'",
        ),
        (lambda r: r.update(metric="val_f1"), "metric: 'val_f1' is not reported"),
        (lambda r: r["scheduler"].update(grace_period=99), "grace_period: 99 > fixed.epochs"),
        (lambda r: r["resources"].update(gpu=1.5), "fractions must be <= 1"),
        (lambda r: r.pop("search"), "missing key 'search'"),
    ],
)
def test_bad_value_is_one_line_naming_file_and_key(tmp_path, edit, expected):
    path = _edited(tmp_path, edit)
    with pytest.raises(InputError) as info:
        load_spec(path)
    message = str(info.value)
    assert expected in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("task: classifier\nsearch:\n  lr: {distribution: uniform, low: 1\n")
    with pytest.raises(InputError, match=r"broken.yaml: line \d+: malformed YAML"):
        load_spec(path)


def test_set_pins_a_searched_parameter_everywhere_including_seed_points():
    spec = load_spec(CLASSIFIER_SPACE, assignments=["lr=0.003"])
    assert "lr" not in spec.search
    assert spec.fixed["lr"] == 0.003
    assert all("lr" not in point for point in spec.seeds.values())
    assert spec.seed_config("seed baseline")["lr"] == 0.003


def test_set_overrides_a_fixed_setting_and_is_validated_like_the_yaml():
    assert load_spec(CLASSIFIER_SPACE, assignments=["batch_size=8"]).fixed["batch_size"] == 8
    with pytest.raises(InputError, match="unknown parameter 'bacth_size'"):
        load_spec(CLASSIFIER_SPACE, assignments=["bacth_size=8"])
    with pytest.raises(InputError, match="--set"):
        load_spec(CLASSIFIER_SPACE, assignments=["batch_size"])


def test_command_line_options_override_the_yaml():
    overrides = {"num_samples": 3, "max_epochs": 2, "cpus_per_trial": 0.5, "seed": 7}
    spec = load_spec(CLASSIFIER_SPACE, overrides)
    assert (spec.num_samples, spec.epochs, spec.cpus_per_trial) == (3, 2, 0.5)
    assert spec.searcher["seed"] == 7


def test_max_epochs_below_the_grace_period_shortens_the_grace_period():
    spec = load_spec(CLASSIFIER_SPACE, {"max_epochs": 1})
    assert spec.epochs == 1 and spec.scheduler["grace_period"] == 1


def test_seed_name_recognises_seed_configs_only():
    spec = validate(copy.deepcopy(RAW), str(CLASSIFIER_SPACE))
    assert spec.seed_name(spec.seed_config("seed custom")) == "seed custom"
    assert spec.seed_name({**spec.seed_config("seed custom"), "lr": 0.002}) is None


def test_optuna_distributions_match_the_yaml():
    import optuna

    spec = load_spec(CLASSIFIER_SPACE)
    lr = spec.search["lr"].to_optuna()
    assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log
    assert (lr.low, lr.high) == (1e-5, 1e-2)
    decay = spec.search["lr_decay_epoch"].to_optuna()
    assert isinstance(decay, optuna.distributions.IntDistribution) and decay.high == 50
    assert spec.search["arch"].to_optuna().choices == ("baseline", "custom")
