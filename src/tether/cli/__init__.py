"""The ``tether`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tether import __version__

__all__ = ["main"]


def _version() -> str:
    from tether.ws.frames import SPEEDUPS

    path = "compiled speedups" if SPEEDUPS else "pure Python (no compiled speedups)"
    return f"tether {__version__}, {path}"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``tether`` and its subcommands."""
    from tether.cli import device, http, mqtt, ota, rpc, run, ws

    parser = argparse.ArgumentParser(prog="tether", description="tether: a framework for connected devices")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--port",
        dest="global_port",
        metavar="URL",
        help="the device for call and the device commands, as in `mos --port URL call`",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    ws.add_parser(commands)
    http.add_parser(commands)
    mqtt.add_parser(commands)
    rpc.add_parser(commands)
    run.add_parser(commands)
    device.add_parser(commands)
    ota.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tether`` with argv; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
