"""The supervisor of ``tether run``: runs the device in a child process and starts it again.

Theory of operation. The supervisor is a small loop that imports neither asyncio
nor any app code (it stays near the interpreter's own size and cannot be broken
by an app; ``tether run`` replaces itself with ``python -m tether.device.supervisor``).
It starts the device process (``python -m tether.device``) with ``posix_spawn`` and
waits for it:

- exit status `EXIT_REBOOT` (``Sys.Reboot``, ``Config.Set`` with ``reboot``): start it
  again at once, unless it is the ``reboot_limit``-th reboot in a row within
  ``reboot_window`` seconds of its start (an app that reboots in its init): that is a crash;
- exit status 0, or any end after the supervisor was asked to stop: stop;
- anything else (an exception, a signal, a broken config): a crash. Log it and
  start again after a backoff that doubles from ``backoff_min`` to ``backoff_max``
  seconds, reset once a process has run for ``stable_after`` seconds. A device
  process that cannot be started at all (``posix_spawn`` fails) is retried the same way.

SIGTERM, SIGINT and SIGHUP make the supervisor forward SIGTERM to the device
process, wait up to ``stop_timeout`` seconds for it, SIGKILL it if it is still
there, and exit. Every wait for the device process is `signal.sigtimedwait` on
SIGCHLD (blocked in `Supervisor.run`, so it stays pending) with a bound, so a
request to stop is seen within half a second whatever the device process does.

Over-the-air updates (`supervise` wires this to `tether.device.slots.Slots`): before
each start the supervisor reads the boot state and runs the active slot's app.
Before the first start of an uncommitted slot it stamps the start of its commit
timer. While that slot is uncommitted it checks every half second whether the update
failed (its commit timeout passed); after each crash of an uncommitted slot it
records the crash and, at ``max_crashes``, fails the update. A failed update is
reverted to the previous slot, which starts at once (`Slots.roll_back_if_due`
decides and reverts under one lock). At start-up it collects old slots; an
unusable boot state is moved aside and every slot kept. The supervisor itself never
runs app code, so a broken update cannot take it down.
"""

from __future__ import annotations

import os
import signal
import sys
import time

TYPE_CHECKING = False  # not typing's: the supervisor stays small and never loads typing
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TextIO

    from tether.device.slots import Slots

__all__ = ["EXIT_CONFIG", "EXIT_REBOOT", "Supervisor", "device_command", "supervise"]

#: The exit status of a device process asking to be started again (`tether.device.runtime`).
EXIT_REBOOT = 75
#: The exit status of a device process that cannot start: a broken manifest or schema.
EXIT_CONFIG = 78
#: Seconds `Supervisor` lets `Supervisor.watch` or a stop request wait at most.
_TICK = 0.5


def device_command(
    app_dir: str, state_dir: str, overrides: Sequence[str] = (), *, factory: str | None = None
) -> list[str]:
    """The command line of a device process (factory: the app ``tether run`` was given,
    when app_dir is an installed OTA slot)."""
    command = [sys.executable, "-m", "tether.device", "--app", str(app_dir), "--state-dir", str(state_dir)]
    if factory is not None:
        command += ["--factory", factory]
    for assignment in overrides:
        command += ["--set", assignment]
    return command


def _kill(pid: int, sig: int) -> bool:
    """Send sig to pid; False if it is gone."""
    try:
        os.kill(pid, sig)
    except OSError:
        return False
    return True


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


class Supervisor:
    """Keeps a device process running.

    Args:
        command: returns the device process's command line; called before every start
            (so an OTA switch takes effect at the next start). It may set `watch`.
        on_exit: called with the exit status of every device process that ended on its
            own (not stopped by the supervisor) and, when that end is a crash, what
            happened (e.g. ``device process exited with status 1``; None for a clean
            exit or a reboot); returns True to start the next one at once (an update
            was rolled back).
        watch: called about twice a second while a device process runs; a reason
            (a string) stops that process and starts the next one at once.
        log: where the supervisor's own lines go.
        backoff_min, backoff_max: the delay after a crash, doubling.
        stable_after: seconds of running after which the backoff starts over.
        stop_timeout: seconds a device process gets to stop before SIGKILL.
        reboot_window, reboot_limit: ``reboot_limit`` reboots in a row, each within
            ``reboot_window`` seconds of its start, make a crash (a reboot loop).
    """

    def __init__(
        self,
        command: Callable[[], list[str]],
        *,
        on_exit: Callable[[int, str | None], bool] | None = None,
        watch: Callable[[], str | None] | None = None,
        log: TextIO | None = None,
        backoff_min: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
        stop_timeout: float = 10.0,
        reboot_window: float = 2.0,
        reboot_limit: int = 5,
    ) -> None:
        self.command = command
        self.on_exit = on_exit
        self.watch = watch
        self.log = log if log is not None else sys.stderr
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.reboot_window = reboot_window
        self.reboot_limit = reboot_limit
        self.pid: int | None = None
        self.starts = 0
        self._stopping = False

    def _say(self, text: str) -> None:
        print(f"tether run: {text}", file=self.log, flush=True)

    def stop(self, *_: Any) -> None:
        """Ask the loop to end (a signal handler): SIGTERM to the device process."""
        self._stopping = True
        if self.pid is not None:
            _kill(self.pid, signal.SIGTERM)

    def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when asked to stop."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def run(self) -> int:
        """Supervise until asked to stop; returns the exit status of ``tether run``.

        Installs handlers for SIGTERM, SIGINT and SIGHUP and blocks SIGCHLD while it
        runs; both are restored when it returns.
        """
        handlers = {
            sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        try:
            return self._loop()
        finally:
            self._terminate()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _loop(self) -> int:
        delay = self.backoff_min
        quick_reboots = 0
        while not self._stopping:
            started = time.monotonic()
            self.starts += 1
            command = self.command()
            try:
                # The child starts with no signal blocked, whatever this process blocks.
                self.pid = os.posix_spawn(command[0], command, os.environ, setsigmask=())
            except OSError as exc:  # the interpreter went away, no memory, too many processes
                self._say(f"cannot start the device process: {exc}; trying again in {delay:g} s")
                self._sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            reason = self._run_one(self.pid)
            ran = time.monotonic() - started
            if self._stopping:
                break
            if isinstance(reason, str):
                self._say(f"{reason}; starting again")
                delay = self.backoff_min
                continue
            status = reason
            crash: str | None = None
            if status == EXIT_REBOOT:
                quick_reboots = quick_reboots + 1 if ran < self.reboot_window else 0
                if quick_reboots >= self.reboot_limit:
                    crash = (
                        f"device process rebooted {quick_reboots} times in a row, "
                        f"each within {self.reboot_window:g} s of its start"
                    )
            else:
                quick_reboots = 0
                if status != 0:
                    crash = f"device process {_describe(status)}"
            if self.on_exit is not None and self.on_exit(status, crash):
                delay = self.backoff_min
                continue
            if crash is None and status == 0:
                self._say("device process stopped")
                return 0
            if crash is None:
                self._say("rebooting")
                delay = self.backoff_min
                continue
            if ran >= self.stable_after:
                delay = self.backoff_min
            self._say(f"{crash}; starting again in {delay:g} s")
            self._sleep(delay)
            delay = min(delay * 2, self.backoff_max)
        return 0

    def _run_one(self, pid: int) -> int | str:
        """Wait for the device process: its exit status, or the reason `watch` gave to
        stop it (it is then stopped). Once the supervisor is asked to stop, the device
        process is stopped (`_terminate`) and its status returned."""
        while True:
            status = self._wait(pid, os.WNOHANG)
            if status is not None:
                self.pid = None
                return status
            if self._stopping:
                status = self._terminate()
                assert status is not None
                return status
            if self.watch is not None:
                reason = self.watch()
                if reason is not None:
                    self._terminate()
                    return reason
            # Wakes at once when a child ends (SIGCHLD is blocked, so it stays pending),
            # and at least every _TICK to see a stop request: a signal handler that runs
            # during the wait does not end it (PEP 475).
            signal.sigtimedwait([signal.SIGCHLD], _TICK)

    @staticmethod
    def _wait(pid: int, options: int = 0) -> int | None:
        """The exit status of pid as subprocess reports it (-N for signal N); None if running."""
        done, status = os.waitpid(pid, options)
        return os.waitstatus_to_exitcode(status) if done else None

    def _terminate(self) -> int | None:
        """Stop the device process, if one runs: SIGTERM, then SIGKILL after ``stop_timeout``
        seconds; returns its exit status once it is reaped."""
        pid, self.pid = self.pid, None
        if pid is None:
            return None
        _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while (status := self._wait(pid, os.WNOHANG)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._say(f"device process did not stop in {self.stop_timeout:g} s; killing it")
                _kill(pid, signal.SIGKILL)
                return self._wait(pid)
            signal.sigtimedwait([signal.SIGCHLD], left)
        return status


def supervise(
    app_dir: str,
    state_dir: str,
    overrides: Sequence[str] = (),
    *,
    log: TextIO | None = None,
    supervisor: Supervisor | None = None,
) -> int:
    """Run the device of app_dir (or of its active OTA slot) until asked to stop.

    Args:
        app_dir: the factory app (``tether run APP_DIR``).
        state_dir: the device's state directory.
        overrides: ``--set`` assignments for the device process.
        log: where the supervisor's own lines go (stderr by default).
        supervisor: one with the limits to use (its command, watch and on_exit are set
            here); a new one with the defaults when None.

    Returns:
        The exit status of ``tether run``.
    """
    if supervisor is None:
        supervisor = Supervisor(lambda: [], log=log)
    elif log is not None:
        supervisor.log = log
    boot_file = os.path.join(state_dir, "ota", "boot.json")
    loaded: list[Slots] = []

    def ota() -> Slots | None:
        """The OTA slots once an update was ever installed (``ota/boot.json`` exists); until
        then the factory app runs committed and the slot code is not even loaded."""
        if not loaded and os.path.exists(boot_file):
            from tether.device.slots import Slots

            loaded.append(Slots(state_dir, app_dir))
            aside = attempt("clean up old slots", loaded[0].collect)
            if aside is not None:
                supervisor._say(
                    f"the OTA boot state is lost ({aside}): running the factory app; every installed "
                    f"slot is kept until that file is removed"
                )
        return loaded[0] if loaded else None

    def attempt(what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as exc:  # OSError, SlotError: keep running what is there
            supervisor._say(f"cannot {what}: {exc}")
            return None

    def roll_back_if_due(slots: Slots) -> str | None:
        done = attempt("roll back", lambda: slots.roll_back_if_due(time.time()))
        if done is None:
            return None
        reason, slot = done
        supervisor._say(f"update failed ({reason}); rolled back to slot {slot}")
        return str(reason)

    def watch() -> str | None:
        slots = ota()
        return None if slots is None else roll_back_if_due(slots)

    def command() -> list[str]:
        slots = ota()
        if slots is None:
            supervisor.watch = None
            return device_command(app_dir, state_dir, overrides, factory=app_dir)
        state = attempt("read the boot state", slots.boot_state)
        if state is not None and not state.is_committed:
            # Spec §6: the commit timer starts at the new version's first boot.
            state = attempt("record the update's first start", slots.record_first_start)
        supervisor.watch = None if state is None or state.is_committed else watch
        app = attempt("find the active slot", slots.app_dir) or app_dir
        return device_command(str(app), state_dir, overrides, factory=app_dir)

    def on_exit(status: int, crash: str | None) -> bool:
        slots = ota()
        if slots is None or crash is None:
            return False
        state = attempt("read the boot state", slots.boot_state)
        if state is None or state.is_committed:
            return False
        attempt("record the crash", lambda: slots.record_crash(crash))
        return roll_back_if_due(slots) is not None

    supervisor.command = command
    supervisor.on_exit = on_exit
    return supervisor.run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tether.device.supervisor APP_DIR STATE_DIR [KEY=VALUE …]``: supervise a device."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m tether.device.supervisor APP_DIR STATE_DIR [KEY=VALUE ...]", file=sys.stderr)
        return 2
    return supervise(args[0], args[1], args[2:])


if __name__ == "__main__":
    sys.exit(main())
