"""Typed parameter sets: merge user values over a trainable's dataclass of defaults.

Each trainable declares its hyperparameters once, as a frozen dataclass with defaults and a
`__post_init__` that rejects impossible values. Everything the user writes (YAML `fixed:`, seed
points, `--set`, `--config`) goes through `build_config`, so a typo or a wrong type fails the
same way wherever it was written.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from visiontune.errors import InputError


def known_parameters(config_cls: type) -> dict[str, Any]:
    """Parameter name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def coerce(annotation: Any, value: Any, where: str) -> Any:
    """Return `value` as the annotated scalar type, or raise InputError naming `where`."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise InputError(f"{where}: expected {annotation.__name__}, got {value!r}")


def build_config(config_cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Instantiate `config_cls` from defaults overridden by `values`.

    Unknown names, wrong types and values the dataclass rejects all raise InputError whose
    message starts with `where` (e.g. "search_spaces/classifier.yaml: fixed").
    """
    known = known_parameters(config_cls)
    for key in values:
        if key not in known:
            raise InputError(
                f"{where}: unknown parameter {key!r} for {config_cls.__name__} "
                f"(known: {', '.join(sorted(known))})"
            )
    kwargs = {key: coerce(known[key], value, f"{where}.{key}") for key, value in values.items()}
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{where}: {exc}") from None


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain dict (YAML/JSON friendly)."""
    return dataclasses.asdict(config)
