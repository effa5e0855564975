"""``tether http serve``: serve a directory over HTTP, with Server Side Includes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Add ``http`` and its subcommands to the ``tether`` parser."""
    http = commands.add_parser("http", help="HTTP server")
    sub = http.add_subparsers(dest="http_command", metavar="COMMAND")
    sub.required = True
    serve = sub.add_parser(
        "serve", help="serve a directory (static files, .shtml SSI); stops cleanly on SIGINT or SIGTERM"
    )
    serve.add_argument(
        "directory", nargs="?", default=".", help="the web root (default: the current directory)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000, 0 for any free one)")
    serve.add_argument("--listing", action="store_true", help="list directories that have no index file")
    serve.add_argument("--no-ssi", action="store_true", help="serve .shtml files as they are")
    serve.set_defaults(run=_run_serve)


async def _serve(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    from tether.http import App, serve

    app = App(web_root=args.directory, ssi=not args.no_ssi, directory_listing=args.listing)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with serve(app, args.host, args.port) as server:
        root = os.path.abspath(args.directory)
        print(
            f"tether http: serving {root} on http://{args.host}:{server.port}/", file=sys.stderr, flush=True
        )
        await stop.wait()


def _run_serve(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.directory):
        print(f"tether http: {args.directory!r} is not a directory", file=sys.stderr)
        return 2
    try:
        import uvloop  # the optional extra: a faster loop when it is installed
    except ImportError:
        asyncio.run(_serve(args))
    else:
        uvloop.run(_serve(args))
    print("tether http: stopped", file=sys.stderr)
    return 0
