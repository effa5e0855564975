"""``tether mqtt``: publish, subscribe and look into an outbox, like mosquitto_pub/_sub."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from tether.errors import TetherError

__all__ = ["add_parser"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="mqtt://, mqtts://, ws://…/mqtt or wss://…/mqtt URL")
    parser.add_argument("-i", "--id", dest="client_id", help="client identifier (default: a random one)")
    parser.add_argument("-u", "--username", help="user name")
    parser.add_argument("-P", "--password", help="password")
    parser.add_argument("-V", "--mqtt-version", type=int, choices=(4, 5), default=5, help="4 (3.1.1) or 5")
    parser.add_argument("-k", "--keepalive", type=int, default=60, help="keep alive in seconds")
    parser.add_argument("--ca-file", help="PEM bundle of trusted CAs for mqtts:// and wss://")
    parser.add_argument("--cert", help="client certificate (PEM)")
    parser.add_argument("--key", help="client certificate key (PEM)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to connect")


def add_parser(commands: Any) -> None:
    """Add ``mqtt`` and its subcommands to the ``tether`` parser."""
    mqtt = commands.add_parser("mqtt", help="MQTT client: pub, sub, outbox")
    sub = mqtt.add_subparsers(dest="mqtt_command", metavar="COMMAND")
    sub.required = True

    pub = sub.add_parser("pub", help="publish a message")
    _common(pub)
    pub.add_argument("-t", "--topic", required=True, help="topic name")
    body = pub.add_mutually_exclusive_group(required=True)
    body.add_argument("-m", "--message", help="the payload, as UTF-8")
    body.add_argument("-f", "--file", type=Path, help="send the contents of a file")
    body.add_argument("-n", "--null-message", action="store_true", help="send an empty payload")
    pub.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=0)
    pub.add_argument("-r", "--retain", action="store_true", help="retain the message")
    pub.add_argument("--repeat", type=int, default=1, metavar="N", help="publish N times")
    pub.add_argument("--repeat-delay", type=float, default=0.0, metavar="S", help="seconds between repeats")
    pub.add_argument("--store", metavar="PATH", help="durable outbox (SQLite) for QoS 1 and 2")
    pub.set_defaults(run=_run_pub)

    subscribe = sub.add_parser("sub", help="subscribe and print messages")
    _common(subscribe)
    subscribe.add_argument("-t", "--topic", action="append", required=True, help="topic filter (repeatable)")
    subscribe.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=0)
    subscribe.add_argument("-C", "--count", type=int, default=0, help="exit after COUNT messages")
    subscribe.add_argument("-v", "--verbose", action="store_true", help="print the topic before each payload")
    subscribe.add_argument("-W", "--wait", type=float, default=0.0, help="exit after S seconds (0: never)")
    subscribe.add_argument("-N", "--no-newline", action="store_true", help="no newline after each payload")
    subscribe.add_argument(
        "--retained-only", action="store_true", help="exit at the first non-retained message"
    )
    subscribe.set_defaults(run=_run_sub)

    outbox = sub.add_parser("outbox", help="list the messages waiting in a durable outbox")
    outbox.add_argument("path", type=Path, help="the outbox file")
    outbox.set_defaults(run=_run_outbox)


def _client(args: argparse.Namespace, **kwargs: Any) -> Any:
    from tether import tls
    from tether.mqtt import Client

    ssl = None
    if args.url.startswith(("mqtts:", "wss:")) and (args.ca_file or args.cert):
        ssl = tls.client_context(ca_file=args.ca_file, cert_file=args.cert, key_file=args.key)
    return Client(
        args.url,
        client_id=args.client_id,
        version=args.mqtt_version,
        keepalive=args.keepalive,
        username=args.username,
        password=args.password,
        ssl=ssl,
        connect_timeout=args.timeout,
        reconnect=False,
        **kwargs,
    )


def _fail(exc: BaseException) -> int:
    print(f"tether mqtt: {exc}", file=sys.stderr)
    return 1


def _run_pub(args: argparse.Namespace) -> int:
    if args.file is not None:
        try:
            payload = args.file.read_bytes()
        except OSError as exc:
            return _fail(exc)
    elif args.null_message:
        payload = b""
    else:
        payload = args.message.encode()

    async def run() -> None:
        async with _client(args, store=args.store) as client:
            for i in range(max(args.repeat, 1)):
                if i and args.repeat_delay:
                    await asyncio.sleep(args.repeat_delay)
                await client.publish(args.topic, payload, args.qos, args.retain)

    try:
        asyncio.run(run())
    except (TetherError, OSError, ValueError) as exc:
        return _fail(exc)
    return 0


def _run_sub(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with _client(args) as client:
            messages = client.messages()
            await client.subscribe([(topic, args.qos) for topic in args.topic])

            async def show() -> None:
                count = 0
                async for message in messages:
                    if args.retained_only and not message.retain:
                        return
                    if args.verbose:
                        out.write(message.topic.encode() + b" ")
                    out.write(message.payload)
                    if not args.no_newline:
                        out.write(b"\n")
                    out.flush()
                    count += 1
                    if args.count and count >= args.count:
                        return

            shown = asyncio.ensure_future(show())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait(
                {shown, stopped}, timeout=args.wait or None, return_when=asyncio.FIRST_COMPLETED
            )
            for task in (shown, stopped):
                task.cancel()
            if shown.done() and not shown.cancelled() and shown.exception() is not None:
                raise shown.exception()  # type: ignore[misc]

    try:
        asyncio.run(run())
    except (TetherError, OSError, ValueError) as exc:
        return _fail(exc)
    return 0


def _run_outbox(args: argparse.Namespace) -> int:
    from tether.mqtt import Outbox

    if not args.path.is_file():
        return _fail(FileNotFoundError(f"no outbox at {args.path}"))
    try:
        # Look before Outbox() opens it: that would add its tables to any SQLite file.
        uri = args.path.resolve().as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "outgoing", "received"} <= tables:
            return _fail(ValueError(f"{args.path} is not an outbox"))
        opened = Outbox(args.path)
    except sqlite3.DatabaseError as exc:
        return _fail(sqlite3.DatabaseError(f"{args.path}: {exc}"))
    with opened as outbox:
        entries = outbox.entries()
        received = outbox.received()
        print(f"outbox {args.path}: client {outbox.client_id or '(none yet)'}")
        print(f"{len(entries)} publishes waiting ({outbox.size} bytes), {outbox.sequence} accepted in all")
        if entries:
            print(f"{'seq':>8} {'id':>5} qos state     {'bytes':>8} topic")
            for e in entries:
                state = "released" if e.released else "waiting"
                print(f"{e.seq:>8} {e.packet_id:>5} {e.qos:>3} {state:<9} {e.size:>8} {e.topic}")
        if received:
            print(f"incoming QoS 2 publishes awaiting PUBREL: {', '.join(map(str, received))}")
    return 0
