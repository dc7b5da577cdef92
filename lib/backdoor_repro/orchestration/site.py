"""The static results site of one profile (issue 30): ``site/<profile>/index.html`` with the results matrix
(:mod:`.matrix`), a page per executed notebook (nbconvert's HTML export, images embedded, no script from the
network), a page per table and the figures, all in one folder that works offline, served or from ``file://``::

    python -m backdoor_repro.orchestration.site --profile smoke
    python -m backdoor_repro.orchestration.site --profile fast-dry-run --root OUT --notebooks DIR --out DIR

``run_all.sh`` builds it once a run's notebooks have published. The site is generated, never committed (``/site/``
is ignored by git): everything in it is derived from the committed tables, figures and executed notebooks. It is
written into a temporary folder beside its place and moved there at the end: a failed or killed build leaves the
previous site as it was.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import sys
from pathlib import Path

from ..paths import output_root, project_root
from .matrix import PAPERS, matrix, profiles_on_disk
from .site_html import csv_table, index_page, markdown_table, table_page

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
TABLE_FILES = (".csv", ".md", ".tex")
# nbconvert's lab template without require.js, MathJax and mermaid (loaded from a CDN; the notebooks need none), and a
# link back to the index
NOTEBOOK_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block body_header -%}{{ super() }}
<nav style="padding: 1rem 0 0 1rem"><a href="index.html">&larr; results matrix</a> ({{ resources.site_profile }})</nav>
{%- endblock body_header -%}
"""


def executed_notebooks(folder: Path) -> list[Path]:
    """The executed notebooks in ``folder`` (not the running or failed ones), the papers' order first."""
    found = {p.stem: p for p in folder.glob("*.ipynb") if not p.name.startswith(".")} if folder.is_dir() else {}
    order = [p.notebook for p in PAPERS]
    return [found[n] for n in sorted(found, key=lambda n: (order.index(n) if n in order else len(order), n))]


def notebook_html(path: Path, profile: str) -> str:
    """``path`` as one HTML page, its images embedded."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(template_name="lab", template_file="site_notebook.html.j2", embed_images=True,
                            extra_loaders=[DictLoader({"site_notebook.html.j2": NOTEBOOK_TEMPLATE})])
    body, _ = exporter.from_notebook_node(nbformat.read(path, as_version=4), resources={
        "site_profile": profile, "metadata": {"name": path.stem, "path": str(path.parent)}})
    return body


def check_inputs(profile: str, root: Path, notebooks: Path, given: bool) -> None:
    """Refuse a bad run name, a ``--notebooks`` folder that is not there, or a profile with nothing to show, before
    anything is written."""
    if not RUN_NAME.fullmatch(profile):
        raise ValueError(f"--profile must be a run name such as smoke or fast-gtsrb (letters, digits, '.', '_', '-'), "
                         f"got {profile!r}")
    if given and not notebooks.is_dir():
        raise FileNotFoundError(f"--notebooks {notebooks} is not a folder")
    outputs = any((root / kind / profile).is_dir() for kind in ("tables", "figures"))
    if not outputs and not executed_notebooks(notebooks):
        known = ", ".join(profiles_on_disk(root)) or "none"
        raise FileNotFoundError(f"nothing to build for profile {profile!r}: no tables/{profile} or figures/{profile} "
                                f"under {root} and no executed notebook in {notebooks} (profiles with outputs: "
                                f"{known})")
    try:
        import nbconvert  # noqa: F401
    except ImportError as error:
        raise ImportError("the site needs nbconvert: pip install nbconvert (it is in the package's dependencies)") \
            from error


def write_site(folder: Path, profile: str, root: Path, notebooks: Path) -> dict:
    """Every page and file of the site into ``folder`` (which exists); returns what it holds, counted."""
    tables, figures = root / "tables" / profile, root / "figures" / profile
    (folder / "tables").mkdir()
    (folder / "figures").mkdir()
    pages = []
    for path in executed_notebooks(notebooks):
        (folder / f"{path.stem}.html").write_text(notebook_html(path, profile), encoding="utf-8")
        pages.append(path.stem)
    stems = sorted({p.stem for p in tables.glob("*") if p.suffix in (".csv", ".md")}) if tables.is_dir() else []
    for stem in stems:
        raw = [f"{stem}{ext}" for ext in TABLE_FILES if (tables / f"{stem}{ext}").is_file()]
        for name in raw:
            shutil.copy2(tables / name, folder / "tables" / name)
        md = tables / f"{stem}.md"
        body = markdown_table(md.read_text()) if md.is_file() else csv_table((tables / f"{stem}.csv").read_text())
        (folder / "tables" / f"{stem}.html").write_text(table_page(stem, profile, body, raw), encoding="utf-8")
    records = sorted(p.name for p in tables.glob("*.json")) if tables.is_dir() else []
    for name in records:
        shutil.copy2(tables / name, folder / "tables" / name)
    pictures = sorted(p.stem for p in figures.glob("*.png")) if figures.is_dir() else []
    for stem in pictures:
        shutil.copy2(figures / f"{stem}.png", folder / "figures" / f"{stem}.png")
    profiles = profiles_on_disk(root)
    profiles = profiles if profile in profiles else [*profiles, profile]
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    built_from = (f"Built {when} from {tables}, {figures} and the executed notebooks in {notebooks} "
                  f"(python -m backdoor_repro.orchestration.site --profile {profile}).")
    (folder / "index.html").write_text(index_page(profile, matrix(root, profiles), profiles, pages, stems, pictures,
                                                  records, built_from), encoding="utf-8")
    return {"notebooks": len(pages), "tables": len(stems), "figures": len(pictures)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(out: Path) -> None:
    """The temporary and replaced folders that killed builds of ``out`` left (``.<name>.tmp-<pid>``, ``.old-<pid>``)."""
    for leftover in out.parent.glob(f".{out.name}.*-*"):
        match = re.fullmatch(rf"\.{re.escape(out.name)}\.(?:tmp|old)-(\d+)", leftover.name)
        if match and int(match[1]) != os.getpid() and not _alive(int(match[1])):
            shutil.rmtree(leftover, ignore_errors=True)


def build_site(profile: str, root: Path | None = None, notebooks: Path | None = None,
               out: Path | None = None) -> tuple[Path, dict]:
    """Build the site of ``profile`` from ``root``'s ``tables/<profile>`` and ``figures/<profile>`` (default: the
    output root) and the executed notebooks in ``notebooks`` (default: ``notebooks/executed/<profile>`` under the
    root, else under the checkout) into ``out`` (default ``<root>/site/<profile>``). Returns ``out`` and the counts."""
    root = Path(root) if root is not None else output_root()
    given = notebooks is not None
    if notebooks is None:
        notebooks = root / "notebooks" / "executed" / profile
        if not notebooks.is_dir():
            notebooks = project_root() / "notebooks" / "executed" / profile
    notebooks = Path(notebooks)
    check_inputs(profile, root, notebooks, given)
    out = Path(out) if out is not None else root / "site" / profile
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        counts = write_site(tmp, profile, root, notebooks)
        if out.exists():
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old.exists():  # the previous site back in its place
                os.rename(old, out)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out, counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backdoor_repro.orchestration.site", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, help="the run name: smoke, cpu, fast, paper, or with a dataset or "
                                                         "dry-run suffix (fast-gtsrb, fast-dry-run)")
    parser.add_argument("--root", type=Path, help="the folder holding tables/ and figures/ (default: "
                                                  "$BACKDOOR_REPRO_OUTPUT, else the checkout)")
    parser.add_argument("--notebooks", type=Path, help="the executed notebooks (default: notebooks/executed/<profile> "
                                                       "under the root, else under the checkout)")
    parser.add_argument("--out", type=Path, help="where the site goes (default: <root>/site/<profile>)")
    args = parser.parse_args(argv)
    try:
        out, counts = build_site(args.profile, args.root, args.notebooks, args.out)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"site: {out / 'index.html'} (" + ", ".join(f"{kind}: {n}" for kind, n in counts.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
