"""analysis/formats.py: report.tex holds the report's tables as booktabs LaTeX, escaped, with ±
where a cell has a spread; report.html is report.md as one self-contained page (no headless
browser on the test machines: it is parsed with html.parser), every plot embedded as the PNG
the report wrote and nothing fetched from a network."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from support import copy_fixture

from visiontune.analysis.formats import html_document, latex_escape, latex_table
from visiontune.analysis.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Elements(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exp = copy_fixture("experiment", tmp_path_factory.mktemp("formats"))
    return write_report(exp)


def test_latex_table_is_booktabs_with_a_row_per_frame_row():
    cells = pd.DataFrame({"": ["seed", "tuned best"], "Test Accuracy": ["0.61", "0.77"]})
    lines = latex_table("Seed vs tuned", cells).splitlines()
    rules = [lines.index(r"\toprule"), lines.index(r"\midrule"), lines.index(r"\bottomrule")]
    assert rules == sorted(rules)
    assert lines[rules[0] + 1] == r" & Test Accuracy \\"
    assert lines[rules[1] + 1 : rules[2]] == [r"seed & 0.61 \\", r"tuned best & 0.77 \\"]
    assert r"\begin{tabular}{lr}" in lines and r"\caption{Seed vs tuned}" in lines


def test_latex_escape_writes_plus_minus_as_math_and_escapes_specials():
    assert latex_escape("0.8142 ± 0.0123") == r"0.8142 $\pm$ 0.0123"
    assert latex_escape("val_acc 50% #1 & {x}") == r"val\_acc 50\% \#1 \& \{x\}"
    assert latex_escape("—") == "---"


def test_report_tex_holds_each_role_of_the_main_table_as_in_report_md(reported):
    tex = (reported / "report.tex").read_text()
    report = (reported / "report.md").read_text()
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") >= 1
    assert r"\usepackage{booktabs}" in tex and tex.rstrip().endswith(r"\end{document}")
    for role in ("seed baseline", "seed custom", "tuned best"):
        cells = next(line for line in report.splitlines() if line.startswith(f"| {role} "))
        values = [c.strip() for c in cells.strip("|").split("|")]
        assert " & ".join(values) + r" \\" in tex.splitlines()


def test_report_html_embeds_each_plot_as_the_png_the_report_wrote(reported):
    elements = Elements((reported / "report.html").read_text())
    sources = [attrs["src"] for tag, attrs in elements.tags if tag == "img"]
    pngs = {path.read_bytes() for path in reported.glob("*.png")}
    assert len(sources) == len(pngs) == 3
    prefix = "data:image/png;base64,"
    assert all(src.startswith(prefix) for src in sources)
    embedded = {base64.b64decode(src.removeprefix(prefix), validate=True) for src in sources}
    assert embedded == pngs and all(data.startswith(PNG_MAGIC) for data in embedded)


def test_report_html_references_nothing_outside_itself(reported):
    elements = Elements((reported / "report.html").read_text())
    assert not [tag for tag, _ in elements.tags if tag in ("script", "link", "iframe", "object")]
    for tag, attrs in elements.tags:
        for name in ("src", "href", "srcset", "data", "action"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "ftp:")), (tag, name, value)


def test_report_html_renders_the_report_tables_and_headings(reported):
    elements = Elements((reported / "report.html").read_text())
    tags = [tag for tag, _ in elements.tags]
    report = (reported / "report.md").read_text()
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert tags.count("h2") == len(headings) and tags.count("table") >= 2
    assert "tuned best" in "".join(elements.text)


def test_html_shows_raw_html_in_the_report_text_as_text():
    page = html_document(
        "t", "- errored trial `x`: <script>alert(1)</script> <img src=http://a>", {}
    )
    elements = Elements(page)
    assert [tag for tag, _ in elements.tags if tag in ("script", "img")] == []
    assert "<script>alert(1)</script>" in "".join(elements.text)
