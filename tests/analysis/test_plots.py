"""analysis/plots.py and the report's plots, on the checked-in classifier sweep (tests/fixtures):
each figure shows what its title and axes say (checked on the Figure before it is saved), every
PNG the report writes decodes to a non-blank image linked from report.md, and a plot the data
cannot make is a line saying why. Detector per-class bars and the confirmation spread use rows
shaped as test_results.json and confirm.json hold them."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import optuna
import pandas as pd
import pytest
from support import REPO, copy_fixture

from visiontune.analysis import plots
from visiontune.analysis.plots import NotDrawn
from visiontune.analysis.report import write_report
from visiontune.analysis.results import Experiment, load_experiment
from visiontune.analysis.study import MIN_IMPORTANCE_TRIALS, StudyFacts, read_study
from visiontune.errors import InputError
from visiontune.spec import load_spec
from visiontune.spec_file import Choice, IntRange, Range

CLASSES = ["No-Anomaly", "Shadowing", "Cell"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    return load_experiment(copy_fixture("experiment", tmp_path_factory.mktemp("plots")))


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's report, written over an older report's param_importance.png (a plot this
    sweep's 4 complete trials cannot make)."""
    exp = copy_fixture("experiment", tmp_path_factory.mktemp("reported"))
    (exp / "report").mkdir()
    (exp / "report" / "param_importance.png").write_bytes(b"an older report's plot")
    write_report(exp)
    return exp / "report"


def _image(data: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(data), format="png")


def _study(exp: Path) -> optuna.Study:
    name = json.loads((exp / "sweep.json").read_text())["name"]
    return optuna.load_study(study_name=name, storage=f"sqlite:///{exp / 'optuna.db'}")


def test_history_titles_and_axes_say_metric_trial_number_and_seconds(experiment):
    figure = plots.history_figure(
        experiment.trials, experiment.history, experiment.spec.objective, {}, None
    )
    left, right = figure.axes
    assert "val_acc so far vs trial number" in left.get_title()
    assert "vs wall time" in right.get_title()
    assert left.get_ylabel() == "validation accuracy (fraction correct, 0–1)"
    assert left.get_xlabel().startswith("trial number") and right.get_xlabel().endswith("(s)")


def test_history_best_so_far_is_the_running_max_in_study_order(experiment):
    study = _study(experiment.path)
    numbers = {t.user_attrs["tune_trial_id"]: t.number for t in study.trials}
    values = experiment.trials.set_index("trial_id")["val_acc"]
    expected = np.maximum.accumulate([values[t] for t in sorted(numbers, key=numbers.get)])
    figure = plots.history_figure(
        experiment.trials, experiment.history, experiment.spec.objective, numbers, None
    )
    [step] = [line for line in figure.axes[0].lines if line.get_label() == "best so far"]
    assert list(step.get_ydata()) == pytest.approx(list(expected))


def test_history_is_not_drawn_from_one_trial(experiment):
    with pytest.raises(NotDrawn, match="1 trial"):
        plots.history_figure(
            experiment.trials.head(1), experiment.history, experiment.spec.objective, {}
        )


def test_learning_curves_draw_every_trial_and_mark_stopped_ones_at_their_last_epoch(experiment):
    figure = plots.learning_curves_figure(experiment.trials, experiment.history, "val_acc", "ASHA")
    axes = figure.axes[0]
    curves = [line for line in axes.lines if len(line.get_xdata()) > 1]
    marks = {
        (line.get_xdata()[0], line.get_ydata()[0])
        for line in axes.lines
        if line.get_marker() == "X"
    }
    stopped = experiment.trials[experiment.trials["status"] == "STOPPED"]
    assert len(curves) == experiment.history["trial_id"].nunique()
    assert len(stopped) and marks == {(row.epochs, row.val_acc) for row in stopped.itertuples()}
    assert "stopped early by ASHA" in [t.get_text() for t in axes.get_legend().get_texts()]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("epoch", plots.metric_label("val_acc"))


def test_parallel_coordinates_place_each_trial_within_its_search_ranges(experiment):
    figure = plots.parallel_coordinates_figure(
        experiment.trials, experiment.spec.search, experiment.spec.objective
    )
    axes, colorbar = figure.axes
    lines = [line for line in axes.lines if len(line.get_xdata()) == len(experiment.spec.search)]
    assert len(lines) == len(experiment.trials)
    assert all(0 <= y <= 1 for line in lines for y in line.get_ydata())
    archs = experiment.spec.search["arch"].values  # a choice: its first value at 0, last at 1
    expected = sorted(archs.index(a) / (len(archs) - 1) for a in experiment.trials["config/arch"])
    assert sorted(line.get_ydata()[0] for line in lines) == expected
    assert colorbar.get_ylabel() == plots.metric_label("val_acc")
    assert [t.get_text() for t in axes.get_xticklabels()][:2] == ["arch", "lr (log)"]


def test_importance_is_not_computed_from_fewer_complete_trials_than_needed(experiment):
    facts = read_study(experiment)
    assert facts.complete == 4 < MIN_IMPORTANCE_TRIALS and not facts.importances
    with pytest.raises(NotDrawn, match="4 complete trial"):
        plots.importance_figure(facts, "val_acc")


def _sample(dist: Range | Choice, rng: np.random.Generator, index: int) -> object:
    if isinstance(dist, Choice):
        return dist.values[index % len(dist.values)]
    low, high = (math.log10(dist.low), math.log10(dist.high)) if dist.log else (dist.low, dist.high)
    value = 10 ** rng.uniform(low, high) if dist.log else rng.uniform(low, high)
    return round(value) if isinstance(dist, IntRange) else float(value)


def _add_trials_decided_by_lr(exp: Path, count: int = 20) -> None:
    """Complete trials whose score peaks at lr = 1e-3, every other parameter drawn at random."""
    search = load_experiment(exp).spec.search
    distributions = {k: d.to_optuna() for k, d in search.items()}
    rng = np.random.default_rng(0)
    study = _study(exp)
    for index in range(count):
        params = {k: _sample(d, rng, index) for k, d in search.items()}
        value = 1 - abs(math.log10(params["lr"]) + 3) / 3
        trial = optuna.trial.create_trial(params=params, distributions=distributions, value=value)
        study.add_trial(trial)


def test_importance_ranks_the_parameter_that_decides_the_score_first(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    _add_trials_decided_by_lr(exp)
    facts = read_study(load_experiment(exp))
    assert facts.complete == 24
    assert max(facts.importances, key=facts.importances.get) == "lr"
    assert sum(facts.importances.values()) == pytest.approx(1)
    axes = plots.importance_figure(facts, "val_acc").axes[0]
    assert axes.get_title() == "Hyperparameter importance for val_acc (24 complete trials)"
    assert "share" in axes.get_xlabel()


def test_confirm_spread_has_one_box_and_every_run_per_role():
    frame = pd.DataFrame({
        "role": ["seed baseline"] * 3 + ["tuned #1"] * 3,
        "seed": [0, 1, 2] * 2,
        "test_acc": [0.5, 0.55, 0.52, 0.8, 0.78, 0.83],
    })  # fmt: skip
    figure = plots.confirm_figure(frame, ["val_acc", "test_acc"])  # no val_acc: one panel
    [axes] = figure.axes
    assert [t.get_text() for t in axes.get_xticklabels()] == ["seed baseline", "tuned #1"]
    points = np.concatenate([c.get_offsets()[:, 1] for c in axes.collections])
    assert sorted(points) == sorted(frame["test_acc"])
    assert axes.get_ylabel() == "test accuracy (fraction correct, 0–1)"


def _detector(test: list[dict]) -> Experiment:
    return Experiment(
        path=Path("/nowhere"),
        spec=load_spec(REPO / "search_spaces" / "faster_rcnn.yaml"),
        trials=pd.DataFrame(), history=pd.DataFrame(), test=test, summary={},
        dataset={"classes": CLASSES},
    )  # fmt: skip


def test_per_class_ap_puts_the_seed_configuration_beside_the_tuned_best():
    seed = {"role": "seed configuration", "per_class": {"Cell": {"ap": 0.25}}}
    best = {"role": "tuned best", "per_class": {n: {"ap": 0.5} for n in CLASSES}}
    roles = ["seed configuration", "tuned best"]
    [axes] = plots.per_class_figure([seed, best], CLASSES, roles).axes
    heights = [[bar.get_height() for bar in c] for c in axes.containers]
    assert np.allclose(heights, [[np.nan, np.nan, 25.0], [50.0] * 3], equal_nan=True)
    assert [t.get_text() for t in axes.texts] == ["n/a", "n/a"]  # the seed's missing classes
    assert [t.get_text() for t in axes.get_legend().get_texts()] == roles
    assert "AP@[.5:.95]" in axes.get_title() and axes.get_ylabel() == "test AP@[.5:.95] (%)"


def test_per_class_plot_says_so_when_only_precision_was_recorded():
    best = {"role": "tuned best", "per_class": {"Cell": {"precision": 0.5, "recall": 0.25}}}
    axes = plots.per_class_figure([best], CLASSES, ["tuned best"]).axes[0]
    assert "per-class AP not recorded" in axes.get_title() and "precision" in axes.get_ylabel()


def test_detector_report_draws_per_class_bars_and_says_why_the_sweep_plots_are_missing():
    best = {"role": "tuned best", "per_class": {n: {"ap": 0.5} for n in CLASSES}}
    drawn = {
        p.file: p
        for p in plots.report_plots(_detector([best]), StudyFacts(reason="no Optuna study"))
    }
    assert drawn["per_class_ap.png"].png is not None
    missing = [p for p in drawn.values() if p.png is None]
    assert len(missing) == 4 and all(p.reason for p in missing)


def test_each_png_in_the_report_is_a_non_blank_image(reported):
    pngs = sorted(reported.glob("*.png"))
    assert {p.name for p in pngs} == {
        "optimization_history.png", "learning_curves.png", "parallel_coordinates.png",
    }  # fmt: skip
    for path in pngs:
        image = _image(path.read_bytes())
        assert image.shape[0] > 200 and image.shape[1] > 400, path.name
        assert image[..., :3].std() > 0.05, f"{path.name} is blank"


def test_report_links_each_png_and_says_why_a_plot_is_not_drawn(reported):
    report = (reported / "report.md").read_text()
    for path in reported.glob("*.png"):
        assert f"]({path.name})" in report
    reason = next(line for line in report.splitlines() if "`param_importance.png`" in line)
    assert "not drawn: 4 complete trial(s)" in reason
    assert "Not computed: 4 complete trial(s)" in report  # the importance section


def test_report_removes_an_older_reports_plot_it_does_not_draw_now(reported):
    assert not (reported / "param_importance.png").exists()


def test_report_with_enough_trials_has_the_importance_table_and_plot(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    _add_trials_decided_by_lr(exp)
    out = write_report(exp, tmp_path / "out")
    report = (out / "report.md").read_text()
    section = report.split("## Hyperparameter importance for val_acc", 1)[1].split("##", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    assert (
        len(rows) == len(load_experiment(exp).spec.search) and rows[0].split("|")[1].strip() == "lr"
    )
    assert (
        "](param_importance.png)" in report
        and _image((out / "param_importance.png").read_bytes()).std() > 0
    )


def test_report_with_confirm_json_draws_the_confirmation_spread(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    runs = [
        {"role": role, "trial_id": trial, "seed": seed, "val_acc": 0.1 * k + 0.01 * seed,
         "test_acc": 0.1 * k + 0.02 * seed}
        for k, (role, trial) in enumerate([("seed baseline", "83a65642"), ("tuned #1", "40bf8aaf")])
        for seed in range(3)
    ]  # fmt: skip
    (exp / "confirm.json").write_text(json.dumps(runs))
    out = write_report(exp, tmp_path / "out")
    assert (
        "![Confirmation runs: spread over seeds](confirm_spread.png)"
        in (out / "report.md").read_text()
    )
    assert _image((out / "confirm_spread.png").read_bytes())[..., :3].std() > 0.05


def test_damaged_confirm_json_stops_the_report_before_anything_is_written(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    (exp / "confirm.json").write_text("[{")
    with pytest.raises(InputError, match="confirm.json"):
        write_report(exp, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_reads_the_study_without_changing_it_and_survives_a_damaged_one(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    before = hashlib.sha256((exp / "optuna.db").read_bytes()).hexdigest()
    write_report(exp, tmp_path / "first")
    assert hashlib.sha256((exp / "optuna.db").read_bytes()).hexdigest() == before
    (exp / "optuna.db").write_bytes(b"not a database")
    report = (write_report(exp, tmp_path / "second") / "report.md").read_text()
    assert "optuna.db cannot be read" in report
    assert "](optimization_history.png)" in report  # ordered by start time instead
