"""What a confirmation (`visiontune confirm`, EXP/confirm.json) says: each configuration's mean ±
std over its training seeds with a t-based 95% interval, the tuned best chosen again by its mean
validation score, and Welch's t-test of the tuned best against each seed configuration on the
test split, with Hedges' g as the effect size.

    visiontune confirm runs/classifier        # EXP/confirm.json: one row per (configuration, seed)
    visiontune report runs/classifier         # report.md then shows the tables and sentence below

Why these statistics:
- A sweep's tuned best is the maximum over many single noisy runs, so its own score is biased
  upwards (the winner's curse). The confirmation re-trains the top configurations with fresh
  seeds and picks the tuned best again by the MEAN validation score: the test split takes no
  part in any choice, so its numbers stay an unbiased estimate.
- Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`, two-sided) does not assume equal
  spreads: a tuned configuration with a higher learning rate often varies more across seeds
  than the seed's. With 5 seeds a row it is the usual choice; it is not corrected for the
  number of seed configurations compared (two in the seed's experiment), which the sentence says.
- Hedges' g is Cohen's d (difference of means over the pooled standard deviation) times the
  small-sample correction 1 - 3 / (4 (n1 + n2) - 9): Cohen's d overstates the effect at n = 5.
- The 95% interval of a mean is mean ± t(0.975, n - 1) · std / sqrt(n), std with n - 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from visiontune.analysis.results import Experiment, is_number, read_rows
from visiontune.best import Objective
from visiontune.layout import CONFIRM_FILE

ALPHA = 0.05  # the significance level of the report's sentence
LEVEL = 0.95  # the confidence level of the intervals
BEST = "tuned best"  # the main table's label of the configuration the confirmation picks
TUNED_PREFIX = "tuned #"  # roles of the sweep's top configurations: "tuned #1", "tuned #2", ...

ROW_KEYS = (  # what every confirm.json row holds (visiontune.confirm)
    ("role", str, "a name"),
    ("trial_id", str | None, "a trial id"),
    ("seed", int, "a training seed"),
)


def test_split_key(metric: str) -> str:
    """The test-split key of a validation metric (`val_acc` -> `test_acc`, `map` -> `test_map`),
    as the tasks' `summarize` writes it."""
    return f"test_{metric.removeprefix('val_')}"


def read_confirmation(path: Path) -> list[dict[str, Any]]:
    """confirm.json: one object per confirmation run; [] when the file does not exist. A row
    without a role, a training seed or a trial id (null allowed) is a damaged file."""
    return read_rows(path, ROW_KEYS)


# --- the statistics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (n - 1) and t-based interval of one configuration's runs."""

    n: int
    mean: float
    std: float
    low: float
    high: float


def spread(values: Sequence[float], level: float = LEVEL) -> Spread | None:
    """`values`' mean ± std and its `level` interval; None without a value. One value has no
    spread: std and the interval are NaN."""
    from scipy import stats

    numbers = [float(v) for v in values if is_number(v)]
    n = len(numbers)
    if n == 0:
        return None
    mean = sum(numbers) / n
    if n == 1:
        return Spread(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(sum((v - mean) ** 2 for v in numbers) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return Spread(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """Welch's two-sided t-test of runs `a` against runs `b`, with Hedges' g of a - b."""

    difference: float  # mean(a) - mean(b)
    t: float
    df: float  # Welch-Satterthwaite degrees of freedom
    p: float
    hedges_g: float


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
    """(mean(a) - mean(b)) / pooled std, times 1 - 3 / (4 (n_a + n_b) - 9); NaN without spread."""
    sa, sb = spread(a), spread(b)
    if sa is None or sb is None or sa.n + sb.n < 3:
        return math.nan
    pooled = math.sqrt(((sa.n - 1) * sa.std**2 + (sb.n - 1) * sb.std**2) / (sa.n + sb.n - 2))
    if pooled == 0:
        return math.nan
    return (sa.mean - sb.mean) / pooled * (1 - 3 / (4 * (sa.n + sb.n) - 9))


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison | None:
    """Welch's t-test of `a` against `b` (scipy, equal_var=False); None unless each side has
    two values. t, df and p are NaN when neither side varies."""
    from scipy import stats

    a = [float(v) for v in a if is_number(v)]
    b = [float(v) for v in b if is_number(v)]
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = spread(a).std ** 2 / len(a), spread(b).std ** 2 / len(b)
    if va + vb == 0:
        nan = math.nan
        return Comparison(sum(a) / len(a) - sum(b) / len(b), nan, nan, nan, nan)
    result = stats.ttest_ind(a, b, equal_var=False)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    difference = sum(a) / len(a) - sum(b) / len(b)
    return Comparison(difference, float(result.statistic), df, float(result.pvalue), hedges_g(a, b))


# --- a confirmation, read ---------------------------------------------------------------------


def roles_in_order(rows: Sequence[dict[str, Any]], seeds: Sequence[str]) -> list[str]:
    """The seed configurations as the spec lists them, then the tuned ones by their rank."""
    present = list(dict.fromkeys(row["role"] for row in rows))
    tuned = sorted(
        (r for r in present if r.startswith(TUNED_PREFIX)),
        key=lambda r: int(r.removeprefix(TUNED_PREFIX)) if r[len(TUNED_PREFIX) :].isdigit() else 0,
    )
    others = [r for r in present if r not in seeds and r not in tuned]
    return [*(s for s in seeds if s in present), *others, *tuned]


def values_of(rows: Sequence[dict[str, Any]], role: str, key: str) -> list[float]:
    return [float(row[key]) for row in rows if row["role"] == role and is_number(row.get(key))]


def confirmed_best_role(rows: Sequence[dict[str, Any]], objective: Objective) -> str | None:
    """The tuned configuration (role "tuned #i") whose runs' mean validation score (each run's
    best epoch, `objective.metric`) is best; the better-ranked one in the sweep on a tie."""
    best, best_mean = None, None
    for role in roles_in_order(rows, ()):
        if not role.startswith(TUNED_PREFIX):
            continue
        scores = spread(values_of(rows, role, objective.metric))
        if scores is not None and objective.better(scores.mean, best_mean):
            best, best_mean = role, scores.mean
    return best


@dataclass(frozen=True)
class Confirmation:
    """confirm.json read against the sweep: its rows, the roles in order, the tuned best."""

    rows: list[dict[str, Any]]
    roles: list[str]  # seed configurations first, then "tuned #1", ...
    seeds: list[str]  # the seed configurations' roles
    best: str | None  # the tuned role the confirmation picks
    objective: Objective
    test_key: str  # the test-split key of the sweep's metric

    def runs(self, role: str, key: str) -> list[float]:
        return values_of(self.rows, role, key)

    def trial_of(self, role: str) -> str | None:
        return next((row.get("trial_id") for row in self.rows if row["role"] == role), None)

    def comparisons(self) -> dict[str, Comparison | None]:
        """Welch's test of the tuned best against each seed configuration on `test_key`."""
        if self.best is None:
            return {}
        best = self.runs(self.best, self.test_key)
        return {seed: welch(best, self.runs(seed, self.test_key)) for seed in self.seeds}


def load_confirmation(experiment: Experiment) -> Confirmation | None:
    """The experiment's confirmation; None where `visiontune confirm` has not written one."""
    rows = read_confirmation(experiment.path / CONFIRM_FILE)
    if not rows:
        return None
    spec = experiment.spec
    seeds = [s for s in spec.seeds if any(row["role"] == s for row in rows)]
    return Confirmation(
        rows=rows,
        roles=roles_in_order(rows, list(spec.seeds)),
        seeds=seeds,
        best=confirmed_best_role(rows, spec.objective),
        objective=spec.objective,
        test_key=test_split_key(spec.metric),
    )


# --- the report's tables and sentence ---------------------------------------------------------


def _columns(experiment: Experiment) -> tuple[dict[str, str], float]:
    """The main table's columns (key -> title) and the scale its numbers are shown at: the
    task's own main-table columns where it has them, percent for the detectors."""
    from visiontune.analysis.tables import (
        CLASSIFIER_COLUMNS,
        DETECTION_COLUMNS,
        YOLO_COLUMNS,
    )

    metric = experiment.spec.metric
    rcnn = {key: f"Test {title}" for key, title in DETECTION_COLUMNS.items()}
    yolo = {f"test_{key}": f"Test {title}" for key, title in YOLO_COLUMNS.items()}
    known = {
        "classifier": (CLASSIFIER_COLUMNS, 1.0),
        "faster_rcnn": ({metric: f"Validation {DETECTION_COLUMNS.get(f'test_{metric}', metric)}"}
                        | rcnn, 100.0),
        "yolo": ({metric: f"Validation {YOLO_COLUMNS.get(metric, metric)}"} | yolo, 100.0),
    }  # fmt: skip
    if experiment.spec.task in known:
        return known[experiment.spec.task]
    return {metric: metric, test_split_key(metric): test_split_key(metric)}, 1.0


def _number(value: float, scale: float) -> str:
    return f"{scale * value:.2f}" if scale != 1 else f"{value:.4f}"


def mean_std(values: Sequence[float], scale: float = 1.0) -> str:
    """ "mean ± std" ("—" without runs; the mean alone for one run)."""
    s = spread(values)
    if s is None:
        return "—"
    if s.n == 1:
        return _number(s.mean, scale)
    return f"{_number(s.mean, scale)} ± {_number(s.std, scale)}"


def interval(values: Sequence[float], scale: float = 1.0) -> str:
    s = spread(values)
    if s is None or s.n < 2:
        return "—"
    return f"[{_number(s.low, scale)}, {_number(s.high, scale)}]"


def _p(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.2e}" if value < 1e-4 else f"{value:.4f}"


def _stat(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def confirmed_tables(experiment: Experiment) -> list[tuple[str, pd.DataFrame]]:
    """The confirmation's tables, main table first ([] without a confirmation): seed
    configurations vs the tuned best as mean ± std with the test metric's 95% interval; every
    confirmed configuration; Welch's test of the tuned best against each seed configuration."""
    confirmation = load_confirmation(experiment)
    if confirmation is None:
        return []
    columns, scale = _columns(experiment)
    test_title = columns.get(confirmation.test_key, confirmation.test_key)
    unit = " (%)" if scale == 100 else ""
    n_seeds = max((len(confirmation.runs(r, confirmation.objective.metric))
                   for r in confirmation.roles), default=0)  # fmt: skip
    main = []
    for label, role in [*((s, s) for s in confirmation.seeds), (BEST, confirmation.best)]:
        record: dict[str, Any] = {"": label, "n": len(_runs_of(confirmation, role))}
        for key, title in columns.items():
            record[title] = mean_std(confirmation.runs(role, key), scale) if role else "—"
        runs = confirmation.runs(role, confirmation.test_key) if role else []
        record[f"{test_title} 95% CI"] = interval(runs, scale)
        main.append(record)
    metric = confirmation.objective.metric
    val_title = columns.get(metric, f"Validation {metric}")
    every = []
    for role in confirmation.roles:
        runs = confirmation.runs(role, confirmation.test_key)
        every.append({
            "": f"{role} ({BEST})" if role == confirmation.best else role,
            "trial": confirmation.trial_of(role) or "—",
            "n": len(_runs_of(confirmation, role)),
            val_title: mean_std(confirmation.runs(role, metric), scale),
            test_title: mean_std(runs, scale),
            "95% CI": interval(runs, scale),
        })  # fmt: skip
    tests = []
    for seed, result in confirmation.comparisons().items():
        row = {"": f"{BEST} vs {seed}"}
        if result is None:
            row.update({"difference": "—", "t": "—", "df": "—", "p": "—", "Hedges' g": "—"})
        else:
            row.update({
                "difference": f"{scale * result.difference:+.{2 if scale != 1 else 4}f}",
                "t": _stat(result.t), "df": _stat(result.df), "p": _p(result.p),
                "Hedges' g": _stat(result.hedges_g),
            })  # fmt: skip
        tests.append(row)
    tables = [
        (f"Confirmed over {n_seeds} training seeds: seed configurations vs tuned best "
         f"(mean ± std{unit})", pd.DataFrame(main)),
        (f"Confirmation: every configuration (mean ± std over its seeds{unit})",
         pd.DataFrame(every)),
    ]  # fmt: skip
    if tests:
        title = f"Tuned best vs each seed configuration: Welch's t-test on {confirmation.test_key}"
        tables.append((title, pd.DataFrame(tests)))
    return tables


def _runs_of(confirmation: Confirmation, role: str | None) -> list[dict[str, Any]]:
    """The runs of `role` that have a test score (errored runs have none)."""
    return [
        row
        for row in confirmation.rows
        if role is not None and row["role"] == role and is_number(row.get(confirmation.test_key))
    ]


def significance_sentence(confirmation: Confirmation) -> str:
    """One plain sentence: is the tuned best's gain on the test metric significant at ALPHA
    against each seed configuration? A gain is a difference in the objective's direction
    with p < ALPHA."""
    key, better = confirmation.test_key, confirmation.objective.better
    if confirmation.best is None:
        return f"No tuned configuration has a confirmed {key}: there is no gain to test."
    gains, others, worse = [], [], []
    for seed, result in confirmation.comparisons().items():
        if result is None or math.isnan(result.p):
            others.append(f"{seed} (untestable: fewer than 2 runs, or no spread)")
            continue
        text = f"{seed} ({'+' if result.difference >= 0 else ''}{result.difference:.4g}, "
        text += f"p = {_p(result.p)})"
        if result.p < ALPHA and better(result.difference, 0.0):
            gains.append(text)
        else:
            others.append(text)
            if result.p < ALPHA and result.difference != 0:
                worse.append(seed)
    subject = f"The tuned best's ({confirmation.best}) gain in {key}"
    if gains and not others:
        sentence = f"{subject} is significant at {ALPHA} against {_join(gains)}"
    elif gains:
        sentence = f"{subject} is significant at {ALPHA} against {_join(gains)}, "
        sentence += f"but not against {_join(others)}"
    else:
        sentence = f"{subject} is not significant at {ALPHA} against {_join(others)}"
    if worse:
        sentence += f"; it is significantly worse than {_join(worse)}"
    n = len(confirmation.runs(confirmation.best, key))
    return sentence + (f" (Welch's two-sided t-test, {n} seeds per configuration, "
                       "no correction for the number of comparisons).")  # fmt: skip


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def confirmation_notes(experiment: Experiment) -> list[str]:
    """The sentence and the notes under the confirmation's tables ([] without a confirmation)."""
    confirmation = load_confirmation(experiment)
    if confirmation is None:
        return []
    metric = confirmation.objective.metric
    tuned = [r for r in confirmation.roles if r.startswith(TUNED_PREFIX)]
    notes = [
        f"- {BEST}: {confirmation.best} (sweep trial `{confirmation.trial_of(confirmation.best)}`)"
        f", the best mean {metric} over its seeds of the {len(tuned)} tuned configurations "
        f"confirmed; the test split took no part in any choice"
        if confirmation.best
        else f"- {BEST}: none (no tuned configuration has a confirmed {metric})",
        f"- each run trained the sweep's full {experiment.spec.epochs} epochs; its checkpoint of "
        f"the best {metric} epoch (the sweep's rule, visiontune/best.py) was tested",
    ]
    for row in confirmation.rows:
        if row.get("error"):
            notes.append(f"- errored run: {row['role']} seed {row['seed']}: {row['error']}")
    return [significance_sentence(confirmation), "\n".join(notes)]


def confirmed_config_header(experiment: Experiment) -> str | None:
    """best_config.yaml's first line for the confirmed tuned best; None without one."""
    confirmation = load_confirmation(experiment)
    if confirmation is None or confirmation.best is None:
        return None
    role, metric, test = confirmation.best, confirmation.objective.metric, confirmation.test_key
    runs = confirmation.runs(role, metric)
    return (
        f"# Best configuration of {experiment.path.name}, confirmed over {len(runs)} training "
        f"seeds: {role}, sweep trial {confirmation.trial_of(role)}; mean ± std {metric} "
        f"{mean_std(runs)}, {test} {mean_std(confirmation.runs(role, test))}\n"
    )
