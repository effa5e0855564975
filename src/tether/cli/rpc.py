"""``tether call`` (mos-compatible) and ``tether rpc serve`` (a small RPC server to try it on)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from tether import tls
from tether.cli import EXIT_SIGPIPE, stdout_is_closed
from tether.errors import RpcError, TetherError

__all__ = ["DEFAULT_PORT", "CommandFailed", "add_parser", "read_credentials", "resolve_port", "run_command"]

#: The port `tether call` uses without ``--port`` or ``TETHER_PORT``, as mos's default.
DEFAULT_PORT = "ws://127.0.0.1:8000/rpc"


def add_parser(commands: Any) -> None:
    """Add ``call`` and ``rpc serve`` to the ``tether`` parser."""
    call = commands.add_parser(
        "call",
        help="call an RPC method on a device (as mos call)",
        description="Call METHOD with ARGS_JSON and print the result as indented JSON.",
    )
    call.add_argument("method", metavar="METHOD", help="e.g. Sys.GetInfo")
    call.add_argument("args", metavar="ARGS_JSON", nargs="?", default=None, help='e.g. \'{"a":1,"b":2}\'')
    call.add_argument(
        "--port",
        default=None,
        help=f"ws://, wss://, http://, https://, mqtt://BROKER/DEVICE_ID or a serial device "
        f"(default: $TETHER_PORT, else {DEFAULT_PORT})",
    )
    call.add_argument("--credentials", metavar="USER:PASS", help="for digest authentication (or @FILE)")
    call.add_argument("--timeout", type=float, default=20.0, help="seconds to wait (default 20, as mos)")
    call.add_argument("--ca-file", help="PEM bundle of trusted CAs for wss:// and https://")
    call.set_defaults(run=_run_call)

    rpc = commands.add_parser("rpc", help="RPC server")
    sub = rpc.add_subparsers(dest="rpc_command", metavar="COMMAND")
    sub.required = True
    serve = sub.add_parser(
        "serve",
        help="serve the built-in methods and a demo Sum over WebSocket and HTTP on /rpc",
        description="Serve RPC.List, RPC.Describe, RPC.Ping and Sum on ws:// and http:// /rpc; "
        "stops cleanly on SIGINT or SIGTERM.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000, 0 for any free one)")
    serve.add_argument("--device-id", default="tether", help="device.id: the src of replies")
    serve.add_argument("--acl", help="rpc.acl: a JSON list of entries, or @FILE")
    serve.add_argument("--htdigest", metavar="FILE", help="rpc.auth_file: user:realm:HA1 lines")
    serve.add_argument("--realm", default="RPC", help="rpc.auth_domain (default RPC)")
    serve.set_defaults(run=_run_serve)


def resolve_port(args: argparse.Namespace) -> str:
    """The device a command talks to: ``--port``, else ``tether --port``, else
    ``$TETHER_PORT``, else `DEFAULT_PORT` (the order of mos)."""
    return args.port or getattr(args, "global_port", None) or os.environ.get("TETHER_PORT") or DEFAULT_PORT


def read_credentials(value: str | None) -> tuple[str, str] | None:
    """``USER:PASS`` or ``@FILE`` holding it (``--credentials``, mos' ``--rpc-creds``).

    Raises:
        ValueError: if there is no colon.
        OSError: if FILE cannot be read.
    """
    if value is None:
        return None
    if value.startswith("@"):
        with open(value[1:], encoding="utf-8") as f:
            value = f.read().strip()
    user, sep, password = value.partition(":")
    if not sep:
        raise ValueError("credentials must be USER:PASS")
    return user, password


async def _call(args: argparse.Namespace, port: str, params: Any) -> int:
    from tether.rpc import connect

    ssl_ctx = tls.client_context(ca_file=args.ca_file) if args.ca_file else None
    async with connect(
        port, credentials=read_credentials(args.credentials), ssl=ssl_ctx, timeout=args.timeout
    ) as client:
        result = await client.call(args.method, params, timeout=args.timeout)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _run_call(args: argparse.Namespace) -> int:
    port = resolve_port(args)
    params = None
    if args.args is not None:
        try:
            params = json.loads(args.args)
        except ValueError as exc:
            print(f"Error: ARGS_JSON is not valid JSON: {exc}", file=sys.stderr)
            return 2
    return run_command(port, _call(args, port, params))


class CommandFailed(Exception):
    """A device command's own failure (a bad reply, a file it cannot write): its message
    is printed as ``Error: <message>``."""


def run_command(port: str, main: Coroutine[Any, Any, int | None]) -> int:
    """Run a command's coroutine against port and turn failures into mos' messages.

    Returns:
        The coroutine's status (0 for None), or 1 after printing ``Error: …`` for a `CommandFailed`,
        ``Error: remote error CODE: MSG`` for an `RpcError` (as mos), and
        ``Error: PORT: …`` for a connection or protocol failure.
    """
    try:
        return asyncio.run(main) or 0
    except CommandFailed as exc:
        print(f"Error: {exc}", file=sys.stderr)
    except RpcError as exc:
        print(f"Error: remote error {exc.code}: {exc.message}", file=sys.stderr)
    except BrokenPipeError as exc:
        if stdout_is_closed():
            return EXIT_SIGPIPE  # the reader of the output left (`| head`)
        print(f"Error: {port}: {exc}", file=sys.stderr)
    except (OSError, TetherError, ValueError) as exc:
        print(f"Error: {port}: {exc}", file=sys.stderr)
    return 1


def demo_dispatcher(
    device_id: str = "tether", acl: str | None = None, htdigest: str | None = None, realm: str = "RPC"
) -> Any:
    """The dispatcher of ``tether rpc serve``: the built-ins and ``Sum``."""
    from tether.rpc import Acl, DigestAuth, Dispatcher, RawJSON

    dispatcher = Dispatcher(
        device_id,
        acl=Acl.parse(acl) if acl else None,
        auth=DigestAuth(htdigest, realm) if htdigest else None,
    )

    @dispatcher.method(
        "Sum",
        args={
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
        description="Adds a and b; the result has two decimals, as the seed app's.",
    )
    def sum_(call: Any) -> RawJSON:
        return RawJSON(f"{call.params['a'] + call.params['b']:.2f}")

    return dispatcher


async def _serve(args: argparse.Namespace) -> None:
    from tether.http import App, serve
    from tether.rpc import mount_rpc

    dispatcher = demo_dispatcher(args.device_id, args.acl, args.htdigest, args.realm)
    app = App()
    mount_rpc(app, dispatcher)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with serve(app, args.host, args.port) as server:
        print(
            f"tether rpc serve: ws://{args.host}:{server.port}/rpc and http://{args.host}:{server.port}/rpc",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()


def _run_serve(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"tether rpc serve: {exc}", file=sys.stderr)
        return 1
    print("tether rpc serve: stopped", file=sys.stderr)
    return 0
