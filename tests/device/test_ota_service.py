"""The OTA.* service through Dispatcher.handle: the mos ota sequence, refusals, interrupted uploads,
OTA.Update."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import threading
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.device.test_ota_bundle import make_app, manifest_of, write_zip

import tether.http as http
from tether import tls
from tether.device.bundle import create_bundle, generate_key
from tether.device.services import ota
from tether.device.slots import Slots
from tether.rpc import Dispatcher


class Device:
    """A dispatcher with the OTA service; `restart` is what the reboot callback leads to."""

    def __init__(self, tmp_path: Path, public_key: str | None = None, ca_file: Path | None = None) -> None:
        self.state_dir = tmp_path / "state"
        self.factory = make_app(tmp_path / "factory", version="0.1")
        self.slots = Slots(self.state_dir, self.factory)
        self.now = 1000.0
        self.key = public_key
        self.reboots: list[float] = []
        self.ca_file = ca_file
        self.restart()

    def restart(self) -> None:
        self.dispatcher = Dispatcher("tether_0A1B2C")
        self.service = ota.register(
            self.dispatcher,
            self.slots,
            public_key=lambda: self.key,
            reboot=self.reboots.append,
            max_size=2**20,
            clock=lambda: self.now,
            download_timeout=10.0,
            ca_file=self.ca_file,
        )

    async def frame(self, method: str, params: Any = None) -> dict[str, Any]:
        request: dict[str, Any] = {"id": 1099511627777, "src": "mos", "method": method}
        if params is not None:
            request["params"] = params
        reply = await self.dispatcher.handle(json.dumps(request), channel="WS_in")
        assert reply is not None
        frame: dict[str, Any] = json.loads(reply)
        return frame

    async def call(self, method: str, params: Any = None) -> Any:
        frame = await self.frame(method, params)
        assert "error" not in frame, frame
        assert "result" in frame  # §12 item 2: mos unmarshals it
        return frame["result"]

    async def error(self, method: str, params: Any = None) -> tuple[int, str]:
        frame = await self.frame(method, params)
        assert "result" not in frame, frame
        return frame["error"]["code"], frame["error"].get("message", "")

    async def push(self, data: bytes, chunk: int = 512, commit_timeout: int = 300) -> None:
        """mos ota: Status, Begin, Write per chunk, End."""
        assert (await self.call("OTA.Status"))["state"] in (0, 2)
        await self.call("OTA.Begin", {"timeout": 600, "commit_timeout": commit_timeout, "size": len(data)})
        for offset in range(0, len(data), chunk):
            piece = base64.b64encode(data[offset : offset + chunk]).decode()
            assert await self.call("OTA.Write", {"offset": offset, "data": piece}) is None
        assert await self.call("OTA.End") is None

    async def write(self, data: bytes, start: int = 0, chunk: int = 2048) -> None:
        """OTA.Write data from start on, in frames under the 4096-byte limit."""
        for offset in range(start, len(data), chunk):
            await self.call("OTA.Write", {"offset": offset, "data": b64(data[offset : offset + chunk])})


def bundle_bytes(tmp_path: Path, version: str, key: Path | None = None) -> bytes:
    path = tmp_path / f"app-{version}.zip"
    create_bundle(
        make_app(tmp_path / f"app-{version}", version=version, files=20),
        path,
        private_key=key.read_bytes() if key else None,
    )
    return path.read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_the_mos_ota_sequence_then_commit(tmp_path: Path) -> None:
    device = Device(tmp_path)
    data = bundle_bytes(tmp_path, "1.0")
    assert len(data) > 5 * 512
    status = await device.call("OTA.Status")
    assert status == {
        "state": 0,
        "message": "",
        "is_committed": True,
        "progress_percent": 0,
        "commit_timeout": 0,
        "partition": 0,
    }
    await device.call("OTA.Begin", {"timeout": 600, "commit_timeout": 300, "size": len(data)})
    half = len(data) // 1024 * 512
    for offset in range(0, half, 512):
        await device.call("OTA.Write", {"offset": offset, "data": b64(data[offset : offset + 512])})
    status = await device.call("OTA.Status")
    assert (status["state"], status["progress_percent"]) == (1, half * 100 // len(data))
    for offset in range(half, len(data), 512):
        await device.call("OTA.Write", {"offset": offset, "data": b64(data[offset : offset + 512])})
    assert await device.call("OTA.End") is None
    assert device.reboots == [0.1]
    status = await device.call("OTA.Status")
    assert (status["state"], status["progress_percent"], status["partition"]) == (3, 100, 1)
    assert await device.error("OTA.Commit") == (
        -1,
        "the device is restarting into the update: commit it after the restart",
    )
    assert await device.error("OTA.Begin", {"size": 1}) == (
        -1,
        "an update is installed and the device is restarting into it",
    )

    device.restart()
    status = await device.call("OTA.Status")
    assert status == {
        "state": 0,
        "message": "",
        "is_committed": False,
        "progress_percent": 0,
        "commit_timeout": 300,
        "partition": 1,
    }
    boot = {"active_slot": 1, "is_committed": False, "revert_slot": 0, "commit_timeout": 300}
    assert await device.call("OTA.GetBootState") == boot
    assert await device.error("OTA.Begin", {"size": 1}) == (
        -1,
        "update to slot 1 is not committed yet: commit or revert it first",
    )
    assert await device.call("OTA.Commit") is None
    assert await device.call("OTA.GetBootState") == {**boot, "is_committed": True}
    assert await device.error("OTA.Commit") == (-1, "nothing to commit: slot 1 is committed")
    assert (device.slots.app_dir() / "fs/index.html").read_text() == "<h1>pump 1.0</h1>\n"
    assert not (device.state_dir / "ota/upload.part").exists()


async def test_revert_after_commit_goes_back_one_version(tmp_path: Path) -> None:
    device = Device(tmp_path)
    for version in ("1.0", "2.0"):
        await device.push(bundle_bytes(tmp_path, version), chunk=2048)
        device.restart()
        await device.call("OTA.Commit")
    assert (await device.call("OTA.GetBootState"))["active_slot"] == 2
    assert await device.call("OTA.Revert") is None
    assert device.reboots[-1] == 0.1
    boot = await device.call("OTA.GetBootState")
    assert boot == {"active_slot": 1, "is_committed": True, "revert_slot": 1, "commit_timeout": 300}
    assert await device.error("OTA.Revert") == (-1, "nothing to revert to: slot 1 has no previous slot")


async def test_a_rolled_back_update_shows_in_status(tmp_path: Path) -> None:
    device = Device(tmp_path)
    await device.push(bundle_bytes(tmp_path, "1.0"))
    device.restart()
    # What the supervisor does when the app keeps crashing.
    for _ in range(3):
        device.slots.record_crash("exit status 1")
    reason = device.slots.should_roll_back(device.now)
    assert reason is not None
    device.slots.revert(error=reason)
    device.restart()
    status = await device.call("OTA.Status")
    assert (status["state"], status["message"], status["partition"]) == (2, reason, 0)
    await device.push(bundle_bytes(tmp_path, "2.0"))  # state 2 lets mos go on (§12 item 4)


async def test_an_interrupted_upload_changes_nothing(tmp_path: Path) -> None:
    device = Device(tmp_path)
    data = bundle_bytes(tmp_path, "1.0")
    await device.call("OTA.Begin", {"size": len(data), "timeout": 60})
    for offset in range(0, 2048, 512):
        await device.call("OTA.Write", {"offset": offset, "data": b64(data[offset : offset + 512])})
    # The client went away. A new mos ota is refused, the running app untouched.
    status = await device.call("OTA.Status")
    assert (status["state"], status["partition"], status["is_committed"]) == (1, 0, True)
    code, message = await device.error("OTA.Begin", {"size": len(data)})
    assert (code, message) == (
        -1,
        f"an upload is in progress (2048 of {len(data)} bytes); it times out in 60 s",
    )
    assert device.slots.app_dir() == device.factory
    # The upload times out; then a new one may start.
    device.now += 60
    status = await device.call("OTA.Status")
    assert status["state"] == 2
    assert status["message"] == f"upload timed out after 60 s (2048 of {len(data)} bytes)"
    assert not (device.state_dir / "ota/upload.part").exists()
    assert await device.error("OTA.Write", {"offset": 2048, "data": b64(data[2048:2560])}) == (
        -1,
        "no upload in progress: call OTA.Begin first",
    )
    await device.push(data)
    assert device.slots.boot_state().active_slot == 1


async def test_end_before_all_bytes_aborts(tmp_path: Path) -> None:
    device = Device(tmp_path)
    await device.call("OTA.Begin", {"size": 1000})
    await device.call("OTA.Write", {"offset": 0, "data": b64(bytes(10))})
    assert await device.error("OTA.End") == (-1, "upload incomplete: 10 of 1000 bytes received")
    status = await device.call("OTA.Status")
    assert (status["state"], status["message"]) == (2, "upload incomplete: 10 of 1000 bytes received")
    assert device.slots.boot_state().active_slot == 0
    assert await device.error("OTA.End") == (-1, "no upload in progress: call OTA.Begin first")
    assert device.reboots == []


async def test_an_upload_resumes_after_a_dropped_connection_and_a_restart(tmp_path: Path) -> None:
    device = Device(tmp_path)
    data = bundle_bytes(tmp_path, "1.0")
    await device.call("OTA.Begin", {"size": len(data)})
    await device.call("OTA.Write", {"offset": 0, "data": b64(data[:700])})
    # The reply was lost: the same write again is accepted, once.
    assert await device.call("OTA.Write", {"offset": 0, "data": b64(data[:700])}) is None
    assert await device.error("OTA.Write", {"offset": 0, "data": b64(data[:512])}) == (
        400,
        "offset 0 is not the 700 bytes received so far",
    )
    device.restart()
    status = await device.call("OTA.Status")
    assert (status["state"], status["progress_percent"]) == (1, 700 * 100 // len(data))
    await device.write(data, 700)
    await device.call("OTA.End")
    assert device.slots.boot_state().active_slot == 1


async def test_argument_errors(tmp_path: Path) -> None:
    device = Device(tmp_path)
    assert await device.error("OTA.Begin", {}) == (400, "size is required")
    assert await device.error("OTA.Begin", {"size": -1}) == (400, "size must be at least 0")
    assert await device.error("OTA.Begin", {"size": 2**21}) == (
        400,
        "size 2097152 is over the limit of 1048576 bytes",
    )
    await device.call("OTA.Begin", {"size": 4})
    assert await device.error("OTA.Write", {"offset": 0, "data": "!!"}) == (400, "data is not valid base64")
    assert await device.error("OTA.Write", {"offset": 0}) == (400, "data is required")
    assert await device.error("OTA.Write", {"offset": 0, "data": b64(bytes(5))}) == (
        400,
        "data at offset 0 goes past the size of 4 bytes",
    )
    assert await device.error("OTA.Write", {"offset": 3, "data": b64(bytes(1))}) == (
        400,
        "offset 3 is not the 0 bytes received so far",
    )
    assert await device.error("OTA.Update", {"url": "ftp://example.com/a.zip"}) == (
        400,
        "url 'ftp://example.com/a.zip' is not an http:// or https:// URL",
    )
    assert await device.error("OTA.SetBootState", {"active_slot": 3}) == (400, "slot 3 is not installed")
    assert await device.error("OTA.SetBootState", {"slot": 3}) == (400, "slot is not an argument")


async def test_a_bad_bundle_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    device = Device(tmp_path)
    files = {"tether.yml": b"name: pump\n", "main.py": b"def init(device): pass\n"}
    members = {"manifest.json": manifest_of(files), **files, "main.py": b"evil()"}
    data = write_zip(tmp_path / "bad.zip", members).read_bytes()
    await device.call("OTA.Begin", {"size": len(data)})
    await device.write(data)
    message = "file 'main.py' does not match its hash in manifest.json"
    assert await device.error("OTA.End") == (-1, message)
    status = await device.call("OTA.Status")
    assert (status["state"], status["message"], status["partition"]) == (2, message, 0)
    assert device.reboots == []
    assert not (device.state_dir / "ota/upload.part").exists()
    assert list((device.state_dir / "ota/slots").iterdir()) == []


async def test_a_key_requires_a_good_signature(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    device = Device(tmp_path, public_key=generate_key(key))
    await device.call("OTA.Begin", {"size": len(data := bundle_bytes(tmp_path, "1.0"))})
    await device.write(data)
    assert await device.error("OTA.End") == (
        -1,
        "bundle is not signed (manifest.sig missing) and update.key is set",
    )
    await device.push(bundle_bytes(tmp_path, "2.0", key=key))
    assert device.slots.boot_state().active_slot == 1
    device.restart()
    await device.call("OTA.Commit")
    device.key = generate_key(tmp_path / "other.pem")
    await device.call("OTA.Begin", {"size": len(data := bundle_bytes(tmp_path, "3.0", key=key))})
    await device.write(data)
    assert await device.error("OTA.End") == (-1, "bad signature: manifest.sig does not match update.key")


async def test_set_boot_state(tmp_path: Path) -> None:
    device = Device(tmp_path)
    await device.push(bundle_bytes(tmp_path, "1.0"))
    assert await device.call("OTA.SetBootState", {"is_committed": True, "commit_timeout": 5}) is None
    assert await device.call("OTA.GetBootState") == {
        "active_slot": 1,
        "is_committed": True,
        "revert_slot": 0,
        "commit_timeout": 5,
    }
    await device.call("OTA.SetBootState", {"active_slot": 0})
    assert device.slots.app_dir() == device.factory


# OTA.Update: pulled from an HTTP server on 127.0.0.1.


@contextlib.asynccontextmanager
async def static_server(root: Path, ssl: Any = None) -> AsyncIterator[int]:
    async with http.serve(http.App(web_root=root), "127.0.0.1", 0, ssl=ssl) as server:
        yield server.port


async def test_update_from_a_url(tmp_path: Path) -> None:
    device = Device(tmp_path)
    root = tmp_path / "www"
    root.mkdir()
    (root / "app.zip").write_bytes(bundle_bytes(tmp_path, "1.0"))
    async with static_server(root) as port:
        url = f"http://127.0.0.1:{port}/app.zip"
        assert await device.error("OTA.Update", {"url": f"http://127.0.0.1:{port}/nope.zip"}) == (
            -1,
            f"http://127.0.0.1:{port}/nope.zip: HTTP 404 Not Found",
        )
        assert (await device.call("OTA.Status"))["state"] == 2
        assert await device.call("OTA.Update", {"url": url, "commit_timeout": 30}) is None
    assert device.reboots == [0.1]
    assert await device.call("OTA.GetBootState") == {
        "active_slot": 1,
        "is_committed": False,
        "revert_slot": 0,
        "commit_timeout": 30,
    }


async def test_update_resumes_after_a_dropped_connection(tmp_path: Path) -> None:
    """The server closes the first response halfway; the device asks for the rest with Range."""
    device = Device(tmp_path)
    data = bundle_bytes(tmp_path, "1.0")
    ranges: list[str | None] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        asked = fields.get("Range")
        ranges.append(asked)
        if asked is None:
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode())
            writer.write(data[: len(data) // 2])
        else:
            start = int(asked.removeprefix("bytes=").rstrip("-"))
            writer.write(
                f"HTTP/1.1 206 Partial Content\r\nContent-Length: {len(data) - start}\r\n"
                f"Content-Range: bytes {start}-{len(data) - 1}/{len(data)}\r\n\r\n".encode()
            )
            writer.write(data[start:])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        assert await device.call("OTA.Update", {"url": f"http://127.0.0.1:{port}/app.zip"}) is None
    assert ranges == [None, f"bytes={len(data) // 2}-"]
    assert device.slots.boot_state().active_slot == 1


def test_download_limits_and_give_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def refuse(request: urllib.request.Request, **kwargs: Any) -> Any:
        calls.append(request.full_url)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(ota.DownloadError, match=r"Connection refused \(3 tries without progress\)"):
        ota.download("http://127.0.0.1:9/a.zip", tmp_path / "a", max_size=10, attempts=3)
    assert len(calls) == 3


async def test_download_over_the_limit(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "big.zip").write_bytes(bytes(2000))
    async with static_server(root) as port:
        url = f"http://127.0.0.1:{port}/big.zip"
        with pytest.raises(ota.DownloadError, match="2000 bytes is over the limit of 1000 bytes"):
            await asyncio.to_thread(ota.download, url, tmp_path / "a", max_size=1000)


async def test_update_over_https_verifies_the_server(tmp_path: Path, pki: dict[str, Path]) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "app.zip").write_bytes(bundle_bytes(tmp_path, "1.0"))
    async with static_server(root, tls.server_context(pki["cert"], pki["key"])) as port:
        url = f"https://127.0.0.1:{port}/app.zip"
        untrusting = Device(tmp_path / "a")  # certifi's CAs: the test CA is not one of them
        code, message = await untrusting.error("OTA.Update", {"url": url})
        assert code == -1 and "CERTIFICATE_VERIFY_FAILED" in message
        device = Device(tmp_path / "b", ca_file=pki["ca"])
        assert await device.call("OTA.Update", {"url": url}) is None
    assert device.slots.boot_state().active_slot == 1


async def raw_http_server(responses: list[bytes]) -> asyncio.Server:
    """Answers the n-th request with responses[n] and closes the connection."""
    answers = iter(responses)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(next(answers))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("responses", "error"),
    [
        (
            [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + bytes(2000)],
            "the body is over the limit of 1000 bytes",
        ),
        (
            [
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + bytes(50),
                b"HTTP/1.1 206 Partial Content\r\nContent-Length: 90\r\n"
                b"Content-Range: bytes 10-99/100\r\n\r\n" + bytes(90),
            ],
            "a partial response for '10-99', not from byte 50",
        ),
        ([b"HTTP/1.1 204 No Content\r\n\r\n"], "unexpected HTTP status 204"),
    ],
    ids=["no length", "wrong range", "204"],
)
async def test_download_refusals(tmp_path: Path, responses: list[bytes], error: str) -> None:
    async with await raw_http_server(responses) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/a.zip"
        with pytest.raises(ota.DownloadError, match=re.escape(f"{url}: {error}")):
            await asyncio.to_thread(ota.download, url, tmp_path / "a", max_size=1000)


async def test_calls_during_an_install_and_a_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow install: other calls are refused meanwhile; End's deadline ends the wait, not the install."""
    device = Device(tmp_path)
    entered, release = threading.Event(), threading.Event()
    install = device.slots.install

    def slow_install(*args: Any, **kwargs: Any) -> int:
        entered.set()
        release.wait(30)
        return install(*args, **kwargs)

    monkeypatch.setattr(device.slots, "install", slow_install)
    device.service = ota.register(
        device.dispatcher, device.slots, public_key=lambda: None, reboot=device.reboots.append, deadline=0.01
    )
    data = bundle_bytes(tmp_path, "1.0")
    await device.call("OTA.Begin", {"size": len(data)})
    await device.write(data)
    assert await device.error("OTA.End") == (504, "deadline exceeded")
    await asyncio.to_thread(entered.wait, 30)
    status = await device.call("OTA.Status")
    assert (status["state"], status["message"], status["progress_percent"]) == (1, "installing", 100)
    for method in ("OTA.End", "OTA.Begin", "OTA.Update"):
        params = {"size": 1} if method == "OTA.Begin" else {"url": "http://127.0.0.1/a.zip"}
        assert await device.error(method, params) == (-1, "an update is in progress: installing")
    assert await device.error("OTA.Revert") == (
        -1,
        "an update is in progress: wait for it or let it time out",
    )
    task = device.service._task
    assert task is not None
    release.set()
    await asyncio.wait([task])
    assert device.service._task is None
    assert (await device.call("OTA.Status"))["state"] == 3
    assert device.reboots == [0.1]
    assert repr(device.service) == "OtaService(state=SUCCESS, message='installed in slot 1; restarting')"
