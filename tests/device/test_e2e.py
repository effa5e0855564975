"""Issue acceptance, as a user would do it: tether init, tether run, the device-side CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.device.harness import TIMEOUT, Device, tether

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    result = tether("init", "myapp", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / "myapp"


def config_get(device: Device, key: str) -> str:
    result = tether("--port", device.url, "config-get", key)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_init_run_config_set_get_survives_reboot_and_restart(app: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    device = Device(app, state)
    with device:
        info = device.call("Sys.GetInfo")
        assert info["app"] == "myapp" and info["fw_version"] == "1.0"
        assert info["id"].startswith("tether_") and "?" not in info["id"]
        assert device.call("Sum", {"a": 1, "b": 2}) == 3.0

        restarts = device.log().count("tether run: rebooting")
        result = tether(
            "--port",
            device.url,
            "config-set",
            "wifi.sta.ssid=HomeNet",
            "app.interval_ms=250",
            "mqtt.will_retain=true",
        )
        assert result.returncode == 0, result.stderr
        assert "Setting new configuration..." in result.stderr
        device.wait_restarted(restarts)  # mos config-set asks for a reboot
        assert config_get(device, "wifi.sta.ssid") == "HomeNet"
        assert config_get(device, "app.interval_ms") == "250"
        assert config_get(device, "mqtt.will_retain") == "true"
        saved = json.loads((state / "conf9.json").read_text())
        assert saved == {
            "app": {"interval_ms": 250},
            "mqtt": {"will_retain": True},
            "wifi": {"sta": {"ssid": "HomeNet"}},
        }

        restarts = device.log().count("tether run: rebooting")
        device.call("Sys.Reboot", {"delay_ms": 10})
        device.wait_restarted(restarts)
        assert config_get(device, "app.interval_ms") == "250"

        refused = tether("--port", device.url, "config-set", "app.interval_ms=fast")
        assert refused.returncode != 0 and "app.interval_ms" in refused.stderr
        refused = tether("--port", device.url, "config-set", "app.no_such_key=1")
        assert refused.returncode != 0 and "app.no_such_key" in refused.stderr
        assert json.loads((state / "conf9.json").read_text()) == saved
    assert device.process is None

    with Device(app, state) as again:  # a new supervisor, a new process
        assert config_get(again, "wifi.sta.ssid") == "HomeNet"
        assert config_get(again, "mqtt.will_retain") == "true"


def test_put_get_5mb_identical(app: Path, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024)
    local = tmp_path / "blob.bin"
    local.write_bytes(data)
    with Device(app, tmp_path / "state") as device:
        put = tether("--port", device.url, "put", str(local), "data/blob.bin", timeout=240)
        assert put.returncode == 0, put.stderr
        listing = tether("--port", device.url, "ls", "-l", "data")
        assert str(len(data)) in listing.stdout
        back = tmp_path / "back.bin"
        get = tether("--port", device.url, "get", "data/blob.bin", str(back), timeout=240)
        assert get.returncode == 0, get.stderr
    assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "state" / "fs" / "data" / "blob.bin").read_bytes() == data


def test_console_shows_app_lines_at_the_configured_level(app: Path, tmp_path: Path) -> None:
    with Device(app, tmp_path / "state", "debug.level=3") as device:
        console = subprocess.Popen(
            [sys.executable, "-m", "tether", "--port", device.url, "console"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert console.stdout is not None
            os.set_blocking(console.stdout.fileno(), False)
            seen = b""
            deadline = time.monotonic() + TIMEOUT
            while b"Sum: 20 + 22" not in seen:
                assert time.monotonic() < deadline, seen
                device.call("Sum", {"a": 20, "b": 22})  # logged at debug level by the app
                time.sleep(0.2)
                seen += console.stdout.read() or b""
            line = next(x for x in seen.decode().splitlines() if "Sum: 20 + 22" in x)
            assert line.startswith("main.py:")  # file:line in 24 columns, as a Mongoose OS console
            assert line[23] == " " and line[24:] == "Sum: 20 + 22"
            device.call("Sys.SetDebug", {"level": 2})
            device.call("Sum", {"a": 5, "b": 6})
            device.call("RPC.Ping")
            time.sleep(0.5)
            assert b"Sum: 5 + 6" not in (console.stdout.read() or b"")
        finally:
            console.send_signal(signal.SIGTERM)
            console.wait(TIMEOUT)
            console.stdout.close()  # type: ignore[union-attr]


def test_corrupt_conf9_keeps_the_device_up_on_defaults(app: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "conf9.json").write_text('{"debug": {"level": 3')  # cut short
    with Device(app, state) as device:
        assert config_get(device, "debug.level") == "2"  # the app's default
        assert "configuration file skipped" in device.log() and "conf9.json.corrupt" in device.log()
    kept = [p.name for p in state.iterdir() if p.name.startswith("conf9.json.")]
    assert kept, list(state.iterdir())
    assert (state / kept[0]).read_text() == '{"debug": {"level": 3'


def test_a_setting_that_keeps_the_device_from_starting_is_moved_aside(app: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Device(app, state) as device:
        assert (
            tether("--port", device.url, "config-set", "app.interval_ms=300", "--no-reboot").returncode == 0
        )
        restarts = device.log().count("tether run: rebooting")
        # A path out of the device file system: the next start fails on it...
        result = tether("--port", device.url, "config-set", "debug.log_file=../../outside.log")
        assert result.returncode == 0, result.stderr
        device.wait_restarted(restarts)
        # ...so conf9.json (which holds it) is moved aside and the device starts without it.
        log = device.log()
        assert "[debug.log_file]" in log and "conf9.json moved to conf9.json.corrupt" in log
        assert config_get(device, "debug.log_file") == ""
        assert config_get(device, "app.interval_ms") == "1000"
        assert (
            json.loads((state / "conf9.json.corrupt").read_text())["debug"]["log_file"] == "../../outside.log"
        )
    assert not (tmp_path / "outside.log").exists()
