"""The ``tether`` command line."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from collections.abc import Sequence

from tether import __version__

__all__ = ["EXIT_SIGPIPE", "main", "stdout_is_closed"]

#: The status when the reader of the output went away (`tether … | head`), as a shell reports it.
EXIT_SIGPIPE = 128 + signal.SIGPIPE


def stdout_is_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone; then it goes to /dev/null.

    A BrokenPipeError from a device's socket and one from printing look alike: the state
    of stdout's descriptor tells them apart (poll() reports an error on a pipe that has
    no reader left).
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poller.poll(0)):
        return False
    # Nothing more can be written, and the flush at exit must not fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return True


def _version() -> str:
    from tether.ws.frames import SPEEDUPS

    path = "compiled speedups" if SPEEDUPS else "pure Python (no compiled speedups)"
    return f"tether {__version__}, {path}"


class _VersionAction(argparse.Action):
    """``--version``, with the version line (which imports the speedups) made only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(_version())
        parser.exit()


#: Commands whose parser is built alone: ``tether run`` starts a device, and should not
#: first import every other command's modules (asyncio, ssl…) only to replace itself.
_LEAN_COMMANDS = frozenset({"init", "run"})


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv (skipping global options and their values)."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token == "--port":
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser of ``tether`` and its subcommands (only ``command``'s
    when it is one of the lean ones)."""
    from tether.cli import run

    parser = argparse.ArgumentParser(prog="tether", description="tether: a framework for connected devices")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument(
        "--port",
        dest="global_port",
        metavar="URL",
        help="the device for call and the device commands, as in `mos --port URL call`",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    if command in _LEAN_COMMANDS:
        run.add_parser(commands)
        return parser
    from tether.cli import device, http, mqtt, ota, rpc, ws

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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
        sys.stdout.flush()  # here, not at exit, so that a reader that left is seen
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if stdout_is_closed():
            return EXIT_SIGPIPE
        raise
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
