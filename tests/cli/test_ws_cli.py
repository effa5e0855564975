"""`tether ws echo`, `tether ws connect`, `tether ws demo`, run as a user would."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import tether
import tether.ws as ws

TETHER = [sys.executable, "-m", "tether"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on {port}")


def test_version() -> None:
    out = subprocess.run([*TETHER, "--version"], capture_output=True, text=True, timeout=30, check=True)
    compiled = importlib.util.find_spec("tether._speedups") is not None
    path = "compiled speedups" if compiled else "pure Python (no compiled speedups)"
    assert out.stdout.strip() == f"tether {tether.__version__}, {path}"
    env = {**os.environ, "TETHER_NO_SPEEDUPS": "1"}
    out = subprocess.run(
        [*TETHER, "--version"], capture_output=True, text=True, timeout=30, check=True, env=env
    )
    assert out.stdout.strip() == f"tether {tether.__version__}, pure Python (no compiled speedups)"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_echo_server_serves_and_stops_on_signal(sig: signal.Signals) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*TETHER, "ws", "echo", "--port", str(port), "--compression"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port(port, proc)

        async def talk() -> tuple[str, str | None]:
            async with ws.connect(f"ws://127.0.0.1:{port}/", compression="deflate") as conn:
                await conn.send("ping me")
                return str(await conn.recv()), conn.response.headers.get("Sec-WebSocket-Extensions")

        echoed, extensions = asyncio.run(asyncio.wait_for(talk(), 10))
        assert echoed == "ping me"
        assert extensions is not None and extensions.startswith("permessage-deflate")
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert f"listening on ws://127.0.0.1:{port}/" in err
        assert "stopped" in err
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()


def test_connect_sends_stdin_lines_and_prints_messages() -> None:
    port = free_port()
    server = subprocess.Popen([*TETHER, "ws", "echo", "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, server)
        out = subprocess.run(
            [*TETHER, "ws", "connect", f"ws://127.0.0.1:{port}/", "-H", "X-Test: 1", "--compression"],
            input="first line\nsecond line\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["first line", "second line"]
        assert "closed: code 1000" in out.stderr
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.communicate(timeout=15)


def test_connect_reports_refused_connection() -> None:
    port = free_port()
    out = subprocess.run(
        [*TETHER, "ws", "connect", f"ws://127.0.0.1:{port}/"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "cannot connect" in out.stderr


def test_connect_rejects_bad_header_and_url() -> None:
    bad_header = subprocess.run(
        [*TETHER, "ws", "connect", "ws://127.0.0.1:9/", "-H", "no-colon"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad_header.returncode == 2
    bad_url = subprocess.run(
        [*TETHER, "ws", "connect", "http://127.0.0.1/"], input="", capture_output=True, text=True, timeout=30
    )
    assert bad_url.returncode == 2
    assert "ws://" in bad_url.stderr


def test_demo_echoes_what_is_typed() -> None:
    out = subprocess.run(
        [*TETHER, "ws", "demo", "--compression"],
        input="hello tether\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["hello tether"]
    assert "echo server on ws://127.0.0.1:" in out.stderr
