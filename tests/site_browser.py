"""Headless Chromium for tests/test_site.py: Debian's ``chromium`` driven by selenium through its ``chromedriver``
(both from apt: ``chromium chromium-driver``; run_tests.sh installs them where it can), pages served by a localhost
``http.server``. Where selenium, a Chromium or its driver cannot be found, the test is skipped, naming what is
missing; ``BACKDOOR_REPRO_CHROMIUM`` and ``BACKDOOR_REPRO_CHROMEDRIVER`` point at other copies."""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = "apt-get install chromium chromium-driver (Debian/Ubuntu)"

# what a page shows: its images (loaded or not), every URL it links to or loads, and the ids anchors can point at
PAGE_STATE = """
const abs = (u) => new URL(u, document.baseURI).href;
return {
  images: [...document.images].map(i => ({src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth})),
  links: [...document.querySelectorAll('a[href]')].map(a => abs(a.getAttribute('href'))),
  loads: [...document.querySelectorAll('img[src], script[src], link[href], iframe[src], source[src]')]
           .map(e => abs(e.getAttribute('src') || e.getAttribute('href'))),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  title: document.title,
};
"""


def find_browser() -> tuple[str, str]:
    """The paths of a Chromium and its chromedriver; skips the test, naming what is missing, where there are none."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("no selenium: pip install -e .[test]")
    browser = os.environ.get("BACKDOOR_REPRO_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not browser or not Path(browser).exists():
        pytest.skip(f"no Chromium found ({', '.join(BROWSERS)}; or set BACKDOOR_REPRO_CHROMIUM): {INSTALL}")
    driver = os.environ.get("BACKDOOR_REPRO_CHROMEDRIVER") or shutil.which("chromedriver")
    if not driver or not Path(driver).exists():
        pytest.skip(f"no chromedriver found beside {browser} (or set BACKDOOR_REPRO_CHROMEDRIVER): {INSTALL}")
    return browser, driver


@contextlib.contextmanager
def serve(folder: Path):
    """``folder`` over HTTP on localhost (a free port); yields the base URL."""
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            if not isinstance(sys.exc_info()[1], ConnectionError):  # the browser dropped a request as it moved on
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium(user_data_dir: Path, width: int = 1400, height: int = 1000):
    """A headless Chromium with a fresh profile in ``user_data_dir``; skips if this machine's Chromium cannot start
    (e.g. a chromedriver of another version)."""
    from selenium import webdriver
    from selenium.common.exceptions import SessionNotCreatedException
    from selenium.webdriver.chrome.service import Service
    browser, driver_path = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    except SessionNotCreatedException as error:
        pytest.skip(f"{browser} did not start under {driver_path}: {error.msg}")
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def page_state(driver, url: str) -> dict:
    """Open ``url`` (waits for its load event) and return what :data:`PAGE_STATE` reads off it."""
    driver.get(url)
    return driver.execute_script(PAGE_STATE)


def full_page_screenshot(driver, path: Path, width: int = 1400, max_height: int = 8000) -> Path:
    """The whole current page (up to ``max_height`` pixels) as a PNG at ``path``."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(int(height), 600), max_height))
    driver.save_screenshot(str(path))
    return path
