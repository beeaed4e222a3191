"""The experiment's Optuna study (optuna.db), read offline for the report: each Tune trial's
study trial number and the searched parameters' importances.

The study is opened from a copy in a temporary directory: Optuna's storage creates or upgrades
tables when it opens a file, and a report must not change the experiment it reads (a sweep may
still be writing it).

Importances are PED-ANOVA's (`PedAnovaImportanceEvaluator`, Optuna's default; fANOVA would need
scikit-learn, which visiontune does not install): how differently each parameter is distributed
in the best TOP_QUANTILE of the trials than in all of them, as shares summing to 1. Optuna counts
the COMPLETE trials only (a PRUNED trial's value is that of the epoch it stopped on, not a final
score). Optuna's default quantile, the top 10 %, is one trial in a sweep of a dozen; the top
quarter holds at least 2 once there are MIN_IMPORTANCE_TRIALS complete trials. With fewer, or
when the top quarter cannot be told apart from the rest (tied scores), the report says so.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from sqlalchemy.exc import SQLAlchemyError

from visiontune.analysis.results import Experiment
from visiontune.layout import STUDY_FILE
from visiontune.params import clip
from visiontune.sweep.searcher import TRIAL_ID_ATTR, study_url

TOP_QUANTILE = 0.25
MIN_IMPORTANCE_TRIALS = 5


@dataclass(frozen=True)
class StudyFacts:
    numbers: dict[str, int] = field(default_factory=dict)  # Tune trial id -> study trial number
    complete: int = 0  # COMPLETE study trials
    importances: dict[str, float] = field(default_factory=dict)  # searched param -> share
    reason: str = ""  # why there are no importances


def study_name(experiment: Experiment) -> str:
    """The study's name: the experiment's name as sweep.json records it."""
    return str(experiment.summary.get("name") or experiment.path.name)


def read_study(experiment: Experiment) -> StudyFacts:
    """Trial numbers and importances of the experiment's study; a StudyFacts with only the
    `reason` when there is no readable study."""
    file = experiment.path / STUDY_FILE
    if not file.is_file():
        return StudyFacts(reason=f"no Optuna study ({STUDY_FILE} is missing)")
    with tempfile.TemporaryDirectory(prefix="visiontune-report-") as scratch:
        copy = Path(scratch) / file.name
        shutil.copyfile(file, copy)
        journal = file.with_name(file.name + "-journal")  # a hot journal after a killed driver
        if journal.is_file():
            shutil.copyfile(journal, copy.with_name(journal.name))
        try:
            return _read(copy, study_name(experiment), experiment)
        except (KeyError, ValueError, RuntimeError, SQLAlchemyError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return StudyFacts(reason=f"{STUDY_FILE} cannot be read ({clip(why)})")


def _read(database: Path, name: str, experiment: Experiment) -> StudyFacts:
    storage = optuna.storages.RDBStorage(study_url(database))
    try:
        return _facts(optuna.load_study(study_name=name, storage=storage), experiment)
    finally:
        storage.engine.dispose()


def _facts(study: optuna.Study, experiment: Experiment) -> StudyFacts:
    trials = study.get_trials(deepcopy=False)
    numbers = {
        t.user_attrs[TRIAL_ID_ATTR]: t.number for t in trials if TRIAL_ID_ATTR in t.user_attrs
    }
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    params = [k for k in experiment.spec.search if all(k in t.distributions for t in complete)]
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        reason = f"{len(complete)} complete trial(s) in the study; PED-ANOVA needs {MIN_IMPORTANCE_TRIALS}"
        return StudyFacts(numbers, len(complete), reason=reason)
    if not params:
        return StudyFacts(
            numbers, len(complete), reason="no searched parameter is in every complete trial"
        )
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=TOP_QUANTILE)
    with warnings.catch_warnings(record=True) as caught:  # "importances will be equal"
        warnings.simplefilter("always")
        importances = optuna.importance.get_param_importances(
            study, evaluator=evaluator, params=params
        )
    if caught:
        reason = f"PED-ANOVA could not rank the parameters: {caught[0].message}"
        return StudyFacts(numbers, len(complete), reason=reason)
    return StudyFacts(numbers, len(complete), {k: float(v) for k, v in importances.items()})
