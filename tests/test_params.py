"""Validated inputs: the type rules, the one-line messages, and values quoted short."""

from __future__ import annotations

import importlib
from typing import Literal

import pydantic
import pytest
from pydantic import Field

from visiontune.errors import InputError
from visiontune.params import (
    StrictModel,
    build_config,
    config_dict,
    known_parameters,
    short_repr,
)


class Tiny(StrictModel):
    flag: bool = True
    count: int = Field(2, ge=1)
    rate: float = Field(0.5, ge=0, lt=1)
    scale: float = Field(1.0, gt=0)
    label: str = "a"
    kind: Literal["a", "b"] = "a"
    layers: int | None = Field(None, ge=0)


def _error(values: dict) -> str:
    with pytest.raises(InputError) as info:
        build_config(Tiny, values, "space.yaml: fixed")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("value", [True, False])
def test_bool_takes_true_and_false(value):
    assert build_config(Tiny, {"flag": value}, "fixed").flag is value


@pytest.mark.parametrize("value", [1, 0, "yes", "true", 1.0, None])
def test_bool_refuses_numbers_and_words(value):
    assert f"space.yaml: fixed.flag: expected bool, got {value!r}" in _error({"flag": value})


@pytest.mark.parametrize(("value", "expected"), [(3, 3), (3.0, 3), ("3", 3), ("1e1", 10)])
def test_int_takes_integers_and_integral_numbers(value, expected):
    count = build_config(Tiny, {"count": value}, "fixed").count
    assert count == expected and type(count) is int


@pytest.mark.parametrize("value", [True, 2.5, "2.5", "two", [2], None])
def test_int_refuses_bools_fractions_and_words(value):
    assert "space.yaml: fixed.count: expected int, got" in _error({"count": value})


def test_optional_int_takes_none_and_integral_floats():
    assert build_config(Tiny, {"layers": None}, "fixed").layers is None
    assert build_config(Tiny, {"layers": 3.0}, "fixed").layers == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (0.25, 0.25), ("1e-3", 1e-3), ("1E-3", 1e-3), ("0.5", 0.5), (".5", 0.5),
     ("+2.5e-1", 0.25), (" 5e-1 ", 0.5)],
)  # fmt: skip
def test_float_takes_numbers_and_decimal_or_scientific_text(value, expected):
    rate = build_config(Tiny, {"rate": value}, "fixed").rate
    assert rate == expected and type(rate) is float


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "1e", "0x10", "1_000", "", True, [0.5]])
def test_float_refuses_other_text_and_bools(value):
    assert f"space.yaml: fixed.rate: expected float, got {value!r}" in _error({"rate": value})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "1e999"])
def test_float_refuses_nan_and_infinity(value):
    assert "space.yaml: fixed.scale: expected a finite number" in _error({"scale": value})


@pytest.mark.parametrize("value", [1, 1.5, True, None, ["a"]])
def test_str_takes_only_strings(value):
    assert f"space.yaml: fixed.label: expected str, got {value!r}" in _error({"label": value})


def test_unknown_parameter_names_every_known_one():
    message = _error({"rat": 0.1})
    assert message == (
        "space.yaml: fixed: unknown parameter 'rat' for Tiny "
        "(known: count, flag, kind, label, layers, rate, scale)"
    )


def test_an_unknown_parameter_is_reported_before_a_bad_value():
    assert "unknown parameter 'rat'" in _error({"count": "many", "rat": 0.1})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"rate": 1.0}, "space.yaml: fixed: rate must be in [0, 1), got 1.0"),
        ({"rate": -1}, "space.yaml: fixed: rate must be in [0, 1), got -1"),
        ({"scale": 0}, "space.yaml: fixed: scale must be > 0, got 0"),
        ({"count": 0}, "space.yaml: fixed: count must be >= 1, got 0"),
        ({"layers": -1}, "space.yaml: fixed: layers must be >= 0, got -1"),
        ({"kind": "c"}, "space.yaml: fixed: kind must be one of 'a', 'b', got 'c'"),
    ],
)
def test_a_value_out_of_bounds_names_the_field_its_bounds_and_the_value(values, expected):
    assert _error(values) == expected


def _nested_aliases(depth: int) -> list:
    """What `a1: &a1 [*a0, *a0]` ... builds: 2**depth leaves, `depth` distinct lists."""
    value: list = [0, 0]
    for _ in range(depth):
        value = [value, value]
    return value


def test_a_huge_nested_value_is_quoted_in_at_most_80_characters():
    huge = _nested_aliases(60)  # its full repr would have 2**60 zeros
    assert len(short_repr(huge)) <= 80
    message = _error({"rate": huge})
    assert message.startswith("space.yaml: fixed.rate: expected float, got [[")
    assert len(message) < 150


def test_a_long_string_is_cut_with_an_ellipsis():
    text = short_repr("x" * 10_000)
    assert len(text) <= 80 and "..." in text
    assert short_repr("short") == "'short'"


def test_a_config_is_frozen_and_hashable():
    config = build_config(Tiny, {"count": 3}, "fixed")
    with pytest.raises(pydantic.ValidationError):
        config.count = 4
    assert hash(config) == hash(build_config(Tiny, {"count": 3.0}, "fixed"))


def test_known_parameters_give_each_field_its_type():
    assert known_parameters(Tiny) == {
        "flag": bool, "count": int, "rate": float, "scale": float, "label": str,
        "kind": Literal["a", "b"], "layers": int | None,
    }  # fmt: skip


@pytest.mark.parametrize("task", ["classifier", "faster_rcnn", "yolo"])
def test_every_task_config_round_trips_through_its_dict(task):
    config_cls = importlib.import_module(f"visiontune.trainables.{task}").Config
    defaults = config_cls()
    assert hash(defaults) == hash(config_cls())
    assert build_config(config_cls, config_dict(defaults), "checkpoint") == defaults
    with pytest.raises(InputError, match="checkpoint: unknown parameter 'nope'"):
        build_config(config_cls, {"nope": 1}, "checkpoint")
