"""A module fixture ``browser``: Debian's Chromium, headless, driven by Playwright.

Import it into a test module (``from tests.integration.browser import browser``)
to use it. Playwright's own browser downloads are never used: the fixture
launches the system's ``chromium`` (``/usr/bin/chromium`` on Debian) with
everything that would reach the network turned off. Tests using it skip, saying
why, when the ``playwright`` module or the browser is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
)
SKIP_HINT = "(Debian: apt-get install chromium; pip install playwright, without 'playwright install')"


def find_chromium() -> str | None:
    """The path of the system's Chromium, or None."""
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium `playwright.sync_api.Browser`, shared by one test module.

    Not by the session: while Playwright's synchronous API is open it keeps an event
    loop running in the main thread, and every later test that calls asyncio.run()
    would fail.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"the playwright module is not installed {SKIP_HINT}")
    executable = find_chromium()
    if executable is None:
        pytest.skip(f"chromium is not installed {SKIP_HINT}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_ARGS), timeout=60_000
        )
        try:
            yield chromium
        finally:
            chromium.close()
