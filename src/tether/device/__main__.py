"""The device process: ``python -m tether.device --app DIR --state-dir DIR [--set KEY=VALUE …]``.

``tether run`` starts it under its supervisor; run it directly to debug an app
without one (``Sys.Reboot`` then ends the process with status 75).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from tether.device.runtime import EXIT_CONFIG, EXIT_REBOOT, Runtime
from tether.errors import ConfigError
from tether.files import move_aside

logger = logging.getLogger("tether.device")


async def _main(args: argparse.Namespace) -> int:
    runtime = Runtime(args.app, args.state_dir, args.set, factory_dir=args.factory)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, runtime.stop, 0)
    try:
        await runtime.start()
    except ConfigError as exc:
        print(f"tether: cannot start: {exc}", file=sys.stderr, flush=True)
        await runtime.close()
        return _recover(runtime, exc)
    except OSError as exc:
        print(f"tether: cannot start: {exc}", file=sys.stderr, flush=True)
        await runtime.close()
        return 1
    try:
        return await runtime.wait()
    finally:
        await runtime.close()


def _recover(runtime: Runtime, error: ConfigError) -> int:
    """After a start failed on a configuration value: when the user level (``conf9.json``,
    changed over RPC) holds that key, move the file aside and start again on the levels
    below, so that one bad ``Config.Set`` cannot keep a device down; else give up with
    `EXIT_CONFIG` (the supervisor retries with its backoff)."""
    config = getattr(runtime, "config", None)
    if config is None or not error.path:
        return EXIT_CONFIG
    prefix = error.path + "."
    if not any(key == error.path or key.startswith(prefix) for key in config.layer(9)):
        return EXIT_CONFIG
    conf9 = runtime.state_dir / "conf9.json"
    try:
        aside = move_aside(conf9)
    except OSError as exc:
        print(f"tether: cannot move {conf9} aside: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    print(
        f"tether: {conf9.name} moved to {aside.name}: its {error.path} kept the device from starting; "
        "starting again without it",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_REBOOT


def main(argv: list[str] | None = None) -> int:
    """Run one device process; return its exit status."""
    parser = argparse.ArgumentParser(prog="python -m tether.device")
    parser.add_argument("--app", required=True, help="the app directory")
    parser.add_argument("--state-dir", required=True, help="the device's state directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--factory", help="the app `tether run` was given, when --app is an OTA slot")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
