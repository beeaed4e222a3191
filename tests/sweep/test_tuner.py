"""The Tuner's parts chosen by the spec (visiontune/sweep/tuner.py), built without Ray running:
the Optuna sampler of each `searcher.type` and the limit on concurrent trials."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from support import CLASSIFIER_SPACE

from visiontune.spec import SweepSpec, load_spec
from visiontune.sweep.tuner import build_sampler, build_searcher, concurrent_trials

SAMPLERS = {
    "optuna_tpe": ({"n_startup_trials": 2}, optuna.samplers.TPESampler),
    "random": ({}, optuna.samplers.RandomSampler),
    "gp": ({"n_startup_trials": 2}, optuna.samplers.GPSampler),
    "qmc": ({}, optuna.samplers.QMCSampler),
}


def _spec(tmp_path: Path, **sections: dict) -> SweepSpec:
    """A copy of search_spaces/classifier.yaml with `sections` replaced."""
    raw = yaml.safe_load(CLASSIFIER_SPACE.read_text())
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**raw, **sections}))
    return load_spec(path)


def _proposals(tmp_path: Path, spec: SweepSpec, name: str, count: int) -> list[dict]:
    """What the sweep's searcher proposes for `count` trials, each told a value once asked
    (so a model-based sampler is past its startup trials within `count`)."""
    searcher = build_searcher(spec, tmp_path / f"{name}.db", name)
    configs = []
    for i in range(count):
        configs.append(searcher.suggest(f"t{i}"))
        result = {"epoch": spec.epochs, "val_acc": 0.1 + 0.05 * i}
        searcher.on_trial_complete(f"t{i}", result)
    return configs


@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_each_searcher_type_is_its_optuna_sampler_seeded_from_the_spec(tmp_path, kind):
    options, sampler_cls = SAMPLERS[kind]
    spec = _spec(tmp_path, searcher={"type": kind, "seed": 5, **options})
    sampler = build_sampler(spec)
    assert type(sampler) is sampler_cls
    if "n_startup_trials" in options:
        assert sampler._n_startup_trials == 2  # noqa: SLF001 (Optuna keeps no public copy)
    first = _proposals(tmp_path, spec, "a", 5)
    assert first[:2] == list(spec.seeds.values())  # the seed points, then sampled ones
    assert all(config not in first[:2] for config in first[2:])
    assert _proposals(tmp_path, spec, "b", 5) == first  # the same seed, the same proposals


def test_qmc_is_a_scrambled_sobol_sequence(tmp_path):
    sampler = build_sampler(_spec(tmp_path, searcher={"type": "qmc", "seed": 1}))
    assert (sampler._qmc_type, sampler._scramble, sampler._seed) == ("sobol", True, 1)  # noqa: SLF001


@pytest.mark.parametrize(
    ("scheduler", "max_concurrent", "expected"),
    [
        ({"type": "asha"}, None, 2),
        ({"type": "median"}, None, 2),
        ({"type": "fifo"}, 3, 3),
        ({"type": "hyperband"}, None, None),  # paused trials must not hold a slot of the limit
        ({"type": "hyperband"}, 4, 4),
    ],
)
def test_concurrent_trials_are_the_slots_except_under_hyperband(
    tmp_path, scheduler, max_concurrent, expected
):
    spec = _spec(tmp_path, scheduler=scheduler, max_concurrent=max_concurrent)
    assert concurrent_trials(spec, slots=2) == expected
