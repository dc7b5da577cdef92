"""The results site in a real browser (issue 30): the site of the committed smoke outputs, built into a temporary
folder, opened page by page in headless Chromium over localhost. Every image is rendered (naturalWidth > 0), every
local link resolves (HTTP 200, and an anchor's target exists), nothing loads from the network, the index shows the
results matrix; a screenshot of the index is kept in the test's temporary folder (its path is printed)."""
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlparse, unquote

import pytest

from backdoor_repro.orchestration.matrix import PAPERS
from backdoor_repro.orchestration.site import build_site, executed_notebooks
from site_browser import chromium, find_browser, full_page_screenshot, page_state, serve

REPO = Path(__file__).resolve().parents[1]
EXECUTED = REPO / "notebooks" / "executed" / "smoke"


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_page_of_the_smoke_site_renders_its_images_and_its_links_resolve(tmp_path):
    find_browser()  # skips, naming what is missing, before anything is built
    site, counts = build_site("smoke", root=REPO, notebooks=EXECUTED, out=tmp_path / "site" / "smoke")
    assert counts["notebooks"] == len(executed_notebooks(EXECUTED)) > 0
    pages = ["index.html", *sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                                   if p.name != "index.html")]
    with serve(site) as base, chromium(tmp_path / "chromium-profile") as driver:
        checked, local = {}, set()
        for page in pages:
            state = page_state(driver, base + page)
            assert state["title"], page
            broken = [i["src"][:80] for i in state["images"] if not (i["complete"] and i["width"] > 0)]
            assert not broken, f"{page}: images not rendered: {broken}"
            remote = [u for u in state["loads"] if not u.startswith(base) and not u.startswith("data:")]
            assert not remote, f"{page} loads from the network: {remote}"
            for url in state["links"] + state["loads"]:
                if not url.startswith(base):
                    continue  # links out of the site (the papers, repositories) are not followed
                target, fragment = urldefrag(url)
                local.add(target)
                if fragment and target == base + page:  # the raw id first, then the decoded one (as HTML does)
                    assert {fragment, unquote(fragment)} & set(state["ids"]), f"{page}: no element #{fragment}"
            checked[page] = state
        missing = {url: code for url in sorted(local) if (code := status(url)) != 200}
        assert not missing, f"links that do not resolve: {missing}"
        # the index: the matrix (a status per item and profile), a link to every notebook page and every figure shown
        index = checked["index.html"]
        for notebook in executed_notebooks(EXECUTED):
            assert base + f"{notebook.stem}.html" in index["links"], notebook.stem
        shown = {urlparse(i["src"]).path.rsplit("/", 1)[-1] for i in index["images"]}
        assert shown == {p.name for p in (REPO / "figures" / "smoke").glob("*.png")}
        driver.get(base + "index.html")
        statuses = driver.find_elements("css selector", "td span.status")
        items = sum(len(p.items) for p in PAPERS)
        assert len(statuses) >= items and {s.text for s in statuses} <= {"reproduced", "partly", "not"}
        shot = full_page_screenshot(driver, tmp_path / "index.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot of the smoke site's index: {shot}")
