"""`tether info`, `config-get`, `config-set`, `ls`, `get`, `put`, `rm`, `console` against a test device.

The device runs on a thread of its own (its own event loop): the FS service, ``Sys.GetInfo``,
``Config.Get/Set/Save`` that record the params they were sent, and a ``Console.Subscribe``
that pushes two ``Console.Event`` notifications. The commands run in-process through
`tether.cli.main`, except ``console``, which runs as a process stopped by its PID.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.cli import main
from tether.device.services.fs import register
from tether.http import App, serve
from tether.rpc import Call, Dispatcher, mount_rpc

CONFIG = {
    "device": {"id": "tether_test"},
    "debug": {"level": 2, "enabled": True, "ratio": 2.0, "small": 0.1, "name": ""},
    "wifi": {"sta": {"ssid": "home", "enable": False}, "ap": {"ssid": "Mongoose_??????"}},
}
INFO = {"id": "tether_test", "app": "demo", "fw_version": "1.0", "uptime": 5}
LINES = ["main.c:10               first line", "main.c:11               second line"]


def merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


class Device:
    """A small device on a thread: recorded calls in ``calls`` as (method, params)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = copy.deepcopy(CONFIG)
        self.saved_reply: Any = {"saved": True}
        self.calls: list[tuple[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def _record(self, call: Call) -> None:
        self.calls.append((call.method, call.request.params))

    def config_get(self, call: Call) -> Any:
        self._record(call)
        return self.config

    def config_set(self, call: Call) -> Any:
        self._record(call)
        merge(self.config, call.params["config"])
        return self.saved_reply

    def config_save(self, call: Call) -> Any:
        self._record(call)
        return {"saved": True}

    def console_subscribe(self, call: Call) -> None:
        self._record(call)
        push = call.push
        assert push is not None

        def emit() -> None:
            for i, line in enumerate(LINES):
                event = {"method": "Console.Event", "params": {"line": line, "level": 2, "ts": 1.5 + i}}
                push(json.dumps(event).encode())

        asyncio.get_running_loop().call_soon(emit)  # after the reply

    async def _start(self) -> None:
        dispatcher = Dispatcher("tether_test")
        register(dispatcher, self.root)
        dispatcher.add_handler("Sys.GetInfo", lambda call: INFO)
        dispatcher.add_handler("Config.Get", self.config_get)
        dispatcher.add_handler("Config.Set", self.config_set)
        dispatcher.add_handler("Config.Save", self.config_save)
        dispatcher.add_handler("Console.Subscribe", self.console_subscribe)
        self.dispatcher = dispatcher
        app = App()
        mount_rpc(app, dispatcher)
        self.server = await serve(app, "127.0.0.1", 0)
        self.port = self.server.port

    async def _stop(self) -> None:
        self.server.close()
        await self.server.wait_closed(timeout=10)

    def __enter__(self) -> Device:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=20)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=20)
        self.loop.close()

    def add_handler(self, name: str, handler: Any) -> None:
        """Register a handler from the test's thread, on the device's loop."""

        async def add() -> None:
            self.dispatcher.add_handler(name, handler)

        asyncio.run_coroutine_threadsafe(add(), self.loop).result(timeout=20)

    def url(self, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/rpc"


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    (tmp_path / "fs").mkdir()
    with Device(tmp_path / "fs") as running:
        yield running


def run(device: Device, *args: str, scheme: str = "ws") -> int:
    return main([args[0], "--port", device.url(scheme), *args[1:]])


def test_info_prints_indented_json(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(device, "info") == 0
    assert capsys.readouterr().out == json.dumps(INFO, indent=2) + "\n"


def test_the_port_comes_from_the_global_option_or_the_environment(
    device: Device, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["--port", device.url(), "info"]) == 0
    monkeypatch.setenv("TETHER_PORT", device.url("http"))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out == 2 * (json.dumps(INFO, indent=2) + "\n")


@pytest.mark.parametrize(
    ("key", "printed"),
    [
        ("debug.level", "2"),
        ("debug.enabled", "true"),
        ("wifi.sta.enable", "false"),
        ("debug.ratio", "2"),
        ("debug.small", "0.1"),
        ("device.id", "tether_test"),
        ("debug.name", ""),
        ("wifi.sta", '{\n  "enable": false,\n  "ssid": "home"\n}'),
    ],
)
def test_config_get_prints_like_mos(
    device: Device, capsys: pytest.CaptureFixture[str], key: str, printed: str
) -> None:
    assert run(device, "config-get", key) == 0
    assert capsys.readouterr() == (printed + "\n", "")
    assert device.calls == [("Config.Get", None)]


def test_config_get_whole_tree_sorted_and_level(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(device, "config-get", "--level", "3") == 0
    assert capsys.readouterr().out == json.dumps(CONFIG, indent=2, sort_keys=True) + "\n"
    assert device.calls == [("Config.Get", {"level": 3})]


def test_config_get_unknown_key(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(device, "config-get", "debug.level.x") == 1
    assert capsys.readouterr() == ("", 'Error: no config value at path "debug.level.x"\n')


def test_config_set_sends_the_diff_as_mos(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    # Spec §11 item 6: Config.Get, then Config.Set {config, save}, and no Config.Save.
    assert run(device, "config-set", "debug.level=3", "--no-reboot") == 0
    assert capsys.readouterr() == ("", "Getting configuration...\nSetting new configuration...\n")
    assert device.calls == [
        ("Config.Get", None),
        ("Config.Set", {"config": {"debug": {"level": 3}}, "save": True}),
    ]
    assert device.config["debug"]["level"] == 3


def test_config_set_converts_to_the_current_types(device: Device) -> None:
    args = ["debug.enabled=false", "debug.ratio=1.5", "wifi.sta.ssid=12", "debug.level=4", "debug.name=x=y"]
    assert run(device, "config-set", *args) == 0
    assert device.calls[1] == (
        "Config.Set",
        {
            "config": {
                "debug": {"enabled": False, "ratio": 1.5, "level": 4, "name": "x=y"},
                "wifi": {"sta": {"ssid": "12"}},
            },
            "save": True,
            "reboot": True,
        },
    )


def test_config_set_saves_on_old_firmware(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    device.saved_reply = None
    assert run(device, "config-set", "debug.level=1") == 0
    assert capsys.readouterr().err.endswith("Setting new configuration...\nSaving and rebooting...\n")
    assert device.calls[2:] == [("Config.Save", {"reboot": True, "try_once": False})]
    device.calls.clear()
    device.saved_reply = {"saved": False}
    assert run(device, "config-set", "debug.level=1", "--no-reboot", "--try-once") == 0
    assert device.calls[1:] == [
        ("Config.Set", {"config": {"debug": {"level": 1}}, "save": True, "try_once": True}),
        ("Config.Save", {"reboot": False, "try_once": True}),
    ]


def test_config_set_without_save_and_with_a_level(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    device.saved_reply = {"saved": False}
    assert run(device, "config-set", "debug.level=0", "--no-save", "--level", "5") == 0
    assert capsys.readouterr().err == "Getting configuration...\nSetting new configuration (level 5)...\n"
    assert device.calls == [
        ("Config.Get", {"level": 5}),
        ("Config.Set", {"config": {"debug": {"level": 0}}, "level": 5, "reboot": True}),
    ]


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("zzz=1", 'no config value at path "zzz"'),
        ("debug.levels=1", 'no config value at path "debug.levels"'),
        ("debug.level=x", 'debug.level: "x" is not an integer'),
        ("debug.level=1.5", 'debug.level: "1.5" is not an integer'),
        ("debug.enabled=yes", 'debug.enabled: "yes" is not a boolean (true or false)'),
        ("debug.ratio=nan", 'debug.ratio: "nan" is not a number'),
        ("wifi.sta=1", "wifi.sta is an object: only strings, numbers and booleans can be set"),
    ],
)
def test_config_set_refuses_before_sending(
    device: Device, capsys: pytest.CaptureFixture[str], pair: str, message: str
) -> None:
    assert run(device, "config-set", "debug.level=3", pair) == 1
    assert capsys.readouterr().err == f"Getting configuration...\nError: {message}\n"
    assert device.calls == [("Config.Get", None)]
    assert device.config == CONFIG


def test_config_set_needs_key_value_pairs(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(device, "config-set", "debug.level") == 1
    assert capsys.readouterr().err == 'Error: "debug.level" is not KEY=VALUE\n'
    assert device.calls == []


def test_put_and_get_a_megabyte(device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = os.urandom(1 << 20)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    assert run(device, "put", str(local)) == 0
    assert run(device, "put", str(local), "copy.bin") == 0
    digest = hashlib.sha256(data).hexdigest()
    assert hashlib.sha256((device.root / "big.bin").read_bytes()).hexdigest() == digest
    assert sorted(os.listdir(device.root)) == ["big.bin", "copy.bin"]
    back = tmp_path / "back" / "x.bin"
    back.parent.mkdir()
    assert run(device, "get", "copy.bin", str(back)) == 0
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert run(device, "get", "big.bin", str(back.parent)) == 0  # into a directory
    assert sorted(os.listdir(back.parent)) == ["big.bin", "x.bin"]
    assert capsys.readouterr() == ("", "")  # no progress bar off a terminal


def test_put_chunks_and_empty_files(device: Device, tmp_path: Path) -> None:
    local = tmp_path / "f.txt"
    local.write_bytes(b"hello world")
    assert run(device, "put", str(local), "sub.txt", "--chunk-size", "4") == 0
    assert (device.root / "sub.txt").read_bytes() == b"hello world"
    local.write_bytes(b"")
    assert run(device, "put", str(local), "empty") == 0
    assert (device.root / "empty").read_bytes() == b""


def test_put_of_a_missing_file(device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(device, "put", str(tmp_path / "nope")) == 1
    assert "nope" in capsys.readouterr().err
    assert os.listdir(device.root) == []


def test_put_shows_progress_on_a_terminal(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"x" * 5000)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert run(device, "put", str(local)) == 0
    err = capsys.readouterr().err
    assert err.count("\r[") == 3
    assert err.endswith(f"\r[{'#' * 40}] 100% 5000/5000 bytes\n")


def test_chunk_size_must_be_positive(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(device, "get", "f", "--chunk-size", "0")
    assert exited.value.code == 2
    assert "chunk size must be at least 1, not 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"data": "!!", "left": 0}, "FS.Get of f gave a bad reply: "),
        ({"data": ""}, "FS.Get of f gave a bad reply: 'left'"),
        ({"data": "", "left": 5}, "FS.Get of f sent no data with 5 bytes left"),
    ],
)
def test_get_refuses_bad_replies(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str], result: Any, message: str
) -> None:
    device.add_handler("FS.Get", lambda call: result)
    assert run(device, "get", "f", str(tmp_path / "out")) == 1
    assert capsys.readouterr().err.startswith(f"Error: {message}")
    assert not (tmp_path / "out").exists()


def test_get_to_stdout(device: Device, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    (device.root / "f").write_bytes(b"\x00\xffbinary")
    assert run(device, "get", "f", "--chunk-size", "3") == 0
    assert capsysbinary.readouterr().out == b"\x00\xffbinary"


def test_get_of_a_missing_file_writes_nothing(
    device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert run(device, "get", "nope", str(out / "x")) == 1
    assert capsys.readouterr().err == 'Error: remote error 400: failed to open file "nope"\n'
    assert os.listdir(out) == []


@pytest.mark.parametrize("scheme", ["ws", "http"])
def test_ls_and_rm(device: Device, capsys: pytest.CaptureFixture[str], scheme: str) -> None:
    (device.root / "b").write_bytes(b"x" * 1234)
    (device.root / "a").write_bytes(b"12")
    (device.root / "sub").mkdir()
    (device.root / "sub" / "c").write_bytes(b"")
    assert run(device, "ls", scheme=scheme) == 0
    assert capsys.readouterr().out == "a\nb\nsub\n"
    assert run(device, "ls", "-l", scheme=scheme) == 0
    assert capsys.readouterr().out == "   2 a\n1234 b\n   0 sub\n"
    assert run(device, "ls", "/sub", scheme=scheme) == 0
    assert capsys.readouterr().out == "c\n"
    assert run(device, "rm", "b", scheme=scheme) == 0
    assert sorted(os.listdir(device.root)) == ["a", "sub"]
    assert run(device, "rm", "b", scheme=scheme) == 1
    assert capsys.readouterr() == ("", "Error: remote error 500: remove failed\n")


def test_unreachable_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Device(tmp_path) as stopped:
        url = stopped.url()
    assert main(["info", "--port", url, "--timeout", "5"]) == 1
    assert capsys.readouterr().err.startswith(f"Error: {url}: ")


def test_console_cannot_stream_over_http(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(device, "console", scheme="http") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {device.url('http')}: http:// cannot stream the log")
    assert device.calls == []


@pytest.mark.timeout(60)
def test_console_prints_the_lines_the_device_sends(device: Device) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "console", "--port", device.url(), "--level", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert [proc.stdout.readline() for _ in LINES] == [line + "\n" for line in LINES]
        assert device.calls == [("Console.Subscribe", {"level": 3})]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out, err) == (0, "", "")


async def test_connect_hands_what_the_peer_sends_to_on_request(
    device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    from tether.rpc import Request, connect

    received: asyncio.Queue[Request] = asyncio.Queue(maxsize=10)
    async with connect(device.url(), on_request=received.put_nowait) as client:
        assert await client.call("Console.Subscribe") is None
        events = [await received.get() for _ in LINES]
    assert [(e.method, e.id_json, e.params["line"]) for e in events] == [
        ("Console.Event", None, line) for line in LINES
    ]

    def fails(request: Request) -> None:
        raise RuntimeError("boom")

    async with connect(device.url(), on_request=fails) as client:
        await client.call("Console.Subscribe")
        # The pushes were sent before this reply (the device emits them right after the
        # subscription's): the client went on after the callback raised, and logged it.
        assert await client.call("Sys.GetInfo") == INFO
    assert len([r for r in caplog.records if "on_request raised" in r.getMessage()]) == len(LINES)
