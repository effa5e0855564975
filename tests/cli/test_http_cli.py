"""`tether http serve`, run as a user would: serves a directory, stops on a signal."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

TETHER = [sys.executable, "-m", "tether"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_directory_with_ssi(tmp_path: Path) -> None:
    (tmp_path / "index.shtml").write_text('<b><!--#include file="name.txt" --></b>')
    (tmp_path / "name.txt").write_text("pump-7")
    port = free_port()
    proc = subprocess.Popen(
        [*TETHER, "http", "serve", str(tmp_path), "--port", str(port)], stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # printed once the server listens
        assert f"http://127.0.0.1:{port}/" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.read() == b"<b>pump-7</b>"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()  # by PID, only if it did not stop by itself
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_serve_refuses_a_missing_directory(tmp_path: Path) -> None:
    out = subprocess.run(
        [*TETHER, "http", "serve", str(tmp_path / "nope")], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2 and "not a directory" in out.stderr
