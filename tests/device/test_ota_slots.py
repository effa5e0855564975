"""A/B slots and boot state: install, commit, revert, roll-back decisions, and SIGKILL at any point."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from tests.device.test_ota_bundle import make_app

from tether.device.bundle import BundleError, create_bundle
from tether.device.slots import BootState, SlotError, Slots


@pytest.fixture
def factory(tmp_path: Path) -> Path:
    return make_app(tmp_path / "factory", version="0.1")


TIMEOUT = 30


def bundle_of(tmp_path: Path, version: str, files: int = 0) -> Path:
    app = make_app(tmp_path / f"app-{version}", version=version, files=files)
    path = tmp_path / f"app-{version}.zip"
    create_bundle(app, path)
    return path


def version_in(directory: Path) -> str:
    text = (directory / "tether.yml").read_text()
    return text.split('version: "')[1].split('"')[0]


def test_a_new_state_dir_runs_the_factory_app(tmp_path: Path, factory: Path) -> None:
    slots = Slots(tmp_path / "state", factory)
    assert slots.boot_state() == BootState(0, 0, True, 0, None, 0, "")
    assert slots.app_dir() == factory == slots.app_dir(0)
    assert slots.should_roll_back(1e12) is None
    with pytest.raises(SlotError, match="slot 1 is not installed"):
        slots.app_dir(1)
    assert not (tmp_path / "state").exists()  # reading writes nothing
    with pytest.raises(SlotError, match="nothing to commit: slot 0 is committed"):
        slots.commit()
    with pytest.raises(SlotError, match="nothing to revert to: slot 0 has no previous slot"):
        slots.revert()


def test_install_commit_revert(tmp_path: Path, factory: Path) -> None:
    now = [1000.0]
    slots = Slots(tmp_path / "state", factory, clock=lambda: now[0])
    v1, v2, v3 = (bundle_of(tmp_path, v) for v in ("1.0", "2.0", "3.0"))

    assert slots.install(v1, public_key=None, commit_timeout=300) == 1
    assert slots.boot_state() == BootState(1, 0, False, 300, None, 0, "")
    assert version_in(slots.app_dir()) == "1.0"
    assert (slots.app_dir() / "manifest.json").is_file()
    assert json.loads((tmp_path / "state/ota/boot.json").read_text())["active_slot"] == 1
    with pytest.raises(SlotError, match="update to slot 1 is not committed yet"):
        slots.install(v2, public_key=None, commit_timeout=300)

    slots.commit()
    assert slots.boot_state() == BootState(1, 0, True, 300, None, 0, "")
    assert slots.install(v2, public_key=None, commit_timeout=0) == 2
    slots.commit()
    assert slots.install(v3, public_key=None, commit_timeout=60) == 3
    assert sorted(p.name for p in slots.slots_dir.iterdir()) == ["2", "3"]  # slot 1 is gone
    slots.commit()
    assert slots.boot_state().revert_slot == 2

    # OTA.Revert after a commit: one version back, committed; no further back.
    assert slots.revert() == 2
    assert slots.boot_state() == BootState(2, 2, True, 60, None, 0, "")
    assert version_in(slots.app_dir()) == "2.0"
    with pytest.raises(SlotError, match="nothing to revert to"):
        slots.revert()
    slots.collect()
    assert [p.name for p in slots.slots_dir.iterdir()] == ["2"]
    assert slots.install(v1, public_key=None, commit_timeout=5) == 3


def test_roll_back_decisions(tmp_path: Path, factory: Path) -> None:
    slots = Slots(tmp_path / "state", factory, clock=lambda: 1000.0)
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    assert slots.record_first_start().update_started == 1000.0
    assert slots.should_roll_back(1000.0) is None
    assert slots.should_roll_back(1299.9) is None
    assert slots.should_roll_back(1300.0) == "slot 1 was not committed within 300 s"
    assert slots.record_crash("exit status 1: ImportError: no module named 'x'") == 1
    assert slots.record_crash("exit status 1: ImportError: no module named 'x'") == 2
    assert slots.should_roll_back(1000.0) is None
    assert slots.should_roll_back(1000.0, max_crashes=2) is not None
    assert slots.record_crash("killed by signal 11") == 3
    reason = slots.should_roll_back(1000.0)
    assert reason == "slot 1 crashed 3 times before its commit: killed by signal 11"
    assert slots.revert(error=reason) == 0
    assert slots.boot_state() == BootState(0, 0, True, 300, None, 0, reason)
    assert slots.should_roll_back(1e12) is None
    assert slots.app_dir() == factory
    # No deadline with commit_timeout 0; a new install clears last_error.
    slots.install(bundle_of(tmp_path, "2.0"), public_key=None, commit_timeout=0)
    assert slots.should_roll_back(1e12) is None
    assert slots.boot_state().last_error == ""


def test_the_commit_timer_starts_at_the_first_start_not_at_the_install(tmp_path: Path, factory: Path) -> None:
    """Spec §6: a device switched off for longer than the timeout after the install keeps the update."""
    now = [1000.0]
    slots = Slots(tmp_path / "state", factory, clock=lambda: now[0])
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    assert slots.boot_state().update_started is None
    now[0] = 1e6  # powered off for days
    assert slots.should_roll_back(1e6) is None
    assert slots.roll_back_if_due(1e6) is None
    assert slots.record_first_start().update_started == 1e6
    now[0] = 2e6  # a later start does not move the stamp
    assert slots.record_first_start().update_started == 1e6
    assert slots.roll_back_if_due(1e6 + 299) is None
    assert slots.roll_back_if_due(1e6 + 300) == ("slot 1 was not committed within 300 s", 0)
    assert slots.boot_state() == BootState(0, 0, True, 300, None, 0, "slot 1 was not committed within 300 s")
    # Committed: nothing to stamp.
    assert slots.record_first_start() == slots.boot_state()
    assert json.loads((tmp_path / "state/ota/boot.json").read_text())["update_started"] is None


def test_roll_back_if_due_never_reverts_a_commit_that_lands_first(tmp_path: Path, factory: Path) -> None:
    """The decision and the revert hold the lock together: a commit made while the lock is
    held elsewhere is seen (with should_roll_back then revert, it was reverted)."""
    slots = Slots(tmp_path / "state", factory, clock=lambda: 1000.0)
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    slots.record_first_start()
    for _ in range(3):
        slots.record_crash("boom")
    assert slots.should_roll_back(1000.0) is not None
    results: list[object] = []
    # Another process holds the lock and commits; the rollback waits for it, then sees the commit.
    fd = os.open(slots.ota_dir / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        thread = threading.Thread(target=lambda: results.append(slots.roll_back_if_due(1000.0)))
        thread.start()
        committed = dataclasses.replace(slots.boot_state(), is_committed=True, crashes=0, last_error="")
        (slots.ota_dir / "boot.json").write_text(json.dumps(committed.to_json()))
    finally:
        os.close(fd)  # releases the lock
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert results == [None]
    assert slots.boot_state() == committed
    # Nothing to revert to while uncommitted: an error, nothing changed.
    slots.set_boot_state(is_committed=False, revert_slot=1, crashes=3)
    with pytest.raises(SlotError, match="nothing to revert to"):
        slots.roll_back_if_due(1000.0)


def test_commit_clears_crashes(tmp_path: Path, factory: Path) -> None:
    slots = Slots(tmp_path / "state", factory)
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    slots.record_crash("boom")
    slots.commit()
    state = slots.boot_state()
    assert (state.crashes, state.last_error, state.is_committed) == (0, "", True)


def test_a_refused_bundle_changes_nothing(tmp_path: Path, factory: Path) -> None:
    slots = Slots(tmp_path / "state", factory)
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    slots.commit()
    before = slots.boot_state()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BundleError, match=r"bad\.zip is not a zip file"):
        slots.install(bad, public_key=None, commit_timeout=300)
    with pytest.raises(BundleError, match="not signed"):
        slots.install(bundle_of(tmp_path, "2.0"), public_key="AAAA", commit_timeout=300)
    with pytest.raises(ValueError, match="commit_timeout must not be negative"):
        slots.install(bundle_of(tmp_path, "2.0"), public_key=None, commit_timeout=-1)
    assert slots.boot_state() == before
    assert [p.name for p in slots.slots_dir.iterdir()] == ["1"]


def test_a_failed_unpack_leaves_no_slot(
    tmp_path: Path, factory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = Slots(tmp_path / "state", factory)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tether.device.bundle.extract_bundle", full_disk)
    with pytest.raises(OSError, match="No space left"):
        slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    assert slots.boot_state() == BootState()
    assert list(slots.slots_dir.iterdir()) == []


def test_set_boot_state(tmp_path: Path, factory: Path) -> None:
    slots = Slots(tmp_path / "state", factory)
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    assert slots.set_boot_state(is_committed=True, commit_timeout=10).is_committed
    assert slots.boot_state().commit_timeout == 10
    assert slots.set_boot_state(active_slot=0, revert_slot=1).active_slot == 0
    for fields, error in [
        ({"active_slot": 7}, "slot 7 is not installed"),
        ({"active_slot": -1}, "must not be negative"),
        ({"is_committed": 1}, "'is_committed' must be bool, not 1"),
        ({"commit_timeout": True}, "'commit_timeout' must be int, not True"),
        ({"update_started": "now"}, "'update_started' must be float"),
        ({"colour": "red"}, "boot state has no field 'colour'"),
    ]:
        with pytest.raises(ValueError, match=error):
            slots.set_boot_state(**fields)
    assert slots.set_boot_state(update_started=12, last_error="x").update_started == 12


def test_an_unusable_boot_state_runs_the_factory_app(tmp_path: Path, factory: Path) -> None:
    slots = Slots(tmp_path / "state", factory)
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    boot = tmp_path / "state/ota/boot.json"
    for content, error in [
        (b"{", "boot state unreadable: "),
        (b"[]", "boot state unreadable: boot state [] is not an object"),
        (b'{"active_slot": "1"}', "boot state unreadable: boot state field 'active_slot' must be int"),
        (b'{"active_slot": 9}', "slot 9 is not installed"),
        (b'{"active_slot": 9, "revert_slot": 1}', "slot 9 is not installed"),
    ]:
        boot.write_bytes(content)
        state = slots.boot_state()
        assert (state.active_slot, state.is_committed) == (0, True)
        assert state.last_error.startswith(error)
        assert slots.app_dir() == factory
    # A missing revert slot: the active one runs, a revert goes to the factory app.
    boot.write_bytes(b'{"active_slot": 1, "revert_slot": 5, "is_committed": false, "future_field": 1}')
    assert slots.boot_state() == BootState(1, 0, False, 0, None, 0, "")


@pytest.mark.parametrize("content", [b"{", b"\xff", b'{"active_slot": 9, "revert_slot": 1}'])
def test_an_unusable_boot_state_keeps_every_slot(tmp_path: Path, factory: Path, content: bytes) -> None:
    slots = Slots(tmp_path / "state", factory)
    for version in ("1.0", "2.0"):
        slots.install(bundle_of(tmp_path, version), public_key=None, commit_timeout=300)
        slots.commit()
    boot = tmp_path / "state/ota/boot.json"
    boot.write_bytes(content)
    assert slots.collect() == boot.with_name("boot.json.corrupt")
    assert not boot.exists()
    assert boot.with_name("boot.json.corrupt").read_bytes() == content
    assert sorted(p.name for p in slots.slots_dir.iterdir()) == ["1", "2"]
    assert slots.app_dir() == factory
    # Later writes keep the slots too (a half-deleted leftover goes), until the file is removed.
    (slots.slots_dir / ".old-7-abcd").mkdir()
    assert slots.install(bundle_of(tmp_path, "3.0"), public_key=None, commit_timeout=300) == 3
    slots.commit()
    assert slots.collect() == boot.with_name("boot.json.corrupt")
    assert sorted(p.name for p in slots.slots_dir.iterdir()) == ["1", "2", "3"]
    boot.with_name("boot.json.corrupt").unlink()
    assert slots.collect() is None
    assert sorted(p.name for p in slots.slots_dir.iterdir()) == ["3"]


def test_a_writer_moves_an_unusable_boot_state_aside(tmp_path: Path, factory: Path) -> None:
    slots = Slots(tmp_path / "state", factory)
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    boot = tmp_path / "state/ota/boot.json"
    boot.write_bytes(b"{")
    assert slots.install(bundle_of(tmp_path, "2.0"), public_key=None, commit_timeout=300) == 2
    assert boot.with_name("boot.json.corrupt").read_bytes() == b"{"
    assert sorted(p.name for p in slots.slots_dir.iterdir()) == ["1", "2"]


def test_collect_removes_leftovers(tmp_path: Path, factory: Path) -> None:
    slots = Slots(tmp_path / "state", factory)
    slots.install(bundle_of(tmp_path, "1.0"), public_key=None, commit_timeout=300)
    for leftover in (".new-abc/fs", ".old-2-abcd", "7/fs"):
        (slots.slots_dir / leftover).mkdir(parents=True)
    (slots.slots_dir / "stray").write_text("x")
    slots.collect()
    assert [p.name for p in slots.slots_dir.iterdir()] == ["1"]
    # The next slot number skips a leftover slot that was not collected yet.
    (slots.slots_dir / "7").mkdir()
    slots.commit()
    assert slots.install(bundle_of(tmp_path, "2.0"), public_key=None, commit_timeout=300) == 2


# Power cuts: a child process works on the slots and is killed with SIGKILL.

CHILD = textwrap.dedent(
    """
    import json, os, random, signal, sys
    from tether.device.slots import Slots

    state, factory, seed, kill_at, *bundles = sys.argv[1:]
    kill_at = int(kill_at)
    events = []

    def hook(event, args):
        # Count file system events; die at the chosen one, as in a power cut.
        if event in ("open", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir",
                     "shutil.rmtree", "os.unlink", "os.truncate"):
            events.append(event)
            if len(events) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    slots = Slots(state, factory)
    rng = random.Random(int(seed))
    print("ready", flush=True)
    sys.addaudithook(hook)
    for _ in range(6):
        s = slots.boot_state()
        if not s.is_committed:
            slots.commit() if rng.random() < 0.6 else slots.revert(error="rolled back")
        elif s.revert_slot != s.active_slot and rng.random() < 0.2:
            slots.revert()
        else:
            slots.install(rng.choice(bundles), public_key=None, commit_timeout=300)
    print(json.dumps(events), flush=True)
    """
)


def check_complete(directory: Path, versions: set[str]) -> str:
    """The version of the app in directory, after checking every file against its manifest."""
    manifest = json.loads((directory / "manifest.json").read_bytes())
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    assert present == {*manifest["files"], "manifest.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest, name
    assert manifest["version"] in versions
    return str(manifest["version"])


def check_consistent(state_dir: Path, factory: Path, versions: set[str]) -> BootState:
    slots = Slots(state_dir, factory)
    state = slots.boot_state()
    assert state.last_error in ("", "rolled back"), state
    boot = state_dir / "ota" / "boot.json"
    if boot.exists():  # read as written: no fallback hides a missing slot
        assert BootState.from_json(json.loads(boot.read_bytes())) == state
    for slot in (state.active_slot, state.revert_slot):
        if slot == 0:
            assert slots.app_dir(0) == factory
        else:
            check_complete(slots.app_dir(slot), versions)
    slots.collect()
    assert {p.name for p in slots.slots_dir.iterdir()} <= {str(state.active_slot), str(state.revert_slot)}
    return state


def start_child(script: Path, state_dir: Path, factory: Path, seed: int, kill_at: int, bundles: list[Path]):
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(state_dir),
            str(factory),
            str(seed),
            str(kill_at),
            *map(str, bundles),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def finish(proc: subprocess.Popen[str]) -> str:
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return out


@pytest.fixture
def power_cut(tmp_path: Path, factory: Path) -> tuple[Path, list[Path], set[str]]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    bundles = [bundle_of(tmp_path, v, files=60) for v in ("1.0", "2.0", "3.0")]
    return script, bundles, {"1.0", "2.0", "3.0"}


@pytest.mark.timeout(600)
def test_sigkill_at_random_times(tmp_path: Path, factory: Path, power_cut) -> None:
    """Kill 0-20 ms into a run, 30 times over the same state directory."""
    script, bundles, versions = power_cut
    state_dir = tmp_path / "state"
    rng = random.Random(6)
    for i in range(30):
        proc = start_child(script, state_dir, factory, i, 0, bundles)
        time.sleep(rng.uniform(0, 0.02))  # where the power cut falls, not synchronisation
        os.kill(proc.pid, signal.SIGKILL)
        finish(proc)
        check_consistent(state_dir, factory, versions)


@pytest.mark.timeout(600)
def test_sigkill_at_every_kind_of_step(tmp_path: Path, factory: Path, power_cut) -> None:
    """Kill at the n-th file system event, n spread over a whole run: every phase is hit."""
    script, bundles, versions = power_cut
    dry = tmp_path / "dry"
    events = json.loads(finish(start_child(script, dry, factory, 1, 0, bundles)).splitlines()[-1])
    assert len(events) > 100  # 6 steps: installs of 60+ files, commits, reverts
    # Every rename, replace and removal, the events beside them, and a sample of the rest.
    critical = {i for i, event in enumerate(events, 1) if event != "open"}
    points = {p for i in critical for p in (i - 1, i, i + 1) if 1 <= p <= len(events)}
    points |= set(random.Random(7).sample(range(1, len(events) + 1), 20))
    for kill_at in sorted(points):
        state_dir = tmp_path / f"cut-{kill_at}"
        proc = start_child(script, state_dir, factory, 1, kill_at, bundles)
        finish(proc)
        assert proc.returncode == -signal.SIGKILL, (kill_at, events[kill_at - 1])
        check_consistent(state_dir, factory, versions)
