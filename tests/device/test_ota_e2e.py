"""Over-the-air updates of a running `tether run` device, end to end (issue: OTA).

Each test starts the skeleton app as version 1.0, builds other versions of it with
`tether bundle`, and updates the device with `tether ota` or with the call
sequence `mos ota` sends, then checks which version runs and its boot state.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import time
from pathlib import Path

import pytest
from tests.device.harness import TIMEOUT, Device, tether

from tether.rpc import sync

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    result = tether("init", "app", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / "app"


def version(app: Path, tmp_path: Path, number: str, *, crash: bool = False, key: Path | None = None) -> Path:
    """A bundle of app at version number; with crash, its init raises."""
    source = tmp_path / f"app-{number}"
    if not source.exists():
        shutil.copytree(app, source, ignore=shutil.ignore_patterns(".state"))
        manifest = (source / "tether.yml").read_text().replace('version: "1.0"', f'version: "{number}"')
        (source / "tether.yml").write_text(manifest)
        if crash:
            with open(source / "main.py", "a") as main:
                main.write(
                    "\n\n_init = init\n\n\ndef init(device):\n    raise RuntimeError('broken build')\n"
                )
    bundle = tmp_path / f"app-{number}{'-signed' if key else ''}.zip"
    command = ["bundle", str(source), "-o", str(bundle)] + (["--key", str(key)] if key else [])
    result = tether(*command)
    assert result.returncode == 0, result.stderr
    return bundle


def ota(device: Device, bundle: Path | str, *extra: str) -> None:
    result = tether("--port", device.url, "ota", str(bundle), *extra, timeout=TIMEOUT * 2)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{device.log()}"


def boot_state(device: Device) -> dict[str, object]:
    device.wait_ready()
    state = device.call("OTA.GetBootState")
    assert isinstance(state, dict)
    return state


def test_good_update_commits_then_revert_goes_back_one_version(app: Path, tmp_path: Path) -> None:
    with Device(app, tmp_path / "state") as device:
        assert device.info()["fw_version"] == "1.0"
        ota(device, version(app, tmp_path, "2.0"), "--commit")
        device.wait_version("2.0")
        assert boot_state(device)["is_committed"] is True
        ota(device, version(app, tmp_path, "3.0"), "--commit")
        device.wait_version("3.0")
        assert tether("--port", device.url, "ota", "revert").returncode == 0
        device.wait_version("2.0")
        state = boot_state(device)
        assert state["is_committed"] is True
        assert device.call("OTA.Status")["state"] == 0


def test_an_app_that_crashes_on_start_is_rolled_back(app: Path, tmp_path: Path) -> None:
    with Device(app, tmp_path / "state") as device:
        ota(device, version(app, tmp_path, "2.0", crash=True))
        deadline = time.monotonic() + TIMEOUT
        while "update failed" not in device.log():
            assert time.monotonic() < deadline, device.log()
            time.sleep(0.1)
        device.wait_version("1.0")
        assert "broken build" in device.log()
        # The device that came back says so once (the event ota.failed, and its log).
        assert device.log().count("the last update failed and was rolled back to slot 0") == 1
        status = device.call("OTA.Status")
        assert status["state"] == 2 and "crashed" in status["message"]
        assert boot_state(device)["is_committed"] is True


def test_an_update_never_committed_is_rolled_back_after_the_timeout(app: Path, tmp_path: Path) -> None:
    with Device(app, tmp_path / "state") as device:
        ota(device, version(app, tmp_path, "2.0"), "--commit-timeout", "3")
        info = device.wait_version("2.0")
        assert boot_state(device)["is_committed"] is False
        device.wait_version("1.0")  # after 3 s without a commit
        status = device.call("OTA.Status")
        assert status["state"] == 2 and "not committed" in status["message"]
        assert info["id"] == device.info()["id"]


def test_the_app_commits_itself_with_commit_timeout_zero(app: Path, tmp_path: Path) -> None:
    with Device(app, tmp_path / "state") as device:
        ota(device, version(app, tmp_path, "2.0"), "--commit-timeout", "0")
        device.wait_version("2.0")
        assert boot_state(device)["is_committed"] is True  # §6: 0 commits once the app is up


def test_interrupted_upload_changes_nothing(app: Path, tmp_path: Path) -> None:
    bundle = version(app, tmp_path, "2.0").read_bytes()
    with Device(app, tmp_path / "state") as device:
        with sync.connect(device.url, timeout=TIMEOUT) as client:
            client.call("OTA.Begin", {"size": len(bundle), "timeout": 2, "commit_timeout": 300})
            client.call("OTA.Write", {"offset": 0, "data": base64.b64encode(bundle[:512]).decode()})
        # The client went away mid-upload: the device runs 1.0, a new Begin waits for the
        # stale upload's timeout, then works; no slot was made.
        assert device.info()["fw_version"] == "1.0"
        assert device.call("OTA.Status")["state"] == 1
        deadline = time.monotonic() + TIMEOUT
        while device.call("OTA.Status")["state"] == 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert boot_state(device)["active_slot"] == 0
        assert not any((tmp_path / "state" / "ota" / "slots").glob("[0-9]*"))


def test_signed_updates_only_when_update_key_is_set(app: Path, tmp_path: Path) -> None:
    key, other = tmp_path / "key.pem", tmp_path / "other.pem"
    public = tether("bundle", "keygen", str(key)).stdout.strip().split()[-1]
    tether("bundle", "keygen", str(other))
    with Device(app, tmp_path / "state", f"update.key={public}") as device:
        refusals = []
        for bundle in (version(app, tmp_path, "2.0"), version(app, tmp_path, "2.0", key=other)):
            result = tether("--port", device.url, "ota", str(bundle), timeout=TIMEOUT)
            assert result.returncode != 0
            refusals.append(result.stderr)
            assert device.info()["fw_version"] == "1.0"
        assert "bundle is not signed" in refusals[0], refusals
        assert "signature" in refusals[1], refusals
        ota(device, version(app, tmp_path, "2.0", key=key), "--commit")
        device.wait_version("2.0")


def test_mos_ota_call_sequence(app: Path, tmp_path: Path) -> None:
    """§6: OTA.Status, OTA.Begin {timeout, commit_timeout, size}, OTA.Write {offset, data} per
    512-byte chunk, OTA.End; then mos leaves the commit to a `mos call OTA.Commit`."""
    bundle = version(app, tmp_path, "2.0").read_bytes()
    with Device(app, tmp_path / "state") as device:
        with sync.connect(device.url, timeout=TIMEOUT) as client:
            assert client.call("OTA.Status")["state"] in (0, 2)
            client.call("OTA.Begin", {"timeout": 600, "commit_timeout": 300, "size": len(bundle)})
            for offset in range(0, len(bundle), 512):
                chunk = base64.b64encode(bundle[offset : offset + 512]).decode()
                client.call("OTA.Write", {"offset": offset, "data": chunk})
            client.call("OTA.End")
        device.wait_version("2.0")
        assert boot_state(device)["is_committed"] is False
        assert device.call("OTA.Commit") is None
        assert boot_state(device)["is_committed"] is True


def test_power_cut_at_every_step_comes_up_on_a_working_version(app: Path, tmp_path: Path) -> None:
    """SIGKILL of the whole process tree during the upload, right after OTA.End, during the
    switch, right after the restart into the new version and during the commit; after each
    the device is started again and must run 1.0 or 2.0, answering and working. The outcome
    of each step is printed (pytest -s) and kept in the assertion messages."""
    bundle = version(app, tmp_path, "2.0").read_bytes()
    state = tmp_path / "state"
    outcomes: dict[str, str] = {}
    rng = random.Random(6)

    def upload(device: Device, *, end: bool, stop_at: int | None = None) -> None:
        with sync.connect(device.url, timeout=TIMEOUT) as client:
            client.call("OTA.Begin", {"timeout": 600, "commit_timeout": 300, "size": len(bundle)})
            for offset in range(0, stop_at or len(bundle), 2048):
                data = base64.b64encode(bundle[offset : offset + 2048]).decode()
                client.call("OTA.Write", {"offset": offset, "data": data})
            if end:
                client.call("OTA.End")

    def back_to_1(device: Device) -> None:
        """Undo what the last step left: a stale upload, an uncommitted 2.0."""
        if device.call("OTA.Status")["state"] == 1:
            device.call("OTA.End", check=False)  # an incomplete upload: dropped
        if boot_state(device)["is_committed"] is False:
            device.call("OTA.Revert")
        device.wait_version("1.0")

    def power_cut_and_check(step: str, device: Device) -> Device:
        device.power_cut()
        device = Device(app, state, port=device.port).start()
        info = device.info()
        committed = boot_state(device)["is_committed"]
        outcomes[step] = f"came up on {info['fw_version']} ({'committed' if committed else 'uncommitted'})"
        assert info["fw_version"] in ("1.0", "2.0"), outcomes
        assert device.call("Sum", {"a": 1, "b": 1}) == 2.0, outcomes  # the app works
        return device

    device = Device(app, state).start()
    try:
        upload(device, end=False, stop_at=len(bundle) // 2)
        device = power_cut_and_check("during the upload", device)
        assert outcomes["during the upload"] == "came up on 1.0 (committed)"
        back_to_1(device)

        upload(device, end=True)
        device = power_cut_and_check("right after OTA.End", device)
        back_to_1(device)

        upload(device, end=True)
        time.sleep(rng.uniform(0.05, 0.4))
        device = power_cut_and_check("during the switch", device)
        back_to_1(device)

        upload(device, end=True)
        device.wait_version("2.0")
        device = power_cut_and_check("right after the restart", device)
        assert outcomes["right after the restart"] == "came up on 2.0 (uncommitted)"

        with sync.connect(device.url, timeout=TIMEOUT) as client:
            client.notify("OTA.Commit")
        device = power_cut_and_check("during the commit", device)
        assert outcomes["during the commit"].startswith("came up on 2.0")
    finally:
        device.stop()
        print(json.dumps(outcomes, indent=1))
    assert len(outcomes) == 5, outcomes


def test_update_from_a_url(app: Path, tmp_path: Path) -> None:
    """`tether ota URL`: the device downloads the bundle itself (OTA.Update) from an HTTP server."""
    import asyncio
    import threading

    from tether.http import App, serve

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(version(app, tmp_path, "2.0"), site / "app-2.0.zip")
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    ports: list[int] = []

    async def serve_site() -> None:
        stop.append(asyncio.Event())
        async with serve(App(site), "127.0.0.1", 0) as server:
            ports.append(server.port)
            ready.set()
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve_site(),), daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT)
    try:
        with Device(app, tmp_path / "state") as device:
            ota(device, f"http://127.0.0.1:{ports[0]}/app-2.0.zip", "--commit")
            device.wait_version("2.0")
            assert boot_state(device)["is_committed"] is True
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(TIMEOUT)
        loop.close()
