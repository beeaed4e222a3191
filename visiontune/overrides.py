"""Command-line overrides of a spec: `--num-samples`, `--max-epochs` and the other flags, and
`--set KEY=VALUE` pins, applied to the raw YAML mapping before it is validated, so that they go
through exactly the same checks as the file (visiontune/spec.py)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from visiontune.errors import InputError
from visiontune.params import short_repr

OVERRIDE_PATHS = {  # command-line option -> where it lands in the spec
    "num_samples": ("num_samples",),
    "max_epochs": ("fixed", "epochs"),
    "data": ("data", "source"),
    "cpus_per_trial": ("resources", "cpu"),
    "gpus_per_trial": ("resources", "gpu"),
    "max_concurrent": ("max_concurrent",),
    "seed": ("searcher", "seed"),
    "max_failures": ("max_failures",),
}


def parse_assignment(text: str) -> tuple[str, Any]:
    """'KEY=VALUE' with VALUE parsed as YAML (true is a bool, [1, 2] a list; 1e-3, a string to
    YAML 1.1, is read as a number by the config it lands in)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set {short_repr(text)}: expected KEY=VALUE")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        raise InputError(f"--set {short_repr(text)}: value is not valid YAML") from None


def _section(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """raw[key] as a mapping to edit in place (created when absent or null)."""
    if raw.get(key) is None:
        raw[key] = {}
    if not isinstance(raw[key], dict):
        raise InputError(f"{where}: {key}: expected a mapping, got {short_repr(raw[key])}")
    return raw[key]


def apply_overrides(
    raw: dict[str, Any], overrides: Mapping[str, Any], assignments: Sequence[str], where: str = ""
) -> dict:
    """Return a copy of `raw` with CLI options and `--set KEY=VALUE` pins applied."""
    raw = copy.deepcopy(raw)
    if isinstance(raw.get("data"), str):
        raw["data"] = {"source": raw["data"]}
    for option, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = OVERRIDE_PATHS[option]
        target = raw
        for parent in parents:
            target = _section(target, parent, where)
        target[leaf] = value
    scheduler = raw.get("scheduler")
    if overrides.get("max_epochs") is not None and isinstance(scheduler, dict):
        # A shorter budget asked for on the command line shortens the grace period with it.
        grace = scheduler.get("grace_period")
        if isinstance(grace, int) and grace > overrides["max_epochs"]:
            scheduler["grace_period"] = overrides["max_epochs"]
    for text in assignments:
        key, value = parse_assignment(text)
        search = raw.get("search")
        if isinstance(search, dict) and key in search:
            del search[key]  # a pin replaces the distribution, in seed points too
            points = raw.get("points_to_evaluate")
            for point in points.values() if isinstance(points, dict) else ():
                if isinstance(point, dict):
                    point.pop(key, None)
        _section(raw, "fixed", where)[key] = value
    return raw
