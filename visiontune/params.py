"""Validated inputs: the pydantic base of every task's `Config` and of the spec's sections, and
the translation of pydantic's errors into the one-line messages the command line prints.

Each trainable declares its hyperparameters once, as a frozen `StrictModel` with defaults and
bounds (`Field(ge=..., lt=...)`, `Literal[...]`). Everything the user writes (YAML `fixed:`, seed
points, `--set`, `--config`) goes through `build_config`, so a typo or a wrong type fails the
same way wherever it was written:

    <where>: unknown parameter 'x' for Config (known: ...)
    <where>.<key>: expected float, got 'abc'
    <where>: lr must be > 0, got -1

Type rules (pydantic's strict mode plus one reading of numbers): a bool is only true/false (not
1/0, not "yes"); an int is an integer or an integral float (2.0 -> 2), never a bool; a float is
an int or a float, never a bool, never NaN/inf; a str is only a string. A number written as text
in decimal or scientific notation ("0.5", "1e-3") is read as that number wherever an int or a
float is expected, because YAML 1.1 (PyYAML) reads `1e-3` as a string and users write it so.
"""

from __future__ import annotations

import re
import reprlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Tag, ValidationError, model_validator
from pydantic_core import ErrorDetails

from visiontune.errors import InputError

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # no nan, inf, hex or 1_000
TYPE_NAMES = {  # pydantic error type -> what the value should have been
    "int_type": "int",
    "int_parsing": "int",
    "int_from_float": "int",
    "float_type": "float",
    "float_parsing": "float",
    "finite_number": "a finite number",
    "bool_type": "bool",
    "bool_parsing": "bool",
    "string_type": "str",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}
UNKNOWN_TAG = "unknown_tag"  # the error type of spec_file.tagged_union's discriminator


class StrictModel(BaseModel):
    """Base of every validated input: unknown keys are errors, instances are immutable (and
    hashable when their fields are), and types follow the rules in this module's docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _read_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            key: read_number(fields[key].annotation, value) if key in fields else value
            for key, value in data.items()
        }


def number_types(annotation: Any) -> set[type]:
    """Which of int and float an annotation (int, float | None, Literal[4, 8], ...) accepts."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {type(arg) for arg in typing.get_args(annotation)} & {int, float}
    if origin in (Union, types.UnionType):
        return set().union(*(number_types(arg) for arg in typing.get_args(annotation)))
    return {annotation} if annotation is int or annotation is float else set()


def read_number(annotation: Any, value: Any) -> Any:
    """`value` as the number it spells where `annotation` expects one: "1e-3" -> 0.001, and an
    integral float where only an int fits -> int (2.0 -> 2). Anything else comes back unchanged
    for pydantic to accept or reject."""
    accepted = number_types(annotation)
    if not accepted:
        return value
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        value = float(value)
    if accepted == {int} and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 4
_REPR.maxstring = _REPR.maxother = 80


def short_repr(value: Any, limit: int = 80) -> str:
    """repr(value) cut to about `limit` characters, in time and memory bounded by `limit` (a
    YAML of nested aliases can stand for a value whose full repr would not fit in memory)."""
    return clip(_REPR.repr(value), limit)


def clip(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, "..." marking a cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- pydantic errors -> one line ----------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with an input, in the user's words.

    `path` is the key path to the bad value as the user wrote it (pydantic's union tags
    removed); for an unknown or missing key it is the path of the mapping that holds `key`.
    `kind` is "unknown", "missing", "type" (the value has the wrong type) or "rule" (the value
    breaks a bound or a check); `what` says what is wrong and quotes the value."""

    path: tuple[str, ...]
    what: str
    kind: str
    key: str | None = None


def first_problem(exc: ValidationError, model: type[BaseModel]) -> Problem:
    """The problem to report of a ValidationError raised by `model`: an unknown key first (the
    likeliest cause of everything else), then a missing one, then the first in key order."""
    errors = exc.errors(include_url=False)
    order = {"extra_forbidden": 0, "invalid_key": 0, "missing": 1}
    error = min(errors, key=lambda e: order.get(e["type"], 2))
    path, owner, field = _locate(model, error["loc"])
    kind, value = error["type"], error.get("input")
    if kind in ("extra_forbidden", "invalid_key"):
        allowed = ", ".join(sorted(owner.model_fields)) if owner else ""
        what = f"unknown key {short_repr(error['loc'][-1])} (allowed: {allowed})"
        return Problem(path[:-1], what, "unknown", str(error["loc"][-1]))
    if kind == "missing":
        return Problem(path[:-1], f"missing key {path[-1]!r}", "missing", path[-1])
    if error["loc"][-1:] == ("[key]",):  # a mapping's key, not its value, has the wrong type
        return Problem(path[:-1], f"key {short_repr(value)} is not a string", "type")
    if kind == UNKNOWN_TAG:
        return _tag_problem(path, value, error.get("ctx") or {})
    if kind in TYPE_NAMES:
        return Problem(path, f"expected {TYPE_NAMES[kind]}, got {short_repr(value)}", "type")
    return Problem(path, _rule(error, field), "rule")


def _tag_problem(path: tuple[str, ...], value: Any, ctx: Mapping[str, Any]) -> Problem:
    key, noun, known = ctx.get("key"), ctx.get("noun"), ctx.get("known")
    if not isinstance(value, dict):
        return Problem(path, f"expected a mapping, got {short_repr(value)}", "type")
    if key not in value:
        return Problem(path, f"missing key {key!r} (one of: {known})", "missing", key)
    return Problem(
        (*path, key), f"unknown {noun} {short_repr(value[key])} (known: {known})", "rule"
    )


def _rule(error: ErrorDetails, field: Any) -> str:
    kind, ctx, got = error["type"], error.get("ctx") or {}, f"got {short_repr(error.get('input'))}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"must be {_bounds(field) or _bound(ctx)}, {got}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected'].replace(' or ', ', ')}, {got}"
    if kind == "multiple_of":
        return f"must be a multiple of {ctx['multiple_of']}, {got}"
    if kind == "too_short":
        return f"expected at least {ctx['min_length']} item(s), {got}"
    if kind == "too_long":
        return f"expected at most {ctx['max_length']} item(s), {got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return f"{error['msg'][:1].lower()}{error['msg'][1:]}, {got}"


def _bound(ctx: Mapping[str, Any]) -> str:
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return " and ".join(f"{signs[name]} {ctx[name]}" for name in signs if name in ctx)


def _bounds(field: Any) -> str | None:
    """A field's bounds as one phrase: '> 0', '>= 1', 'in [0, 1)'."""
    low = high = None
    for rule in getattr(field, "metadata", ()):
        if isinstance(rule, Ge):
            low = f"[{rule.ge}", f">= {rule.ge}"
        elif isinstance(rule, Gt):
            low = f"({rule.gt}", f"> {rule.gt}"
        elif isinstance(rule, Le):
            high = f"{rule.le}]", f"<= {rule.le}"
        elif isinstance(rule, Lt):
            high = f"{rule.lt})", f"< {rule.lt}"
    if low and high:
        return f"in {low[0]}, {high[0]}"
    return (low or high or (None, None))[1]


def _unwrap(annotation: Any) -> Any:
    """Annotated[X, ...] -> X and X | None -> X."""
    if typing.get_origin(annotation) is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _tagged_member(annotation: Any, tag: Any) -> Any:
    """The member of a discriminated union that pydantic names `tag` in an error location."""
    for member in typing.get_args(annotation):
        if any(isinstance(m, Tag) and m.tag == tag for m in getattr(member, "__metadata__", ())):
            return _unwrap(member)
    return None


def _locate(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[str, ...], Any, Any]:
    """Follow an error location through `model`'s fields: the key path the user wrote (without
    the member tags pydantic inserts after a discriminated union), the model that holds the
    last key, and that key's FieldInfo (None where the location leaves the models)."""
    path: list[str] = []
    node: Any = model
    owner = field = None
    for part in loc:
        if part == "[key]":  # pydantic's mark for an error in a mapping's key
            continue
        node = _unwrap(node)
        if typing.get_origin(node) in (Union, types.UnionType):
            node = _tagged_member(node, part)
            continue
        owner = field = None
        if isinstance(node, type) and issubclass(node, BaseModel):
            owner, field = node, node.model_fields.get(str(part))
            node = field.annotation if field else None
        elif typing.get_origin(node) in (dict, list):
            node = typing.get_args(node)[-1]
        else:
            node = None
        path.append(str(part))
    return tuple(path), owner, field


# --- task configs --------------------------------------------------------------------------


def build_config(config_cls: type[BaseModel], values: Mapping[str, Any], where: str) -> Any:
    """Instantiate `config_cls` from its defaults overridden by `values`.

    Unknown names, wrong types and values the model rejects all raise InputError whose
    message starts with `where` (e.g. "search_spaces/classifier.yaml: fixed").
    """
    try:
        return config_cls.model_validate(dict(values))
    except ValidationError as exc:
        problem = first_problem(exc, config_cls)
    key = ".".join(problem.path)
    if problem.kind == "unknown":
        raise InputError(
            f"{where}: unknown parameter {short_repr(problem.key)} for {config_cls.__name__} "
            f"(known: {', '.join(sorted(config_cls.model_fields))})"
        )
    if problem.kind == "type":
        raise InputError(f"{where}.{key}: {problem.what}")
    raise InputError(f"{where}: {key} {problem.what}" if key else f"{where}: {problem.what}")


def known_parameters(config_cls: type[BaseModel]) -> dict[str, Any]:
    """Parameter name -> type annotation of a task's config."""
    return {name: field.annotation for name, field in config_cls.model_fields.items()}


def config_dict(config: BaseModel) -> dict[str, Any]:
    """A config as a plain dict (YAML/JSON friendly)."""
    return config.model_dump()
