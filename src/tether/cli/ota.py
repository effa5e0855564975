"""``tether bundle`` (make and sign app bundles) and ``tether ota`` (update a device, as ``mos ota``)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tether import tls
from tether.cli.rpc import DEFAULT_PORT, CommandFailed, read_credentials, resolve_port, run_command
from tether.errors import ConnectionClosed, RpcError, TetherError, Timeout

__all__ = ["add_parser"]

_COMMANDS = ("commit", "revert", "status")
#: Seconds between tries while waiting for a device to come back after an update.
_RETRY_INTERVAL = 0.5


def add_parser(commands: Any) -> None:
    """Add ``bundle`` and ``ota`` to the ``tether`` parser."""
    bundle = commands.add_parser(
        "bundle",
        help="make an app bundle for OTA updates, or a signing key",
        description="`tether bundle APP_DIR -o app.zip [--key KEY.pem]` writes a bundle of the app; "
        "`tether bundle keygen KEY.pem` writes a new Ed25519 signing key and prints its public "
        "key for the devices' update.key.",
    )
    bundle.add_argument("app_dir", metavar="APP_DIR", help="the app directory, or `keygen`")
    bundle.add_argument(
        "key_file", metavar="KEY.pem", nargs="?", help="with keygen: the private key to write"
    )
    bundle.add_argument("-o", "--output", metavar="FILE", help="the bundle to write, e.g. app.zip")
    bundle.add_argument("--key", metavar="PRIVATE_KEY_PEM", help="sign the bundle with this key")
    bundle.set_defaults(run=_run_bundle)

    ota = commands.add_parser(
        "ota",
        help="update a device over the air (as mos ota), or commit, revert, show its update",
        description="Push a bundle (OTA.Begin, OTA.Write per chunk, OTA.End) or have the device "
        "pull it from a URL (OTA.Update); `tether ota commit|revert|status` call OTA.Commit, "
        "OTA.Revert, OTA.Status.",
    )
    ota.add_argument(
        "target", metavar="FILE_OR_URL", help="a bundle, an http(s):// URL, or commit|revert|status"
    )
    ota.add_argument(
        "--port",
        default=None,
        help=f"the device, as for `tether call` (default: $TETHER_PORT, else {DEFAULT_PORT})",
    )
    ota.add_argument("--credentials", metavar="USER:PASS", help="for digest authentication (or @FILE)")
    ota.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for each reply, and for the device to come back with --commit (default 60)",
    )
    ota.add_argument("--ca-file", help="PEM bundle of trusted CAs for wss:// and https:// ports")
    ota.add_argument(
        "--commit-timeout",
        type=int,
        default=300,
        metavar="S",
        help="seconds the update may run uncommitted before the device rolls it back (default 300)",
    )
    ota.add_argument("--commit", action="store_true", help="wait for the device to restart, then commit")
    ota.add_argument(
        "--chunk-size",
        type=int,
        default=2048,
        help="bytes per OTA.Write (default 2048; mos uses 512); in base64 each frame must fit the "
        "device's rpc.max_frame_size (4096 by default)",
    )
    ota.set_defaults(run=_run_ota)


# tether bundle


def _run_bundle(args: argparse.Namespace) -> int:
    from tether.device.bundle import BundleError, create_bundle, generate_key

    try:
        if args.app_dir == "keygen" and args.key_file is not None:
            public = generate_key(args.key_file)
            print(f"tether bundle: wrote {args.key_file}; set update.key on the devices to:", file=sys.stderr)
            print(public)
            return 0
        if args.key_file is not None:
            print("tether bundle: give one APP_DIR (or `keygen KEY.pem`)", file=sys.stderr)
            return 2
        if not args.output:
            print("tether bundle: -o FILE is required", file=sys.stderr)
            return 2
        key = Path(args.key).read_bytes() if args.key else None
        info = create_bundle(args.app_dir, args.output, private_key=key)
    except (BundleError, OSError) as exc:
        print(f"tether bundle: {exc}", file=sys.stderr)
        return 1
    signed = "signed" if info.signed else "unsigned"
    print(
        f"tether bundle: wrote {args.output}: {info.name} {info.version} ({info.build_id}), "
        f"{len(info.files)} files, {info.size} bytes, {signed}",
        file=sys.stderr,
    )
    return 0


# tether ota


class _Device:
    """A connection to the device that reconnects when it drops."""

    def __init__(self, args: argparse.Namespace, port: str) -> None:
        self.port = port
        self.timeout: float = args.timeout
        self.credentials = read_credentials(args.credentials)
        self.ssl = tls.client_context(ca_file=args.ca_file) if args.ca_file else None
        self._client: Any = None

    async def call(self, method: str, params: Any = None, *, tries: int = 1) -> Any:
        """Call method; a failure or a dropped connection is tried again, tries times in all."""
        for _ in range(tries - 1):
            try:
                return await self._call(method, params)
            except (RpcError, Timeout, ConnectionClosed, OSError):
                continue
        return await self._call(method, params)

    async def _call(self, method: str, params: Any) -> Any:
        from tether.rpc import connect

        try:
            if self._client is None:
                self._client = await connect(
                    self.port, credentials=self.credentials, ssl=self.ssl, timeout=self.timeout
                )
            return await self._client.call(method, params, timeout=self.timeout)
        except (ConnectionClosed, OSError):
            await self.close()  # the next call connects again
            raise

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(TetherError, OSError):  # closing what is already broken
                await client.close()


class _Progress:
    """A progress bar on stderr, drawn only when it is a terminal."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        fraction = 1.0 if self.total == 0 else done / self.total
        bar = "#" * int(fraction * 30)
        self.stream.write(f"\r[{bar:<30}] {fraction:4.0%} {done}/{self.total} bytes")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")


async def _push(device: _Device, path: Path, args: argparse.Namespace) -> Any:
    """Send the bundle at path; returns the slot (``partition``) that ran before."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandFailed(f"cannot read bundle {str(path)!r}: {exc.strerror}") from exc
    status = await device.call("OTA.Status", tries=3)
    if not isinstance(status, dict) or status.get("state") not in (0, 2):
        raise CommandFailed("update is already in progress")  # mos's words (§12 item 4)
    await device.call("OTA.Begin", {"timeout": 600, "commit_timeout": args.commit_timeout, "size": len(data)})
    progress = _Progress(len(data), sys.stderr)
    try:
        for offset in range(0, len(data), args.chunk_size):
            chunk = data[offset : offset + args.chunk_size]
            params = {"offset": offset, "data": base64.b64encode(chunk).decode("ascii")}
            try:
                await device.call("OTA.Write", params, tries=3)
            except (TetherError, OSError) as exc:
                raise CommandFailed(f"OTA.Write at offset {offset} failed 3 times: {exc}") from exc
            progress.update(offset + len(chunk))
    finally:
        progress.finish()
    await device.call("OTA.End")
    return status.get("partition")


def _runs_the_update(status: dict[str, Any], old_slot: Any) -> bool:
    """Whether the device runs the update, committed and without error: as it does when it
    commits itself (commit_timeout 0, spec §6). A rollback runs the old slot again, and
    leaves its reason as the message of state 2."""
    return bool(
        status.get("is_committed")
        and status.get("state") == 0
        and not status.get("message")
        and old_slot is not None
        and status.get("partition") != old_slot
    )


async def _wait_and_commit(device: _Device, old_slot: Any) -> None:
    """Wait for the device to come back from its restart, uncommitted, then commit.

    Args:
        device: the device.
        old_slot: ``partition`` in ``OTA.Status`` before the update.
    """
    deadline = time.monotonic() + device.timeout
    await device.close()
    while True:
        try:
            status = await device.call("OTA.Status")
        except (TetherError, OSError):
            await device.close()
        else:
            # State 3: still the process that installed the update, about to restart.
            if isinstance(status, dict) and status.get("state") != 3:
                if _runs_the_update(status, old_slot):
                    return  # it committed itself
                if status.get("is_committed"):
                    raise CommandFailed(
                        f"the device came back committed; was the update rolled back? {status}"
                    )
                break
        if time.monotonic() >= deadline:
            raise CommandFailed(f"the device did not come back within {device.timeout:g} s")
        await asyncio.sleep(_RETRY_INTERVAL)
    try:
        await device.call("OTA.Commit")
    except RpcError:
        # It may have committed itself between OTA.Status and OTA.Commit.
        status = await device.call("OTA.Status")
        if not (isinstance(status, dict) and _runs_the_update(status, old_slot)):
            raise


async def _ota(args: argparse.Namespace, port: str) -> None:
    device = _Device(args, port)
    target: str = args.target
    try:
        if target in _COMMANDS:
            method = {"commit": "OTA.Commit", "revert": "OTA.Revert", "status": "OTA.Status"}[target]
            print(json.dumps(await device.call(method), indent=2, ensure_ascii=False))
            return
        if target.startswith(("http://", "https://")):
            status = await device.call("OTA.Status", tries=3)
            old_slot = status.get("partition") if isinstance(status, dict) else None
            await device.call("OTA.Update", {"url": target, "commit_timeout": args.commit_timeout})
        else:
            old_slot = await _push(device, Path(target), args)
        print(f"tether ota: {target} installed; the device restarts into it", file=sys.stderr)
        if args.commit:
            await _wait_and_commit(device, old_slot)
            print("tether ota: committed", file=sys.stderr)
    finally:
        await device.close()


def _run_ota(args: argparse.Namespace) -> int:
    port = resolve_port(args)
    if args.chunk_size < 1:
        print(f"Error: --chunk-size must be positive, not {args.chunk_size}", file=sys.stderr)
        return 2
    return run_command(port, _ota(args, port))
