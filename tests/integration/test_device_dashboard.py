"""The device dashboard (tether.web) in real headless Chromium against a `tether run` device.

One device (the skeleton app, plus a timer that publishes an app metric) serves
the tests of this module; the OTA test runs last, as it restarts the device into
another version. Each test opens a fresh browser context and fails on any
console error, uncaught exception, failed request or HTTP status >= 400, with one
exception, named where it is made: while the device restarts into an update, the
page's attempts to reconnect are refused (Chromium logs each one).

The page exposes what the tests wait for as data attributes (``data-points``,
``data-lines``, ``data-committed``...); nothing waits on a clock but Playwright's
bounded waits. Screenshots of every panel at desktop and phone widths go to
``$TETHER_SCREENSHOTS`` when set, else to a pytest temporary directory.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.device.harness import TIMEOUT, Device, tether
from tests.integration.browser import browser

from tether.rpc.auth import digest_ha1

__all__ = ["browser"]  # the fixture, imported to be used here

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PANELS = ("status", "settings", "charts", "rpc", "logs", "files", "update")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT_MS = TIMEOUT * 1000

# The skeleton app, plus an app metric that changes every 200 ms.
METRIC_APP = """

_skeleton_init = init


def init(device):
    _skeleton_init(device)
    ticks = {"n": 0}

    def tick():
        ticks["n"] += 1
        device.metric("ticks", ticks["n"])

    device.set_timer(200, tick, repeat=True)
"""

# Every form control needs a name a screen reader can say.
UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
    .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label")
                   && !c.getAttribute("aria-labelledby"))
    .map((c) => c.id || c.outerHTML)"""


def make_app(directory: Path, version: str = "1.0") -> Path:
    result = tether("init", "app", cwd=directory)
    assert result.returncode == 0, result.stderr
    app = directory / "app"
    with open(app / "main.py", "a") as main:
        main.write(METRIC_APP)
    if version != "1.0":
        manifest = (app / "tether.yml").read_text().replace('version: "1.0"', f'version: "{version}"')
        (app / "tether.yml").write_text(manifest)
    return app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_app(tmp_path_factory.mktemp("dashboard-app"))


@pytest.fixture(scope="module")
def device(app: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    state = tmp_path_factory.mktemp("dashboard-device") / "state"
    with Device(app, state, "debug.level=3") as running:
        yield running


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("TETHER_SCREENSHOTS")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@dataclass
class Watch:
    """What went wrong in the browser: console errors, page errors, failed requests."""

    problems: list[str] = field(default_factory=list)
    # While the device restarts (an update), refused reconnects are expected: these are kept apart.
    restarting: bool = False
    refused: list[str] = field(default_factory=list)

    def console(self, message: Any) -> None:
        if message.type != "error":
            return
        if self.restarting and re.fullmatch(
            r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/rpc' failed: .*", message.text
        ):
            self.refused.append(message.text)
        else:
            self.problems.append(f"console: {message.text}")

    def request_failed(self, request: Any) -> None:
        self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def response(self, response: Any) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.status} {response.url}")


class Browser:
    """Opens watched pages on the dashboard; `close` asserts that nothing went wrong."""

    def __init__(self, chromium: Any, url: str, shots: Path) -> None:
        self.chromium = chromium
        self.url = url
        self.shots = shots
        self.watch = Watch()
        self.contexts: list[Any] = []

    def open(self, viewport: dict[str, int] = DESKTOP, panel: str = "status", **options: Any) -> Any:
        context = self.chromium.new_context(viewport=viewport, accept_downloads=True, **options)
        context.set_default_timeout(WAIT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self.watch.console)
        page.on("pageerror", lambda error: self.watch.problems.append(f"uncaught: {error}"))
        page.on("requestfailed", self.watch.request_failed)
        page.on("response", self.watch.response)
        page.goto(f"{self.url}#{panel}")
        return page

    def shot(self, page: Any, name: str) -> Path:
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        return path

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        assert self.watch.problems == []


@pytest.fixture
def pages(browser: Any, device: Device, screenshots: Path) -> Iterator[Browser]:
    opened = Browser(browser, f"http://127.0.0.1:{device.port}/", screenshots)
    try:
        yield opened
    finally:
        opened.close()


def wait(page: Any, predicate: str, arg: Any = None) -> None:
    """Wait for a JS function (not a string to evaluate: the page's CSP forbids eval)."""
    page.wait_for_function(predicate, arg=arg)


def connected(page: Any) -> None:
    wait(page, "() => document.getElementById('status').dataset.loaded === 'true'")


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).text_content()).strip()


# ------------------------------------------------------------------ panels


def test_status_shows_what_sys_get_info_says(pages: Browser, device: Device) -> None:
    page = pages.open()
    connected(page)
    info = device.call("Sys.GetInfo")
    assert text(page, "#st-id") == info["id"] == text(page, "#title")
    assert text(page, "#st-app") == info["app"] == "app"
    assert text(page, "#st-version") == info["fw_version"] == "1.0"
    assert text(page, "#st-arch") == info["arch"]
    assert text(page, "#st-mac") == info["mac"]
    assert page.title() == f"{info['id']} · app"
    boot = device.call("OTA.GetBootState")
    page.locator("#st-update", has_text=f"slot {boot['active_slot']}, committed").wait_for()
    wait(page, "() => document.getElementById('st-cpu').textContent.endsWith('%')")  # a metrics push
    assert text(page, "#link") == "connected"


def test_settings_form_saves_what_config_get_then_reads(pages: Browser, device: Device) -> None:
    page = pages.open(panel="settings")
    wait(page, "() => document.getElementById('settings-form').dataset.loaded === 'true'")
    interval = page.locator('[data-path="app.interval_ms"]').and_(page.locator("input"))
    assert interval.input_value() == "1000"
    assert page.locator('label[for="cfg-app-interval_ms"]').text_content() == (
        "How often the app writes to the backend, in ms"
    )

    # Checked before anything is sent: a bad number stays in the page.
    interval.fill("12.5ms")
    page.click("#settings-save")
    assert text(page, "#cfg-app-interval_ms-error") == "a whole number is needed"
    assert interval.get_attribute("aria-invalid") == "true"
    assert "not saved" in text(page, "#settings-message")
    assert json.loads(tether("--port", device.url, "config-get", "app.interval_ms").stdout) == 1000

    # A secret: masked, never shown, replaced when typed.
    password = page.locator("#cfg-wifi-sta-pass")
    assert password.get_attribute("type") == "password"
    assert password.input_value() == "" and password.get_attribute("placeholder") == "not set"
    interval.fill("750")
    password.fill("hunter2 secret")
    page.click("#settings-save")
    page.locator("#settings-message", has_text="Restart the device to apply").wait_for()
    assert (
        text(page, "#settings-message")
        == "Saved. Restart the device to apply wifi.sta.pass, app.interval_ms."
    )
    assert page.is_visible("#settings-reboot")
    result = tether("--port", device.url, "config-get", "app.interval_ms")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 750
    saved = json.loads((device.state / "conf9.json").read_text())
    assert saved["app"]["interval_ms"] == 750 and saved["wifi"]["sta"]["pass"] == "hunter2 secret"
    assert password.input_value() == "" and password.get_attribute("placeholder") == "set (type to replace)"

    pages.shot(page, "settings-desktop-saved")

    # debug.* applies at once: no restart asked for.
    page.click("#settings-save")
    assert text(page, "#settings-message") == "nothing to save"
    for level in (2, 3):  # the other tests want the Sum's debug lines
        page.fill("#cfg-debug-level", str(level))
        page.click("#settings-save")
        page.locator("#settings-message", has_text="Saved and applied.").wait_for()
        assert device.call("Config.Get", {"key": "debug.level"}) == level


def test_charts_receive_metrics_pushes(pages: Browser) -> None:
    page = pages.open(panel="charts")
    wait(page, "() => Number(document.getElementById('chart-list').dataset.points || 0) >= 3")
    for chart in ("cpu", "mem", "rss", "app-ticks"):
        wait(page, "(id) => Number(document.getElementById(id)?.dataset.points || 0) >= 3", f"chart-{chart}")
    assert text(page, "#chart-app-ticks figcaption") == "ticks"
    label = page.locator("#chart-cpu canvas").get_attribute("aria-label")
    assert label is not None and re.fullmatch(r"CPU: machine \d+\.\d %, device process \d+\.\d %", label)


def test_rpc_console_calls_and_logs_show_the_line(pages: Browser, device: Device) -> None:
    page = pages.open(panel="rpc")
    connected(page)
    page.fill("#rpc-filter", "sum")
    assert page.locator("#rpc-method option").all_text_contents() == ["Sum"]
    page.select_option("#rpc-method", "Sum")
    wait(page, "() => document.getElementById('rpc-method').dataset.described === 'Sum'")
    assert text(page, "#rpc-description") == "{a: %lf, b: %lf}: a + b with two decimals"
    page.fill("#rpc-args", '{"a": 1, "b": 2}')
    page.click("#rpc-call")
    page.locator("#rpc-status", has_text="Sum: OK").wait_for()
    assert json.loads(text(page, "#rpc-result")) == device.call("Sum", {"a": 1, "b": 2}) == 3

    page.fill("#rpc-args", '{"a": "one"}')
    page.click("#rpc-call")
    page.locator("#rpc-result[data-kind=error]").wait_for()
    expected = tether("--port", device.url, "call", "Sum", '{"a": "one"}')
    assert expected.returncode != 0
    assert json.loads(text(page, "#rpc-result")) == {
        "code": -1,
        "message": 'Bad request. Expected: {"a":N1,"b":N2}',
    }
    assert 'Bad request. Expected: {"a":N1,"b":N2}' in expected.stderr

    page.fill("#rpc-args", "{not json")
    page.click("#rpc-call")
    assert "not valid JSON" in text(page, "#rpc-status")

    # The debug line the app logged for the page's call, pushed to the log panel.
    page.click('.tabs a[data-panel="logs"]')
    line = page.locator("#log-lines .line", has_text="Sum: 1 + 2").first  # the page's call and the CLI's
    line.wait_for()
    assert line.get_attribute("class") == "line l3"
    page.select_option("#log-level", "2")  # up to info: the debug line goes
    line.wait_for(state="detached")
    page.select_option("#log-level", "4")
    line.wait_for()

    page.click("#log-pause")
    assert page.get_attribute("#log-pause", "aria-pressed") == "true"
    device.call("Sum", {"a": 5, "b": 6})
    page.locator("#log-status", has_text=re.compile(r"paused; [1-9]\d* new lines? held")).wait_for()
    assert page.locator("#log-lines .line", has_text="Sum: 5 + 6").count() == 0
    page.click("#log-pause")
    page.locator("#log-lines .line", has_text="Sum: 5 + 6").wait_for()
    pages.shot(page, "logs-desktop-lines")


def test_files_upload_download_delete(pages: Browser, device: Device, tmp_path: Path) -> None:
    data = random.Random(7).randbytes(5000)  # three FS.Put chunks
    local = tmp_path / "blob.bin"
    local.write_bytes(data)
    page = pages.open(panel="files")
    connected(page)
    page.set_input_files("#file-input", str(local))
    page.click("#file-upload")
    page.locator("#file-status", has_text="uploaded blob.bin").wait_for()
    assert page.evaluate("() => document.getElementById('file-progress').value") == 1

    copy = tmp_path / "copy.bin"
    result = tether("--port", device.url, "get", "blob.bin", str(copy))
    assert result.returncode == 0, result.stderr
    assert copy.read_bytes() == data

    row = page.locator('#file-rows tr[data-name="blob.bin"]')
    assert row.locator("td.num").get_attribute("title") == "5000 bytes"
    with page.expect_download() as download:
        row.get_by_role("button", name="Download blob.bin").click()
    downloaded = tmp_path / "downloaded.bin"
    download.value.save_as(downloaded)
    assert download.value.suggested_filename == "blob.bin"
    assert downloaded.read_bytes() == data
    pages.shot(page, "files-desktop-list")

    delete = row.get_by_role("button", name="Delete blob.bin")
    delete.click()
    assert delete.text_content() == "Really delete?"
    delete.click()
    row.wait_for(state="detached")
    listing = tether("--port", device.url, "ls")
    assert listing.returncode == 0 and "blob.bin" not in listing.stdout


def test_every_panel_labelled_and_screenshot(pages: Browser) -> None:
    for viewport, size in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page = pages.open(viewport=viewport)
        connected(page)
        for panel in PANELS:
            page.click(f'.tabs a[data-panel="{panel}"]')
            page.locator(f"#{panel}").wait_for()  # shown once the hash changed
            if panel == "settings":
                wait(page, "() => document.getElementById('settings-form').dataset.loaded === 'true'")
            if panel == "charts":
                wait(page, "() => Number(document.getElementById('chart-list').dataset.points || 0) >= 2")
            if panel == "logs":
                wait(page, "() => document.getElementById('log-lines').dataset.subscribed === 'true'")
            if panel == "files":
                wait(page, "() => document.getElementById('file-rows').dataset.count !== undefined")
            if panel == "update":
                wait(page, "() => document.getElementById('update-state').dataset.committed !== undefined")
            pages.shot(page, f"{panel}-{size}")
        assert page.evaluate(UNLABELLED) == []
        # Nothing wider than the screen: the phone layout does not scroll sideways.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= viewport["width"]


def test_update_through_the_page_then_commit(pages: Browser, device: Device, tmp_path: Path) -> None:
    source = make_app(tmp_path, version="2.0")
    shutil.rmtree(source / ".state", ignore_errors=True)
    bundle = tmp_path / "app-2.0.zip"
    result = tether("bundle", str(source), "-o", str(bundle))
    assert result.returncode == 0, result.stderr

    page = pages.open(panel="update")
    wait(page, "() => document.getElementById('update-state').dataset.committed === 'true'")
    assert text(page, "#ota-version") == "app 1.0"
    assert page.is_disabled("#ota-commit")
    page.set_input_files("#ota-file", str(bundle))
    page.fill("#ota-commit-timeout", "120")
    pages.watch.restarting = True  # the page reconnects while the device restarts
    page.click("#ota-upload")
    wait(page, "() => document.getElementById('update-state').dataset.version === '2.0'")
    pages.watch.restarting = False
    assert device.wait_version("2.0")["fw_version"] == "2.0"
    wait(page, "() => document.getElementById('update-state').dataset.committed === 'false'")
    assert device.call("OTA.GetBootState")["is_committed"] is False
    assert text(page, "#ota-committed") == "no: rolled back unless committed within 120 s of the update"
    assert page.evaluate("() => document.getElementById('ota-progress').value") == 1
    pages.shot(page, "update-desktop-uncommitted")

    page.click("#ota-commit")
    wait(page, "() => document.getElementById('update-state').dataset.committed === 'true'")
    assert text(page, "#ota-message") == "committed: this version stays"
    assert device.call("OTA.GetBootState")["is_committed"] is True
    assert page.is_disabled("#ota-commit") and page.is_enabled("#ota-revert")
    pages.shot(page, "update-desktop-committed")


# ---------------------------------------------------------------- sign-in


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_sign_in_with_digest(
    browser: Any, app: Path, tmp_path: Path, screenshots: Path, algorithm: str
) -> None:
    state = tmp_path / "state"
    (state / "fs").mkdir(parents=True)
    ha1 = digest_ha1("admin", "tether-test", "s3cret pass", algorithm)
    (state / "fs" / "rpc_auth.txt").write_text(f"admin:tether-test:{ha1}\n")
    acl = json.dumps([{"method": "Sys.GetInfo", "acl": "*"}, {"method": "*", "acl": "admin"}])
    overrides = [
        f"rpc.acl={acl}",
        "rpc.auth_file=rpc_auth.txt",
        "rpc.auth_domain=tether-test",
        f"rpc.auth_algo={1 if algorithm == 'SHA-256' else 0}",
    ]
    with Device(app, state, *overrides) as device:
        assert device.call("RPC.List", check=False).returncode != 0  # 401 without credentials
        pages = Browser(browser, f"http://127.0.0.1:{device.port}/", screenshots)
        try:
            page = pages.open(panel="files")
            dialog = page.locator("#login")
            dialog.wait_for()
            assert "tether-test" in text(page, "#login-realm")
            pages.shot(page, f"sign-in-{algorithm}")
            page.fill("#login-user", "admin")
            page.fill("#login-password", "wrong")
            page.click("#login-ok")
            page.locator("#login-problem", has_text="wrong user name or password").wait_for()
            page.fill("#login-password", "s3cret pass")
            page.click("#login-ok")
            dialog.wait_for(state="hidden")
            connected(page)
            # Protected calls went through: the file list (FS.ListExt) and the charts' subscription.
            wait(page, "() => document.getElementById('file-rows').dataset.count !== undefined")
            page.locator('#file-rows tr[data-name="index.html"]').wait_for()
            wait(page, "() => document.getElementById('chart-list').dataset.subscribed === 'true'")
            assert text(page, "#st-id") == device.call("Sys.GetInfo")["id"]
        finally:
            pages.close()
