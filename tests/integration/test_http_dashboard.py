"""The device dashboard example (examples/device_dashboard) in real headless Chromium.

The example runs as a subprocess on a free 127.0.0.1 port, with its state in
pytest's tmp_path, and is stopped by PID. The browser test drives Debian's
Chromium through Playwright (fixture in tests/integration/browser.py); the
smoke tests need no browser. Nothing waits on a clock except Playwright's and
the subprocess's bounded waits; the page counts what it received (data
attributes) and the test reads the counts.
"""

from __future__ import annotations

import importlib.util
import json
import re
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests.integration.browser import browser

__all__ = ["browser"]  # the fixture, imported to be used here

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "device_dashboard" / "app.py"
TIMEOUT = 30.0  # seconds: one bound for every wait
URL_LINE = re.compile(r"device dashboard on (http://127\.0\.0\.1:\d+/)")


@dataclass
class Dashboard:
    url: str
    state_dir: Path
    process: subprocess.Popen[str]


def stop(process: subprocess.Popen[str]) -> None:
    """Stop the example by its PID: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def read_url(process: subprocess.Popen[str]) -> str:
    """Wait (bounded) for the example's first line, which names its URL."""
    assert process.stdout is not None
    deadline = time.monotonic() + TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(deadline - time.monotonic()):
                continue
            line = process.stdout.readline()
            if not line:
                break
            match = URL_LINE.search(line)
            if match:
                return match.group(1)
    raise AssertionError(f"the example printed no URL (exit status {process.poll()})")


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    state_dir = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--host", "127.0.0.1", "--port", "0", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield Dashboard(read_url(process), state_dir, process)
        assert process.poll() is None, "the example exited while being tested"
    finally:
        stop(process)
    assert process.returncode == 0, f"the example ended with status {process.returncode}"


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.status, dict(response.headers), response.read()


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("device_dashboard_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


# -------------------------------------------------------------- smoke tests


def test_example_starts_and_answers_cpu_as_json(dashboard: Dashboard) -> None:
    status, headers, body = get(dashboard.url + "api/cpu")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert set(data) == {"cpu", "source", "time", "cpus"}
    assert data["cpu"] is None or 0.0 <= data["cpu"] <= 100.0
    assert data["source"] in ("proc", "loadavg", "unavailable")


def test_example_page_and_form_without_a_browser(dashboard: Dashboard) -> None:
    _, headers, page = get(dashboard.url)
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<h1 id="title">tether-device</h1>' in page
    assert b"<!--#" not in page  # every directive was replaced

    form = urllib.parse.urlencode({"device_name": "<pump 7>", "cpu_alarm": "42", "led": "on"}).encode()
    request = urllib.request.Request(dashboard.url + "save", data=form, method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # follows the 303
        assert response.url == dashboard.url + "?saved=1"
        page = response.read()
    assert b'<h1 id="title">&lt;pump 7&gt;</h1>' in page  # escaped by the SSI handler
    assert b"Settings saved." in page
    saved = json.loads((dashboard.state_dir / "settings.json").read_text())
    assert saved == {"device_name": "<pump 7>", "led": True, "cpu_alarm": 42}
    assert [p.name for p in dashboard.state_dir.iterdir()] == ["settings.json"]  # no temporary left

    bad = urllib.parse.urlencode({"device_name": "pump", "cpu_alarm": "101"}).encode()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(
            urllib.request.Request(dashboard.url + "save", data=bad, method="POST"), timeout=TIMEOUT
        )
    assert info.value.code == 400
    info.value.close()
    assert json.loads((dashboard.state_dir / "settings.json").read_text()) == saved


def test_example_falls_back_without_proc(tmp_path: Path) -> None:
    example = load_example()
    sampler = example.CpuSampler(str(tmp_path / "no-stat"))
    value = sampler.sample()
    assert sampler.source in ("loadavg", "unavailable")
    assert value is None or 0.0 <= value <= 100.0
    memory = example.read_memory(str(tmp_path / "no-meminfo"))
    assert memory["percent"] is None and memory["used_mib"] is None

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    sampler = example.CpuSampler(str(stat))
    stat.write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")
    assert sampler.sample() == 50.0
    assert sampler.source == "proc"

    with pytest.raises(ValueError, match="1 to 100"):
        example.parse_settings({"device_name": "x", "cpu_alarm": "0"})
    with pytest.raises(ValueError, match="control characters"):
        example.parse_settings({"device_name": "a\x00b", "cpu_alarm": "5"})


# ------------------------------------------------------------ real Chromium


def test_dashboard_in_chromium(browser: Any, dashboard: Dashboard, tmp_path: Path) -> None:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT * 1000)
    page = context.new_page()
    console_errors: list[str] = []
    failed: list[str] = []
    page.on(
        "console", lambda message: console_errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: console_errors.append(f"uncaught: {error}"))

    def on_request_failed(request: Any) -> None:
        # Leaving a page cancels its pending requests (net::ERR_ABORTED): the browser's
        # doing, not a failure of the server. Anything else (reset, empty reply) counts.
        if request.failure != "net::ERR_ABORTED":
            failed.append(f"{request.method} {request.url}: {request.failure}")

    page.on("requestfailed", on_request_failed)
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(dashboard.url)
        # The SSI values: filled in by the server, before any script runs.
        assert page.text_content("#title") == "tether-device"
        assert page.input_value("#device_name") == "tether-device"
        assert page.input_value("#cpu_alarm") == "80"
        assert not page.is_checked("#led")
        assert page.text_content("#led-state") == "off"

        # Save the form: POST /save, 303 back to the page.
        page.fill("#device_name", "pump-7")
        page.fill("#cpu_alarm", "55")
        page.check("#led")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.url == dashboard.url + "?saved=1"
        assert page.is_visible("#saved")
        page.goto(dashboard.url)  # a fresh load shows the saved values
        assert page.text_content("#title") == "pump-7"
        assert page.input_value("#device_name") == "pump-7"
        assert page.input_value("#cpu_alarm") == "55"
        assert page.is_checked("#led")
        assert page.text_content("#led-state") == "on"
        saved = json.loads((dashboard.state_dir / "settings.json").read_text())
        assert saved == {"device_name": "pump-7", "led": True, "cpu_alarm": 55}

        # The CPU figure: polled from /api/cpu every second.
        page.wait_for_function("Number(document.getElementById('cpu').dataset.updates) >= 3")
        page.wait_for_function("/^\\d+\\.\\d %$/.test(document.getElementById('cpu').textContent)")
        assert page.evaluate("Number(document.getElementById('cpu').dataset.updates)") >= 3

        # The chart: at least three memory pushes over the WebSocket.
        page.wait_for_function("Number(document.getElementById('chart').dataset.pushes) >= 3")
        pushes = page.evaluate("Number(document.getElementById('chart').dataset.pushes)")
        assert pushes >= 3
        assert re.fullmatch(r"\d+\.\d % \(\d+ of \d+ MiB\)", page.text_content("#memory") or "")
        assert page.text_content("#ws-state") == "connected"

        screenshot = tmp_path / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 0
    finally:
        context.close()
    assert console_errors == []
    assert failed == []
