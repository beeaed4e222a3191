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
        (lambda r: r["scheduler"].update(type="pbt"), "unknown scheduler 'pbt'"),
        (lambda r: r["searcher"].update(type="smac"), "unknown searcher 'smac'"),
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
        (lambda r: r["resources"].update(gpu=2), "resources.gpu: every trainer trains on one GPU"),
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


def test_scientific_notation_is_a_number_in_the_yaml_and_in_set(tmp_path):
    # YAML 1.1 reads 1e-5 (no dot) as a string; the spec reads it as the number it spells.
    text = CLASSIFIER_SPACE.read_text().replace("1.0e-", "1e-").replace("cpu: 1 ", "cpu: 5e-1 ")
    assert "low: 1e-5, high: 1e-2" in text
    path = tmp_path / "space.yaml"
    path.write_text(text)
    assert yaml.safe_load(text)["search"]["lr"]["low"] == "1e-5"
    spec = load_spec(path, assignments=["l2=1e-3"])
    assert (spec.search["lr"].low, spec.search["lr"].high) == (1e-5, 1e-2)
    assert spec.seeds["seed custom"]["lr"] == 1e-4
    assert spec.fixed["l2"] == 1e-3 and spec.cpus_per_trial == 0.5


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r.update(num_samples=True), "num_samples: expected int, got True"),
        (lambda r: r.update(num_samples=2.5), "num_samples: expected int, got 2.5"),
        (lambda r: r["fixed"].update(horizontal_flip=1), "fixed.horizontal_flip: expected bool, got 1"),
        (lambda r: r["fixed"].update(width="wide"), "fixed.width: expected int, got 'wide'"),
        (lambda r: r["search"]["lr"].update(low="abc"), "search.lr.low: expected float, got 'abc'"),
        (lambda r: r["resources"].update(cpu=float("nan")), "resources.cpu: expected a finite number, got nan"),
    ],
)  # fmt: skip
def test_spec_numbers_refuse_bools_fractions_words_and_nan(tmp_path, edit, expected):
    path = _edited(tmp_path, edit)
    with pytest.raises(InputError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: {expected}"


def test_spec_integers_take_integral_numbers():
    spec = validate({**copy.deepcopy(RAW), "num_samples": 2.0, "max_failures": "1e0"}, "x.yaml")
    assert (spec.num_samples, spec.max_failures) == (2, 1)


def _nested_aliases(depth: int) -> str:
    """A YAML flow list whose last item stands for 2**depth zeros in a few hundred bytes (the
    kind of value that made a 39 MB "one-line" error, issue 11 finding 6)."""
    items = ["&a0 [0, 0]"] + [f"&a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, depth)]
    return f"[{', '.join(items)}]"


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("low: 1.0e-5, high: 1.0e-2", "low: {big}, high: 1.0e-2", "search.lr.low: expected float"),
        ("  batch_size: 32 ", "  batch_size: {big} ", "fixed.batch_size: expected int"),
        ("{arch: custom, lr: 1.0e-4,", "{{arch: custom, lr: {big},", "seed custom.lr: expected"),
        ("type: asha ", "type: {big} ", "scheduler.type: unknown scheduler [["),
        ("task: classifier ", "task: {big} ", "task: expected str, got [["),
        ("values: [baseline, custom]", "values: {big}", "search.arch.values: choices are"),
    ],
)
def test_a_huge_nested_value_is_quoted_in_at_most_80_characters(tmp_path, old, new, where):
    path = tmp_path / "space.yaml"
    text = CLASSIFIER_SPACE.read_text()
    assert old in text
    path.write_text(text.replace(old, new.format(big=_nested_aliases(40)), 1))
    with pytest.raises(InputError) as info:
        load_spec(path)
    message = str(info.value)
    assert where in message
    assert len(message) < len(str(path)) + 200


def test_an_empty_search_space_is_refused(tmp_path):
    path = _edited(tmp_path, lambda r: r.update(search={}, points_to_evaluate=None))
    with pytest.raises(InputError, match=r"space.yaml: search: nothing is searched"):
        load_spec(path)


def test_pinning_every_searched_parameter_leaves_nothing_to_search():
    pins = [f"{name}={RAW['points_to_evaluate']['seed custom'][name]}" for name in RAW["search"]]
    with pytest.raises(InputError, match="search: nothing is searched"):
        load_spec(CLASSIFIER_SPACE, assignments=pins)


@pytest.mark.parametrize("assignments", [(), ("lr=0.001",)])
def test_a_list_where_the_task_name_belongs_is_one_line(tmp_path, assignments):
    path = _edited(tmp_path, lambda r: r.update(task=["classifier"]))
    with pytest.raises(InputError, match=r"space.yaml: task: expected str, got \['classifier'\]"):
        load_spec(path, assignments=assignments)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r["data"].update(augment=True), "data: unknown key 'augment' (allowed: image_size, source, split_seed)"),
        (lambda r: r["resources"].update(tpu=1), "resources: unknown key 'tpu' (allowed: cpu, gpu)"),
        (lambda r: r["scheduler"].update(max_t=8), "scheduler: unknown key 'max_t' (allowed: grace_period, reduction_factor, type)"),
        (lambda r: r.update(scheduler={"type": "fifo", "grace_period": 2}), "scheduler: unknown key 'grace_period' (allowed: type)"),
        (lambda r: r["searcher"].update(sampler="tpe"), "searcher: unknown key 'sampler' (allowed: n_startup_trials, seed, type)"),
        (lambda r: r["searcher"].update(type="random"), "searcher: unknown key 'n_startup_trials' (allowed: seed, type)"),
        (lambda r: r["search"]["lr"].update(step=2), "search.lr: unknown key 'step' (allowed: distribution, high, low)"),
        (lambda r: r["search"]["arch"].update(low=0), "search.arch: unknown key 'low' (allowed: distribution, values)"),
        (lambda r: r["search"]["lr_decay_epoch"].update(q=2), "search.lr_decay_epoch: unknown key 'q' (allowed: distribution, high, log, low, step)"),
    ],
)  # fmt: skip
def test_an_unknown_key_in_any_section_names_the_allowed_ones(tmp_path, edit, expected):
    path = _edited(tmp_path, edit)
    with pytest.raises(InputError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r["search"]["lr"].update(distribution="normal"), "search.lr.distribution: unknown distribution 'normal' (known: uniform, loguniform, int, choice)"),
        (lambda r: r["search"]["lr"].pop("distribution"), "search.lr: missing key 'distribution' (one of: uniform, loguniform, int, choice)"),
        (lambda r: r["search"].update(lr=0.01), "search.lr: expected a mapping, got 0.01"),
        (lambda r: r["scheduler"].update(type="pbt"), "scheduler.type: unknown scheduler 'pbt' (known: asha, hyperband, median, fifo)"),
        (lambda r: r["scheduler"].pop("type"), "scheduler: missing key 'type' (one of: asha, hyperband, median, fifo)"),
        (lambda r: r["searcher"].update(type=["random"]), "searcher.type: unknown searcher ['random'] (known: optuna_tpe, random, gp, qmc, bohb)"),
    ],
)  # fmt: skip
def test_a_wrong_kind_of_section_names_the_allowed_kinds(tmp_path, edit, expected):
    path = _edited(tmp_path, edit)
    with pytest.raises(InputError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda r: r["search"].update(lr_decay_epoch={"distribution": "uniform", "low": 2, "high": 9}),
            "search.lr_decay_epoch: lr_decay_epoch takes integers; use distribution: int",
        ),
        (lambda r: r["fixed"].update(lr=0.01), "fixed.lr: also searched (search.lr); keep one"),
        (lambda r: r["search"]["arch"].update(values=[]), "search.arch.values: expected at least 1 item"),
        (lambda r: r["data"].update(image_size=[24]), "data.image_size: expected auto or [height, width], got [24]"),
        (lambda r: r["fixed"].update({1: 2}), "fixed: key 1 is not a string"),
    ],
)  # fmt: skip
def test_a_search_space_the_sweep_could_not_run_is_refused(tmp_path, edit, expected):
    path = _edited(tmp_path, edit)
    with pytest.raises(InputError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: {expected}")


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(CLASSIFIER_SPACE.read_text() + "metric: val_loss\n")
    with pytest.raises(
        InputError, match=r"space.yaml: line \d+: malformed YAML \(duplicate key 'metric'\)"
    ):
        load_spec(path)


def test_a_file_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(InputError, match="space.yaml: not a text file"):
        load_spec(path)


def test_the_objective_is_the_metric_and_its_direction():
    objective = load_spec(CLASSIFIER_SPACE).objective
    assert (objective.metric, objective.mode) == ("val_acc", "max")


CHOICES = [
    ("scheduler", {"type": "asha", "grace_period": 3, "reduction_factor": 2}),
    ("scheduler", {"type": "hyperband", "reduction_factor": 2}),
    ("scheduler", {"type": "median", "grace_period": 2, "min_samples_required": 4}),
    ("scheduler", {"type": "fifo"}),
    ("searcher", {"type": "optuna_tpe", "seed": 3, "n_startup_trials": 0}),
    ("searcher", {"type": "random", "seed": 3}),
    ("searcher", {"type": "gp", "seed": 3, "n_startup_trials": 5}),
    ("searcher", {"type": "qmc", "seed": 3}),
]


@pytest.mark.parametrize(("section", "choice"), CHOICES)
def test_each_scheduler_and_searcher_type_is_accepted_with_its_keys(tmp_path, section, choice):
    spec = load_spec(_edited(tmp_path, lambda r: r.update({section: choice})))
    assert getattr(spec, section) == choice


@pytest.mark.parametrize(
    ("section", "choice", "defaults"),
    [
        ("scheduler", {"type": "hyperband"}, {"reduction_factor": 3}),
        ("scheduler", {"type": "median"}, {"grace_period": 1, "min_samples_required": 3}),
        ("searcher", {"type": "gp"}, {"seed": 0, "n_startup_trials": 10}),
        ("searcher", {"type": "qmc"}, {"seed": 0}),
    ],
)
def test_a_type_alone_takes_its_defaults(tmp_path, section, choice, defaults):
    spec = load_spec(_edited(tmp_path, lambda r: r.update({section: choice})))
    assert getattr(spec, section) == {**choice, **defaults}


@pytest.mark.parametrize(
    ("section", "choice", "expected"),
    [
        ("scheduler", {"type": "hyperband", "grace_period": 2}, "scheduler: unknown key 'grace_period' (allowed: reduction_factor, type)"),
        ("scheduler", {"type": "hyperband", "max_t": 8}, "scheduler: unknown key 'max_t' (allowed: reduction_factor, type)"),
        ("scheduler", {"type": "median", "reduction_factor": 3}, "scheduler: unknown key 'reduction_factor' (allowed: grace_period, min_samples_required, type)"),
        ("searcher", {"type": "gp", "multivariate": True}, "searcher: unknown key 'multivariate' (allowed: n_startup_trials, seed, type)"),
        ("searcher", {"type": "qmc", "n_startup_trials": 4}, "searcher: unknown key 'n_startup_trials' (allowed: seed, type)"),
        ("scheduler", {"type": "hyperband", "reduction_factor": 1}, "scheduler.reduction_factor: must be >= 2, got 1"),
        ("scheduler", {"type": "hyperband", "reduction_factor": 2.5}, "scheduler.reduction_factor: expected int, got 2.5"),
        ("scheduler", {"type": "asha", "reduction_factor": 1.5}, "scheduler.reduction_factor: must be >= 2, got 1.5"),
        ("scheduler", {"type": "median", "min_samples_required": 0}, "scheduler.min_samples_required: must be >= 1, got 0"),
        ("scheduler", {"type": "median", "grace_period": 0}, "scheduler.grace_period: must be >= 1, got 0"),
        ("scheduler", {"type": "median", "grace_period": 9}, "scheduler.grace_period: 9 > fixed.epochs 8"),
        ("searcher", {"type": "gp", "n_startup_trials": 0}, "searcher.n_startup_trials: must be >= 1, got 0"),
        ("searcher", {"type": "qmc", "seed": -1}, "searcher.seed: must be >= 0, got -1"),
        ("searcher", {"type": "bohb", "n_startup_trials": 3}, "searcher: unknown key 'n_startup_trials' (allowed: seed, type)"),
        ("searcher", {"type": "hill_climbing"}, "searcher.type: unknown searcher 'hill_climbing' (known: optuna_tpe, random, gp, qmc, bohb)"),
    ],
)  # fmt: skip
def test_a_bad_scheduler_or_searcher_choice_is_one_line(tmp_path, section, choice, expected):
    path = _edited(tmp_path, lambda r: r.update({section: choice}))
    with pytest.raises(InputError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: {expected}"


def test_max_epochs_shortens_the_median_rules_grace_period_too(tmp_path):
    path = _edited(tmp_path, lambda r: r.update(scheduler={"type": "median", "grace_period": 4}))
    spec = load_spec(path, {"max_epochs": 3})
    assert spec.scheduler == {"type": "median", "grace_period": 3, "min_samples_required": 3}


def test_bohb_is_a_searcher_for_hyperband_only(tmp_path):
    path = _edited(tmp_path, lambda r: r.update(searcher={"type": "bohb", "seed": 1}))
    with pytest.raises(InputError) as info:
        load_spec(path)
    assert str(info.value) == (
        f"{path}: searcher.type: bohb needs scheduler.type hyperband (BOHB models HyperBand's "
        "budgets), got scheduler.type asha"
    )
    bohb = {"searcher": {"type": "bohb"}, "scheduler": {"type": "hyperband"}}
    spec = load_spec(_edited(tmp_path, lambda r: r.update(bohb)))
    assert (spec.searcher, spec.scheduler["type"]) == ({"type": "bohb", "seed": 0}, "hyperband")
