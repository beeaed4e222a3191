"""analysis/confirmation.py: the statistics of a confirmation on hand-made runs whose answers
the math fixes (mean, std, t-based interval, Welch's test, Hedges' g), the re-chosen tuned best,
the significance sentence, and the report of the checked-in experiment with a confirm.json."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from support import copy_fixture

from visiontune.analysis.confirmation import (
    Confirmation,
    confirmed_best_role,
    hedges_g,
    read_confirmation,
    roles_in_order,
    significance_sentence,
    spread,
    welch,
)
from visiontune.analysis.formats import latex_escape
from visiontune.analysis.report import write_report
from visiontune.best import Objective
from visiontune.errors import InputError

T_975_DF4 = 2.7764451051977987  # t quantile 0.975 with 4 degrees of freedom (tables)
T_975_DF1 = math.tan(math.pi * 0.475)  # t with 1 df is Cauchy: quantile p is tan(pi (p - 1/2))
MAX_ACC = Objective("val_acc", "max")


def test_spread_of_two_runs_has_the_cauchy_interval():
    s = spread([0.0, 2.0])
    assert (s.n, s.mean, s.std) == (2, 1.0, pytest.approx(math.sqrt(2)))
    # half width t * std / sqrt(n) = t * sqrt(2) / sqrt(2)
    assert (s.low, s.high) == (pytest.approx(1 - T_975_DF1), pytest.approx(1 + T_975_DF1))


def test_spread_of_five_runs_uses_n_minus_one_and_t_with_four_df():
    s = spread([1, 2, 3, 4, 5])
    std = math.sqrt(10 / 4)
    half = T_975_DF4 * std / math.sqrt(5)
    assert (s.mean, s.std) == (3.0, pytest.approx(std))
    assert (s.low, s.high) == (pytest.approx(3 - half), pytest.approx(3 + half))


def test_spread_skips_missing_values_and_has_none_without_any():
    assert spread([None, float("nan")]) is None
    one = spread([0.5, None])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.low)


def test_welch_with_two_runs_each_and_equal_spread_has_two_df_and_closed_form_p():
    result = welch([0.0, 2.0], [1.0, 3.0])
    t = -1 / math.sqrt(2)  # difference -1 over sqrt(2/2 + 2/2)
    assert result.difference == -1.0
    assert result.t == pytest.approx(t) and result.df == pytest.approx(2.0)
    # Student's t with 2 df: two-sided p = 1 - |t| / sqrt(2 + t^2)
    assert result.p == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))


def test_welch_df_for_unequal_spreads_is_welch_satterthwaite():
    result = welch([1, 2, 3], [0, 4, 8])  # variances 1 and 16, three runs each
    assert result.t == pytest.approx(-2 / math.sqrt(17 / 3))
    assert result.df == pytest.approx(578 / 257)  # (17/3)^2 / ((1/3)^2/2 + (16/3)^2/2)


def test_hedges_g_is_cohens_d_with_the_small_sample_correction():
    # d = (2 - 5) / pooled std 1 = -3; correction 1 - 3 / (4 * 6 - 9) = 0.8
    assert hedges_g([1, 2, 3], [4, 5, 6]) == pytest.approx(-2.4)
    assert welch([1, 2, 3], [4, 5, 6]).hedges_g == pytest.approx(-2.4)
    assert welch([1, 2, 3], [4, 5, 6]).df == pytest.approx(4.0)


def test_welch_needs_two_runs_a_side_and_some_spread():
    assert welch([1.0], [1.0, 2.0]) is None
    flat = welch([1.0, 1.0], [1.0, 1.0])
    assert flat.difference == 0 and math.isnan(flat.p) and math.isnan(flat.hedges_g)


def _rows(role: str, trial: str, val: list[float], test: list[float]) -> list[dict]:
    return [
        {"role": role, "trial_id": trial, "seed": s, "val_acc": v, "test_acc": t}
        for s, (v, t) in enumerate(zip(val, test, strict=True))
    ]


def test_the_tuned_best_is_the_best_mean_not_the_best_single_run():
    rows = [
        *_rows("tuned #1", "a", [0.9, 0.5], [0, 0]),  # best single run, mean 0.7
        *_rows("tuned #2", "b", [0.75, 0.75], [0, 0]),  # mean 0.75
        *_rows("seed baseline", "s", [0.99, 0.99], [0, 0]),  # never a candidate
    ]
    assert confirmed_best_role(rows, MAX_ACC) == "tuned #2"
    assert confirmed_best_role(rows, Objective("val_acc", "min")) == "tuned #1"


def test_a_tie_in_mean_goes_to_the_better_ranked_tuned_configuration():
    rows = [
        *_rows("tuned #2", "b", [0.6, 0.8], [0, 0]),
        *_rows("tuned #1", "a", [0.7, 0.7], [0, 0]),
    ]
    assert confirmed_best_role(rows, MAX_ACC) == "tuned #1"


def test_roles_are_ordered_seeds_first_then_tuned_by_rank():
    rows = [{"role": r} for r in ("tuned #10", "tuned #2", "seed custom", "seed baseline")]
    assert roles_in_order(rows, ["seed baseline", "seed custom"]) == [
        "seed baseline", "seed custom", "tuned #2", "tuned #10",
    ]  # fmt: skip


def _confirmation(rows: list[dict], seeds: list[str]) -> Confirmation:
    return Confirmation(
        rows=rows,
        roles=roles_in_order(rows, seeds),
        seeds=seeds,
        best=confirmed_best_role(rows, MAX_ACC),
        objective=MAX_ACC,
        test_key="test_acc",
    )


def test_sentence_says_a_clear_gain_is_significant():
    rows = [
        *_rows("seed baseline", "s", [0.5, 0.5, 0.5], [0.50, 0.52, 0.54]),
        *_rows("tuned #1", "a", [0.8, 0.8, 0.8], [0.80, 0.82, 0.84]),
    ]
    sentence = significance_sentence(_confirmation(rows, ["seed baseline"]))
    assert "gain in test_acc is significant at 0.05 against seed baseline" in sentence
    assert "not significant" not in sentence and sentence.endswith(").")


def test_sentence_says_an_overlapping_gain_is_not_significant():
    rows = [
        *_rows("seed baseline", "s", [0.5, 0.5], [0.55, 0.65]),
        *_rows("tuned #1", "a", [0.8, 0.8], [0.50, 0.70]),
    ]
    sentence = significance_sentence(_confirmation(rows, ["seed baseline"]))
    assert "is not significant at 0.05 against seed baseline" in sentence


def test_sentence_separates_a_significant_gain_from_a_significant_loss():
    rows = [
        *_rows("seed baseline", "s", [0.5] * 3, [0.50, 0.52, 0.54]),
        *_rows("seed custom", "c", [0.5] * 3, [0.90, 0.92, 0.94]),
        *_rows("tuned #1", "a", [0.8] * 3, [0.80, 0.82, 0.84]),
    ]
    sentence = significance_sentence(_confirmation(rows, ["seed baseline", "seed custom"]))
    assert "is significant at 0.05 against seed baseline" in sentence
    assert "but not against seed custom" in sentence
    assert "significantly worse than seed custom" in sentence


def test_a_confirm_file_row_without_a_seed_is_named(tmp_path):
    path = tmp_path / "confirm.json"
    path.write_text(json.dumps([{"role": "tuned #1", "trial_id": "a"}]))
    with pytest.raises(InputError, match=r"confirm.json: \[0\]\.seed: expected a training seed"):
        read_confirmation(path)


# --- the report of the checked-in experiment with a hand-made confirmation ------------------

TEST_ACC = {  # role -> (sweep trial, val_acc per seed, test_acc per seed)
    "seed baseline": ("83a65642", [0.10, 0.12, 0.14], [0.10, 0.11, 0.12]),
    "seed custom": ("ca4b25fb", [0.20, 0.22, 0.24], [0.18, 0.20, 0.22]),
    "tuned #1": ("40bf8aaf", [0.50, 0.52, 0.54], [0.40, 0.42, 0.44]),
    "tuned #2": ("6d774a91", [0.60, 0.60, 0.60], [0.50, 0.52, 0.54]),  # the best mean val_acc
}


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exp = copy_fixture("experiment", tmp_path_factory.mktemp("confirmed"))
    rows = []
    for role, (trial, val, test) in TEST_ACC.items():
        for seed, (v, t) in enumerate(zip(val, test, strict=True)):
            rows.append({
                "role": role, "trial_id": trial, "seed": seed, "run_id": f"r{len(rows)}",
                "epoch": 3, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0 - v,
                "val_acc": v, "lr": 1e-3, "test_loss": 1.0 - t, "test_acc": t,
            })  # fmt: skip
    (exp / "confirm.json").write_text(json.dumps(rows))
    write_report(exp)
    return exp


def _section(report: str, heading: str) -> str:
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {heading}"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join(lines[start + 1 : end])


def _row(section: str, label: str) -> dict[str, str]:
    table = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == label:
            return dict(zip(header, cells, strict=True))
    raise AssertionError(f"no row {label!r} in\n{section}")


def test_main_table_shows_mean_and_std_with_the_test_interval(confirmed):
    report = (confirmed / "report" / "report.md").read_text()
    main = _section(report, "Confirmed over 3 training seeds")
    for label, role in [("seed baseline",) * 2, ("seed custom",) * 2, ("tuned best", "tuned #2")]:
        test = TEST_ACC[role][2]
        s = spread(test)
        row = _row(main, label)
        assert row["n"] == "3"
        assert row["Test Accuracy"] == f"{s.mean:.4f} ± {s.std:.4f}", label
        assert row["Test Accuracy 95% CI"] == f"[{s.low:.4f}, {s.high:.4f}]", label


def test_welch_table_and_sentence_compare_the_tuned_best_with_each_seed(confirmed):
    report = (confirmed / "report" / "report.md").read_text()
    tests = _section(report, "Tuned best vs each seed configuration")
    for seed in ("seed baseline", "seed custom"):
        expected = welch(TEST_ACC["tuned #2"][2], TEST_ACC[seed][2])
        row = _row(tests, f"tuned best vs {seed}")
        assert float(row["p"]) == pytest.approx(expected.p, rel=1e-3)
        assert float(row["Hedges' g"]) == pytest.approx(expected.hedges_g, abs=0.01)
    assert "The tuned best's (tuned #2) gain in test_acc is significant at 0.05 against " in report


def test_best_config_names_the_confirmed_configuration(confirmed):
    text = (confirmed / "report" / "best_config.yaml").read_text()
    header = text.splitlines()[0]
    assert "confirmed over 3 training seeds: tuned #2, sweep trial 6d774a91" in header
    params = json.loads((confirmed / "trial_6d774a91" / "params.json").read_text())
    assert yaml.safe_load(text) == params


def test_report_tex_has_report_mds_tables_in_report_mds_order(confirmed):
    tex = (confirmed / "report" / "report.tex").read_text()
    report = (confirmed / "report" / "report.md").read_text()
    captions = re.findall(r"^\\caption\{(.*)\}$", tex, flags=re.MULTILINE)
    headings = [latex_escape(line[3:]) for line in report.splitlines() if line.startswith("## ")]
    shared = [h for h in headings if h in captions]
    assert shared[0].startswith("Confirmed over 3 training seeds: seed configurations vs tuned")
    assert len(shared) >= 3 and [c for c in captions if c in shared] == shared
