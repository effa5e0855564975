"""`tether mqtt pub|sub|outbox` run as a user would, against a real mosquitto (issue 3).

"CLI like mosquitto's: ``tether mqtt pub URL -t TOPIC -m MESSAGE [-q 0|1|2] [-r]
[--repeat N]`` and ``tether mqtt sub URL -t FILTER [-q …] [-C COUNT] [-v]``" and
"``tether mqtt outbox PATH`` lists what is waiting".

Each command is a ``python -m tether`` subprocess; one that outlives its call (`Sub`) is
stopped by its PID. A ``tether mqtt sub`` is known to have subscribed when it prints a
retained message: its filters go in one SUBSCRIBE, so every later message is seen.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.conftest import USERS
from tests.integration.mosquitto import Broker, free_ports

from tether.mqtt import Outbox
from tether.mqtt.packets import Publish
from tether.mqtt.protocol import SessionChange

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT = 10.0  # seconds; bounds every wait so that nothing can hang
MQTT = [sys.executable, "-m", "tether", "mqtt"]


def tether(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``tether mqtt ARGS`` to its end (killed by subprocess.run after TIMEOUT)."""
    return subprocess.run([*MQTT, *map(str, args)], capture_output=True, timeout=TIMEOUT)


def ok(*args: str | Path) -> bytes:
    """Run ``tether mqtt ARGS``; it must succeed and print nothing on stderr. Returns stdout."""
    proc = tether(*args)
    assert (proc.returncode, proc.stderr) == (0, b""), proc.stderr.decode(errors="replace")
    return proc.stdout


def fails(*args: str | Path) -> str:
    """Run ``tether mqtt ARGS``; it must exit 1 with one line on stderr, returned."""
    proc = tether(*args)
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, stderr
    assert stderr.startswith("tether mqtt: ") and stderr.count("\n") == 1, stderr
    assert proc.stdout == b""
    return stderr


class Sub:
    """A running ``tether mqtt sub``; its stdout lines are read by a thread into a queue."""

    def __init__(self, *args: str | Path) -> None:
        self.process = subprocess.Popen(
            [*MQTT, "sub", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def line(self) -> bytes | None:
        """The next line printed, or None at the end of the output."""
        return self.lines.get(timeout=TIMEOUT)

    def wait(self) -> int:
        return self.process.wait(TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()


@pytest.fixture
def sub() -> Iterator[type[Sub]]:
    """Sub(*args) starts ``tether mqtt sub``; every one is stopped by PID at teardown."""
    started: list[Sub] = []

    class Tracked(Sub):
        def __init__(self, *args: str | Path) -> None:
            super().__init__(*args)
            started.append(self)

    yield Tracked
    for process in started:
        process.stop()


# ------------------------------------------------------------------ pub


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pub_arrives_at_mosquitto_sub(mosquitto: Broker, topic: str, qos: int) -> None:
    message = "température ✓ 🚀 \\n"
    with mosquitto.mosquitto_sub(topic, qos=2) as listener:
        ok("pub", mosquitto.url(), "-t", topic, "-m", message, "-q", str(qos))
        received = listener.get(TIMEOUT)
    assert (received.topic, received.payload, received.qos) == (topic, message.encode(), qos)
    assert not received.retain


def test_pub_repeat(mosquitto: Broker, topic: str) -> None:
    with mosquitto.mosquitto_sub(topic, qos=1) as listener:
        ok("pub", mosquitto.url(), "-t", topic, "-m", "again", "-q", "1", "--repeat", "5")
        ok("pub", mosquitto.url(), "-t", topic, "-m", "marker", "-q", "1")
        payloads = [listener.get(TIMEOUT).payload for _ in range(6)]
    assert payloads == [b"again"] * 5 + [b"marker"]


def test_pub_file_and_null_message(mosquitto: Broker, topic: str, tmp_path: Path) -> None:
    payload = bytes(range(256)) + b"\r\n\x00" + random.Random(7).randbytes(8192)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    with mosquitto.mosquitto_sub(topic, qos=1) as listener:
        ok("pub", mosquitto.url(), "-t", topic, "-f", path, "-q", "1")
        ok("pub", mosquitto.url(), "-t", topic, "-n", "-q", "1")
        assert listener.get(TIMEOUT).payload == payload
        assert listener.get(TIMEOUT).payload == b""


def test_pub_retained_then_sub_verbose(mosquitto: Broker, topic: str) -> None:
    ok("pub", mosquitto.url(), "-t", topic, "-m", "kept value", "-q", "1", "-r")
    try:
        assert ok("sub", mosquitto.url(), "-t", topic, "-C", "1", "-v") == f"{topic} kept value\n".encode()
        assert ok("sub", mosquitto.url(), "-t", topic, "-C", "1") == b"kept value\n"
    finally:
        ok("pub", mosquitto.url(), "-t", topic, "-n", "-r")  # clears it


def test_binary_payload_through_tether_pub_and_sub(mosquitto: Broker, topic: str, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 8
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    ok("pub", mosquitto.url(), "-t", topic, "-f", path, "-q", "2", "-r")
    try:
        assert ok("sub", mosquitto.url(), "-t", topic, "-q", "2", "-C", "1", "-N") == payload
    finally:
        ok("pub", mosquitto.url(), "-t", topic, "-n", "-r")


@pytest.mark.parametrize("scheme", ["ws", "mqtts"])
def test_pub_and_sub_over_ws_and_tls(mosquitto: Broker, topic: str, scheme: str) -> None:
    tls = ["--ca-file", str(mosquitto.ca_file)] if scheme == "mqtts" else []
    url = mosquitto.url(scheme)
    with mosquitto.mosquitto_sub(topic, qos=1) as listener:
        ok("pub", url, *tls, "-t", topic, "-m", f"over {scheme}", "-q", "1", "-r")
        assert listener.get(TIMEOUT).payload == f"over {scheme}".encode()
    try:
        assert ok("sub", url, *tls, "-t", topic, "-C", "1", "-v") == f"{topic} over {scheme}\n".encode()
    finally:
        ok("pub", url, *tls, "-t", topic, "-n", "-r")


def test_pub_store_leaves_an_empty_outbox(mosquitto: Broker, topic: str, tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with mosquitto.mosquitto_sub(topic, qos=2) as listener:
        ok("pub", mosquitto.url(), "-t", topic, "-m", "stored", "-q", "2", "--repeat", "3", "--store", path)
        assert [listener.get(TIMEOUT).payload for _ in range(3)] == [b"stored"] * 3
    with Outbox(path) as outbox:
        assert (len(outbox), outbox.sequence) == (0, 3)
    lines = ok("outbox", path).decode().splitlines()
    assert lines[1] == "0 publishes waiting (0 bytes), 3 accepted in all"
    assert len(lines) == 2


# ------------------------------------------------------------------ sub


def test_sub_count_exits_after_count_messages(mosquitto: Broker, topic: str, sub: type[Sub]) -> None:
    ok("pub", mosquitto.url(), "-t", f"{topic}/ready", "-m", "ready", "-r")
    try:
        process = sub(
            mosquitto.url(), "-t", f"{topic}/ready", "-t", f"{topic}/live", "-q", "1", "-C", "4", "-v"
        )
        assert process.line() == f"{topic}/ready ready\n".encode()
        for i in range(5):  # one more than it waits for
            mosquitto.mosquitto_pub(f"{topic}/live", b"m%d" % i, qos=1)
        assert process.wait() == 0
        assert [process.line() for _ in range(4)] == [f"{topic}/live m{i}\n".encode() for i in range(3)] + [
            None
        ]
    finally:
        ok("pub", mosquitto.url(), "-t", f"{topic}/ready", "-n", "-r")


def test_sub_wait_exits_without_messages(mosquitto: Broker, topic: str) -> None:
    assert ok("sub", mosquitto.url(), "-t", topic, "-W", "1") == b""


def test_sub_stops_on_sigterm(mosquitto: Broker, topic: str, sub: type[Sub]) -> None:
    ok("pub", mosquitto.url(), "-t", topic, "-m", "ready", "-r")
    try:
        process = sub(mosquitto.url(), "-t", topic)
        assert process.line() == b"ready\n"
        os.kill(process.process.pid, signal.SIGTERM)
        assert process.wait() == 0
    finally:
        ok("pub", mosquitto.url(), "-t", topic, "-n", "-r")


# ------------------------------------------------------------------ errors


def test_invalid_topic(mosquitto: Broker) -> None:
    assert "'#'" in fails("pub", mosquitto.url(), "-t", "a/#", "-m", "x")
    assert "a/#/b" in fails("sub", mosquitto.url(), "-t", "a/#/b")


def test_unreachable_port(topic: str) -> None:
    (port,) = free_ports(1)
    assert (
        "connect"
        in fails("pub", f"mqtt://127.0.0.1:{port}", "-t", topic, "-m", "x", "--timeout", "5").lower()
    )
    assert "connect" in fails("sub", f"mqtt://127.0.0.1:{port}", "-t", topic, "--timeout", "5").lower()


@pytest.mark.parametrize("version", ["4", "5"])
def test_wrong_password(mosquitto_auth: Broker, topic: str, version: str) -> None:
    url = mosquitto_auth.url()
    wrong = ["-u", "alice", "-P", "not " + USERS["alice"], "-V", version]
    assert "not authorized" in fails("pub", url, *wrong, "-t", topic, "-m", "x")
    assert "not authorized" in fails("sub", url, *wrong, "-t", topic)
    right = ["-u", "alice", "-P", USERS["alice"], "-V", version]
    ok("pub", url, *right, "-t", topic, "-m", "x", "-q", "1")


def test_tls_without_the_ca_fails(mosquitto: Broker, topic: str) -> None:
    assert "certificate" in fails("pub", mosquitto.url("mqtts"), "-t", topic, "-m", "x")


def test_missing_payload_file(mosquitto: Broker, topic: str, tmp_path: Path) -> None:
    assert "missing.bin" in fails("pub", mosquitto.url(), "-t", topic, "-f", tmp_path / "missing.bin")


# ------------------------------------------------------------------ outbox


def test_outbox_missing_file(tmp_path: Path) -> None:
    assert "no outbox at" in fails("outbox", tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()


def test_outbox_not_an_outbox(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database " * 100)
    assert "not a database" in fails("outbox", junk)
    other = tmp_path / "other.sqlite"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    before = other.read_bytes()
    assert "is not an outbox" in fails("outbox", other)
    assert other.read_bytes() == before  # listing never writes


def test_outbox_lists_waiting_publishes(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:
        outbox.claim("pump-7")
        outbox.apply(
            [
                SessionChange("add", publish=Publish("tether/a", b"12345", qos=1, packet_id=7)),
                SessionChange("add", publish=Publish("tether/b", b"x", qos=2, packet_id=8)),
                SessionChange("add", publish=Publish("tether/c", b"", qos=2, packet_id=9)),
                SessionChange("done", packet_id=9),
                SessionChange("release", packet_id=8),
                SessionChange("received", packet_id=3),
                SessionChange("received", packet_id=5),
            ]
        )
    lines = ok("outbox", path).decode().splitlines()
    assert lines[0] == f"outbox {path}: client pump-7"
    assert lines[1] == "2 publishes waiting (22 bytes), 3 accepted in all"
    assert lines[2].split() == ["seq", "id", "qos", "state", "bytes", "topic"]
    assert [line.split() for line in lines[3:5]] == [
        ["1", "7", "1", "waiting", "13", "tether/a"],
        ["2", "8", "2", "released", "9", "tether/b"],
    ]
    assert lines[5:] == ["incoming QoS 2 publishes awaiting PUBREL: 3, 5"]
