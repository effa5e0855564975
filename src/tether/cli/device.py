"""mos's device commands: ``tether info``, ``config-get``, ``config-set``, ``ls``, ``get``, ``put``,
``rm`` and ``console`` (spec mgos-rpc.md §3 "mos commands", §5.4, §7).

Each command opens one connection to ``--port`` (as ``tether call``: ``--port``, else the
global ``tether --port``, else ``$TETHER_PORT``, else the default), makes its calls and
prints what mos prints. Errors go to stderr as ``Error: …`` with exit status 1; a port
that cannot carry the command gets status 2.

``console`` calls ``Console.Subscribe {"level": N}`` on a persistent channel (ws://,
wss://, serial) and prints the ``line`` of each ``Console.Event`` notification the device
sends; on ``mqtt://BROKER/DEVICE_ID`` it subscribes to ``<DEVICE_ID>/log`` as mos does
and prints the payloads. It runs until Ctrl-C or SIGTERM, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import decimal
import json
import math
import os
import signal
import sys
import tempfile
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from tether import tls
from tether.cli.rpc import DEFAULT_PORT, CommandFailed, read_credentials, resolve_port, run_command

__all__ = ["DEFAULT_CHUNK_SIZE", "add_parser"]

#: Bytes of file data per ``FS.Put``/``FS.Get`` call: base64 makes 2048 bytes 2732
#: characters, so a chunk's frame stays below the default 4096-byte ``rpc.max_frame_size``.
DEFAULT_CHUNK_SIZE = 2048


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        default=None,
        help=f"ws://, wss://, http://, https://, mqtt://BROKER/DEVICE_ID or a serial device "
        f"(default: $TETHER_PORT, else {DEFAULT_PORT})",
    )
    parser.add_argument("--credentials", metavar="USER:PASS", help="for digest authentication (or @FILE)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait (default 20, as mos)")
    parser.add_argument("--ca-file", help="PEM bundle of trusted CAs for wss://, https:// and mqtts://")


def _level(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--level", type=int, default=None, metavar="N", help=help)


def _chunk_size(value: str) -> int:
    size = int(value)
    if size < 1:
        raise argparse.ArgumentTypeError(f"chunk size must be at least 1, not {size}")
    return size


def add_parser(commands: Any) -> None:
    """Add ``info``, ``config-get``, ``config-set``, ``ls``, ``get``, ``put``, ``rm`` and
    ``console`` to the ``tether`` parser."""
    info = commands.add_parser("info", help="print Sys.GetInfo of a device")
    _common(info)
    info.set_defaults(run=_run_info)

    config_get = commands.add_parser(
        "config-get",
        help="print a device's configuration or one value (as mos config-get)",
        description="Print the value at KEY (e.g. debug.level), or the whole configuration.",
    )
    config_get.add_argument("key", metavar="KEY", nargs="?", default="", help="a dotted path")
    _level(config_get, "read only the layers 0..N")
    _common(config_get)
    config_get.set_defaults(run=_run_config_get)

    config_set = commands.add_parser(
        "config-set",
        help="set configuration values, save and reboot (as mos config-set)",
        description="Set each KEY to VALUE, converted to the type of its current value.",
    )
    config_set.add_argument("pairs", metavar="KEY=VALUE", nargs="+")
    config_set.add_argument("--no-save", action="store_true", help="change the running configuration only")
    config_set.add_argument("--no-reboot", action="store_true", help="save without rebooting")
    config_set.add_argument("--try-once", action="store_true", help="the saved values last one boot")
    _level(config_set, "the layer to change (1-9)")
    _common(config_set)
    config_set.set_defaults(run=_run_config_set)

    ls = commands.add_parser("ls", help="list a directory of a device (as mos ls)")
    ls.add_argument("path", metavar="PATH", nargs="?", default="/", help="default /")
    ls.add_argument("-l", dest="long", action="store_true", help="print sizes too")
    _common(ls)
    ls.set_defaults(run=_run_ls)

    get = commands.add_parser("get", help="copy a file from a device (as mos get)")
    get.add_argument("file", metavar="FILE", help="the file on the device")
    get.add_argument("local", metavar="LOCAL", nargs="?", help="where to write it (default: stdout)")
    get.add_argument(
        "--chunk-size", type=_chunk_size, default=DEFAULT_CHUNK_SIZE, help="bytes per call (default 2048)"
    )
    _common(get)
    get.set_defaults(run=_run_get)

    put = commands.add_parser("put", help="copy a file to a device (as mos put)")
    put.add_argument("local", metavar="LOCAL", help="the file to send")
    put.add_argument("remote", metavar="REMOTE", nargs="?", help="its name on the device (default: LOCAL's)")
    put.add_argument(
        "--chunk-size", type=_chunk_size, default=DEFAULT_CHUNK_SIZE, help="bytes per call (default 2048)"
    )
    _common(put)
    put.set_defaults(run=_run_put)

    rm = commands.add_parser("rm", help="remove a file from a device (as mos rm)")
    rm.add_argument("file", metavar="FILE")
    _common(rm)
    rm.set_defaults(run=_run_rm)

    console = commands.add_parser(
        "console",
        help="print a device's log as it comes (as mos console)",
        description="Stream the device log until Ctrl-C: Console.Subscribe over ws://, wss:// or a serial "
        "port, or the <DEVICE_ID>/log topic over mqtt://BROKER/DEVICE_ID.",
    )
    _level(console, "the most verbose level to receive (0 error … 4 verbose)")
    _common(console)
    console.set_defaults(run=_run_console)


def _scheme(port: str) -> str:
    return port.partition("://")[0].lower() if "://" in port else ""


def _run(args: argparse.Namespace, work: Callable[[Any], Awaitable[int]]) -> int:
    """Connect to the port, run work with the client, and map failures to mos's messages."""
    from tether.rpc import connect

    port = resolve_port(args)

    async def main() -> int:
        ssl_ctx = tls.client_context(ca_file=args.ca_file) if args.ca_file else None
        async with connect(
            port, credentials=read_credentials(args.credentials), ssl=ssl_ctx, timeout=args.timeout
        ) as client:
            return await work(client)

    return run_command(port, main())


# info, config-get, config-set (§5.4).


def _run_info(args: argparse.Namespace) -> int:
    async def work(client: Any) -> int:
        print(json.dumps(await client.call("Sys.GetInfo"), indent=2, ensure_ascii=False))
        return 0

    return _run(args, work)


def _lookup(config: Any, key: str) -> Any:
    """The value at a dotted key, as mos walks it.

    Raises:
        CommandFailed: ``no config value at path "KEY"``.
    """
    value = config
    for part in key.split(".") if key else ():
        if not isinstance(value, dict) or part not in value:
            raise CommandFailed(f'no config value at path "{key}"')
        value = value[part]
    return value


def _format_number(value: float) -> str:
    """The shortest decimal form without an exponent, as Go's FormatFloat(v, 'f', -1): 2, 0.1."""
    if not math.isfinite(value):
        return repr(value)
    text = format(decimal.Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _format_config_value(value: Any) -> str:
    """A configuration value as mos config-get prints it: strings raw, numbers shortest,
    ``true``/``false``, objects as 2-space JSON with sorted keys."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_number(value)
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _run_config_get(args: argparse.Namespace) -> int:
    async def work(client: Any) -> int:
        config = await client.call("Config.Get", None if args.level is None else {"level": args.level})
        print(_format_config_value(_lookup(config, args.key)))
        return 0

    return _run(args, work)


def _convert(key: str, current: Any, text: str) -> Any:
    """text as the type of the current value at key (mos DevConf.Set).

    Raises:
        CommandFailed: if text does not fit, or key holds an object.
    """
    if isinstance(current, bool):
        if text not in ("true", "false"):
            raise CommandFailed(f'{key}: "{text}" is not a boolean (true or false)')
        return text == "true"
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise CommandFailed(f'{key}: "{text}" is not an integer') from None
    if isinstance(current, float):
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise CommandFailed(f'{key}: "{text}" is not a number')
        return number
    if isinstance(current, (dict, list)):
        raise CommandFailed(f"{key} is an object: only strings, numbers and booleans can be set")
    return text


def _parse_pairs(pairs: list[str]) -> list[tuple[str, str]]:
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandFailed(f'"{pair}" is not KEY=VALUE')
        parsed.append((key, value))
    return parsed


def _run_config_set(args: argparse.Namespace) -> int:
    try:
        pairs = _parse_pairs(args.pairs)
    except CommandFailed as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    save, reboot, try_once = not args.no_save, not args.no_reboot, args.try_once

    async def work(client: Any) -> int:
        print("Getting configuration...", file=sys.stderr, flush=True)
        config = await client.call("Config.Get", None if args.level is None else {"level": args.level})
        diff: dict[str, Any] = {}
        for key, text in pairs:
            value = _convert(key, _lookup(config, key), text)
            *parents, leaf = key.split(".")
            node = diff
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        # mos's ConfigSetArg: every field but config is left out when zero or false.
        params: dict[str, Any] = {"config": diff}
        if args.level:
            params["level"] = args.level
        if save:
            params["save"] = True
        if reboot:
            params["reboot"] = True
        if try_once:
            params["try_once"] = True
        level = f" (level {args.level})" if args.level else ""
        print(f"Setting new configuration{level}...", file=sys.stderr, flush=True)
        result = await client.call("Config.Set", params)
        if not save:
            return 0
        if not (isinstance(result, dict) and result.get("saved") is True):
            # Firmware before 2.12 saves only when asked.
            print("Saving and rebooting..." if reboot else "Saving...", file=sys.stderr, flush=True)
            await client.call("Config.Save", {"reboot": reboot, "try_once": try_once})
        if try_once:
            print("Note: --try-once is set, config is valid for one reboot only", file=sys.stderr)
        return 0

    return _run(args, work)


# ls, get, put, rm (§3).


def _run_ls(args: argparse.Namespace) -> int:
    async def work(client: Any) -> int:
        if not args.long:
            names = await client.call("FS.List", {"path": args.path})
            for name in sorted(str(name) for name in names or ()):
                print(name)
            return 0
        entries = await client.call("FS.ListExt", {"path": args.path})
        rows = sorted(
            (str(e.get("name", "")), e.get("size", 0)) for e in entries or () if isinstance(e, dict)
        )
        width = max((len(str(size)) for _, size in rows), default=0)
        for name, size in rows:
            print(f"{size:>{width}} {name}")
        return 0

    return _run(args, work)


def _progress(done: int, total: int) -> None:
    """A progress bar on stderr, only when it is a terminal."""
    if not sys.stderr.isatty():
        return
    fraction = done / total if total else 1.0
    bar = "#" * int(fraction * 40)
    end = "\n" if done >= total else ""
    print(f"\r[{bar:<40}] {fraction:4.0%} {done}/{total} bytes", end=end, file=sys.stderr, flush=True)


async def _download(client: Any, filename: str, chunk: int, out: IO[bytes]) -> None:
    """Copy a device file to out, ``FS.Get`` by ``FS.Get`` until ``left`` is 0."""
    offset = 0
    while True:
        reply = await client.call("FS.Get", {"filename": filename, "offset": offset, "len": chunk})
        try:
            data = base64.b64decode(reply["data"], validate=True)
            left = int(reply["left"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CommandFailed(f"FS.Get of {filename} gave a bad reply: {exc}") from None
        out.write(data)
        offset += len(data)
        _progress(offset, offset + max(left, 0))
        if left <= 0:
            return
        if not data:
            raise CommandFailed(f"FS.Get of {filename} sent no data with {left} bytes left")


def _run_get(args: argparse.Namespace) -> int:
    async def work(client: Any) -> int:
        if args.local is None:
            await _download(client, args.file, args.chunk_size, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return 0
        local = Path(args.local)
        if local.is_dir():
            local = local / Path(args.file).name
        # The whole file or nothing: a temporary file beside LOCAL, renamed at the end.
        try:
            fd, temp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        except OSError as exc:
            raise CommandFailed(f"cannot write {local}: {exc}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                await _download(client, args.file, args.chunk_size, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, local)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return 0

    return _run(args, work)


def _run_put(args: argparse.Namespace) -> int:
    local = Path(args.local)
    remote = args.remote or local.name
    try:
        source = open(local, "rb")  # noqa: SIM115 - closed by the with below, after the calls
    except OSError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1

    async def work(client: Any) -> int:
        size = os.fstat(source.fileno()).st_size
        offset = 0
        while True:
            data = source.read(args.chunk_size)
            if offset and not data:
                raise CommandFailed(f"{local} shrank while it was being sent")
            # As mos: offset 0 without append, then append at the running offset; plus
            # tether's size, so that the device completes the file at the last byte.
            params = {
                "filename": remote,
                "offset": offset,
                "append": offset > 0,
                "data": base64.b64encode(data).decode("ascii"),
                "size": size,
            }
            await client.call("FS.Put", params)
            offset += len(data)
            _progress(offset, size)
            if offset >= size:
                return 0

    with source:
        return _run(args, work)


def _run_rm(args: argparse.Namespace) -> int:
    async def work(client: Any) -> int:
        await client.call("FS.Remove", {"filename": args.file})
        return 0

    return _run(args, work)


# console (§7).


def _print_line(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _until(stop: asyncio.Event, running: Awaitable[Any]) -> None:
    """Wait for stop or for running to end; raise what running raised."""
    task = asyncio.ensure_future(running)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        stopped.cancel()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def _console_rpc(args: argparse.Namespace, port: str) -> None:
    from tether.rpc import Request, WebSocketTransport, connect

    def on_request(request: Request) -> None:
        if request.method == "Console.Event" and isinstance(request.params, dict):
            line = request.params.get("line")
            if isinstance(line, str):
                _print_line(line)

    stop = _stop_on_signals()
    ssl_ctx = tls.client_context(ca_file=args.ca_file) if args.ca_file else None
    async with connect(
        port,
        credentials=read_credentials(args.credentials),
        ssl=ssl_ctx,
        timeout=args.timeout,
        on_request=on_request,
    ) as client:
        await client.call("Console.Subscribe", None if args.level is None else {"level": args.level})
        transport = client.transport
        if isinstance(transport, WebSocketTransport):
            await _until(stop, transport.ws.wait_closed())
            if not stop.is_set():
                raise CommandFailed(f"{port}: the device closed the connection")
        else:
            await stop.wait()


async def _console_mqtt(args: argparse.Namespace, port: str) -> None:
    from tether.mqtt import Client

    parts = urllib.parse.urlsplit(port)
    device_id = urllib.parse.unquote(parts.path[1:])
    if not device_id:
        raise CommandFailed(f"{port}: no device id: use mqtt://BROKER/DEVICE_ID")
    stop = _stop_on_signals()
    ssl_ctx = tls.client_context(ca_file=args.ca_file) if args.ca_file else None
    topic = f"{device_id}/log"  # mos console: the topic of debug.stdout_topic/stderr_topic
    async with Client(
        f"{parts.scheme}://{parts.netloc}", ssl=ssl_ctx, reconnect=False, connect_timeout=args.timeout
    ) as client:
        messages = client.messages(topic)
        await client.subscribe(topic)

        async def show() -> None:
            async for message in messages:
                _print_line(message.payload.decode("utf-8", "replace"))

        await _until(stop, show())


def _run_console(args: argparse.Namespace) -> int:
    port = resolve_port(args)
    scheme = _scheme(port)
    if scheme in ("http", "https") or scheme.startswith("mqtt+"):
        print(
            f"Error: {port}: {scheme}:// cannot stream the log; use ws://, wss://, mqtt://, mqtts:// "
            f"or a serial port",
            file=sys.stderr,
        )
        return 2
    console = _console_mqtt if scheme in ("mqtt", "mqtts") else _console_rpc
    return run_command(port, console(args, port))
