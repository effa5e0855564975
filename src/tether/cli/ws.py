"""``tether ws``: an interactive client, an echo server, and a demo of both."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from typing import Any

from tether import tls
from tether.errors import ConnectionClosed, HandshakeError, TetherError

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Add ``ws`` and its subcommands to the ``tether`` parser."""
    ws = commands.add_parser("ws", help="WebSocket client and echo server")
    sub = ws.add_subparsers(dest="ws_command", metavar="COMMAND")
    sub.required = True

    connect = sub.add_parser("connect", help="interactive client: stdin lines out, messages to stdout")
    connect.add_argument("url", help="ws:// or wss:// URL")
    connect.add_argument(
        "--header", "-H", action="append", default=[], metavar="K:V", help="extra request header (repeatable)"
    )
    connect.add_argument(
        "--subprotocol",
        "-s",
        action="append",
        default=[],
        metavar="P",
        help="subprotocol to offer (repeatable)",
    )
    connect.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    connect.add_argument("--ca-file", help="PEM bundle of trusted CAs for wss://")
    connect.add_argument("--cert", help="client certificate (PEM) for wss://")
    connect.add_argument("--key", help="client certificate key (PEM)")
    connect.add_argument("--max-size", type=int, default=2**20, help="largest message accepted")
    connect.set_defaults(run=_run_connect)

    echo = sub.add_parser("echo", help="echo server; stops cleanly on SIGINT or SIGTERM")
    echo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    echo.add_argument("--port", type=int, default=8765, help="port (default 8765, 0 for any free one)")
    echo.add_argument("--compression", action="store_true", help="accept permessage-deflate")
    echo.add_argument("--max-size", type=int, default=2**20, help="largest message accepted")
    echo.add_argument(
        "--ping-interval", type=float, default=20.0, help="seconds between keepalive pings, 0 for none"
    )
    echo.set_defaults(run=_run_echo)

    demo = sub.add_parser("demo", help="an echo server and an interactive client connected to it")
    demo.add_argument("--compression", action="store_true", help="use permessage-deflate")
    demo.set_defaults(run=_run_demo)


async def _echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


async def _serve_echo(
    args: argparse.Namespace, ready: asyncio.Future[int] | None = None, stop: asyncio.Event | None = None
) -> None:
    from tether.ws import serve

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with serve(
        _echo,
        args.host,
        args.port,
        compression="deflate" if args.compression else None,
        max_size=args.max_size,
        ping_interval=args.ping_interval or None,
    ) as server:
        port = server.port
        if ready is not None:
            ready.set_result(port)
        else:
            print(f"tether ws echo: listening on ws://{args.host}:{port}/", file=sys.stderr, flush=True)
        await stop.wait()


def _run_echo(args: argparse.Namespace) -> int:
    asyncio.run(_serve_echo(args))
    print("tether ws echo: stopped", file=sys.stderr)
    return 0


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Read stdin in a thread (it may be a file, a pipe or a terminal) into queue."""
    for line in sys.stdin:
        asyncio.run_coroutine_threadsafe(queue.put(line.rstrip("\n")), loop).result()
    asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()


async def _interact(url: str, args: argparse.Namespace) -> int:
    from tether.ws import connect

    headers = []
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep:
            print(f"tether ws: header {item!r} is not K:V", file=sys.stderr)
            return 2
        headers.append((name.strip(), value.strip()))
    ssl_ctx = None
    if url.startswith("wss:") and (args.ca_file or args.cert):
        ssl_ctx = tls.client_context(ca_file=args.ca_file, cert_file=args.cert, key_file=args.key)
    try:
        ws = await connect(
            url,
            headers=headers,
            subprotocols=args.subprotocol or None,
            compression="deflate" if args.compression else None,
            ssl=ssl_ctx,
            max_size=args.max_size,
        )
    except HandshakeError as exc:
        print(f"tether ws: {exc}", file=sys.stderr)
        return 1
    except (OSError, TetherError) as exc:
        print(f"tether ws: cannot connect to {url}: {exc}", file=sys.stderr)
        return 1
    print(
        f"connected to {url}"
        + (f" (subprotocol {ws.subprotocol})" if ws.subprotocol else "")
        + "; type lines to send, end with Ctrl-D",
        file=sys.stderr,
        flush=True,
    )
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=16)
    threading.Thread(target=_stdin_lines, args=(loop, lines), daemon=True).start()

    async def printer() -> None:
        async for message in ws:
            if isinstance(message, str):
                print(message, flush=True)
            else:
                print(f"<binary {len(message)} bytes: {message[:64].hex()}>", flush=True)

    reader = asyncio.ensure_future(printer())
    try:
        while True:
            getter = asyncio.ensure_future(lines.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                getter.cancel()
                break
            line = getter.result()
            if line is None:
                break
            await ws.send(line)
        await ws.close()
        await reader
    except ConnectionClosed as exc:
        print(f"tether ws: {exc}", file=sys.stderr)
        return 1
    print(
        f"closed: code {ws.close_code}" + (f" ({ws.close_reason})" if ws.close_reason else ""),
        file=sys.stderr,
    )
    return 0


def _run_connect(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_interact(args.url, args))
    except ValueError as exc:
        print(f"tether ws: {exc}", file=sys.stderr)
        return 2


async def _demo(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[int] = loop.create_future()
    stop = asyncio.Event()
    server_args = argparse.Namespace(
        host="127.0.0.1", port=0, compression=args.compression, max_size=2**20, ping_interval=20.0
    )
    server = asyncio.ensure_future(_serve_echo(server_args, ready, stop))
    port = await ready
    print(f"tether ws demo: echo server on ws://127.0.0.1:{port}/", file=sys.stderr)
    client_args = argparse.Namespace(
        header=[],
        subprotocol=[],
        compression=args.compression,
        ca_file=None,
        cert=None,
        key=None,
        max_size=2**20,
    )
    try:
        return await _interact(f"ws://127.0.0.1:{port}/", client_args)
    finally:
        stop.set()
        await server


def _run_demo(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))
