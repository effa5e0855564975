"""`pip install .` on a machine without a C compiler: it installs, and the pure-Python path runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CHECK = """
from tether.cli import _version
from tether.mqtt import packets
from tether.ws import frames
from tether.ws.protocol import BinaryMessage, ClientConnection, ServerConnection

print(_version())
assert not frames.SPEEDUPS and not packets.SPEEDUPS
client, server = ClientConnection("h", "/"), ServerConnection()
server.receive_data(client.data_to_send())
(request,) = server.events_received()
server.accept(request.request)
client.receive_data(server.data_to_send())
client.send_binary(b"x" * 100_000)
server.receive_data(client.data_to_send())
assert server.events_received() == [BinaryMessage(b"x" * 100_000)]
"""


def test_pip_install_without_a_compiler_runs_pure_python(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k != "TETHER_NO_SPEEDUPS"}
    env["CC"] = env["CXX"] = "/bin/false"  # every compiler call fails, as with none installed
    # --no-deps: the check below needs none of tether's run-time dependencies.
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "--no-deps", str(ROOT)],
        check=True,
        timeout=600,
        env=env,
        capture_output=True,
    )
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages" / "tether"
    assert not list(site.glob("_speedups*.so"))
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("pure Python (no compiled speedups)")
