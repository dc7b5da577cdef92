"""Table files that read as written: every LaTeX special escaped in headers, row labels and cells (the writer on
awkward names, and every committed ``.tex``), plain row labels in Markdown, one LaTeX document that compiles with
all committed tables (where pdflatex exists), and every column and metric of the committed CSVs defined in
``tables/README.md``."""
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from backdoor_repro import report
from backdoor_repro.table_text import LATEX_SPECIALS, LATEX_SYMBOLS, latex_escape, to_latex

REPO = Path(__file__).resolve().parents[1]
TABLES = REPO / "tables"
COMMITTED_TEX = sorted(TABLES.glob("*/*.tex"))
COMMITTED_CSV = sorted(p for p in TABLES.glob("*/*.csv") if p.parent.name != "reported")
AWKWARD = "".join(LATEX_SPECIALS) + " " + "".join(LATEX_SYMBOLS)
STRUCTURE = ("\\begin{tabular}", "\\toprule", "\\midrule", "\\bottomrule", "\\end{tabular}")
ESCAPED = re.compile(r"\\(?:[&%$#_{}]|text(?:backslash|asciitilde|asciicircum|less|greater|bar)\{\}"
                     r"|ensuremath\{(?:\\[A-Za-z]+|-)\}|textsuperscript\{\d\})")


def unescaped(tex: str) -> list[str]:
    """The cells of ``tex``'s rows holding a LaTeX special or a non-ASCII character outside an escape (the column
    separators, the unescaped ``&``, and the row ends are the table's own)."""
    bad = []
    for line in tex.splitlines():
        if line.startswith("%") or line.startswith(STRUCTURE):
            continue
        if not line.endswith(" \\\\"):
            bad.append(line)
            continue
        for cell in re.split(r"(?<!\\)&", line[:-3]):
            rest = ESCAPED.sub("", cell)
            if re.search(r"[\\&%$#_{}~^<>|]", rest) or not rest.isascii():
                bad.append(cell)
    return bad


def test_the_writer_escapes_headers_row_labels_and_cells(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_OUTPUT", str(tmp_path))
    tidy = pd.DataFrame({"attack": ["a_1", "a_1", "b%2"], "defense": ["none", "x&y", "none"],
                         "metric": ["ASR (%)", "ASR (%)", "ACC_no_target"], "value": [99.5, 1.25, 3.0]})
    paths = report.write_table(tidy, "awkward_wide", "smoke", index=["attack", "defense"], columns="metric",
                               caption="smoke profile: 100 training images")
    tex, md = paths["tex"].read_text(), paths["md"].read_text()
    assert r"attack & defense & ASR (\%) & ACC\_no\_target \\" in tex and r"a\_1 & x\&y & 1.25 & -- \\" in tex
    assert r"b\%2 & none & -- & 3.00 \\" in tex  # a missing number: --
    assert tex.startswith("% smoke profile: 100 training images\n") and not unescaped(tex)
    assert md.startswith("smoke profile: 100 training images\n\n") and "('" not in md  # no tuple as a row label
    assert [c.strip() for c in md.splitlines()[2].split("|")[1:-1]] == ["attack", "defense", "ASR (%)",
                                                                       "ACC_no_target"]
    frame = pd.DataFrame({AWKWARD: [AWKWARD, "plain"], "n": [1, 2], "x": [0.125, None]})
    tex = report.write_frame(frame, "awkward_frame", "smoke")["tex"].read_text()
    assert not unescaped(tex) and tex.count(latex_escape(AWKWARD)) == 2 and r"plain & 2 & -- \\" in tex
    assert pd.read_csv(tmp_path / "tables" / "smoke" / "awkward_frame.csv").equals(frame)


def test_a_multiindex_becomes_plain_columns_and_tuples_in_labels_are_joined():
    view = pd.DataFrame({("ACC", "mean"): [1.0]}, index=pd.MultiIndex.from_tuples([("g", 0)], names=["attack", "seed"]))
    tex = to_latex(view)
    assert r"attack & seed & ACC / mean \\" in tex and r"g & 0 & 1.00 \\" in tex


def test_every_committed_tex_table_is_escaped():
    assert COMMITTED_TEX, "no committed .tex table found"
    bad = {p.relative_to(TABLES).as_posix(): unescaped(p.read_text()) for p in COMMITTED_TEX}
    assert not {k: v for k, v in bad.items() if v}


def test_no_committed_markdown_table_prints_a_tuple_as_a_row_label():
    tuples = [p.name for p in sorted(TABLES.glob("*/*.md")) if p.name != "README.md" and "| ('" in p.read_text()]
    assert not tuples


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not on PATH (Debian: texlive-latex-base "
                                                              "and texlive-latex-recommended for booktabs)")
def test_one_document_with_every_committed_table_compiles(tmp_path):
    (tmp_path / "awkward.tex").write_text(to_latex(pd.DataFrame({AWKWARD: [AWKWARD], "v": [1.5]}), index=False,
                                                   caption=AWKWARD))
    inputs = [p.resolve().as_posix() for p in COMMITTED_TEX] + ["awkward.tex"]
    (tmp_path / "tables.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                         + "".join(f"\\input{{{p}}}\\par\\bigskip\n" for p in inputs)
                                         + "\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 0


def _defined_names() -> list[re.Pattern]:
    """The names the README's tables define (backticked in a row's first cell); ``<...>`` stands for any text."""
    names = []
    for line in (TABLES / "README.md").read_text().splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([^`]+)`", line.split(" | ")[0])
    return [re.compile(re.sub(r"<[^<>]+>", ".+", re.escape(n))) for n in names]


def test_every_committed_column_and_metric_is_defined_in_the_tables_readme():
    defined = _defined_names()
    assert len(defined) > 50
    used = {}
    for path in COMMITTED_CSV:
        frame = pd.read_csv(path)
        names = list(frame.columns) + (list(frame["metric"].dropna().unique()) if {"metric", "value"} <= set(frame)
                                       else [])
        for name in names:
            used.setdefault(name, path.name)
    undefined = {name: where for name, where in used.items() if not any(p.fullmatch(name) for p in defined)}
    assert not undefined
