"""Benchmark clients, one per library, running one scenario against an echo server.

``python bench/ws/clients.py LIB SCENARIO --port N --loop asyncio|uvloop [--cpu 1] ...``
prints one JSON line on stdout: ``{"value": ..., "unit": ..., ...}`` or
``{"error": ...}``. Scenarios (see bench/README.md):

- A: one connection, sequential round trips of a small message (round trips/s);
- B: several connections, each doing sequential round trips, all at once (round trips/s);
- C: one connection, sequential round trips of a large binary message (MiB/s one way);
- D: many idle connections; the server's VmRSS growth per connection (KiB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from common import (
    HOST,
    LIBS,
    LOOPS,
    MAX_SIZE,
    cpu_seconds,
    pin_to_cpu,
    raise_nofile,
    run_on_loop,
    settle_malloc,
    vm_rss_kib,
)

SCENARIOS = ("A", "B", "C", "D")


class Conn(Protocol):
    """One open client connection to an echo server."""

    async def echo(self, payload: bytes) -> Any:
        """Send payload as one binary message and return the reply."""

    async def close(self) -> None:
        """Close the connection (gracefully where the library can)."""


class Library:
    """Opens connections with one library; close() releases shared resources."""

    async def open(self, port: int) -> Conn:
        raise NotImplementedError

    async def close(self) -> None:
        return None


# ------------------------------------------------------------------ tether


class TetherConn:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def echo(self, payload: bytes) -> Any:
        await self.ws.send(payload)
        return await self.ws.recv()

    async def close(self) -> None:
        await self.ws.close()


class TetherLibrary(Library):
    async def open(self, port: int) -> Conn:
        import tether.ws

        ws = await tether.ws.connect(
            f"ws://{HOST}:{port}/", compression=None, max_size=MAX_SIZE, ping_interval=None
        )
        return TetherConn(ws)


class TetherCallbackLibrary(Library):
    """tether's callback API on the client too: a Handler resolves one waiter per message."""

    async def open(self, port: int) -> Conn:
        import tether.ws

        loop = asyncio.get_running_loop()

        class Echo(tether.ws.Handler):
            def __init__(self) -> None:
                self.ws: tether.ws.WebSocket | None = None
                self.waiter: asyncio.Future[Any] | None = None

            def on_message(self, ws: tether.ws.WebSocket, message: tether.ws.Data) -> None:
                waiter, self.waiter = self.waiter, None
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)

            def on_close(self, ws: tether.ws.WebSocket, code: int, reason: str) -> None:
                waiter, self.waiter = self.waiter, None
                if waiter is not None and not waiter.done():
                    waiter.set_exception(ConnectionError(f"closed with {code}"))

            async def echo(self, payload: bytes) -> Any:
                waiter = loop.create_future()
                self.waiter = waiter
                assert self.ws is not None
                self.ws.send_nowait(payload)
                return await waiter

            async def close(self) -> None:
                assert self.ws is not None
                await self.ws.close()

        conn = Echo()
        conn.ws = await tether.ws.connect(
            f"ws://{HOST}:{port}/", compression=None, max_size=MAX_SIZE, ping_interval=None, handler=conn
        )
        return cast(Conn, conn)


# -------------------------------------------------------------- websockets


class WebsocketsConn(TetherConn):
    """The same calls as tether's: send() then recv()."""


class WebsocketsLibrary(Library):
    async def open(self, port: int) -> Conn:
        from websockets.asyncio.client import connect

        ws = await connect(
            f"ws://{HOST}:{port}/",
            compression=None,
            max_size=MAX_SIZE,
            ping_interval=None,
            proxy=None,
        )
        return WebsocketsConn(ws)


# ----------------------------------------------------------------- aiohttp


class AiohttpConn:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def echo(self, payload: bytes) -> Any:
        await self.ws.send_bytes(payload)
        return await self.ws.receive_bytes()

    async def close(self) -> None:
        await self.ws.close()


class AiohttpLibrary(Library):
    def __init__(self) -> None:
        self.session: Any = None

    async def open(self, port: int) -> Conn:
        import aiohttp

        if self.session is None:
            # limit=0: the default connector allows only 100 connections at a time.
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        ws = await self.session.ws_connect(
            f"http://{HOST}:{port}/", compress=0, max_msg_size=MAX_SIZE, heartbeat=None
        )
        return AiohttpConn(ws)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


# ------------------------------------------------------------------ picows


@functools.cache
def _picows_conn_class() -> type[Any]:
    """Build the picows listener class once, importing picows only when used."""
    from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

    binary, text, close = WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CLOSE

    class PicowsConn(WSListener):
        """A picows listener with one waiter for the next message (one frame each)."""

        def __init__(self) -> None:
            self.loop = asyncio.get_running_loop()
            self.transport: WSTransport | None = None
            self.waiter: asyncio.Future[bytes] | None = None

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind is binary or kind is text:
                waiter, self.waiter = self.waiter, None
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame.get_payload_as_bytes())
            elif kind is close:
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError("picows connection lost"))

        async def echo(self, payload: bytes) -> Any:
            waiter = self.loop.create_future()
            self.waiter = waiter
            assert self.transport is not None
            self.transport.send(binary, payload)
            return await waiter

        async def close(self) -> None:
            assert self.transport is not None
            self.transport.send_close(WSCloseCode.OK)
            await self.transport.wait_disconnected()

    return PicowsConn


class PicowsLibrary(Library):
    def __init__(self, use_aiofastnet: bool = False) -> None:
        self.use_aiofastnet = use_aiofastnet

    async def open(self, port: int) -> Conn:
        from picows import ws_connect

        _, listener = await ws_connect(
            _picows_conn_class(),
            f"ws://{HOST}:{port}/",
            enable_auto_ping=False,
            max_frame_size=MAX_SIZE,
            use_aiofastnet=self.use_aiofastnet,
        )
        return cast(Conn, listener)


# ----------------------------------------------------------------- wsproto


@functools.cache
def _wsproto_conn_class() -> type[Any]:
    """Build the wsproto protocol class once, importing wsproto only when used."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.connection import ConnectionState
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Message,
        Ping,
        RejectConnection,
        Request,
    )

    class WsprotoConn(asyncio.Protocol):
        """wsproto inside a plain asyncio.Protocol, with one waiter for the next message."""

        def __init__(self, host: str) -> None:
            self.loop = asyncio.get_running_loop()
            self.host = host
            self.ws = WSConnection(ConnectionType.CLIENT)
            self.transport: asyncio.Transport | None = None
            self.opened: asyncio.Future[None] = self.loop.create_future()
            self.lost: asyncio.Future[None] = self.loop.create_future()
            self.messages: deque[Any] = deque()
            self.parts: list[Any] = []
            self.waiter: asyncio.Future[Any] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's transports do not derive from asyncio.Transport; cast, don't check.
            self.transport = cast(asyncio.Transport, transport)
            self.transport.write(self.ws.send(Request(host=self.host, target="/")))

        def data_received(self, data: bytes) -> None:
            ws = self.ws
            ws.receive_data(data)
            out = b""
            for event in ws.events():
                if isinstance(event, Message):
                    self.parts.append(event.data)
                    if event.message_finished:
                        parts, self.parts = self.parts, []
                        self._deliver(parts[0] if len(parts) == 1 else parts[0][:0].join(parts))
                elif isinstance(event, AcceptConnection):
                    self.opened.set_result(None)
                elif isinstance(event, RejectConnection):
                    self.opened.set_exception(ConnectionError(f"wsproto handshake rejected: {event}"))
                elif isinstance(event, Ping) or (
                    isinstance(event, CloseConnection) and ws.state is ConnectionState.REMOTE_CLOSING
                ):
                    out += ws.send(event.response())
            if out:
                assert self.transport is not None
                self.transport.write(out)

        def _deliver(self, message: Any) -> None:
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            else:
                self.messages.append(message)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.lost.done():
                self.lost.set_result(None)
            if not self.opened.done():
                self.opened.set_exception(ConnectionError("wsproto connection lost in the handshake"))
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError("wsproto connection lost"))

        async def echo(self, payload: bytes) -> Any:
            assert self.transport is not None
            self.transport.write(self.ws.send(BytesMessage(payload)))
            if self.messages:
                return self.messages.popleft()
            waiter = self.loop.create_future()
            self.waiter = waiter
            return await waiter

        async def close(self) -> None:
            assert self.transport is not None
            self.transport.write(self.ws.send(CloseConnection(code=1000)))
            try:
                await asyncio.wait_for(asyncio.shield(self.lost), 10)
            except asyncio.TimeoutError:
                self.transport.abort()

    return WsprotoConn


class WsprotoLibrary(Library):
    async def open(self, port: int) -> Conn:
        loop = asyncio.get_running_loop()
        cls = _wsproto_conn_class()
        _, conn = await loop.create_connection(lambda: cls(f"{HOST}:{port}"), HOST, port)
        await conn.opened
        return conn  # type: ignore[no-any-return]


# --------------------------------------------------------------------- raw


class RawConn(asyncio.Protocol):
    """A TCP client that writes a payload and waits for as many bytes back."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.want = 0
        self.waiter: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport; cast, don't check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= self.want:
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError("raw connection lost"))

    async def echo(self, payload: bytes) -> Any:
        assert self.transport is not None
        size = len(payload)
        self.want = size
        waiter = self.loop.create_future()
        self.waiter = waiter
        self.transport.write(payload)
        await waiter
        reply = bytes(self.buffer[:size])
        del self.buffer[:size]
        return reply

    async def close(self) -> None:
        assert self.transport is not None
        self.transport.close()
        await self.lost


class RawLibrary(Library):
    async def open(self, port: int) -> Conn:
        _, conn = await asyncio.get_running_loop().create_connection(RawConn, HOST, port)
        return conn


LIBRARIES: dict[str, Callable[[], Library]] = {
    "tether": TetherLibrary,
    "tether-cb": TetherCallbackLibrary,
    # The same clients on the pure-Python path (main() sets TETHER_NO_SPEEDUPS).
    "tether-py": TetherLibrary,
    "tether-cb-py": TetherCallbackLibrary,
    "websockets": WebsocketsLibrary,
    "aiohttp": AiohttpLibrary,
    "picows": PicowsLibrary,
    "picows-fastnet": lambda: PicowsLibrary(use_aiofastnet=True),
    "wsproto": WsprotoLibrary,
    "raw": RawLibrary,
}
assert set(LIBS) <= set(LIBRARIES)


# --------------------------------------------------------------- scenarios


def _check(reply: Any, payload: bytes) -> None:
    if bytes(reply) != payload:
        raise RuntimeError(f"echo mismatch: sent {len(payload)} bytes, got {len(reply)}")


async def _round_trips(conn: Conn, payload: bytes, count: int) -> None:
    echo = conn.echo
    reply = None
    for _ in range(count):
        reply = await echo(payload)
    if count:
        _check(reply, payload)


async def _close_all(conns: list[Conn], timeout: float = 10.0) -> None:
    if conns:
        tasks = [asyncio.ensure_future(conn.close()) for conn in conns]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class CpuMeter:
    """CPU time used by the server and by this client between start() and stop()."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.server = self.client = 0.0

    def start(self) -> None:
        self.server = cpu_seconds(self.server_pid)
        self.client = cpu_seconds(os.getpid())

    def stop(self, round_trips: int) -> dict[str, float]:
        """Return the CPU time per round trip of each side, in microseconds."""
        server = cpu_seconds(self.server_pid) - self.server
        client = cpu_seconds(os.getpid()) - self.client
        return {
            "server_cpu_us_per_rt": server / round_trips * 1e6,
            "client_cpu_us_per_rt": client / round_trips * 1e6,
        }


async def scenario_sequential(
    lib: Library, port: int, *, count: int, size: int, unit: str, server_pid: int
) -> dict[str, Any]:
    """A and C: one connection, count sequential round trips of size bytes."""
    payload = os.urandom(size)
    meter = CpuMeter(server_pid)
    conn = await lib.open(port)
    try:
        _check(await conn.echo(payload), payload)
        await _round_trips(conn, payload, max(count // 20, 2))  # warm up
        meter.start()
        start = time.perf_counter()
        await _round_trips(conn, payload, count)
        elapsed = time.perf_counter() - start
        cpu = meter.stop(count)
    finally:
        await _close_all([conn])
    value = count * size / 2**20 / elapsed if unit == "MiB/s" else count / elapsed
    return {"value": value, "unit": unit, "elapsed": elapsed, "count": count, "size": size, **cpu}


async def scenario_concurrent(
    lib: Library, port: int, *, connections: int, count: int, size: int, server_pid: int
) -> dict[str, Any]:
    """B: connections at once, each count sequential round trips of size bytes."""
    payload = os.urandom(size)
    meter = CpuMeter(server_pid)
    conns: list[Conn] = []
    total = connections * count
    try:
        for _ in range(connections):
            conns.append(await lib.open(port))
        await asyncio.gather(*(_round_trips(c, payload, max(count // 20, 2)) for c in conns))
        meter.start()
        start = time.perf_counter()
        await asyncio.gather(*(_round_trips(c, payload, count) for c in conns))
        elapsed = time.perf_counter() - start
        cpu = meter.stop(total)
    finally:
        await _close_all(conns)
    return {
        "value": total / elapsed,
        "unit": "rt/s",
        "elapsed": elapsed,
        "count": total,
        "connections": connections,
        **cpu,
    }


async def scenario_idle(
    lib: Library, port: int, *, connections: int, server_pid: int, parallel: int = 50
) -> dict[str, Any]:
    """D: the server's VmRSS growth per idle connection, in KiB."""
    payload = b"x" * 32
    warm = await lib.open(port)
    _check(await warm.echo(payload), payload)
    await warm.close()
    await asyncio.sleep(0.3)
    before = vm_rss_kib(server_pid)
    client_before = vm_rss_kib(os.getpid())
    conns: list[Conn] = []
    try:
        start = time.perf_counter()
        # Open in batches smaller than every library's listen backlog.
        for first in range(0, connections, parallel):
            batch = min(parallel, connections - first)
            conns.extend(await asyncio.gather(*(lib.open(port) for _ in range(batch))))
        opened = time.perf_counter() - start
        # One round trip each, so every server-side handler is running.
        for conn in conns:
            _check(await conn.echo(payload), payload)
        await asyncio.sleep(0.5)
        after = vm_rss_kib(server_pid)
        client_after = vm_rss_kib(os.getpid())
    finally:
        await _close_all(conns)
    return {
        "value": (after - before) / connections,
        "unit": "KiB/conn",
        "rss_before_kib": before,
        "rss_after_kib": after,
        "client_kib_per_conn": (client_after - client_before) / connections,
        "open_s": opened,
        "count": connections,
    }


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    lib = LIBRARIES[args.lib]()
    job: Awaitable[dict[str, Any]]
    pid = args.server_pid
    if args.scenario == "A":
        job = scenario_sequential(
            lib, args.port, count=args.count, size=args.size, unit="rt/s", server_pid=pid
        )
    elif args.scenario == "B":
        job = scenario_concurrent(
            lib, args.port, connections=args.connections, count=args.count, size=args.size, server_pid=pid
        )
    elif args.scenario == "C":
        job = scenario_sequential(
            lib, args.port, count=args.count, size=args.size, unit="MiB/s", server_pid=pid
        )
    else:
        job = scenario_idle(lib, args.port, connections=args.connections, server_pid=pid)
    # Not wait_for(): libraries raise their own TimeoutError subclasses (tether.errors.Timeout
    # is one), which must be reported as their failure, not as this scenario's time limit.
    task = asyncio.ensure_future(job)
    try:
        done, _ = await asyncio.wait({task}, timeout=args.timeout)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=10)
            return {"error": f"timeout after {args.timeout:g} s"}
        return task.result()
    finally:
        # The result is in; a library that fails to clean up must not replace it.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(lib.close(), 10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lib", choices=sorted(LIBRARIES))
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--cpu", type=int, default=1, help="CPU to pin to; -1 for none")
    parser.add_argument("--count", type=int, default=1000, help="round trips (per connection)")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--size", type=int, default=32, help="message size in bytes")
    parser.add_argument("--server-pid", type=int, required=True, help="whose CPU time and VmRSS to read")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the scenario")
    args = parser.parse_args(argv)
    if args.lib.endswith("-py"):
        os.environ["TETHER_NO_SPEEDUPS"] = "1"  # before tether is imported
    if args.cpu >= 0:
        pin_to_cpu(args.cpu)
    raise_nofile()
    settle_malloc()
    try:
        result = run_on_loop(args.loop, run_scenario(args))
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    if args.lib.startswith("tether"):
        from tether.ws.frames import SPEEDUPS

        result["speedups"] = SPEEDUPS
    print(json.dumps(result), flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
