"""`tether rpc serve` and `tether call`, run as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tether.http as http

TETHER = [sys.executable, "-m", "tether"]
ACL = '[{"method":"RPC.Describe","acl":"admin"},{"method":"*","acl":"*"}]'


def start_server(*extra: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [*TETHER, "rpc", "serve", "--port", "0", *extra], stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "tether rpc serve: ws://127.0.0.1:PORT/rpc and http://…"
    assert line.startswith("tether rpc serve: ws://127.0.0.1:"), line
    return proc, int(line.split("ws://127.0.0.1:")[1].split("/")[0])


def stop_server(proc: subprocess.Popen[str]) -> str:
    """Stop the server by its PID; return the rest of its stderr."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=20)[1]
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=20)
        raise


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    htdigest = tmp_path_factory.mktemp("rpc") / "rpc.htdigest"
    http.write_htdigest(htdigest, "admin", "RPC", "secret")
    proc, port = start_server("--acl", ACL, "--htdigest", str(htdigest))
    try:
        yield port
    finally:
        assert "stopped" in stop_server(proc)
        assert proc.returncode == 0


def call(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TETHER, *args], capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize("scheme", ["ws", "http"])
def test_call_prints_the_result_as_indented_json(server: int, scheme: str) -> None:
    port = f"{scheme}://127.0.0.1:{server}/rpc"
    out = call("call", "Sum", '{"a": 1, "b": 2}', "--port", port)
    assert (out.returncode, out.stdout, out.stderr) == (0, "3.0\n", "")
    out = call("call", "RPC.Ping", "--port", port)
    assert out.returncode == 0
    assert out.stdout.startswith('{\n  "channel_info": "127.0.0.1:')


def test_port_before_the_command_and_from_the_environment(server: int) -> None:
    out = call("--port", f"ws://127.0.0.1:{server}/rpc", "call", "RPC.List")
    assert out.returncode == 0 and json.loads(out.stdout)[0] == "Sum"
    out = call("call", "RPC.List", env={"TETHER_PORT": f"http://127.0.0.1:{server}/rpc"})
    assert out.returncode == 0 and "RPC.Ping" in json.loads(out.stdout)


def test_errors_go_to_stderr_with_status_1(server: int) -> None:
    port = f"ws://127.0.0.1:{server}/rpc"
    out = call("call", "No.Such", "--port", port)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == "Error: remote error 404: No handler for No.Such\n"
    out = call("call", "RPC.Describe", '{"name": "Sum"}', "--port", port)
    assert out.returncode == 1 and out.stderr.startswith("Error: remote error 401: ")
    out = call("call", "Sum", "{nope", "--port", port)
    assert out.returncode == 2 and "not valid JSON" in out.stderr


@pytest.mark.parametrize("scheme", ["ws", "http"])
def test_credentials(server: int, scheme: str, tmp_path: Path) -> None:
    port = f"{scheme}://127.0.0.1:{server}/rpc"
    out = call("call", "RPC.Describe", '{"name": "Sum"}', "--port", port, "--credentials", "admin:secret")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["args_fmt"] == "{a: %lf, b: %lf}"
    creds = tmp_path / "creds"
    creds.write_text("admin:wrong\n")
    out = call("call", "RPC.Describe", '{"name": "Sum"}', "--port", port, "--credentials", f"@{creds}")
    assert out.returncode == 1 and "remote error 401" in out.stderr


def test_unreachable_port() -> None:
    proc, port = start_server()
    stop_server(proc)
    out = call("call", "RPC.List", "--port", f"ws://127.0.0.1:{port}/rpc", "--timeout", "5")
    assert out.returncode == 1 and out.stderr.startswith(f"Error: ws://127.0.0.1:{port}/rpc: ")


def test_a_reader_that_leaves_is_not_an_error(server: int) -> None:
    # `tether call … | head -1`: the pipe's reader is gone before the output is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [*TETHER, "call", "--port", f"ws://127.0.0.1:{server}/rpc", "RPC.List"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (128 + signal.SIGPIPE, "")
