"""The JSON endpoint's per-request server CPU, in process: no sockets, no wrk.

Drives the server's `asyncio.Protocol` with a fake transport: N keep-alive
requests ``GET /api/json`` (one ``data_received`` call each, as wrk sends
them), answered by an async handler returning a small dict, the same one as
``bench/http/servers.py``. Measures ``time.process_time()`` per request and
prints the median of several repeats. Repeatable on a shared machine with
callgrind (instructions do not depend on the neighbours)::

    .venv/bin/python bench/http/inproc.py [--requests 20000] [--repeats 7] [--aiohttp]
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python bench/http/inproc.py --requests 2000 --repeats 1
    callgrind_annotate /tmp/cg.out | head

Under callgrind, run it twice (``--requests 2000`` and ``--requests 4000``,
``--repeats 1``): the difference of the totals over 2000 is the instructions
per request, without start-up.

``--aiohttp`` also measures aiohttp's protocol, for reference; it answers in a
task, so each of its requests also costs a turn of the event loop (run here
with ``loop.run_until_complete`` on the write), which a real server pays too.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

REQUEST = b"GET /api/json HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
PAYLOAD = {"device": "pump-7", "cpu": 12.5, "uptime": 86400, "ok": True}
PEER = ("127.0.0.1", 50000)


class FakeTransport(asyncio.Transport):
    """Collects what is written; reports no socket (so no TCP_NODELAY) and a peer address."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False
        self.on_write: Callable[[], None] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        if self.on_write is not None:
            self.on_write()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return PEER if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


def _check(response: bytes) -> None:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    assert body.startswith(b'{"device":'), response


async def measure_tether(requests: int, repeats: int) -> list[float]:
    from tether.http import App, Request
    from tether.http.server import Server

    app = App()

    @app.get("/api/json")
    async def json_endpoint(request: Request) -> dict[str, Any]:
        return PAYLOAD

    server = Server(
        app,
        max_connections=1024,
        header_timeout=10.0,
        body_timeout=60.0,
        keep_alive_timeout=15.0,
        max_head_size=16384,
        max_request_line=8192,
        max_headers=100,
        shutdown_timeout=1.0,
    )
    protocol = server._protocol()
    transport = FakeTransport()
    protocol.connection_made(transport)
    received = protocol.data_received
    written = transport.written
    received(REQUEST)
    assert len(written) == 1, written
    _check(written[0])
    results = []
    for _ in range(repeats):
        written.clear()
        start = time.process_time()
        for _ in range(requests):
            received(REQUEST)
        elapsed = time.process_time() - start
        assert len(written) == requests
        results.append(elapsed / requests * 1e6)
    protocol.connection_lost(None)
    return results


async def measure_aiohttp(requests: int, repeats: int) -> list[float]:
    from aiohttp import web
    from aiohttp.web_protocol import RequestHandler

    async def json_endpoint(request: web.Request) -> web.Response:
        return web.json_response(PAYLOAD)

    app = web.Application()
    app.router.add_get("/api/json", json_endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    loop = asyncio.get_running_loop()
    assert runner.server is not None
    protocol = RequestHandler(runner.server, loop=loop)
    transport = FakeTransport()
    protocol.connection_made(transport)
    written = transport.written
    waiter: list[asyncio.Future[None]] = []

    def wake() -> None:
        if waiter and not waiter[0].done():
            waiter[0].set_result(None)

    transport.on_write = wake

    async def one() -> None:
        fut = loop.create_future()
        waiter[:] = [fut]
        protocol.data_received(REQUEST)
        await fut

    await one()
    _check(b"".join(written))
    results = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(requests):
            await one()
        elapsed = time.process_time() - start
        results.append(elapsed / requests * 1e6)
    protocol.connection_lost(None)
    await runner.cleanup()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--aiohttp", action="store_true", help="also measure aiohttp's protocol")
    args = parser.parse_args()
    rows = [("tether", asyncio.run(measure_tether(args.requests, args.repeats)))]
    if args.aiohttp:
        rows.append(("aiohttp", asyncio.run(measure_aiohttp(args.requests, args.repeats))))
    for name, results in rows:
        runs = " ".join(f"{r:.2f}" for r in results)
        print(f"{name:8} {statistics.median(results):6.2f} µs/request (median of {args.repeats}: {runs})")


if __name__ == "__main__":
    main()
