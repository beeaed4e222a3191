"""Load and validate a sweep spec (search_spaces/*.yaml) completely, before anything starts.

A spec names the task (trainable), the data, the fixed settings, the searched parameters with
their distributions, the seed configurations evaluated first, the metric, the scheduler (asha,
hyperband, median, fifo), the searcher (Optuna's optuna_tpe, random, gp, qmc, or Ray's bohb) and
the resources per trial. Command-line overrides are applied to the raw YAML first, so `--set`,
`--max-epochs` and friends are validated by exactly the same code as the file.
The file's sections are checked by the models in visiontune.spec_file, then everything that
depends on the task is checked against it here. Every problem raises InputError with one line:
"<file>: <key path>: <what is wrong>, got <value, at most ~80 characters>".
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from visiontune.best import Objective
from visiontune.errors import InputError
from visiontune.overrides import apply_overrides, parse_assignment
from visiontune.params import (
    build_config,
    clip,
    config_dict,
    first_problem,
    number_types,
    short_repr,
)
from visiontune.spec_file import (
    DATA_MODELS,
    Choice,
    Distribution,
    LogUniform,
    Range,
    Resources,
    SpecFile,
    Uniform,
    read_yaml,
)

__all__ = ["Distribution", "SweepSpec", "apply_overrides", "load_spec", "read_yaml", "validate"]


# --- the validated spec --------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    task: str
    name: str
    data_source: str
    data_options: dict[str, Any]
    metric: str
    mode: str
    num_samples: int
    max_concurrent: int | None
    cpus_per_trial: float
    gpus_per_trial: float
    max_failures: int
    scheduler: dict[str, Any]  # type and its keys (visiontune.spec_file.Scheduler)
    searcher: dict[str, Any]  # type, seed, and n_startup_trials for optuna_tpe and gp
    fixed: dict[str, Any]
    search: dict[str, Range | Choice]
    seeds: dict[str, dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)

    @property
    def epochs(self) -> int:
        return int(self.fixed["epochs"])

    @property
    def objective(self) -> Objective:
        return Objective(self.metric, self.mode)

    def seed_config(self, name: str) -> dict[str, Any]:
        """Complete trial config (fixed settings + one seed point's searched values)."""
        return {**self.fixed, **self.seeds[name]}

    def seed_name(self, config: Mapping[str, Any]) -> str | None:
        """The seed point whose searched values a trial config carries, if any."""
        for name, point in self.seeds.items():
            if all(config.get(key) == value for key, value in point.items()):
                return name
        return None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


# --- validation ----------------------------------------------------------------------------


def _validated(model: type[BaseModel], value: Any, where: str, prefix: tuple[str, ...] = ()) -> Any:
    """`model` validated from `value`, or InputError naming the first problem's key path."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problem = first_problem(exc, model)
    path = ".".join((*prefix, *problem.path))
    raise InputError(f"{where}: {path}: {problem.what}" if path else f"{where}: {problem.what}")


def _check_search(
    search: Mapping[str, Range | Choice], config_cls: type[BaseModel], where: str
) -> dict[str, Range | Choice]:
    """Every searched name is a parameter of the task, of a type the distribution samples, and
    each end of a range (each choice) is a value the task accepts. Choices come back as the
    config reads them ("1e-3" -> 0.001)."""
    known = config_cls.model_fields
    checked: dict[str, Range | Choice] = {}
    for key, dist in search.items():
        at = f"{where}: search.{key}"
        if key not in known:
            raise InputError(
                f"{at}: unknown parameter {short_repr(key)} (known: {', '.join(sorted(known))})"
            )
        if key == "epochs":
            raise InputError(f"{at}: the epoch budget is fixed (fixed.epochs)")
        if isinstance(dist, Uniform | LogUniform) and number_types(known[key].annotation) == {int}:
            raise InputError(f"{at}: {key} takes integers; use distribution: int")
        probes = dist.values if isinstance(dist, Choice) else (dist.low, dist.high)
        values = [
            getattr(build_config(config_cls, {key: p}, f"{where}: search"), key) for p in probes
        ]
        checked[key] = (
            dist.model_copy(update={"values": values}) if isinstance(dist, Choice) else dist
        )
    return checked


def _check_seeds(
    points: Mapping[str, Mapping[str, Any]],
    search: Mapping[str, Range | Choice],
    fixed: Mapping[str, Any],
    config_cls: type[BaseModel],
    where: str,
) -> dict[str, dict[str, Any]]:
    """Each seed point gives every searched parameter (and nothing else) a value inside its
    range and forms a valid config with the fixed settings; values come back as the config
    reads them."""
    seeds = {}
    for name, point in points.items():
        at = f"{where}: points_to_evaluate.{name}"
        for key in point:
            if key not in search:
                role = "a fixed setting" if key in fixed else "not a searched parameter"
                raise InputError(f"{at}.{key}: {role}; seed points give searched parameters only")
        missing = [key for key in search if key not in point]
        if missing:
            raise InputError(f"{at}: missing searched parameter {missing[0]!r}")
        config = build_config(config_cls, {**fixed, **point}, at)
        values = {key: getattr(config, key) for key in point}
        for key, value in values.items():
            if not search[key].contains(value):
                raise InputError(
                    f"{at}.{key}: {short_repr(value)} outside {search[key].describe()}"
                )
        seeds[name] = values
    return seeds


def _data_source(source: str, data_format: str, task: str, where: str) -> str:
    """An embedded dataset's name, or the absolute path of a dataset on disk."""
    from visiontune.data import EMBEDDED

    if source in EMBEDDED and EMBEDDED[source] != data_format:
        raise InputError(
            f"{where}: data.source: {source!r} is a {EMBEDDED[source]} dataset; "
            f"task {task!r} reads {data_format} data"
        )
    if source in EMBEDDED:
        return source
    return str(Path(source).expanduser().resolve())  # the same data from any directory


def validate(raw: dict[str, Any], where: str) -> SweepSpec:
    """Turn a raw spec mapping into a SweepSpec, or raise InputError on the first problem."""
    from visiontune.trainables import load_task

    raw = copy.deepcopy(raw)  # normalised below (data paths); the caller's mapping stays as given
    top: SpecFile = _validated(SpecFile, raw, where)
    task = load_task(top.task, f"{where}: task")
    data = _validated(DATA_MODELS[task.DATA_FORMAT], top.data, where, ("data",))
    search = _check_search(top.search, task.Config, where)
    user_fixed = top.fixed or {}
    for key in user_fixed:
        if key in search:
            raise InputError(f"{where}: fixed.{key}: also searched (search.{key}); keep one")
    fixed = config_dict(build_config(task.Config, user_fixed, f"{where}: fixed"))
    for key in search:
        del fixed[key]
    if top.metric not in task.METRICS:
        raise InputError(
            f"{where}: metric: {short_repr(top.metric)} is not reported by {top.task} "
            f"({', '.join(task.METRICS)})"
        )
    seeds = _check_seeds(top.points_to_evaluate or {}, search, fixed, task.Config, where)
    scheduler = top.scheduler.model_dump()
    if scheduler.get("grace_period", 0) > fixed["epochs"]:
        raise InputError(
            f"{where}: scheduler.grace_period: {scheduler['grace_period']} > "
            f"fixed.epochs {fixed['epochs']}"
        )
    searcher = top.searcher.model_dump()
    if searcher["type"] == "bohb" and scheduler["type"] != "hyperband":
        raise InputError(
            f"{where}: searcher.type: bohb needs scheduler.type hyperband (BOHB models "
            f"HyperBand's budgets), got scheduler.type {scheduler['type']}"
        )
    source = _data_source(data.source, task.DATA_FORMAT, top.task, where)
    raw["data"] = {**top.data, "source": source}  # the saved spec names the same data anywhere
    resources = top.resources or Resources()
    if resources.gpu > 1:  # named by --gpus-per-trial when the flag set it (cli.load_tune_spec)
        raise InputError(
            f"{where}: resources.gpu: every trainer trains on one GPU, so more per trial would "
            f"sit idle; use at most 1 (a fraction packs trials on a GPU), got {resources.gpu:g}"
        )
    return SweepSpec(
        path=Path(where),
        task=top.task,
        name=top.name or Path(where).stem,
        data_source=source,
        data_options=data.model_dump(exclude={"source"}),
        metric=top.metric,
        mode=top.mode,
        num_samples=top.num_samples,
        max_concurrent=top.max_concurrent,
        cpus_per_trial=resources.cpu,
        gpus_per_trial=resources.gpu,
        max_failures=top.max_failures,
        scheduler=scheduler,
        searcher=searcher,
        fixed=fixed,
        search=search,
        seeds=seeds,
        raw=raw,
    )


def load_spec(
    path: str | Path, overrides: Mapping[str, Any] | None = None, assignments: Sequence[str] = ()
) -> SweepSpec:
    """Read, override and validate a spec file."""
    raw = read_yaml(path)
    if assignments and isinstance(raw.get("task"), str):  # a bad task is reported by validate
        from visiontune.trainables import load_task

        config_cls = load_task(raw["task"], f"{path}: task").Config
        for text in assignments:  # named by the flag, not the file, when a pin itself is wrong
            try:
                build_config(config_cls, dict([parse_assignment(text)]), "fixed")
            except InputError as exc:
                raise InputError(f"--set {clip(text)}: {str(exc).split(': ', 1)[1]}") from None
    raw = apply_overrides(raw, overrides or {}, assignments, str(path))
    return validate(raw, str(path))
