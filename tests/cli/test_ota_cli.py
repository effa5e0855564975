"""`tether bundle` and `tether ota` against an in-test device (the OTA service on `tether.rpc.mount_rpc`)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import random
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.device.test_ota_bundle import make_app

import tether.http as http
from tether import rpc
from tether.cli import ota as ota_cli
from tether.device.bundle import create_bundle, verify_bundle
from tether.device.services import ota
from tether.device.slots import Slots
from tether.errors import RpcError


def run_cli(*argv: str) -> int:
    """`tether ARGV` with only the commands of tether.cli.ota, in this process."""
    parser = argparse.ArgumentParser(prog="tether")
    parser.add_argument("--port", dest="global_port")
    commands = parser.add_subparsers(dest="command")
    commands.required = True
    ota_cli.add_parser(commands)
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


class Device:
    """The OTA service over WebSocket and HTTP; a reboot re-registers it, as a restart would."""

    def __init__(self, tmp_path: Path) -> None:
        self.slots = Slots(tmp_path / "state", make_app(tmp_path / "factory", version="0.1"))
        self.dispatcher = rpc.Dispatcher("tether_0A1B2C")
        self.restarts = 0
        self.restarted = asyncio.Event()
        self.restart()

    def restart(self) -> None:
        self.service = ota.register(self.dispatcher, self.slots, public_key=lambda: None, reboot=self.reboot)

    def reboot(self, delay: float) -> None:
        def restarted() -> None:
            self.restarts += 1
            self.restart()
            self.restarted.set()

        asyncio.get_running_loop().call_later(delay, restarted)


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[Device, int]]:
    device = Device(tmp_path)
    app = http.App()
    rpc.mount_rpc(app, device.dispatcher, ping_interval=None)
    async with http.serve(app, "127.0.0.1", 0) as server:
        yield device, server.port


def make_bundle(tmp_path: Path, version: str = "1.0") -> Path:
    """A bundle of about 20 kB: incompressible data, several 2048-byte chunks."""
    app = make_app(tmp_path / f"app-{version}", version=version)
    (app / "fs" / "noise.bin").write_bytes(random.Random(version).randbytes(20_000))
    path = tmp_path / f"app-{version}.zip"
    create_bundle(app, path)
    return path


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(run_cli, *argv)


def test_bundle_keygen_and_sign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "key.pem"
    assert run_cli("bundle", "keygen", str(key)) == 0
    out, err = capsys.readouterr()
    public = out.strip()
    assert len(base64.b64decode(public)) == 32
    assert "set update.key on the devices to" in err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert run_cli("bundle", "keygen", str(key)) == 1
    assert "exists" in capsys.readouterr().err
    app = make_app(tmp_path / "app")
    assert run_cli("bundle", str(app), "-o", str(tmp_path / "a.zip"), "--key", str(key)) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"tether bundle: wrote {tmp_path / 'a.zip'}: pump 1.0 (")
    assert "3 files" in err and err.endswith("signed\n")
    assert verify_bundle(tmp_path / "a.zip", public_key=public).verified


def test_bundle_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app(tmp_path / "app")
    assert run_cli("bundle", str(app)) == 2
    assert "-o FILE is required" in capsys.readouterr().err
    assert run_cli("bundle", str(app), "extra", "-o", "x.zip") == 2
    assert "give one APP_DIR" in capsys.readouterr().err
    assert run_cli("bundle", str(tmp_path / "nope"), "-o", str(tmp_path / "x.zip")) == 1
    assert "is not a directory" in capsys.readouterr().err


async def test_ota_with_commit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path)
    async with running(tmp_path) as (device, port):
        code = await cli("ota", str(bundle), "--port", f"ws://127.0.0.1:{port}/rpc", "--commit")
        err = capsys.readouterr().err
        assert code == 0, err
        assert "installed; the device restarts into it" in err and err.endswith("tether ota: committed\n")
    assert device.restarts == 1
    state = device.slots.boot_state()
    assert (state.active_slot, state.is_committed, state.commit_timeout) == (1, True, 300)


async def test_ota_then_status_commit_revert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = make_bundle(tmp_path)
    async with running(tmp_path) as (device, port):
        monkeypatch.setenv("TETHER_PORT", f"http://127.0.0.1:{port}/rpc")
        assert await cli("ota", str(bundle), "--chunk-size", "512", "--commit-timeout", "60") == 0
        capsys.readouterr()
        assert device.slots.boot_state().is_committed is False
        assert await cli("ota", "status") == 0
        status = json.loads(capsys.readouterr().out)
        assert status["state"] in (0, 3) and status["partition"] == 1 and status["commit_timeout"] == 60
        await device.restarted.wait()  # the restart the device scheduled
        assert await cli("ota", "commit") == 0
        assert capsys.readouterr().out == "null\n"
        assert await cli("ota", "commit") == 1
        assert capsys.readouterr().err == "Error: remote error -1: nothing to commit: slot 1 is committed\n"
        assert await cli("--port", f"ws://127.0.0.1:{port}/rpc", "ota", "revert") == 0
    assert device.slots.boot_state().active_slot == 0


async def test_ota_refused_while_an_update_is_in_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle(tmp_path)
    async with running(tmp_path) as (device, port):
        port_url = f"ws://127.0.0.1:{port}/rpc"
        async with rpc.connect(port_url) as client:
            await client.call("OTA.Begin", {"size": 10})
        assert await cli("ota", str(bundle), "--port", port_url) == 1
        assert capsys.readouterr().err == "Error: update is already in progress\n"
        assert await cli("ota", str(tmp_path / "nope.zip"), "--port", port_url) == 1
        assert "Error: cannot read bundle" in capsys.readouterr().err
        assert await cli("ota", str(bundle), "--port", port_url, "--chunk-size", "0") == 2
    assert device.slots.boot_state().active_slot == 0


async def test_ota_writes_are_tried_three_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path)
    async with running(tmp_path) as (device, port):
        failures = {2048: 2, 4096: 3}  # offset: how many times OTA.Write fails there
        write = device.service.write

        def flaky(call: rpc.Call) -> None:
            left = failures.get(call.params["offset"], 0)
            if left:
                failures[call.params["offset"]] = left - 1
                raise RpcError(500, "flash write failed")
            write(call)

        device.dispatcher.add_handler("OTA.Write", flaky)
        assert await cli("ota", str(bundle), "--port", f"ws://127.0.0.1:{port}/rpc") == 1
        err = capsys.readouterr().err
        assert err == "Error: OTA.Write at offset 4096 failed 3 times: error 500: flash write failed\n"
        assert failures == {2048: 0, 4096: 0}
    assert device.slots.boot_state().active_slot == 0


async def test_ota_from_a_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path)
    async with (
        running(tmp_path) as (device, port),
        http.serve(http.App(web_root=tmp_path), "127.0.0.1", 0) as files,
    ):
        url = f"http://127.0.0.1:{files.port}/{bundle.name}"
        assert await cli("ota", url, "--port", f"ws://127.0.0.1:{port}/rpc", "--commit") == 0, (
            capsys.readouterr()
        )
    state = device.slots.boot_state()
    assert (state.active_slot, state.is_committed) == (1, True)


async def test_commit_gives_up_when_the_device_stays_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle(tmp_path)
    async with running(tmp_path) as (device, port):
        device.reboot = lambda delay: None  # type: ignore[method-assign]  # never comes back
        device.restart()
        code = await cli(
            "ota", str(bundle), "--port", f"ws://127.0.0.1:{port}/rpc", "--commit", "--timeout", "1"
        )
        assert code == 1
        assert capsys.readouterr().err.endswith("Error: the device did not come back within 1 s\n")


def test_progress_bar_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    bar = ota_cli._Progress(1000, terminal)
    bar.update(500)
    bar.finish()
    assert terminal.getvalue() == "\r[###############               ]  50% 500/1000 bytes\n"
    plain = io.StringIO()
    bar = ota_cli._Progress(1000, plain)
    bar.update(500)
    bar.finish()
    assert plain.getvalue() == ""


def test_a_target_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli("ota")
    assert "FILE_OR_URL" in capsys.readouterr().err


async def test_commit_refused_when_the_update_was_rolled_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle(tmp_path)
    async with running(tmp_path) as (device, port):

        def roll_back_at_once(delay: float) -> None:
            device.slots.revert(error="app crashed 3 times")
            device.restart()

        device.reboot = roll_back_at_once  # type: ignore[method-assign]
        device.restart()
        assert await cli("ota", str(bundle), "--port", f"ws://127.0.0.1:{port}/rpc", "--commit") == 1
        assert "Error: the device came back committed; was the update rolled back?" in capsys.readouterr().err


async def test_commit_succeeds_when_the_device_commits_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --commit-timeout 0 the device commits the update as it starts (spec §6): a success."""
    bundle = make_bundle(tmp_path)
    async with running(tmp_path) as (device, port):

        def restart_and_commit(delay: float) -> None:
            device.slots.commit()  # what tether.device.runtime does at start with commit_timeout 0
            device.restart()

        device.reboot = restart_and_commit  # type: ignore[method-assign]
        device.restart()
        code = await cli(
            "ota", str(bundle), "--port", f"ws://127.0.0.1:{port}/rpc", "--commit", "--commit-timeout", "0"
        )
        err = capsys.readouterr().err
        assert code == 0, err
        assert err.endswith("tether ota: committed\n")
    state = device.slots.boot_state()
    assert (state.active_slot, state.is_committed, state.last_error) == (1, True, "")


async def test_commit_accepts_a_self_commit_that_races_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The device commits itself between the tool's OTA.Status and its OTA.Commit."""
    bundle = make_bundle(tmp_path)
    async with running(tmp_path) as (device, port):
        commit = device.service.commit

        async def commit_after_the_device(call: rpc.Call) -> None:
            device.slots.commit()
            await commit(call)  # "nothing to commit: slot 1 is committed"

        def restart(delay: float) -> None:
            device.restart()
            device.dispatcher.add_handler("OTA.Commit", commit_after_the_device)

        device.reboot = restart  # type: ignore[method-assign]
        device.restart()
        code = await cli(
            "ota", str(bundle), "--port", f"ws://127.0.0.1:{port}/rpc", "--commit", "--commit-timeout", "0"
        )
        assert code == 0, capsys.readouterr().err
    assert device.slots.boot_state().is_committed
