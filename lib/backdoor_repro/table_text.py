"""The Markdown and LaTeX text of a table: plain row labels (index levels become columns), two decimals, ``--`` for
a missing number, and every LaTeX special escaped so that each ``.tex`` file compiles on its own inside a document
that loads ``booktabs``."""
from __future__ import annotations

import math
import numbers

import pandas as pd

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
# characters the library's texts use that pdflatex's default set-up cannot typeset as they are
LATEX_SYMBOLS = {"±": r"\ensuremath{\pm}", "−": r"\ensuremath{-}", "×": r"\ensuremath{\times}",
                 "→": r"\ensuremath{\rightarrow}", "≥": r"\ensuremath{\geq}", "≤": r"\ensuremath{\leq}",
                 "≈": r"\ensuremath{\approx}", "∪": r"\ensuremath{\cup}", "·": r"\ensuremath{\cdot}", "—": "---",
                 "–": "--", "α": r"\ensuremath{\alpha}", "β": r"\ensuremath{\beta}", "γ": r"\ensuremath{\gamma}",
                 "δ": r"\ensuremath{\delta}", "ε": r"\ensuremath{\varepsilon}", "λ": r"\ensuremath{\lambda}",
                 "μ": r"\ensuremath{\mu}", "ξ": r"\ensuremath{\xi}", "σ": r"\ensuremath{\sigma}",
                 "τ": r"\ensuremath{\tau}", "Δ": r"\ensuremath{\Delta}", "²": r"\textsuperscript{2}"}
MISSING = "--"


def latex_escape(text) -> str:
    """``text`` with every LaTeX special character escaped and the library's symbols written as LaTeX."""
    return "".join(LATEX_SPECIALS.get(ch) or LATEX_SYMBOLS.get(ch) or ch for ch in str(text))


def label(value) -> str:
    """A column or row label as plain text: the levels of a tuple (a MultiIndex entry) joined by `` / ``."""
    if isinstance(value, tuple):
        return " / ".join(str(v) for v in value if str(v) != "")
    return str(value)


def flat(frame: pd.DataFrame, index: bool = True) -> pd.DataFrame:
    """``frame`` with its index levels as leading columns (``index``; a default RangeIndex is dropped) and plain
    column labels."""
    if index and not (isinstance(frame.index, pd.RangeIndex) and frame.index.name is None):
        frame = frame.reset_index()
    else:
        frame = frame.reset_index(drop=True)
    out = frame.copy()
    out.columns = [label(c) for c in frame.columns]
    return out


def cell_text(value) -> str:
    """One cell as text: numbers with two decimals (whole ones as they are), a missing value as ``--``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return MISSING
    if isinstance(value, (bool, numbers.Integral)):
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{float(value):.2f}"
    return str(value)


def to_markdown(frame: pd.DataFrame, index: bool = True, caption: str | None = None) -> str:
    """A GitHub Markdown table of ``frame`` (index levels as columns), ``caption`` as a line above it."""
    table = flat(frame, index).to_markdown(index=False, floatfmt=".2f")
    return (f"{caption}\n\n" if caption else "") + table + "\n"


def to_latex(frame: pd.DataFrame, index: bool = True, caption: str | None = None) -> str:
    """A booktabs ``tabular`` of ``frame`` (index levels as columns), every header and cell escaped; numeric columns
    right-aligned; ``caption`` as a comment line above it."""
    table = flat(frame, index)
    align = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
                    else "l" for c in table.columns)
    row = lambda cells: " & ".join(latex_escape(c) for c in cells) + r" \\"  # noqa: E731
    lines = ([f"% {' '.join(caption.split())}"] if caption else []) + [
        rf"\begin{{tabular}}{{{align}}}", r"\toprule", row(table.columns), r"\midrule",
        *(row(cell_text(v) for v in values) for values in table.itertuples(index=False, name=None)),
        r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
