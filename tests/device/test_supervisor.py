from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tether.device.supervisor import EXIT_REBOOT, Supervisor

TIMEOUT = 30


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "device.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path), str(tmp_path)]


def test_reboot_restarts_at_once_crash_with_backoff_clean_exit_stops(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        f"""
        import sys, pathlib
        counter = pathlib.Path(sys.argv[1]) / "starts"
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
        sys.exit({{1: {EXIT_REBOOT}, 2: 3, 3: 0}}[n])
        """,
    )
    exits: list[int] = []
    log = io.StringIO()
    supervisor = Supervisor(
        lambda: command, on_exit=lambda status, ran: exits.append(status), log=log, backoff_min=0.01
    )
    assert supervisor.run() == 0
    assert supervisor.starts == 3
    assert exits == [EXIT_REBOOT, 3, 0]
    assert "rebooting" in log.getvalue()
    assert "exited with status 3; starting again" in log.getvalue()


def test_sigterm_stops_the_device_process_and_the_supervisor(tmp_path: Path) -> None:
    device = tmp_path / "device.py"
    device.write_text(
        textwrap.dedent(
            """
            import os, sys, time, pathlib
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
            sys.exit(Supervisor(lambda: [sys.executable, {str(device)!r}, {str(tmp_path)!r}]).run())
            """
        )
    )
    process = subprocess.Popen([sys.executable, str(runner)], stderr=subprocess.DEVNULL)
    try:
        pid_file = tmp_path / "pid"
        deadline = time.monotonic() + TIMEOUT
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the device process never started"
            time.sleep(0.02)
        child = int(pid_file.read_text())
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
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
            process.wait()
