"""A `tether run` device in a subprocess for end-to-end tests: start, wait until it answers, call, stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.integration.mosquitto import free_ports

#: Seconds any single wait of these tests may take (a slow, shared machine).
TIMEOUT = 60.0


def tether(
    *args: str, cwd: Path | None = None, timeout: float = TIMEOUT, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the tether CLI; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=None if input is None else input.decode(),
    )


class Device:
    """``tether run APP --state-dir STATE --set http.listen_addr=127.0.0.1:PORT …`` in the background."""

    def __init__(self, app: Path, state: Path, *overrides: str, port: int | None = None) -> None:
        self.app = app
        self.state = state
        self.port = port if port is not None else free_ports(1)[0]
        self.overrides = [f"http.listen_addr=127.0.0.1:{self.port}", *overrides]
        self.log_path = state.parent / f"{state.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/rpc"

    def start(self) -> Device:
        command = [sys.executable, "-m", "tether", "run", str(self.app), "--state-dir", str(self.state)]
        for assignment in self.overrides:
            command += ["--set", assignment]
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # A process group of its own: power_cut() kills the whole tree at once.
        self.process = subprocess.Popen(
            command, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_ready()
        return self

    def power_cut(self) -> None:
        """SIGKILL the supervisor and the device process together, as a power cut would."""
        process = self.process
        assert process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(TIMEOUT)
        self.log_file.close()
        self.process = None

    def info(self) -> dict[str, Any]:
        """Sys.GetInfo, waiting for the device to answer."""
        return self.wait_ready()

    def wait_version(self, version: str) -> dict[str, Any]:
        """Wait until the device runs version (after an update, a rollback, a revert)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            info = self.wait_ready()
            if info["fw_version"] == version:
                return info
            assert time.monotonic() < deadline, f"still {info['fw_version']}, not {version}:\n{self.log()}"
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, method: str, args: Any = None, *, check: bool = True) -> Any:
        command = ["--port", self.url, "call", method]
        if args is not None:
            command.append(json.dumps(args))
        result = tether(*command)
        if check:
            assert result.returncode == 0, f"{method}: {result.stderr}"
            return json.loads(result.stdout) if result.stdout.strip() else None
        return result

    def wait_ready(self, *, not_pid: int | None = None) -> dict[str, Any]:
        """Wait until Sys.GetInfo answers (from a process other than not_pid's uptime)."""
        from tether.rpc import sync

        deadline = time.monotonic() + TIMEOUT
        while True:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                with sync.connect(self.url, timeout=2.0) as client:
                    return dict(client.call("Sys.GetInfo"))
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the device never answered:\n{self.log()}") from None
                time.sleep(0.05)

    def wait_restarted(self, count_before: int) -> None:
        """Wait until the supervisor logged one more start ('rebooting') and the device answers."""
        deadline = time.monotonic() + TIMEOUT
        while self.log().count("tether run: rebooting") <= count_before:
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)
        self.wait_ready()

    def stop(self) -> int:
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.log_file.close()
        self.process = None
        return process.returncode

    def __enter__(self) -> Device:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
