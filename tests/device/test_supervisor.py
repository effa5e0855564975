from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests.device.test_ota_bundle import make_app
from tests.device.test_ota_slots import bundle_of

from tether.device import supervisor as supervisor_module
from tether.device.slots import Slots
from tether.device.supervisor import EXIT_REBOOT, Supervisor, supervise

TIMEOUT = 30


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "device.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path), str(tmp_path)]


def counting_script(tmp_path: Path, status: str) -> list[str]:
    """A device process that counts its starts in n and exits with the expression status."""
    return script(
        tmp_path,
        f"""
        import sys, pathlib
        counter = pathlib.Path(sys.argv[1]) / "starts"
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
        sys.exit({status})
        """,
    )


def test_reboot_restarts_at_once_crash_with_backoff_clean_exit_stops(tmp_path: Path) -> None:
    command = counting_script(tmp_path, f"{{1: {EXIT_REBOOT}, 2: 3, 3: 0}}[n]")
    exits: list[tuple[int, str | None]] = []
    log = io.StringIO()
    supervisor = Supervisor(
        lambda: command,
        on_exit=lambda status, crash: exits.append((status, crash)) is None and False,
        log=log,
        backoff_min=0.01,
    )
    assert supervisor.run() == 0
    assert supervisor.starts == 3
    assert exits == [(EXIT_REBOOT, None), (3, "device process exited with status 3"), (0, None)]
    assert "rebooting" in log.getvalue()
    assert "exited with status 3; starting again" in log.getvalue()


@pytest.mark.parametrize(
    ("ignore_sigterm", "watch"),
    [(False, "None"), (True, "None"), (True, "lambda: None")],
    ids=["stops", "ignores-sigterm", "ignores-sigterm-while-watched"],
)
def test_sigterm_stops_the_device_process_and_the_supervisor(
    tmp_path: Path, ignore_sigterm: bool, watch: str
) -> None:
    """A device process that ignores SIGTERM is killed stop_timeout (1 s) after the request,
    whichever way the supervisor waits for it (the bound here is TIMEOUT, 30 s)."""
    device = tmp_path / "device.py"
    device.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys, time, pathlib
            if {ignore_sigterm}:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            pathlib.Path(sys.argv[1], "pid").write_text(str(os.getpid()))
            for _ in range(600):
                time.sleep(0.1)
            """
        )
    )
    runner = tmp_path / "supervise.py"
    runner.write_text(
        textwrap.dedent(
            f"""
            import sys
            from tether.device.supervisor import Supervisor
            command = [sys.executable, {str(device)!r}, {str(tmp_path)!r}]
            sys.exit(Supervisor(lambda: command, watch={watch}, stop_timeout=1).run())
            """
        )
    )
    process = subprocess.Popen([sys.executable, str(runner)], stderr=subprocess.PIPE, text=True)
    try:
        pid_file = tmp_path / "pid"
        deadline = time.monotonic() + TIMEOUT
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the device process never started"
            time.sleep(0.02)
        child = int(pid_file.read_text())
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(TIMEOUT) == 0
        except subprocess.TimeoutExpired:
            os.kill(child, signal.SIGKILL)
            raise
        assert process.stderr is not None
        killed = "did not stop in 1 s; killing it" in process.stderr.read()
        assert killed == ignore_sigterm
        # The supervisor reaped its child: it is gone (not even a zombie of ours).
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            pass
        else:
            raise AssertionError(f"device process {child} still runs")
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_a_reboot_loop_backs_off_like_a_crash(tmp_path: Path) -> None:
    """Five reboots in a row, each soon after its start, make a crash; a slow one resets the count."""
    command = counting_script(tmp_path, f"0 if n == 7 else {EXIT_REBOOT}")
    crashes: list[str | None] = []
    log = io.StringIO()
    supervisor = Supervisor(
        lambda: command,
        on_exit=lambda status, crash: crashes.append(crash) is None and False,
        log=log,
        backoff_min=0.01,
        reboot_window=TIMEOUT,  # every start here is "soon"
    )
    assert supervisor.run() == 0
    loop = f"device process rebooted 5 times in a row, each within {TIMEOUT} s of its start"
    assert crashes == [None] * 4 + [loop, loop.replace("5 times", "6 times"), None]
    assert log.getvalue().count("rebooting") == 4
    assert f"{loop}; starting again in 0.01 s" in log.getvalue()
    assert "rebooted 6 times in a row" in log.getvalue()
    # Reboots long after the start (a window of 0 s) never make a crash.
    (tmp_path / "starts").unlink()
    crashes.clear()
    supervisor = Supervisor(
        lambda: command,
        on_exit=lambda status, crash: crashes.append(crash) is None and False,
        log=log,
        backoff_min=0.01,
        reboot_window=0,
    )
    assert supervisor.run() == 0
    assert crashes == [None] * 7


def test_a_failed_spawn_is_retried_with_the_backoff(tmp_path: Path) -> None:
    good = script(tmp_path, "import sys; sys.exit(0)")
    commands = iter([[str(tmp_path / "vanished-python"), "-c", "pass"], good])
    log = io.StringIO()
    supervisor = Supervisor(lambda: next(commands), log=log, backoff_min=0.01)
    assert supervisor.run() == 0
    assert supervisor.starts == 2
    assert "cannot start the device process: [Errno 2]" in log.getvalue()
    assert "trying again in 0.01 s" in log.getvalue()


# supervise(): the OTA wiring, with a stand-in device process that records its app and exits.

DEVICE = r"""
import json, pathlib, sys
app, state = sys.argv[1], sys.argv[2]
boot = pathlib.Path(state, "ota", "boot.json")
runs = pathlib.Path(state, "runs")
with open(runs, "a") as file:
    file.write(json.dumps([app, json.loads(boot.read_text()) if boot.exists() else None]) + "\n")
sys.exit(0 if len(runs.read_text().splitlines()) >= 20 else {exit})  # 20: a bound for a broken test
"""


def stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exit: str) -> None:
    """Make supervise() start DEVICE (exit: a Python expression of the app and the state dir)."""
    path = tmp_path / "stand_in.py"
    path.write_text(DEVICE.format(exit=exit))
    monkeypatch.setattr(
        supervisor_module,
        "device_command",
        lambda app, state, overrides, *, factory: [sys.executable, str(path), app, state],
    )


def quick() -> Supervisor:
    """A supervisor with short backoffs, and every reboot "soon" after its start."""
    return Supervisor(lambda: [], backoff_min=0.01, backoff_max=0.01, reboot_window=TIMEOUT)


def runs(state: Path) -> list[list[object]]:
    return [json.loads(line) for line in (state / "runs").read_text().splitlines()]


@pytest.mark.timeout(120)
def test_supervise_starts_the_commit_timer_at_the_first_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = make_app(tmp_path / "factory", version="0.1")
    state = tmp_path / "state"
    slots = Slots(state, factory)
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    assert slots.boot_state().update_started is None  # not at the install: the device may be off
    stand_in(monkeypatch, tmp_path, "0")
    before = time.time()
    assert supervise(str(factory), str(state), log=io.StringIO(), supervisor=quick()) == 0
    [(app, boot)] = runs(state)
    assert app == str(slots.app_dir(1))
    assert isinstance(boot, dict) and boot["update_started"] >= before


@pytest.mark.timeout(120)
def test_supervise_keeps_every_slot_when_the_boot_state_is_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = make_app(tmp_path / "factory", version="0.1")
    state = tmp_path / "state"
    slots = Slots(state, factory)
    for version in ("1.0", "2.0"):
        slots.install(bundle_of(tmp_path, version), public_key=None, commit_timeout=300)
        slots.commit()
    (state / "ota/boot.json").write_bytes(b'{"active_slot": 2, "revert')
    stand_in(monkeypatch, tmp_path, "0")
    log = io.StringIO()
    assert supervise(str(factory), str(state), log=log, supervisor=quick()) == 0
    assert sorted(p.name for p in slots.slots_dir.iterdir()) == ["1", "2"]
    assert (state / "ota/boot.json.corrupt").read_bytes() == b'{"active_slot": 2, "revert'
    assert runs(state) == [[str(factory), None]]
    assert "the OTA boot state is lost" in log.getvalue()


@pytest.mark.timeout(120)
def test_supervise_counts_a_reboot_loop_of_an_update_as_crashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The update reboots in its init: from the 5th quick reboot each is a crash; at 3 it is rolled back."""
    factory = make_app(tmp_path / "factory", version="0.1")
    state = tmp_path / "state"
    slots = Slots(state, factory)
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=0)
    stand_in(monkeypatch, tmp_path, f"0 if app == {str(factory)!r} else {EXIT_REBOOT}")
    log = io.StringIO()
    assert supervise(str(factory), str(state), log=log, supervisor=quick()) == 0
    apps = [app for app, _ in runs(state)]
    assert apps == [str(slots.slots_dir / "1")] * 7 + [str(factory)]
    boot = slots.boot_state()
    assert (boot.active_slot, boot.is_committed) == (0, True)
    assert boot.last_error.startswith(
        "slot 1 crashed 3 times before its commit: device process rebooted 7 times"
    )
    assert "update failed (slot 1 crashed 3 times" in log.getvalue()
