"""A real mosquitto broker for tests and benchmarks, on free loopback ports, with its own config.

`Broker` writes a mosquitto config into a directory of its own and runs ``mosquitto -c``
with up to four listeners on 127.0.0.1: TCP (``mqtt``), TLS (``mqtts``), WebSocket
(``ws``) and secure WebSocket (``wss``). Optional: a password file made with
``mosquitto_passwd -b`` and an ACL file. Persistence is on, in the same directory, so that
`restart()` (same ports) keeps sessions and retained messages after a graceful `stop()`.

The process is always stopped by its PID (`stop()`: SIGTERM, then SIGKILL after a grace
period; `kill()`: SIGKILL at once). `start()` returns when every listener accepts TCP
connections, or raises `BrokerError` with the tail of the broker's log.

Facts about Debian's mosquitto 2.0.11 this relies on:

- a ``protocol websockets`` listener ignores its bind address and listens on every
  interface unless ``socket_domain ipv4`` is added to it;
- started as root, mosquitto switches to the ``mosquitto`` user unless ``user`` names
  another, and then could not read the files in our temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pwd
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from tether.mqtt import Client

__all__ = [
    "SCHEMES",
    "Broker",
    "BrokerError",
    "Received",
    "Subscriber",
    "TlsFiles",
    "free_ports",
    "mosquitto_available",
]

#: Listener kinds, named by the URL scheme a client uses for them.
SCHEMES = ("mqtt", "mqtts", "ws", "wss")
HOST = "127.0.0.1"
#: Where mosquitto serves MQTT inside a WebSocket (any path works; clients send this one).
WS_PATH = "/mqtt"


class BrokerError(RuntimeError):
    """mosquitto did not start, or a helper command failed; the message ends with its log."""


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files for the TLS listeners: the CA that signed the server certificate, and that
    certificate for 127.0.0.1 with its key."""

    ca: Path
    cert: Path
    key: Path


def mosquitto_available(executable: str = "mosquitto") -> str | None:
    """The path of the mosquitto binary (also looked for in /usr/sbin), or None."""
    found = shutil.which(executable)
    if found is None and os.sep not in executable:
        found = shutil.which(executable, path="/usr/sbin:/usr/local/sbin")
    return found


def free_ports(count: int) -> list[int]:
    """count distinct TCP ports on 127.0.0.1 that nobody listened on a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


class Broker:
    """A mosquitto process with its config, log, password file, ACL and persistence in directory.

    Args:
        directory: an empty directory the broker owns (config, log, database).
        schemes: which listeners to open, from `SCHEMES`.
        tls: certificate files, required for ``mqtts`` and ``wss``.
        users: user name to password; when given, a password file is written and anonymous
            clients are refused unless allow_anonymous is True.
        acl: the text of an ACL file (mosquitto.conf(5), ``acl_file``), or None for none.
        allow_anonymous: default: True without users, False with them.
        log_types: mosquitto ``log_type`` values.
        extra_config: further lines for the global section of the config.
        executable: the mosquitto binary.
        start_timeout: seconds `start()` waits for every listener.
    """

    def __init__(
        self,
        directory: Path,
        *,
        schemes: Sequence[str] = SCHEMES,
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        allow_anonymous: bool | None = None,
        log_types: Sequence[str] = ("error", "warning", "notice", "information"),
        extra_config: Sequence[str] = (),
        executable: str = "mosquitto",
        start_timeout: float = 10.0,
    ) -> None:
        unknown = set(schemes) - set(SCHEMES)
        if unknown:
            raise ValueError(f"unknown schemes {sorted(unknown)}")
        if tls is None and {"mqtts", "wss"} & set(schemes):
            raise ValueError("the mqtts and wss listeners need tls files")
        binary = mosquitto_available(executable)
        if binary is None:
            raise BrokerError(f"{executable} is not installed")
        self.executable = binary
        self.directory = Path(directory)
        self.schemes = tuple(schemes)
        self.tls = tls
        self.users = dict(users or {})
        self.acl = acl
        self.allow_anonymous = not self.users if allow_anonymous is None else allow_anonymous
        self.log_types = tuple(log_types)
        self.extra_config = tuple(extra_config)
        self.start_timeout = start_timeout
        self.config_file = self.directory / "mosquitto.conf"
        self.log_file = self.directory / "mosquitto.log"
        self.password_file = self.directory / "passwords" if self.users else None
        self.acl_file = self.directory / "acl" if acl is not None else None
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr = self.directory / "mosquitto.stderr"

    # ---------------------------------------------------------------- addresses

    def url(self, scheme: str = "mqtt") -> str:
        """The URL a client connects to for one listener, e.g. ``ws://127.0.0.1:PORT/mqtt``."""
        port = self.port(scheme)
        path = WS_PATH if scheme in ("ws", "wss") else ""
        return f"{scheme}://{HOST}:{port}{path}"

    def port(self, scheme: str = "mqtt") -> int:
        """The port of one listener; the broker must have been started once."""
        if scheme not in self.ports:
            raise KeyError(f"no {scheme!r} listener (have {sorted(self.ports)})")
        return self.ports[scheme]

    @property
    def host(self) -> str:
        return HOST

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the TLS listeners' certificate."""
        if self.tls is None:
            raise BrokerError("this broker has no TLS listeners")
        return self.tls.ca

    def client_ssl(self) -> ssl.SSLContext:
        """A client TLS context that trusts only the CA of the TLS listeners."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What the broker logged so far, with what it wrote on stderr."""
        parts = []
        for path in (self.log_file, self._stderr):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # ------------------------------------------------------------------ config

    def _write_files(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.password_file is not None:
            self.password_file.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(self.password_file), user, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
        if self.acl_file is not None:
            assert self.acl is not None
            self.acl_file.write_text(self.acl)
        self.config_file.write_text(self.config())

    def config(self) -> str:
        """The text of mosquitto.conf for the current ports."""
        lines = [
            "# Written by tests/integration/mosquitto.py.",
            "per_listener_settings false",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.directory}/",
            f"log_dest file {self.log_file}",
            *(f"log_type {kind}" for kind in self.log_types),
            "log_timestamp true",
            "connection_messages true",
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        lines.extend(self.extra_config)
        for scheme in self.schemes:
            lines += ["", f"listener {self.ports[scheme]} {HOST}", "max_connections -1"]
            if scheme in ("ws", "wss"):
                lines += ["protocol websockets", "socket_domain ipv4"]
            if scheme in ("mqtts", "wss"):
                assert self.tls is not None
                lines += [
                    f"cafile {self.tls.ca}",
                    f"certfile {self.tls.cert}",
                    f"keyfile {self.tls.key}",
                ]
        return "\n".join(lines) + "\n"

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start mosquitto and wait until every listener accepts connections.

        The first start picks free ports; later starts (`restart()`) reuse them.

        Raises:
            BrokerError: if it exits or some port does not accept in time; with its log.
        """
        if self.running():
            raise BrokerError(f"mosquitto is already running (PID {self.pid})")
        attempts = 1 if self.ports else 3
        for attempt in range(attempts):
            if attempt or not self.ports:
                self.ports = dict(zip(self.schemes, free_ports(len(self.schemes)), strict=True))
            self._write_files()
            try:
                self._launch()
                return
            except BrokerError:
                # Another process may have taken a port between free_ports() and now.
                if attempt + 1 == attempts or "Address already in use" not in self.log():
                    raise

    def _launch(self) -> None:
        with self._stderr.open("ab") as stderr:
            self.process = subprocess.Popen(
                [self.executable, "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=self.directory,
            )
        deadline = time.monotonic() + self.start_timeout
        waiting = list(self.ports.values())
        while waiting:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise BrokerError(f"mosquitto exited with {code} at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(
                    f"mosquitto did not listen on ports {waiting} within {self.start_timeout:g} s:\n"
                    + self.log_tail()
                )
            if _accepts(waiting[0]):
                waiting.pop(0)
            else:
                time.sleep(0.02)  # polling a port: there is no event to wait for

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM (mosquitto saves its database), wait, SIGKILL after grace seconds.

        Returns the exit status, or None if it was not running.
        """
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(grace)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL: the broker dies without saving anything or closing connections."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)

    def restart(self) -> None:
        """Stop gracefully and start again on the same ports, with the saved database."""
        self.stop()
        self.start()

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------- mosquitto clients

    def client_args(self, scheme: str = "mqtt") -> list[str]:
        """Arguments for mosquitto_pub / mosquitto_sub to reach one TCP or TLS listener."""
        if scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"mosquitto's clients do not speak {scheme!r}")
        args = ["-h", HOST, "-p", str(self.port(scheme))]
        if scheme == "mqtts":
            args += ["--cafile", str(self.ca_file)]
        return args

    def mosquitto_pub(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        version: int = 5,
        scheme: str = "mqtt",
        extra: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> None:
        """Publish one message with ``mosquitto_pub``; payload goes through stdin, byte for byte.

        Raises:
            BrokerError: if mosquitto_pub fails, with what it printed.
        """
        argv = [
            "mosquitto_pub",
            *self.client_args(scheme),
            "-V",
            _VERSIONS[version],
            "-t",
            topic,
            "-q",
            str(qos),
            *(["-r"] if retain else []),
            # -s reads stdin as one message; -n sends an empty one (-s would send nothing).
            "-s" if payload else "-n",
            *extra,
        ]
        proc = subprocess.run(argv, input=payload, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise BrokerError(f"{argv} exited with {proc.returncode}: {proc.stderr.decode(errors='replace')}")

    def mosquitto_sub(
        self,
        topic_filter: str,
        *,
        qos: int = 0,
        version: int = 5,
        scheme: str = "mqtt",
        extra: Sequence[str] = (),
    ) -> Subscriber:
        """Start ``mosquitto_sub`` on topic_filter; use the result as a context manager."""
        argv = [
            "mosquitto_sub",
            *self.client_args(scheme),
            "-V",
            _VERSIONS[version],
            "-t",
            topic_filter,
            "-q",
            str(qos),
            "-d",
            "-F",
            f"{_MESSAGE_MARK} %t %r %q %x",
            *extra,
        ]
        return Subscriber(argv)


_VERSIONS = {4: "mqttv311", 5: "mqttv5"}
_MESSAGE_MARK = "MSG"  # -F: "@" and "%" start fields


@dataclasses.dataclass(frozen=True)
class Received:
    """A message as mosquitto_sub printed it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Subscriber:
    """A running ``mosquitto_sub -d``: its lines are read by a thread into a queue.

    Use as a context manager: entering waits for the SUBACK, leaving stops the process by
    its PID. `get()` returns the next message; every wait is bounded.
    """

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> Subscriber:
        # mosquitto_sub does not flush its -d lines: line-buffer its stdout, or the SUBACK
        # line would wait in its buffer.
        stdbuf = shutil.which("stdbuf")
        if stdbuf is None:
            raise BrokerError("stdbuf (coreutils) is needed to read mosquitto_sub line by line")
        self.process = subprocess.Popen(
            [stdbuf, "-oL", *self.argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        while True:
            line = self._next_line(timeout)
            if "received SUBACK" in line:
                return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def _next_line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"mosquitto_sub printed nothing for {timeout:g} s: {self.transcript()}"
            ) from None
        if line is None:
            self.lines.put(None)  # stays at end of output for later calls
            raise BrokerError(f"mosquitto_sub exited: {self.transcript()}")
        self.output.append(line)
        return line

    def get(self, timeout: float = 10.0) -> Received:
        """The next message mosquitto_sub received.

        Raises:
            TimeoutError: if none arrives within timeout seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(max(deadline - time.monotonic(), 0.0))
            if line.startswith(_MESSAGE_MARK + " "):
                _, topic, retain, qos, *payload = line.split(" ")
                return Received(topic, bytes.fromhex("".join(payload)), int(qos), retain == "1")

    def transcript(self) -> str:
        return "\n".join(self.output[-20:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(5)
            if self._reader is not None:
                self._reader.join(5)
            assert process.stdout is not None
            process.stdout.close()

    def __enter__(self) -> Subscriber:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ------------------------------------------------------------- tether clients in tests

#: Seconds that bound every wait of the MQTT integration tests, so that nothing can hang.
TIMEOUT = 10.0


def run(coro: Awaitable[Any]) -> Any:
    """Run a test coroutine on a fresh event loop, bounded by TIMEOUT."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


def tether_client(broker: Broker, scheme: str, version: int, client_id: str, **kwargs: Any) -> Client:
    """tether's asyncio client for one listener of broker (TLS trusts the test CA)."""
    kwargs.setdefault("reconnect", False)
    kwargs.setdefault("connect_timeout", TIMEOUT / 2)
    return Client(
        broker.url(scheme),
        client_id=client_id,
        version=version,
        ssl=broker.client_ssl() if scheme in ("mqtts", "wss") else None,
        **kwargs,
    )


async def receive(messages: Any, count: int) -> list[Any]:
    """The next count messages of a ``client.messages()`` stream, each wait bounded."""
    iterator = aiter(messages)
    return [await asyncio.wait_for(anext(iterator), TIMEOUT) for _ in range(count)]
