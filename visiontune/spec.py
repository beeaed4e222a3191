"""Load and validate a sweep spec (search_spaces/*.yaml) completely, before anything starts.

A spec names the task (trainable), the data, the fixed settings, the searched parameters with
their distributions, the seed configurations evaluated first, the metric, the ASHA scheduler, the
Optuna searcher and the resources per trial. Command-line overrides are applied to the raw YAML
first, so `--set`, `--max-epochs` and friends are validated by exactly the same code as the file.
Every problem raises InputError with one line: "<file>: <key>: <what is wrong> (<value>)".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visiontune.errors import InputError
from visiontune.params import build_config, config_dict, known_parameters

TOP_LEVEL = {
    "task", "name", "data", "metric", "mode", "num_samples", "max_concurrent", "resources",
    "max_failures", "scheduler", "searcher", "fixed", "search", "points_to_evaluate",
}  # fmt: skip
REQUIRED = ("task", "data", "metric", "mode", "num_samples", "scheduler", "searcher", "search")
DISTRIBUTIONS = {
    "uniform": {"low", "high"},
    "loguniform": {"low", "high"},
    "int": {"low", "high", "step", "log"},
    "choice": {"values"},
}
SCHEDULERS = {"asha": {"grace_period", "reduction_factor"}, "fifo": set()}
SEARCHERS = {"optuna_tpe": {"seed", "n_startup_trials"}, "random": {"seed"}}
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


@dataclass(frozen=True)
class Distribution:
    kind: str
    low: float | None = None
    high: float | None = None
    step: int | None = None
    log: bool = False
    values: tuple = ()

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def to_optuna(self) -> Any:
        import optuna.distributions as od

        if self.kind == "choice":
            return od.CategoricalDistribution(list(self.values))
        if self.kind == "int":
            return od.IntDistribution(
                int(self.low), int(self.high), step=self.step or 1, log=self.log
            )
        return od.FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice{list(self.values)}"
        return f"{self.kind}[{self.low}, {self.high}]"


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
    scheduler: dict[str, Any]
    searcher: dict[str, Any]
    fixed: dict[str, Any]
    search: dict[str, Distribution]
    seeds: dict[str, dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)

    @property
    def epochs(self) -> int:
        return int(self.fixed["epochs"])

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


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        loaded = yaml.safe_load(path.read_text())
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


def parse_assignment(text: str) -> tuple[str, Any]:
    """'KEY=VALUE' with VALUE parsed as YAML (so 1e-3 is a float and true a bool)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set {text!r}: expected KEY=VALUE")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        raise InputError(f"--set {text!r}: value is not valid YAML") from None


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
            if target.get(parent) is None:
                target[parent] = {}
            if not isinstance(target[parent], dict):
                raise InputError(f"{where}: {parent}: expected a mapping, got {target[parent]!r}")
            target = target[parent]
        target[leaf] = value
    scheduler = raw.get("scheduler")
    if overrides.get("max_epochs") is not None and isinstance(scheduler, dict):
        # A shorter budget asked for on the command line shortens the grace period with it.
        grace = scheduler.get("grace_period")
        if isinstance(grace, int) and grace > overrides["max_epochs"]:
            scheduler["grace_period"] = overrides["max_epochs"]
    for text in assignments:
        key, value = parse_assignment(text)
        search = raw.get("search") or {}
        if isinstance(search, dict) and key in search:
            del search[key]  # a pin replaces the distribution, in seed points too
            for point in (raw.get("points_to_evaluate") or {}).values():
                if isinstance(point, dict):
                    point.pop(key, None)
        raw.setdefault("fixed", {})
        if raw["fixed"] is None:
            raw["fixed"] = {}
        raw["fixed"][key] = value
    return raw


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a mapping, got {value!r}")
    return value


def _number(value: Any, where: str, minimum: float | None = None, integer: bool = False) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        raise InputError(
            f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}"
        )
    if minimum is not None and value < minimum:
        raise InputError(f"{where}: must be >= {minimum}, got {value!r}")
    return int(value) if integer else value


def _check_keys(section: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise InputError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


def parse_distribution(value: Any, where: str) -> Distribution:
    spec = _mapping(value, where)
    kind = spec.get("distribution")
    if kind not in DISTRIBUTIONS:
        raise InputError(
            f"{where}.distribution: unknown distribution {kind!r} (known: {', '.join(DISTRIBUTIONS)})"
        )
    _check_keys(spec, DISTRIBUTIONS[kind] | {"distribution"}, where)
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise InputError(f"{where}.values: expected a non-empty list, got {values!r}")
        return Distribution(kind, values=tuple(values))
    for key in ("low", "high"):
        if key not in spec:
            raise InputError(f"{where}: missing key {key!r}")
    integer = kind == "int"
    low = _number(spec["low"], f"{where}.low", integer=integer)
    high = _number(spec["high"], f"{where}.high", integer=integer)
    if low > high:
        raise InputError(f"{where}: low {low!r} > high {high!r}")
    log = kind == "loguniform" or bool(spec.get("log", False))
    if log and low <= 0:
        raise InputError(f"{where}.low: a log-scaled distribution needs low > 0, got {low!r}")
    step = (
        _number(spec["step"], f"{where}.step", minimum=1, integer=True) if "step" in spec else None
    )
    return Distribution(kind, low=low, high=high, step=step, log=log)


def _parse_search(raw: dict, config_cls: type, where: str) -> dict[str, Distribution]:
    search = _mapping(raw.get("search"), f"{where}: search")
    known = known_parameters(config_cls)
    out = {}
    for key, value in search.items():
        if key not in known:
            raise InputError(
                f"{where}: search.{key}: unknown parameter {key!r} (known: {', '.join(sorted(known))})"
            )
        if key == "epochs":
            raise InputError(f"{where}: search.epochs: the epoch budget is fixed (fixed.epochs)")
        dist = parse_distribution(value, f"{where}: search.{key}")
        # Each end of the range (or each choice) must be a value the trainable accepts.
        probes = dist.values if dist.kind == "choice" else (dist.low, dist.high)
        for probe in probes:
            build_config(config_cls, {key: probe}, f"{where}: search.{key}")
        out[key] = dist
    return out


def _parse_seeds(raw: dict, search: dict[str, Distribution], fixed: dict, where: str) -> dict:
    points = _mapping(raw.get("points_to_evaluate"), f"{where}: points_to_evaluate")
    seeds = {}
    for name, point in points.items():
        at = f"{where}: points_to_evaluate.{name}"
        point = _mapping(point, at)
        for key, value in point.items():
            if key not in search:
                role = "a fixed setting" if key in fixed else "not a searched parameter"
                raise InputError(f"{at}.{key}: {role}; seed points give searched parameters only")
            if not search[key].contains(value):
                raise InputError(f"{at}.{key}: {value!r} outside {search[key].describe()}")
        missing = sorted(set(search) - set(point))
        if missing:
            raise InputError(f"{at}: missing searched parameter {missing[0]!r}")
        seeds[str(name)] = dict(point)
    return seeds


DATA_OPTIONS = {"imagefolder": {"image_size", "split_seed"}, "yolo": set()}


def _parse_data(raw: dict, data_format: str, where: str) -> tuple[str, dict[str, Any]]:
    from visiontune.data import EMBEDDED

    if isinstance(raw["data"], str):
        raw["data"] = {"source": raw["data"]}
    data = _mapping(raw["data"], f"{where}: data")
    _check_keys(data, DATA_OPTIONS[data_format] | {"source"}, f"{where}: data")
    source = data.get("source")
    if not isinstance(source, str) or not source:
        raise InputError(f"{where}: data.source: expected a dataset name or path, got {source!r}")
    if source in EMBEDDED and EMBEDDED[source] != data_format:
        raise InputError(
            f"{where}: data.source: {source!r} is a {EMBEDDED[source]} dataset; "
            f"task {raw['task']!r} reads {data_format} data"
        )
    if source not in EMBEDDED:  # a path, relative to the working directory
        source = str(Path(source).expanduser().resolve())
        data["source"] = source  # the saved spec must name the same data from any directory
    options: dict[str, Any] = {}
    if data_format == "imagefolder":
        size = data.get("image_size", "auto")
        ok_size = (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        )
        if size not in ("auto", None) and not ok_size:
            raise InputError(
                f"{where}: data.image_size: expected auto or [height, width], got {size!r}"
            )
        options["image_size"] = tuple(size) if ok_size else None
        key = f"{where}: data.split_seed"
        options["split_seed"] = _number(data.get("split_seed", 0), key, 0, integer=True)
    return source, options


def _parse_scheduler(raw: dict, epochs: int, where: str) -> dict[str, Any]:
    section = _mapping(raw["scheduler"], f"{where}: scheduler")
    kind = section.get("type")
    if kind not in SCHEDULERS:
        raise InputError(
            f"{where}: scheduler.type: unknown scheduler {kind!r} (known: {', '.join(SCHEDULERS)})"
        )
    _check_keys(section, SCHEDULERS[kind] | {"type"}, f"{where}: scheduler")
    out: dict[str, Any] = {"type": kind}
    if kind == "asha":
        grace = _number(section.get("grace_period", 1), f"{where}: scheduler.grace_period", 1, True)
        factor = _number(
            section.get("reduction_factor", 3), f"{where}: scheduler.reduction_factor", 2
        )
        if grace > epochs:
            raise InputError(f"{where}: scheduler.grace_period: {grace} > fixed.epochs {epochs}")
        out.update(grace_period=grace, reduction_factor=factor)
    return out


def _parse_searcher(raw: dict, where: str) -> dict[str, Any]:
    section = _mapping(raw["searcher"], f"{where}: searcher")
    kind = section.get("type")
    if kind not in SEARCHERS:
        raise InputError(
            f"{where}: searcher.type: unknown searcher {kind!r} (known: {', '.join(SEARCHERS)})"
        )
    _check_keys(section, SEARCHERS[kind] | {"type"}, f"{where}: searcher")
    out = {
        "type": kind,
        "seed": _number(section.get("seed", 0), f"{where}: searcher.seed", 0, True),
    }
    if kind == "optuna_tpe":
        key = f"{where}: searcher.n_startup_trials"
        out["n_startup_trials"] = _number(section.get("n_startup_trials", 10), key, 0, True)
    return out


def validate(raw: dict[str, Any], where: str) -> SweepSpec:
    """Turn a raw spec mapping into a SweepSpec, or raise InputError on the first problem."""
    from visiontune.trainables import load_task

    raw = copy.deepcopy(raw)  # normalised below (data paths); the caller's mapping stays as given
    _check_keys(raw, TOP_LEVEL, where)
    for key in REQUIRED:
        if key not in raw:
            raise InputError(f"{where}: missing key {key!r}")
    task = load_task(raw["task"], f"{where}: task")
    search = _parse_search(raw, task.Config, where)
    fixed_raw = _mapping(raw.get("fixed"), f"{where}: fixed")
    fixed = config_dict(build_config(task.Config, fixed_raw, f"{where}: fixed"))
    for key in search:
        fixed.pop(key)
    if raw["metric"] not in task.METRICS:
        raise InputError(
            f"{where}: metric: {raw['metric']!r} is not reported by {raw['task']} ({', '.join(task.METRICS)})"
        )
    if raw["mode"] not in ("max", "min"):
        raise InputError(f"{where}: mode: expected max or min, got {raw['mode']!r}")
    seeds = _parse_seeds(raw, search, fixed_raw, where)
    for name in seeds:  # every seed must form a complete, valid config
        build_config(task.Config, {**fixed, **seeds[name]}, f"{where}: points_to_evaluate.{name}")
    source, data_options = _parse_data(raw, task.DATA_FORMAT, where)
    resources = _mapping(raw.get("resources"), f"{where}: resources")
    _check_keys(resources, {"cpu", "gpu"}, f"{where}: resources")
    cpu = _number(resources.get("cpu", 1), f"{where}: resources.cpu", 0)
    gpu = _number(resources.get("gpu", 0), f"{where}: resources.gpu", 0)
    if cpu <= 0:
        raise InputError(f"{where}: resources.cpu: must be > 0, got {cpu!r}")
    if gpu > 1 and not float(gpu).is_integer():
        raise InputError(f"{where}: resources.gpu: fractions must be <= 1, got {gpu!r}")
    num_samples = _number(raw["num_samples"], f"{where}: num_samples", 1, True)
    max_concurrent = raw.get("max_concurrent")
    if max_concurrent is not None:
        max_concurrent = _number(max_concurrent, f"{where}: max_concurrent", 1, True)
    name = raw.get("name") or Path(where).stem
    return SweepSpec(
        path=Path(where),
        task=raw["task"],
        name=str(name),
        data_source=source,
        data_options=data_options,
        metric=raw["metric"],
        mode=raw["mode"],
        num_samples=num_samples,
        max_concurrent=max_concurrent,
        cpus_per_trial=cpu,
        gpus_per_trial=gpu,
        max_failures=_number(raw.get("max_failures", 0), f"{where}: max_failures", 0, True),
        scheduler=_parse_scheduler(raw, int(fixed["epochs"]), where),
        searcher=_parse_searcher(raw, where),
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
    if assignments:  # named by the flag, not the file, when a pin itself is wrong
        from visiontune.trainables import load_task

        config_cls = load_task(raw.get("task"), f"{path}: task").Config
        for text in assignments:
            try:
                build_config(config_cls, dict([parse_assignment(text)]), "fixed")
            except InputError as exc:
                raise InputError(f"--set {text}: {str(exc).split(': ', 1)[1]}") from None
    raw = apply_overrides(raw, overrides or {}, assignments, str(path))
    return validate(raw, str(path))
