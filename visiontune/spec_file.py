"""A spec file (search_spaces/*.yaml): how it is read, and what each of its sections may hold.

Each section is a pydantic model (`StrictModel`: unknown keys are errors, numbers as in
visiontune.params). The scheduler, the searcher and each searched parameter are unions told
apart by their `type`/`distribution`, so a wrong one is a single error naming the allowed values.
What needs the task (parameter names and bounds, the metric, the data format, the seed points)
is checked in visiontune.spec, against the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

import yaml
from pydantic import Discriminator, Field, PositiveInt, Tag, field_validator, model_validator

from visiontune.errors import InputError
from visiontune.params import UNKNOWN_TAG, StrictModel, short_repr


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges; keys written next to it override on purpose
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                continue  # unhashable: the safe loader's own construct_mapping reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {short_repr(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        loaded = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a safe loader
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except RecursionError:
        raise InputError(f"{path}: malformed YAML (nested too deeply)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise InputError(f"{path}:{where}: malformed YAML ({problem})") from None
    if not isinstance(loaded, dict):
        raise InputError(
            f"{path}: expected a mapping at the top level, got {type(loaded).__name__}"
        )
    return loaded


def tagged_union(key: str, noun: str, *members: type[StrictModel]) -> Any:
    """The union of `members` told apart by their `key` field (a pydantic discriminated union);
    an unknown or missing `key` is one error naming the allowed values."""
    tags = [get_args(member.model_fields[key].annotation)[0] for member in members]

    def tag_of(value: Any) -> str | None:
        tag = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        return tag if isinstance(tag, str) else None  # pydantic would str() any other value whole

    return Annotated[
        Union[tuple(Annotated[m, Tag(t)] for m, t in zip(members, tags, strict=True))],  # noqa: UP007
        Discriminator(
            tag_of,
            custom_error_type=UNKNOWN_TAG,
            custom_error_message=f"unknown {noun}",
            custom_error_context={"key": key, "noun": noun, "known": ", ".join(tags)},
        ),
    ]


# --- distributions -------------------------------------------------------------------------


class Range(StrictModel):
    """A numeric range [low, high] a parameter is sampled from."""

    low: float
    high: float

    @property
    def kind(self) -> str:
        return self.distribution

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low!r} > high {self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled distribution needs low > 0, got {self.low!r}")
        return self

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high

    def to_optuna(self) -> Any:
        import optuna.distributions as od

        return od.FloatDistribution(self.low, self.high, log=self.log)

    def describe(self) -> str:
        return f"{self.kind}[{self.low}, {self.high}]"


class Uniform(Range):
    distribution: Literal["uniform"]
    log: ClassVar[bool] = False


class LogUniform(Range):
    distribution: Literal["loguniform"]
    log: ClassVar[bool] = True


class IntRange(Range):
    distribution: Literal["int"]
    low: int
    high: int
    step: int | None = Field(None, ge=1)  # sample low, low + step, ...; None = 1
    log: bool = False  # sample uniformly in log space

    @model_validator(mode="after")
    def _step_without_log(self) -> IntRange:
        if self.log and (self.step or 1) != 1:
            raise ValueError(f"a log-scaled int distribution takes no step, got step {self.step}")
        return self

    def contains(self, value: Any) -> bool:
        return super().contains(value) and float(value).is_integer()

    def to_optuna(self) -> Any:
        import optuna.distributions as od

        return od.IntDistribution(self.low, self.high, step=self.step or 1, log=self.log)


class Choice(StrictModel):
    distribution: Literal["choice"]
    values: list[Any] = Field(min_length=1)  # what Optuna's CategoricalDistribution stores

    @property
    def kind(self) -> str:
        return self.distribution

    @field_validator("values")
    @classmethod
    def _scalars(cls, values: list[Any]) -> list[Any]:
        for value in values:
            if value is not None and not isinstance(value, bool | int | float | str):
                raise ValueError(
                    f"choices are numbers, strings, booleans or null, got {short_repr(value)}"
                )
        return values

    def contains(self, value: Any) -> bool:
        return value in self.values

    def to_optuna(self) -> Any:
        import optuna.distributions as od

        return od.CategoricalDistribution(list(self.values))

    def describe(self) -> str:
        return f"choice{list(self.values)}"


Distribution = tagged_union("distribution", "distribution", Uniform, LogUniform, IntRange, Choice)


# --- the other sections --------------------------------------------------------------------


class Asha(StrictModel):
    type: Literal["asha"]
    grace_period: int = Field(1, ge=1)  # epochs every trial gets before it can be stopped
    reduction_factor: float = Field(3.0, ge=2)  # keep 1/reduction_factor of the trials per rung


class HyperBand(StrictModel):
    """Ray's synchronous HyperBand; max_t is fixed.epochs. An integer factor keeps every
    bracket's last rung at max_t (visiontune.sweep.schedulers.SeedProtectingHyperBand)."""

    type: Literal["hyperband"]
    reduction_factor: int = Field(3, ge=2)  # keep 1/reduction_factor of a bracket per halving


class Median(StrictModel):
    type: Literal["median"]
    grace_period: int = Field(1, ge=1)  # epochs every trial gets before it can be stopped
    min_samples_required: int = Field(3, ge=1)  # other trials' running means the median needs


class Fifo(StrictModel):
    type: Literal["fifo"]


class OptunaTPE(StrictModel):
    type: Literal["optuna_tpe"]
    seed: int = Field(0, ge=0)
    n_startup_trials: int = Field(10, ge=0)  # random trials before TPE starts modelling


class GaussianProcess(StrictModel):
    type: Literal["gp"]
    seed: int = Field(0, ge=0)
    n_startup_trials: int = Field(10, ge=1)  # random trials first; the GP models finished ones


class RandomSearch(StrictModel):
    type: Literal["random"]
    seed: int = Field(0, ge=0)


class QuasiMonteCarlo(StrictModel):
    type: Literal["qmc"]  # scrambled Sobol sequence
    seed: int = Field(0, ge=0)


class Bohb(StrictModel):
    """Ray's TuneBOHB; only with `scheduler.type: hyperband` (BOHB models HyperBand's budgets)."""

    type: Literal["bohb"]
    seed: int = Field(0, ge=0)


class Resources(StrictModel):
    cpu: float = Field(1.0, gt=0)  # CPU cores per trial
    gpu: float = Field(0.0, ge=0)  # GPUs per trial; a fraction packs trials on one GPU

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, gpu: float) -> float:
        if gpu > 1 and not gpu.is_integer():
            raise ValueError(f"fractions must be <= 1, got {gpu!r}")
        return gpu


class YoloData(StrictModel):
    source: str = Field(min_length=1)  # an embedded dataset's name or a path


class ImageFolderData(YoloData):
    image_size: tuple[PositiveInt, PositiveInt] | None = None  # (height, width) px; None = auto
    split_seed: int = Field(0, ge=0)

    @field_validator("image_size", mode="before")
    @classmethod
    def _auto_or_pair(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value == "auto"):
            return None
        if isinstance(value, list | tuple) and len(value) == 2:
            return tuple(value)
        raise ValueError(f"expected auto or [height, width], got {short_repr(value)}")


Scheduler = tagged_union("type", "scheduler", Asha, HyperBand, Median, Fifo)
Searcher = tagged_union(
    "type", "searcher", OptunaTPE, RandomSearch, GaussianProcess, QuasiMonteCarlo, Bohb
)
DATA_MODELS: dict[str, type[YoloData]] = {"imagefolder": ImageFolderData, "yolo": YoloData}


class SpecFile(StrictModel):
    """The top level of a spec file, before it is checked against its task."""

    task: str
    name: str | None = None
    data: dict[str, Any]  # checked against the task's data format (DATA_MODELS)
    metric: str
    mode: Literal["max", "min"]
    num_samples: int = Field(ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(0, ge=0)
    resources: Resources | None = None
    scheduler: Scheduler
    searcher: Searcher
    fixed: dict[str, Any] | None = None  # checked by the task's Config
    search: dict[str, Distribution]
    points_to_evaluate: dict[str, dict[str, Any]] | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _source_alone(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @field_validator("search")
    @classmethod
    def _not_empty(cls, search: dict[str, Any]) -> dict[str, Any]:
        if not search:
            raise ValueError(
                "nothing is searched; give at least one parameter a distribution "
                "(`visiontune train` runs a single configuration)"
            )
        return search
