"""The HTML of the results site (:mod:`.site` writes it): the page shell, a table rendered from its ``.md`` or
``.csv`` file, and the index with the results matrix (:mod:`.matrix`). Pure functions from data to text; every
link they write is relative to the site's folder (``site/<profile>/``), which holds everything it links to."""
from __future__ import annotations

import csv
import io
from html import escape

from .matrix import PAPERS, STATUSES, Cell

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 78rem; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; vertical-align: top; text-align: left; }
th { background: #f2f2f2; }
.status { font-weight: bold; padding: 0.1rem 0.4rem; border-radius: 0.3rem; white-space: nowrap; }
.reproduced { background: #c8efc8; } .partly { background: #fbe7b5; } .not { background: #f3c9c9; }
.why { color: #555; font-size: 0.8rem; } .links { font-size: 0.85rem; }
.gallery { display: flex; flex-wrap: wrap; gap: 1rem; }
.gallery figure { margin: 0; width: 22rem; } .gallery img { width: 100%; border: 1px solid #ddd; }
nav { margin-bottom: 1rem; }
"""
STATUS_MEANING = {
    "reproduced": "every output is written and every claim that judges the item holds",
    "partly": "written, but some outputs are missing, or the claims that judge it are not testable at this scale, "
              "not run or mixed, or no claim judges it",
    "not": "nothing written for it on this profile (or by this companion), or its claims fail and none holds",
}


def page(title: str, body: str, back: str | None = None) -> str:
    """A whole HTML page; ``back``: the relative link to the index, shown at the top."""
    nav = f'<nav><a href="{escape(back)}">&larr; results matrix</a></nav>\n' if back else ""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{nav}<h1>{escape(title)}</h1>\n{body}\n</body>\n</html>\n")


def csv_table(text: str) -> str:
    """A CSV file's text as an HTML table, its first row the header."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return "<p>(empty table)</p>"
    head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>\n" for row in rows[1:])
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def markdown_table(text: str) -> str:
    """A Markdown table file (pipe tables) as HTML, any raw HTML in it escaped."""
    import mistune  # nbconvert's Markdown renderer
    return mistune.create_markdown(escape=True, plugins=["table"])(text)


def table_page(stem: str, profile: str, body: str, raw: list[str]) -> str:
    """The page of table ``stem``: its HTML and links to the raw files (``raw``: their names, beside the page)."""
    files = " &middot; ".join(f'<a href="{escape(name)}">{escape(name)}</a>' for name in raw)
    return page(f"{stem} ({profile})", f'<p class="links">files: {files}</p>\n{body}', back="../index.html")


def _cell_html(cell: Cell, links: bool) -> str:
    html = f'<span class="status {cell.status}">{cell.status}</span><div class="why">{escape(cell.why)}</div>'
    if links and cell.found:
        items = []
        for output in cell.found:
            kind, stem = output.split("/", 1)
            href = f"tables/{stem}.html" if kind == "tables" else f"figures/{stem}.png"
            items.append(f'<a href="{escape(href)}">{escape(stem)}{"" if kind == "tables" else " (figure)"}</a>')
        html += f'<div class="links">{", ".join(items)}</div>'
    return html


def matrix_table(cells: dict, profiles: list[str], current: str, notebook_pages: set[str]) -> str:
    """The results matrix: a row per item of every paper, a column per profile; the ``current`` profile's cells link
    to its outputs, and each paper's name to its notebook's page where one is in ``notebook_pages``."""
    head = "".join(f"<th>{escape(p)}</th>" for p in profiles)
    rows = []
    for paper in PAPERS:
        name = escape(paper.title)
        if paper.notebook in notebook_pages:
            name = f'<a href="{escape(paper.notebook)}.html">{name}</a>'
        rows.append(f'<tr><th colspan="{2 + len(profiles)}">{name} <span class="why">(spec: '
                    f'shared/{escape(paper.spec)}; notebook: {escape(paper.notebook)})</span></th></tr>')
        for item in paper.items:
            status = "".join(f"<td>{_cell_html(cells[(paper.key, item.id)][p], p == current)}</td>" for p in profiles)
            rows.append(f"<tr><td>{escape(item.id)}</td><td>{escape(item.what)}</td>{status}</tr>")
    body = "\n".join(rows)
    return f"<table>\n<thead><tr><th>item</th><th>what</th>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def counts_line(cells: dict, profile: str) -> str:
    """How many items are reproduced, partly, not on ``profile``."""
    counts = {s: sum(1 for by_profile in cells.values() if by_profile[profile].status == s) for s in STATUSES}
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def index_page(profile: str, cells: dict, profiles: list[str], notebooks: list[str], tables: list[str],
               figures: list[str], records: list[str], built_from: str) -> str:
    """The site's index: the matrix, then every notebook, table, figure and run record of ``profile``."""
    legend = "".join(f'<li><span class="status {s}">{s}</span>: {escape(m)}</li>' for s, m in STATUS_MEANING.items())
    notebook_links = "".join(f'<li><a href="{escape(n)}.html">{escape(n)}</a></li>' for n in notebooks)
    table_links = ", ".join(f'<a href="tables/{escape(t)}.html">{escape(t)}</a>' for t in tables)
    record_links = ", ".join(f'<a href="tables/{escape(r)}">{escape(r)}</a>' for r in records)
    gallery = "".join(f'<figure><a href="figures/{escape(f)}.png"><img src="figures/{escape(f)}.png" alt="{escape(f)}">'
                      f"</a><figcaption>{escape(f)}</figcaption></figure>" for f in figures)
    body = f"""<p>{escape(built_from)}</p>
<h2>Results matrix</h2>
<p>Each paper's tables and figures (the items of its spec), judged from the outputs on disk and the verdicts of the
notebook's claims table (<code>tables/&lt;profile&gt;/&lt;notebook&gt;_claims.csv</code>). On {escape(profile)}:
{escape(counts_line(cells, profile))}.</p>
<ul>{legend}</ul>
{matrix_table(cells, profiles, profile, set(notebooks))}
<h2>Executed notebooks</h2>
<ul>{notebook_links or "<li>none</li>"}</ul>
<h2>Tables</h2>
<p class="links">{table_links or "none"}</p>
<h2>Run records</h2>
<p class="links">{record_links or "none"}</p>
<h2>Figures</h2>
<div class="gallery">{gallery or "<p>none</p>"}</div>"""
    return page(f"backdoor-repro: results on the {profile} profile", body)
