"""`Server`: one dispatcher served over every channel a device has (spec mgos-rpc.md §2).

A runnable RPC device in a few lines::

    server = tether.rpc.Server(device_id="tether_0A1B2C", http="127.0.0.1:8000")

    @server.method("Sum")
    def sum_(call):
        return call.params["a"] + call.params["b"]

    async with server:
        print(server.urls)  # ['ws://127.0.0.1:8000/rpc', 'http://127.0.0.1:8000/rpc']
        await server.serve_forever()

Theory of operation. The constructor checks every argument and builds what needs no
event loop: the dispatcher, the `tether.http.App` with ``/rpc`` mounted (WebSocket,
HTTP frame and REST modes, §2.1, §2.2) and the `DialOut` (§2.5). `start` then opens
the channels in the order they are most likely to fail: the HTTP listener, the serial
line (§2.4), the MQTT subscription on the caller's client (§2.3, returns on SUBACK),
and last the dial-out, which never fails: it retries with backoff. If one of them
fails, those already open are closed before the error propagates, so nothing is left
running. `close` stops every channel the server opened (never the caller's MQTT
client) and may be called any number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl as ssl_module
import sys
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from tether.http.app import App
from tether.http.server import Server as HttpServer
from tether.http.server import serve as http_serve
from tether.rpc.channels import OriginPolicy, RpcMount, mount_rpc
from tether.rpc.channels.dialout import DialOut
from tether.rpc.channels.serial import configure_tty, serve_serial
from tether.rpc.dispatch import Dispatcher
from tether.ws.uri import for_logs

if TYPE_CHECKING:  # imported when used: a device without MQTT doesn't load the MQTT client
    from tether.mqtt.client import Client as MqttClient
    from tether.rpc.channels.mqtt import MqttChannel

__all__ = ["Server", "parse_listen_addr"]

logger = logging.getLogger("tether.rpc")

H = TypeVar("H", bound=Callable[..., Any])

#: ``rpc.uart.baud_rate`` (§2.4).
SERIAL_BAUD_RATE = 115200

_PORT = re.compile(r"[0-9]{1,5}")
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def parse_listen_addr(value: str | int, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """Parse a Mongoose OS ``listen_addr`` (``http.listen_addr``) into (host, port).

    ==========================  ============================
    ``8000``, ``"8000"``        (default_host, 8000)
    ``":8000"``                 (default_host, 8000)
    ``"127.0.0.1:8000"``        ("127.0.0.1", 8000)
    ``"[::1]:8000"``            ("::1", 8000)
    ``"tcp://…"``               as without the prefix
    ==========================  ============================

    A bare port listens on every interface, as Mongoose OS does, unless default_host
    says otherwise. Port 0 picks a free port.

    Args:
        value: the address, or a port number.
        default_host: the host of an address that names none.

    Returns:
        (host, port); an IPv6 host without its brackets.

    Raises:
        ValueError: for anything else: no port, a port over 65535, a host name with
            spaces, an IPv6 address without brackets, another scheme than ``tcp://``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"listen address {value!r} is not a port number or a string")
    if isinstance(value, int):
        if not 0 <= value <= 65535:
            raise ValueError(f"port {value} is not in 0-65535")
        return default_host, value
    text = value.strip()
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme.lower() != "tcp":
            raise ValueError(f"listen address {value!r}: scheme {scheme!r} is not tcp")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or not rest.startswith(":"):
            raise ValueError(f"listen address {value!r} is not [IPv6]:port")
        port_text = rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"listen address {value!r}: write an IPv6 address in brackets, [::1]:8000")
        host = host or default_host
    else:
        host, port_text = default_host, text
    if not _PORT.fullmatch(port_text):
        raise ValueError(f"listen address {value!r} has no valid port")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} in listen address {value!r} is not in 0-65535")
    if any(c.isspace() for c in host):
        raise ValueError(f"listen address {value!r} has spaces in its host")
    return host, port


class Server:
    """A dispatcher served over WebSocket, HTTP, MQTT, a serial line and a dial-out link.

    Each channel is on when its argument is given; the HTTP server (WebSocket and HTTP
    on ``/rpc``) is on by default. Use ``async with Server(...) as server:`` or `start`
    and `close`.

    Args:
        dispatcher: the handlers; None for a new ``Dispatcher(device_id)``.
        device_id: ``device.id``; None for the dispatcher's (``tether`` for a new one).
        http: the HTTP listen address in the forms of `parse_listen_addr`; a bare port
            listens on every interface (``0.0.0.0``), as Mongoose OS does, so pass
            ``"127.0.0.1:8000"`` to stay local. None for no HTTP server.
        app: the caller's `tether.http.App`, with routes of its own; ``/rpc`` is mounted
            on it. None for a new App.
        ssl: an SSLContext (`tether.tls.server_context`) to serve HTTPS and WSS.
        origins: web pages of other origins allowed to call over HTTP and WebSocket
            (`tether.rpc.channels.OriginPolicy`); by default only the server's own.
        mqtt: a `tether.mqtt.Client` the caller owns and connects; the server serves
            ``<device_id>/rpc`` and ``<device_id>/rpc/#`` on it, and does not close it.
        dial_out: ``rpc.ws.server_address``: the ``ws://`` or ``wss://`` URL of a
            backend to keep a connection to.
        dial_out_ssl: an SSLContext for a ``wss://`` dial_out.
        reconnect_min: the first dial-out reconnect delay (``rpc.ws.reconnect_interval_min``).
        reconnect_max: the largest delay (``rpc.ws.reconnect_interval_max``).
        serial: a serial device path to serve, put in raw mode, 8N1 at 115200 baud; or
            ``"-"`` for stdin and stdout as they are (nothing else may then write to
            stdout; a terminal must be in raw mode).

    Raises:
        ValueError: for an invalid listen address or dial-out URL, a device_id that is
            not the dispatcher's, app or ssl without http, dial_out_ssl without
            dial_out, or an app that has routes on ``/rpc`` already.

    Attributes:
        dispatcher: where every channel's calls go.
        device_id: the dispatcher's device id.
        app: the HTTP application (None without http).
        mount: the channels mounted on ``/rpc`` of app (None without http).
        dial_out: the `DialOut` channel (None without dial_out): its ``connected``
            and ``wait_connected()`` tell whether the backend is reachable.
        mqtt_channel: the `MqttChannel` once started (None without mqtt).
        http_server: the running `tether.http.Server` (None before start, without http).
    """

    def __init__(
        self,
        dispatcher: Dispatcher | None = None,
        *,
        device_id: str | None = None,
        http: str | int | None = "127.0.0.1:8000",
        app: App | None = None,
        ssl: ssl_module.SSLContext | None = None,
        origins: OriginPolicy | None = None,
        mqtt: MqttClient | None = None,
        dial_out: str | None = None,
        dial_out_ssl: ssl_module.SSLContext | None = None,
        reconnect_min: float = 1.0,
        reconnect_max: float = 60.0,
        serial: str | None = None,
    ) -> None:
        if dispatcher is None:
            dispatcher = Dispatcher("tether" if device_id is None else device_id)
        elif device_id is not None and device_id != dispatcher.device_id:
            raise ValueError(f"device_id {device_id!r} is not the dispatcher's {dispatcher.device_id!r}")
        if http is None and (app is not None or ssl is not None):
            raise ValueError("app and ssl need an HTTP server: give http a listen address")
        if dial_out is None and dial_out_ssl is not None:
            raise ValueError("dial_out_ssl needs a dial_out URL")
        if serial == "":
            raise ValueError("serial must be a device path or '-', not ''")
        self.dispatcher = dispatcher
        self.device_id = dispatcher.device_id
        self.listen = None if http is None else parse_listen_addr(http)
        self.ssl = ssl
        self.app: App | None = None
        self.mount: RpcMount | None = None
        if http is not None:
            self.app = App() if app is None else app
            self.mount = mount_rpc(self.app, dispatcher, origins=origins)
        self.mqtt = mqtt
        self.serial = serial
        self.dial_out = (
            None
            if dial_out is None
            else DialOut(
                dispatcher, dial_out, ssl=dial_out_ssl, backoff_min=reconnect_min, backoff_max=reconnect_max
            )
        )
        self.http_server: HttpServer | None = None
        self.mqtt_channel: MqttChannel | None = None
        self._serial_fd: int | None = None  # a device path the server opened
        self._serial_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopped: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"Server({self.device_id!r}, {self.channels!r}, started={self._started})"

    @property
    def channels(self) -> list[str]:
        """Every channel, for people: URLs, ``mqtt <topic>``, ``serial <path>``, ``dial-out <url>``."""
        return [
            *self.urls,
            *([f"mqtt {self.device_id}/rpc"] if self.mqtt is not None else []),
            *([f"serial {self.serial}"] if self.serial is not None else []),
            *([f"dial-out {for_logs(self.dial_out.url)}"] if self.dial_out is not None else []),
        ]

    def method(
        self,
        name: str,
        *,
        args: Mapping[str, Any] | None = None,
        args_fmt: str | None = None,
        description: str = "",
        deadline: float | None = None,
        blocking: bool = False,
    ) -> Callable[[H], H]:
        """A decorator that registers a handler: `Dispatcher.method` of the server's dispatcher."""
        return self.dispatcher.method(
            name, args=args, args_fmt=args_fmt, description=description, deadline=deadline, blocking=blocking
        )

    @property
    def http_port(self) -> int | None:
        """The port the HTTP server listens on (the free one picked for port 0), None
        before `start` or without HTTP."""
        return None if self.http_server is None else self.http_server.port

    @property
    def urls(self) -> list[str]:
        """The ``ws://`` and ``http://`` URLs of ``/rpc`` (``wss``/``https`` with ssl), for
        `tether.rpc.connect`; a wildcard host is given as the loopback address. Empty
        before `start` or without HTTP."""
        port = self.http_port
        if port is None or self.listen is None:
            return []
        host = _WILDCARDS.get(self.listen[0], self.listen[0])
        if ":" in host:
            host = f"[{host}]"
        secure = "s" if self.ssl is not None else ""
        return [f"ws{secure}://{host}:{port}/rpc", f"http{secure}://{host}:{port}/rpc"]

    async def start(self) -> None:
        """Open every channel; return when they serve (the dial-out connects in the background).

        Raises:
            OSError: if the HTTP port cannot be listened on (in use, say) or the serial
                device cannot be opened; nothing is then left running.
            Refused, Timeout: if the MQTT broker refuses or does not answer the subscription.
            RuntimeError: if the server is started already.
        """
        if self._started:
            raise RuntimeError("the server is started already")
        self._started = True
        self._stopped = asyncio.Event()
        try:
            if self.listen is not None:
                assert self.app is not None
                host, port = self.listen
                try:
                    self.http_server = await http_serve(self.app, host, port, ssl=self.ssl)
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                    ) from exc
            if self.serial is not None:
                self._start_serial(self.serial)
            if self.mqtt is not None:
                from tether.rpc.channels.mqtt import MqttChannel

                channel = MqttChannel(self.dispatcher, self.mqtt)
                await channel.start()
                self.mqtt_channel = channel
            if self.dial_out is not None:
                self.dial_out.start()
        except BaseException:
            await self._stop()
            self._started = False
            self.http_server = None
            raise
        logger.info("rpc server %r started", self)

    def _start_serial(self, path: str) -> None:
        if path == "-":
            fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
        else:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot open serial device {path!r}: {exc.strerror}") from exc
            self._serial_fd = fd
            if os.isatty(fd):
                configure_tty(fd, SERIAL_BAUD_RATE)
            fd_in = fd_out = fd
        # RPC.Ping reports UART0, as the firmware on its first UART.
        self._serial_task = asyncio.get_running_loop().create_task(
            serve_serial(self.dispatcher, fd_in, fd_out)
        )
        self._serial_task.add_done_callback(_log_serial_end)

    async def close(self) -> None:
        """Stop every channel the server opened; the caller's MQTT client stays connected.

        Calls in flight on HTTP get up to 10 s to finish. Safe to call more than once, and
        at once from several tasks: each returns when the server is closed.
        """
        if self._closing is not None:
            await self._closing.wait()
            return
        if not self._started:
            return
        closing = self._closing = asyncio.Event()
        try:
            await self._stop()
        finally:
            self._started = False
            self._closing = None
            closing.set()
        logger.info("rpc server %r closed", self)

    async def _stop(self) -> None:
        if self.dial_out is not None:
            await self.dial_out.close()
        channel, self.mqtt_channel = self.mqtt_channel, None
        if channel is not None:
            await channel.close()
        task, self._serial_task = self._serial_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        fd, self._serial_fd = self._serial_fd, None
        if fd is not None:
            os.close(fd)
        server = self.http_server
        if server is not None:
            server.close()
            await server.wait_closed()
        if self._stopped is not None:
            self._stopped.set()

    async def serve_forever(self) -> None:
        """Start if not started, then serve until `close` is called or the task is
        cancelled; the server is closed when this returns."""
        if not self._started:
            await self.start()
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _log_serial_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None:
        logger.info("serial channel: end of input")
    else:
        logger.error("serial channel failed: %s", exc, exc_info=exc)
