"""A/B app slots and the boot state that picks one (spec mgos-rpc.md §6).

Theory of operation. The state directory holds::

    ota/boot.json      the boot state (`BootState`), replaced atomically
    ota/slots/<n>/     installed apps, n = 1, 2, 3…: unpacked, verified bundles
    ota/lock           serialises writers (the app's OTA service, the supervisor)

Slot 0 is the factory app, the directory ``tether run`` was given: never written.
Without ``boot.json`` the device runs slot 0, committed.

An install unpacks the bundle into a temporary directory under ``ota/slots/``,
renames it to the next slot number once every file is written, hashed and
fsynced, and only then replaces ``boot.json`` with the switch: the new slot
active and uncommitted, the old one as the revert slot. A slot that ``boot.json``
does not name is garbage: `Slots.collect` removes it (and any half-written or
half-deleted directory) under the lock, at the next install or commit. So at every
instruction, a process killed on the spot leaves either the old boot state, whose
slots are untouched, or the new one, whose slot is complete.

A ``boot.json`` that exists but cannot be used (a disk fault, a hand edit) is
never taken for "no update installed": writers move it aside to
``ota/boot.json.corrupt`` and, for as long as such a file is there, collect no
slot, so a person can recover them. The device runs the factory app meanwhile.

The supervisor stamps ``update_started`` when it first starts an uncommitted slot
(`Slots.record_first_start`): spec §6 starts the commit timer at the new version's
first boot, not at the install, so a device switched off after an update does not
roll it back unrun. While the slot is uncommitted the supervisor calls
`Slots.roll_back_if_due`, which reverts after ``max_crashes`` crashes
(`Slots.record_crash`) or once ``commit_timeout`` seconds have passed since the
stamp, deciding and reverting under one lock so that a commit cannot fall between.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import TetherError
from tether.files import fsync_directory, move_aside, write_atomic

__all__ = ["BootState", "SlotError", "Slots"]

logger = logging.getLogger("tether.device.ota")

_FIELDS = {
    "active_slot": int,
    "revert_slot": int,
    "is_committed": bool,
    "commit_timeout": int,
    "update_started": float,
    "crashes": int,
    "last_error": str,
}


class SlotError(TetherError):
    """A slot operation is refused: nothing to commit or revert, an update is pending,
    no such slot. The message says which."""


@dataclass(frozen=True)
class BootState:
    """Which slot runs, and whether it is committed (``OTA.GetBootState`` and more).

    Attributes:
        active_slot: the slot the device runs; 0 is the factory app.
        revert_slot: the slot a revert goes back to; equal to active_slot when there is none.
        is_committed: False while an update waits for its commit.
        commit_timeout: seconds an uncommitted update may run before it is rolled
            back; 0 for no deadline.
        update_started: when the uncommitted active slot first started (Unix time); None
            before its first start and once committed.
        crashes: how often the uncommitted app crashed.
        last_error: why the last update failed or was rolled back, "" if it did not.
    """

    active_slot: int = 0
    revert_slot: int = 0
    is_committed: bool = True
    commit_timeout: int = 0
    update_started: float | None = None
    crashes: int = 0
    last_error: str = ""

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object, as ``boot.json`` holds them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> BootState:
        """The boot state a JSON object describes; fields it does not know are ignored.

        Raises:
            ValueError: if data is not an object, or a field has the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError(f"boot state {data!r} is not an object")
        return cls(**_checked({k: v for k, v in data.items() if k in _FIELDS}))


def _checked(fields: dict[str, Any]) -> dict[str, Any]:
    """fields with their types checked (an int is a float too); raises ValueError."""
    for name, value in fields.items():
        kind = _FIELDS.get(name)
        if kind is None:
            raise ValueError(f"boot state has no field {name!r}")
        if name == "update_started" and value is None:
            continue
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise ValueError(f"boot state field {name!r} must be {kind.__name__}, not {value!r}")
        if kind is int and value < 0:
            raise ValueError(f"boot state field {name!r} must not be negative, not {value}")
    return fields


class Slots:
    """The app slots and boot state under a device's state directory.

    Every method leaves the directory consistent if the process dies at any point;
    several processes may use it at once (writers take ``ota/lock``).

    Args:
        state_dir: the device's state directory (``tether run --state-dir``).
        factory_dir: the factory app, slot 0: the app directory ``tether run`` was given.
        clock: Unix time in seconds, recorded as ``update_started`` by `record_first_start`.
        max_size: the largest unpacked bundle `install` accepts, in bytes; None for
            `tether.device.bundle.MAX_UNPACKED_SIZE`.
        max_files: the most members a bundle may have; None for `tether.device.bundle.MAX_FILES`.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        factory_dir: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        max_size: int | None = None,
        max_files: int | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.factory_dir = Path(factory_dir)
        self.ota_dir = self.state_dir / "ota"
        self.slots_dir = self.ota_dir / "slots"
        self.max_size = max_size
        self.max_files = max_files
        self._clock = clock
        self._boot_file = self.ota_dir / "boot.json"

    def __repr__(self) -> str:
        return f"Slots({str(self.state_dir)!r}, {str(self.factory_dir)!r})"

    # Reading.

    def boot_state(self) -> BootState:
        """The boot state; the factory app, committed, when none was written.

        A ``boot.json`` that cannot be read, or that names a slot that is not
        installed, gives the factory app too, with the reason in ``last_error``:
        the device always has something to run.
        """
        state, problem = self._load()
        if problem:
            logger.error("boot state %s is unusable, running the factory app: %s", self._boot_file, problem)
        return state

    def _load(self) -> tuple[BootState, str]:
        """The boot state as `boot_state` gives it, and why boot.json cannot be used ("" if it
        can, or if there is none)."""
        try:
            data = self._boot_file.read_bytes()
        except FileNotFoundError:
            return BootState(), ""
        try:
            state = BootState.from_json(json.loads(data))
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            problem = f"boot state unreadable: {exc}"
            return BootState(last_error=problem), problem
        if not self._exists(state.active_slot):
            problem = f"slot {state.active_slot} is not installed"
            return BootState(last_error=problem), problem
        if not self._exists(state.revert_slot):
            logger.error(
                "revert slot %d is not installed; a revert goes to the factory app", state.revert_slot
            )
            return dataclasses.replace(state, revert_slot=0), ""
        return state, ""

    def _exists(self, slot: int) -> bool:
        return slot == 0 or (self.slots_dir / str(slot)).is_dir()

    def app_dir(self, slot: int | None = None) -> Path:
        """The directory of the active slot's app, or of slot; slot 0 is the factory app.

        Raises:
            SlotError: if slot is not installed.
        """
        if slot is None:
            slot = self.boot_state().active_slot
        if slot == 0:
            return self.factory_dir
        if slot < 0 or not self._exists(slot):
            raise SlotError(f"slot {slot} is not installed")
        return self.slots_dir / str(slot)

    def should_roll_back(self, now: float, *, max_crashes: int = 3) -> str | None:
        """Why the uncommitted active slot must be rolled back now, or None.

        Args:
            now: the current Unix time.
            max_crashes: crashes before commit that fail an update.

        Returns:
            The reason (for `revert`'s ``error``), or None when the slot is committed,
            has crashed fewer times and its commit timeout (if any) has not passed since
            its first start (none has, before it).

        Use `roll_back_if_due` to act on it: a commit may come between this answer and a
        `revert`.
        """
        return self._roll_back_reason(self.boot_state(), now, max_crashes)

    @staticmethod
    def _roll_back_reason(state: BootState, now: float, max_crashes: int) -> str | None:
        if state.is_committed:
            return None
        if state.crashes >= max_crashes:
            detail = f": {state.last_error}" if state.last_error else ""
            return f"slot {state.active_slot} crashed {state.crashes} times before its commit{detail}"
        if (
            state.commit_timeout > 0
            and state.update_started is not None
            and now >= state.update_started + state.commit_timeout
        ):
            return f"slot {state.active_slot} was not committed within {state.commit_timeout} s"
        return None

    # Writing.

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.slots_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.ota_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the process dies
            yield
        finally:
            os.close(fd)

    def _locked_state(self) -> BootState:
        """The boot state, for a writer holding the lock: an unusable boot.json is moved aside
        first (writing over it would lose it, and the slots it names with it)."""
        state, problem = self._load()
        if problem:
            aside = move_aside(self._boot_file)
            logger.critical(
                "boot state %s is unusable (%s): moved to %s; running the factory app and keeping "
                "every slot in %s until it is removed",
                self._boot_file,
                problem,
                aside,
                self.slots_dir,
            )
        return state

    def _write(self, state: BootState) -> None:
        write_atomic(self._boot_file, json.dumps(state.to_json(), indent=1).encode() + b"\n")

    def install(self, bundle: str | os.PathLike[str], *, public_key: str | None, commit_timeout: int) -> int:
        """Verify a bundle, unpack it into a new slot and switch to it, uncommitted.

        The running slot is not touched; it becomes the revert slot. The switch takes
        effect when the device restarts.

        Args:
            bundle: the bundle's zip file.
            public_key: ``update.key`` (`tether.device.bundle.verify_bundle`), None for none.
            commit_timeout: seconds the new slot may run uncommitted; 0 for no deadline.

        Returns:
            The new slot's number.

        Raises:
            SlotError: if the active slot is not committed yet.
            BundleError: if the bundle is refused; nothing changed.
            ValueError: if commit_timeout is negative.
            OSError: if the slot cannot be written; nothing changed.
        """
        if commit_timeout < 0:
            raise ValueError(f"commit_timeout must not be negative, not {commit_timeout}")
        with self._locked():
            state = self._locked_state()
            if not state.is_committed:
                raise SlotError(
                    f"update to slot {state.active_slot} is not committed yet: commit or revert it first"
                )
            self._collect(state)
            # Here, not at the top: the supervisor reads boot states and never pays for
            # the bundle code (hashlib's OpenSSL alone is megabytes).
            from tether.device.bundle import MAX_FILES, MAX_UNPACKED_SIZE, extract_bundle, verify_bundle

            max_size = MAX_UNPACKED_SIZE if self.max_size is None else self.max_size
            max_files = MAX_FILES if self.max_files is None else self.max_files
            info = verify_bundle(bundle, public_key=public_key, max_size=max_size, max_files=max_files)
            number = max([state.active_slot, state.revert_slot, *self._numbered()]) + 1
            temporary = Path(tempfile.mkdtemp(prefix=".new-", dir=self.slots_dir))
            try:
                extract_bundle(bundle, temporary, info, max_size=max_size, max_files=max_files)
                os.rename(temporary, self.slots_dir / str(number))
            except BaseException:
                shutil.rmtree(temporary, ignore_errors=True)
                raise
            fsync_directory(self.slots_dir)
            new = BootState(
                active_slot=number,
                revert_slot=state.active_slot,
                is_committed=False,
                commit_timeout=commit_timeout,
            )
            self._write(new)
            logger.info("installed %s %s in slot %d, uncommitted", info.name, info.version, number)
            self._collect(new)
        return number

    def commit(self) -> None:
        """Commit the active slot: it stays; the revert slot is kept for `revert`.

        Raises:
            SlotError: if the active slot is committed already (nothing to commit).
        """
        with self._locked():
            state = self._locked_state()
            if state.is_committed:
                raise SlotError(f"nothing to commit: slot {state.active_slot} is committed")
            new = dataclasses.replace(state, is_committed=True, update_started=None, crashes=0, last_error="")
            self._write(new)
            logger.info("committed slot %d", state.active_slot)
            self._collect(new)

    def revert(self, *, error: str = "") -> int:
        """Go back to the revert slot, committed: a rollback, or a step back after a commit.

        The slot left behind is removed later (`collect`): it may still be running.

        Args:
            error: why, kept as ``last_error`` (e.g. `should_roll_back`'s reason); "" for
                a revert that was asked for.

        Returns:
            The slot that is now active; restart the app to run it.

        Raises:
            SlotError: if there is no other slot to go back to.
        """
        with self._locked():
            state = self._locked_state()
            return self._revert(state, error)

    def _revert(self, state: BootState, error: str) -> int:
        if state.revert_slot == state.active_slot:
            raise SlotError(f"nothing to revert to: slot {state.active_slot} has no previous slot")
        new = BootState(
            active_slot=state.revert_slot,
            revert_slot=state.revert_slot,
            commit_timeout=state.commit_timeout,
            last_error=error,
        )
        self._write(new)
        logger.warning(
            "reverted from slot %d to slot %d%s",
            state.active_slot,
            new.active_slot,
            f": {error}" if error else "",
        )
        return new.active_slot

    def roll_back_if_due(self, now: float, *, max_crashes: int = 3) -> tuple[str, int] | None:
        """Revert the uncommitted active slot if `should_roll_back` says so, as one step.

        The decision and the revert hold the lock together: a commit that lands just
        before is seen, and a committed slot is never rolled back.

        Args:
            now: the current Unix time.
            max_crashes: crashes before commit that fail an update.

        Returns:
            The reason (now ``last_error``) and the slot that is now active (restart the
            app to run it), or None when nothing was due.

        Raises:
            SlotError: if a rollback is due but there is no other slot to go back to.
        """
        with self._locked():
            state = self._locked_state()
            reason = self._roll_back_reason(state, now, max_crashes)
            if reason is None:
                return None
            return reason, self._revert(state, reason)

    def record_first_start(self) -> BootState:
        """Stamp ``update_started`` with the clock if the active slot is uncommitted and was
        never started (the supervisor calls it before it starts the app): its commit timeout
        runs from now (spec §6: from the first boot of the new version).

        Returns:
            The boot state, stamped or as it was.
        """
        with self._locked():
            state = self._locked_state()
            if state.is_committed or state.update_started is not None:
                return state
            new = dataclasses.replace(state, update_started=self._clock())
            self._write(new)
        return new

    def set_boot_state(self, **fields: Any) -> BootState:
        """Change fields of the boot state (``OTA.SetBootState``) and return the result.

        Args:
            fields: any of `BootState`'s fields; slots must be installed.

        Raises:
            ValueError: for an unknown field, a wrong type or a slot that is not installed.
        """
        _checked(fields)
        with self._locked():
            new = dataclasses.replace(self._locked_state(), **fields)
            for slot in (new.active_slot, new.revert_slot):
                if not self._exists(slot):
                    raise ValueError(f"slot {slot} is not installed")
            self._write(new)
        return new

    def record_crash(self, error: str) -> int:
        """Count a crash of the app (the supervisor calls it when the child dies).

        Args:
            error: what happened, e.g. ``exit status 1: ImportError: …``; kept as ``last_error``.

        Returns:
            The number of crashes since the update (or the last commit or revert).
        """
        with self._locked():
            state = self._locked_state()
            new = dataclasses.replace(state, crashes=state.crashes + 1, last_error=error)
            self._write(new)
        return new.crashes

    def collect(self) -> Path | None:
        """Remove slots the boot state does not name, and leftovers of killed installs.

        `install` and `commit` call it; the supervisor may call it at start-up,
        before the app runs. An unusable ``boot.json`` is moved aside instead, and while
        such a file (``boot.json.corrupt*``) is there no slot is removed.

        Returns:
            Such a file, for the caller to report (None when there is none).
        """
        with self._locked():
            return self._collect(self._locked_state())

    def _numbered(self) -> list[int]:
        return [int(p.name) for p in self.slots_dir.iterdir() if p.name.isdigit()]

    def _collect(self, state: BootState) -> Path | None:
        keep = {str(state.active_slot), str(state.revert_slot)}
        aside = next(iter(sorted(self.ota_dir.glob(f"{self._boot_file.name}.corrupt*"))), None)
        for path in self.slots_dir.iterdir():
            if path.name in keep:
                continue
            if aside is not None and not path.name.startswith("."):
                # A lost boot state may have named it: a person decides (leftovers of
                # killed installs, named with a dot, are never a slot).
                logger.warning("keeping slot %s: the boot state was lost, see %s", path, aside)
                continue
            doomed = path
            if not path.name.startswith("."):
                # Unnamed first, in one step: a half-deleted slot is never taken for one.
                doomed = self.slots_dir / f".old-{path.name}-{os.urandom(4).hex()}"
                os.rename(path, doomed)
                fsync_directory(self.slots_dir)
            if doomed.is_dir() and not doomed.is_symlink():
                shutil.rmtree(doomed)
            else:
                doomed.unlink()
        return aside
