"""HTTP servers, one per library, for the HTTP benchmark.

``python bench/http/servers.py LIB --root DIR [--cpu 0]`` listens on 127.0.0.1
on a free port, prints ``PORT <n>`` on stdout and serves until SIGTERM or
SIGINT, always on uvloop:

- ``GET /static/1k.bin``: the 1 KiB file in DIR, as each library serves files
  (tether's web root, aiohttp's ``web.FileResponse``, starlette's ``FileResponse``);
- ``GET /json``: a small JSON object from an async handler (tether's dict
  result, aiohttp's ``web.json_response``, starlette's ``JSONResponse``).

No access logs anywhere; each library keeps its other defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
LIBS = ("tether", "aiohttp", "uvicorn")
#: The JSON every server answers; about 60 bytes, like a device's status endpoint.
PAYLOAD = {"device": "pump-7", "cpu": 12.5, "uptime": 86400, "ok": True}
STATIC_NAME = "1k.bin"

#: Each starter listens, returns its port and a coroutine function that stops the server.
Starter = Callable[[Path], Awaitable[tuple[int, Callable[[], Awaitable[None]]]]]


async def start_tether(root: Path) -> tuple[int, Callable[[], Awaitable[None]]]:
    from tether.http import App, Request, serve

    app = App(web_root=root.parent, cache_control=None)

    @app.get("/json")
    async def json_endpoint(request: Request) -> dict[str, Any]:
        return PAYLOAD

    server = await serve(app, HOST, 0)

    async def stop() -> None:
        server.close()
        await server.wait_closed(1.0)

    return server.port, stop


async def start_aiohttp(root: Path) -> tuple[int, Callable[[], Awaitable[None]]]:
    from aiohttp import web

    path = root / STATIC_NAME

    async def static_file(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    async def json_endpoint(request: web.Request) -> web.Response:
        return web.json_response(PAYLOAD)

    app = web.Application()
    app.router.add_get(f"/static/{STATIC_NAME}", static_file)
    app.router.add_get("/json", json_endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    return int(runner.addresses[0][1]), runner.cleanup


async def start_uvicorn(root: Path) -> tuple[int, Callable[[], Awaitable[None]]]:
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Route

    path = root / STATIC_NAME

    async def static_file(request: Request) -> FileResponse:
        return FileResponse(path)

    async def json_endpoint(request: Request) -> JSONResponse:
        return JSONResponse(PAYLOAD)

    app = Starlette(routes=[Route(f"/static/{STATIC_NAME}", static_file), Route("/json", json_endpoint)])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    config = uvicorn.Config(
        app, loop="none", http="httptools", ws="none", lifespan="off", access_log=False, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)

    async def stop() -> None:
        server.should_exit = True
        await task

    return int(sock.getsockname()[1]), stop


STARTERS: dict[str, Starter] = {"tether": start_tether, "aiohttp": start_aiohttp, "uvicorn": start_uvicorn}


async def main(lib: str, root: Path) -> None:
    port, stop = await STARTERS[lib](root)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print(f"PORT {port}", flush=True)
    await done.wait()
    await stop()


def write_static(root: Path) -> Path:
    """Write the 1 KiB file under root and return its path."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / STATIC_NAME
    path.write_bytes(bytes(range(256)) * 4)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lib", choices=LIBS)
    parser.add_argument("--root", required=True, help="directory holding static/1k.bin")
    parser.add_argument("--cpu", type=int, help="pin the server to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        if args.cpu in os.sched_getaffinity(0):
            os.sched_setaffinity(0, {args.cpu})
        else:
            print(f"warning: CPU {args.cpu} not available; not pinning", file=sys.stderr)
    block = bytearray(2**20)  # past glibc's mmap threshold for 256 KiB reads (see bench/ws/common.py)
    del block
    import uvloop

    uvloop.run(main(args.lib, Path(args.root) / "static"))
