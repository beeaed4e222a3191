"""The report in the forms a paper and a browser take: report.tex (its tables as booktabs LaTeX)
and report.html (report.md rendered to one self-contained page).

report.tex is a complete document (`pdflatex report.tex`); each table is one `table` float that
can be pasted into a paper that loads booktabs. Cells arrive formatted as report.md shows them
(`mean ± std` where a row has a spread) and are escaped here. report.html embeds every plot as a
data: URI and holds no script, stylesheet or image from anywhere else: it opens offline, and can
be mailed or archived as one file. Text in report.md comes partly from the experiment (trial
errors), so raw HTML in it is shown as text, never passed through.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

import markdown
import pandas as pd

LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "—": "---",
}
STYLE = (
    "body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
    "th:first-child,td:first-child{text-align:left}"
    "img{max-width:100%;display:block;margin:1em 0}"
    "code{background:#f3f3f3;padding:0 .2em}"
)


def latex_escape(text: Any) -> str:
    return "".join(LATEX_SPECIAL.get(char, char) for char in str(text))


def latex_table(caption: str, cells: pd.DataFrame) -> str:
    """One booktabs table: the first column left-aligned (the row names), the others right."""
    spec = "l" + "r" * (len(cells.columns) - 1)
    header = " & ".join(latex_escape(c) for c in cells.columns) + r" \\"
    rows = [" & ".join(latex_escape(v) for v in row) + r" \\" for row in cells.itertuples(False)]
    return "\n".join(
        [
            r"\begin{table}[ht]",
            r"\centering\small",
            rf"\caption{{{latex_escape(caption)}}}",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            header,
            r"\midrule",
            *rows,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
        ]
    )


def latex_document(title: str, tables: Sequence[tuple[str, pd.DataFrame]]) -> str:
    """report.tex: every (caption, formatted cells) table in one article."""
    return (
        "\n\n".join(
            [
                "% Written by `visiontune report`. Compile: pdflatex report.tex; "
                "a table pasted into a paper needs \\usepackage{booktabs}.\n"
                "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n"
                "\\usepackage{booktabs}\n\\begin{document}",
                rf"\section*{{{latex_escape(title)}}}",
                *(latex_table(caption, cells) for caption, cells in tables),
                r"\end{document}",
            ]
        )
        + "\n"
    )


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_document(title: str, markdown_text: str, images: Mapping[str, bytes]) -> str:
    """report.html: `markdown_text` rendered (tables included), each `![...](FILE)` of `images`
    embedded as a data: URI."""
    shown_as_text = markdown_text.replace("<", "&lt;")  # no raw HTML from the experiment's text
    body = markdown.markdown(shown_as_text, extensions=["tables"], output_format="html")
    for name, png in images.items():
        body = body.replace(f'src="{html.escape(name)}"', f'src="{data_uri(png)}"')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
