"""``tether init`` (a new app from the skeleton) and ``tether run`` (a device, supervised)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "create_app"]


def add_parser(commands: Any) -> None:
    """Add ``init`` and ``run`` to the ``tether`` parser."""
    init = commands.add_parser(
        "init",
        help="create an app from the skeleton",
        description="Create NAME/ with tether.yml, main.py (a Sum RPC, a WebSocket client) and fs/.",
    )
    init.add_argument("name", metavar="NAME", help="the app's name and folder")
    init.set_defaults(run=_run_init)

    run = commands.add_parser(
        "run",
        help="run an app as a device (supervised)",
        description="Run the app in APP_DIR as a device: configuration, RPC over HTTP/WebSocket "
        "(and MQTT, dial-out, serial when configured), restarted by a supervisor on reboot or crash.",
    )
    run.add_argument("app_dir", metavar="APP_DIR", nargs="?", default=".", help="the app (default: .)")
    run.add_argument(
        "--state-dir", help="conf9.json, the device file system and OTA state (default: APP_DIR/.state)"
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a configuration value for this run, e.g. --set http.listen_addr=127.0.0.1:8080",
    )
    run.add_argument(
        "--no-supervisor", action="store_true", help="run the device in this process (Sys.Reboot then exits)"
    )
    run.set_defaults(run=_run_run)


def create_app(name: str, parent: Path) -> Path:
    """Write the skeleton app called name into parent/name; return its folder.

    Raises:
        ValueError: for a bad name.
        FileExistsError: if the folder exists and is not empty.
    """
    from tether.device.manifest import _NAME

    if not _NAME.match(name):
        raise ValueError(f"app name {name!r}: use letters, digits, '_', '-' and '.' (at most 64)")
    target = parent / name
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty")
    template = resources.files("tether.device") / "template"
    temporary = parent / f".{name}.init"
    shutil.rmtree(temporary, ignore_errors=True)

    def copy(source: Any, destination: Path) -> None:
        destination.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.name == "__pycache__":
                continue
            if item.is_dir():
                copy(item, destination / item.name)
            else:
                text = item.read_text(encoding="utf-8").replace("{name}", name)
                (destination / item.name).write_text(text, encoding="utf-8")

    copy(template, temporary)
    if target.exists():
        target.rmdir()
    temporary.rename(target)
    return target


def _run_init(args: argparse.Namespace) -> int:
    try:
        target = create_app(args.name, Path.cwd())
    except (ValueError, OSError) as exc:
        print(f"tether init: {exc}", file=sys.stderr)
        return 1
    print(f"created {target}/: run it with `tether run {args.name}`", file=sys.stderr)
    return 0


def _make(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


def _run_run(args: argparse.Namespace) -> int:
    from tether.device.manifest import load
    from tether.errors import ConfigError

    app_dir = Path(args.app_dir).resolve()
    state_dir = Path(args.state_dir).resolve() if args.state_dir else app_dir / ".state"
    try:
        # Parsed here once, cached in the state directory for the device process.
        cache = state_dir / "manifest.json" if app_dir.is_dir() and _make(state_dir) else None
        manifest = load(app_dir, cache=cache)
    except ConfigError as exc:
        print(f"tether run: {exc}", file=sys.stderr)
        return 2
    if args.no_supervisor:
        from tether.device.__main__ import main

        command = ["--app", str(app_dir), "--state-dir", str(state_dir)]
        for assignment in args.overrides:
            command += ["--set", assignment]
        return main(command)
    print(
        f"tether run: {manifest.name} {manifest.version}, state in {state_dir}", file=sys.stderr, flush=True
    )
    # The supervisor runs for as long as the device: replace this process (and all the
    # command line imported) with the small one. Same PID, so whoever started
    # `tether run` (a service manager, a test) stops it by that PID.
    command = [
        sys.executable,
        "-m",
        "tether.device.supervisor",
        str(app_dir),
        str(state_dir),
        *args.overrides,
    ]
    os.execv(sys.executable, command)
    return 1  # pragma: no cover - execv does not return
