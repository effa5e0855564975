"""The ``OTA.*`` RPC service: push and pull updates, commit, revert (spec mgos-rpc.md §3, §6).

Theory of operation. An update arrives either pushed, as ``mos ota`` does it
(``OTA.Begin {size}``, ``OTA.Write {offset, data}`` per chunk, ``OTA.End``), or
pulled (``OTA.Update {url}``), into ``STATE/ota/upload.part``. ``OTA.End`` (or
the end of the download) hands the file to `tether.device.slots.Slots.install`,
which verifies it and switches to a new slot, uncommitted; then the device
restarts into it (``reboot(0.1)``). Until then nothing the running app uses has
changed, so any failure leaves the device as it was, with ``OTA.Status`` state 2
and the reason.

``OTA.Status`` states: 0 idle, 1 in progress (receiving, downloading or
installing), 2 error (``message`` says why: the last upload failed, timed out,
or the update was rolled back), 3 success (installed; the device is restarting).

An upload is resumable: after a dropped connection the client writes again from
the offset the device has (a repeated last write is accepted, as when its reply
was lost), even after a restart (``upload.json`` keeps its size and timeouts). It
is dropped ``timeout`` seconds after ``OTA.Begin``, or by ``OTA.End`` before all
bytes arrived. A new update is refused while one is uncommitted (§6).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import http.client
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether import tls
from tether.device.bundle import BundleError
from tether.device.slots import SlotError, Slots
from tether.errors import RpcError, TetherError
from tether.files import write_atomic
from tether.rpc.dispatch import Call, Dispatcher

__all__ = ["DownloadError", "OtaService", "OtaState", "download", "register"]

logger = logging.getLogger("tether.device.ota")

#: The ``error.code`` of refusals that are not bad arguments (§3: "-1 if nothing to commit").
APP_ERROR = -1
_CHUNK = 64 * 1024


class OtaState(enum.IntEnum):
    """``OTA.Status`` ``state`` (§3)."""

    IDLE = 0
    PROGRESS = 1
    ERROR = 2
    SUCCESS = 3


class DownloadError(TetherError):
    """An ``OTA.Update`` download failed; the message names the URL and the cause."""


@dataclass
class _Upload:
    size: int
    timeout: float
    commit_timeout: int
    started: float
    received: int = 0


def download(
    url: str,
    path: Path,
    *,
    max_size: int,
    ca_file: str | None = None,
    timeout: float = 30.0,
    attempts: int = 5,
    progress: Callable[[int, int | None], None] | None = None,
) -> int:
    """Download url into path (blocking), resuming with ``Range`` when the connection drops.

    Args:
        url: an ``http://`` or ``https://`` URL.
        path: the file to write (created or truncated).
        max_size: the largest download accepted, in bytes.
        ca_file: a PEM bundle of trusted CAs for https; certifi's bundle by default.
        timeout: seconds each connect or read may take.
        attempts: tries in a row that may fail without receiving a byte.
        progress: called with (bytes received, total or None) after each chunk.

    Returns:
        The number of bytes downloaded.

    Raises:
        DownloadError: for an HTTP error status, a body over max_size, or when
            attempts tries in a row failed.
    """
    if ca_file is None:
        import certifi

        ca_file = certifi.where()
    context = tls.client_context(ca_file=ca_file)
    received = 0
    total: int | None = None
    failures = 0
    path.write_bytes(b"")
    with path.open("r+b") as f:
        # Bounded: every round that does not fail ends the loop, and every round that
        # fails without progress counts; one that progressed gained at least one byte.
        while True:
            request = urllib.request.Request(url, headers={"Range": f"bytes={received}-"} if received else {})
            before = received
            try:
                with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                    received, total = _resume_at(url, response, received, total, max_size)
                    f.seek(received)
                    f.truncate()
                    while chunk := response.read(_CHUNK):
                        received += len(chunk)
                        if received > max_size:
                            raise DownloadError(f"{url}: the body is over the limit of {max_size} bytes")
                        f.write(chunk)
                        if progress is not None:
                            progress(received, total)
                if total is None or received >= total:
                    f.flush()
                    return received
                problem = f"connection closed after {received} of {total} bytes"
            except urllib.error.HTTPError as exc:
                exc.close()  # it holds the response and its socket
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            except (OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)  # urllib wraps it in a URLError
                if isinstance(reason, ssl.SSLCertVerificationError):
                    raise DownloadError(f"{url}: {reason}") from None  # trying again will not help
                problem = str(exc) or type(exc).__name__
            failures = 0 if received > before else failures + 1
            if failures >= attempts:
                raise DownloadError(f"{url}: {problem} ({attempts} tries without progress)")
            logger.info("download of %s interrupted (%s); resuming at %d", url, problem, received)


def _resume_at(
    url: str, response: Any, received: int, total: int | None, max_size: int
) -> tuple[int, int | None]:
    """Where a response's body starts and the whole size, from its status and fields."""
    if response.status == 206:
        first, _, size = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
        start = first.partition("-")[0]
        if not start.isdigit() or int(start) != received:
            raise DownloadError(f"{url}: a partial response for {first!r}, not from byte {received}")
        total = int(size) if size.isdigit() else total
    elif response.status == 200:
        received = 0  # the server ignored Range: from the start
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
    else:
        raise DownloadError(f"{url}: unexpected HTTP status {response.status}")
    if total is not None and total > max_size:
        raise DownloadError(f"{url}: {total} bytes is over the limit of {max_size} bytes")
    return received, total


class OtaService:
    """The state of the ``OTA.*`` service; made and registered by `register`.

    Attributes:
        slots: the device's slots.
        state: the ``OTA.Status`` state.
        message: what ``OTA.Status`` says about it.
    """

    def __init__(
        self,
        slots: Slots,
        *,
        public_key: Callable[[], str | None],
        reboot: Callable[[float], None],
        max_size: int,
        clock: Callable[[], float],
        ca_file: str | None,
        download_timeout: float,
    ) -> None:
        self.slots = slots
        self._public_key = public_key
        self._reboot = reboot
        self._max_size = max_size
        self._clock = clock
        self._ca_file = ca_file
        self._download_timeout = download_timeout
        self._part = slots.ota_dir / "upload.part"
        self._meta = slots.ota_dir / "upload.json"
        self._upload: _Upload | None = None
        self._task: asyncio.Task[None] | None = None  # an install or a download running
        self._progress = 0
        last_error = slots.boot_state().last_error
        self.state = OtaState.ERROR if last_error else OtaState.IDLE
        self.message = last_error
        self._restore()

    def __repr__(self) -> str:
        return f"OtaService(state={self.state.name}, message={self.message!r})"

    # The upload on disk.

    def _restore(self) -> None:
        """Take up an upload a restart interrupted, or remove its leftovers."""
        try:
            meta = json.loads(self._meta.read_bytes())
            upload = _Upload(
                int(meta["size"]), float(meta["timeout"]), int(meta["commit_timeout"]), float(meta["started"])
            )
            upload.received = min(self._part.stat().st_size, upload.size)
        except (OSError, ValueError, KeyError, TypeError):
            self._remove_upload()
            return
        self._upload = upload
        self.state, self.message = OtaState.PROGRESS, "receiving"
        self._expire()

    def _remove_upload(self) -> None:
        self._upload = None
        self._meta.unlink(missing_ok=True)
        self._part.unlink(missing_ok=True)

    def _fail(self, message: str) -> RpcError:
        """Drop the upload, go to state 2 with message; the error to answer with."""
        self._remove_upload()
        self.state, self.message = OtaState.ERROR, message
        logger.error("update failed: %s", message)
        return RpcError(APP_ERROR, message)

    def _expire(self) -> None:
        upload = self._upload
        if upload is not None and self._clock() >= upload.started + upload.timeout:
            self._fail(
                f"upload timed out after {upload.timeout:g} s ({upload.received} of {upload.size} bytes)"
            )

    def _check_can_start(self) -> None:
        """Raise RpcError -1 unless a new update may start now."""
        self._expire()
        if self._task is not None:
            raise RpcError(APP_ERROR, f"an update is in progress: {self.message}")
        if self._upload is not None:
            upload = self._upload
            left = upload.started + upload.timeout - self._clock()
            raise RpcError(
                APP_ERROR,
                f"an upload is in progress ({upload.received} of {upload.size} bytes); "
                f"it times out in {left:.0f} s",
            )
        if self.state is OtaState.SUCCESS:
            raise RpcError(APP_ERROR, "an update is installed and the device is restarting into it")
        state = self.slots.boot_state()
        if not state.is_committed:
            raise RpcError(
                APP_ERROR,
                f"update to slot {state.active_slot} is not committed yet: commit or revert it first",
            )

    # Handlers.

    def status(self, call: Call) -> dict[str, Any]:
        """``OTA.Status``."""
        self._expire()
        boot = self.slots.boot_state()
        if self._upload is not None:
            size = self._upload.size
            percent = 100 if size == 0 else self._upload.received * 100 // size
        elif self.state is OtaState.PROGRESS:
            percent = self._progress
        else:
            percent = 100 if self.state is OtaState.SUCCESS else 0
        return {
            "state": int(self.state),
            "message": self.message,
            "is_committed": boot.is_committed,
            "progress_percent": percent,
            "commit_timeout": boot.commit_timeout,
            "partition": boot.active_slot,
        }

    def begin(self, call: Call) -> None:
        """``OTA.Begin {size, timeout, commit_timeout}``."""
        size, timeout, commit_timeout = (int(call.params[k]) for k in ("size", "timeout", "commit_timeout"))
        if size > self._max_size:
            raise RpcError(400, f"size {size} is over the limit of {self._max_size} bytes")
        self._check_can_start()
        upload = _Upload(size, timeout, commit_timeout, self._clock())
        self.slots.ota_dir.mkdir(parents=True, exist_ok=True)
        self._part.write_bytes(b"")
        meta = {"size": size, "timeout": timeout, "commit_timeout": commit_timeout, "started": upload.started}
        write_atomic(self._meta, json.dumps(meta).encode())
        self._upload = upload
        self.state, self.message, self._progress = OtaState.PROGRESS, "receiving", 0
        logger.info("update started: %d bytes", size)

    def write(self, call: Call) -> None:
        """``OTA.Write {offset, data}``."""
        offset = int(call.params["offset"])
        try:
            data = base64.b64decode(call.params["data"], validate=True)
        except (binascii.Error, ValueError):
            raise RpcError(400, "data is not valid base64") from None
        self._expire()
        upload = self._upload
        if upload is None:
            raise RpcError(APP_ERROR, "no upload in progress: call OTA.Begin first")
        if offset != upload.received:
            if offset + len(data) == upload.received and self._read_part(offset, len(data)) == data:
                return  # the last write again: its reply was lost
            raise RpcError(400, f"offset {offset} is not the {upload.received} bytes received so far")
        if offset + len(data) > upload.size:
            raise RpcError(400, f"data at offset {offset} goes past the size of {upload.size} bytes")
        with self._part.open("r+b") as f:
            f.seek(offset)
            f.write(data)
        upload.received += len(data)

    def _read_part(self, offset: int, length: int) -> bytes:
        with self._part.open("rb") as f:
            f.seek(offset)
            return f.read(length)

    async def end(self, call: Call) -> None:
        """``OTA.End``: verify, install, restart."""
        self._expire()
        upload = self._upload
        if self._task is not None:
            raise RpcError(APP_ERROR, f"an update is in progress: {self.message}")
        if upload is None:
            raise RpcError(APP_ERROR, "no upload in progress: call OTA.Begin first")
        if upload.received != upload.size:
            raise self._fail(f"upload incomplete: {upload.received} of {upload.size} bytes received")
        self._upload = None
        self._meta.unlink(missing_ok=True)
        await self._run(self._install(upload.commit_timeout))

    async def update(self, call: Call) -> None:
        """``OTA.Update {url, commit_timeout}``: download, verify, install, restart."""
        url = call.params["url"]
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise RpcError(400, f"url {url!r} is not an http:// or https:// URL")
        self._check_can_start()
        self.slots.ota_dir.mkdir(parents=True, exist_ok=True)
        self.state, self.message, self._progress = OtaState.PROGRESS, f"downloading {url}", 0
        await self._run(self._download_and_install(url, int(call.params["commit_timeout"])))

    async def _run(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work as a task that outlives the call (a deadline ends the wait, not the work)."""
        task = asyncio.get_running_loop().create_task(work)
        self._task = task
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._task = None
            else:
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """Forget work whose call gave up waiting; its outcome is in `state` and `message`."""
        self._task = None
        if not task.cancelled():
            task.exception()  # retrieved: `_fail` logged it

    async def _download_and_install(self, url: str, commit_timeout: int) -> None:
        def progress(received: int, total: int | None) -> None:
            self._progress = 0 if not total else min(99, received * 100 // total)

        try:
            size = await asyncio.to_thread(
                download,
                url,
                self._part,
                max_size=self._max_size,
                ca_file=self._ca_file,
                timeout=self._download_timeout,
                progress=progress,
            )
        except (DownloadError, OSError) as exc:
            raise self._fail(str(exc)) from None
        logger.info("downloaded %d bytes from %s", size, url)
        await self._install(commit_timeout)

    async def _install(self, commit_timeout: int) -> None:
        self.state, self.message, self._progress = OtaState.PROGRESS, "installing", 100
        try:
            slot = await asyncio.to_thread(
                self.slots.install,
                self._part,
                public_key=self._public_key() or None,
                commit_timeout=commit_timeout,
            )
        except (BundleError, SlotError, OSError) as exc:
            raise self._fail(str(exc)) from None
        finally:
            self._part.unlink(missing_ok=True)
        self.state, self.message = OtaState.SUCCESS, f"installed in slot {slot}; restarting"
        self._reboot(0.1)

    async def commit(self, call: Call) -> None:
        """``OTA.Commit``."""
        if self.state is OtaState.SUCCESS:
            raise RpcError(APP_ERROR, "the device is restarting into the update: commit it after the restart")
        try:
            await asyncio.to_thread(self.slots.commit)
        except SlotError as exc:
            raise RpcError(APP_ERROR, str(exc)) from None
        self.state, self.message = OtaState.IDLE, ""

    async def revert(self, call: Call) -> None:
        """``OTA.Revert``: back to the revert slot, restart after 100 ms."""
        if self._task is not None or self._upload is not None:
            raise RpcError(APP_ERROR, "an update is in progress: wait for it or let it time out")
        try:
            slot = await asyncio.to_thread(self.slots.revert)
        except SlotError as exc:
            raise RpcError(APP_ERROR, str(exc)) from None
        self.state, self.message = OtaState.IDLE, f"reverted to slot {slot}; restarting"
        self._reboot(0.1)

    def get_boot_state(self, call: Call) -> dict[str, Any]:
        """``OTA.GetBootState``."""
        boot = self.slots.boot_state()
        return {
            "active_slot": boot.active_slot,
            "is_committed": boot.is_committed,
            "revert_slot": boot.revert_slot,
            "commit_timeout": boot.commit_timeout,
        }

    async def set_boot_state(self, call: Call) -> None:
        """``OTA.SetBootState``: any of the four fields of ``OTA.GetBootState``."""
        fields = {k: int(v) if k != "is_committed" else v for k, v in call.params.items()}
        try:
            await asyncio.to_thread(lambda: self.slots.set_boot_state(**fields))
        except ValueError as exc:
            raise RpcError(400, str(exc)) from None


def _integer(default: int | None = None, minimum: int = 0) -> dict[str, Any]:
    description: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if default is not None:
        description["default"] = default
    return description


def register(
    dispatcher: Dispatcher,
    slots: Slots,
    *,
    public_key: Callable[[], str | None],
    reboot: Callable[[float], None],
    max_size: int = 64 * 2**20,
    clock: Callable[[], float] = time.time,
    ca_file: str | os.PathLike[str] | None = None,
    download_timeout: float = 30.0,
    deadline: float = 600.0,
) -> OtaService:
    """Register the ``OTA.*`` methods on dispatcher.

    Args:
        dispatcher: where to register them.
        slots: the device's slots.
        public_key: returns ``update.key`` now (a base64 Ed25519 public key); None or
            "" accepts unsigned bundles.
        reboot: restarts the device after the given seconds (returns at once).
        max_size: the largest bundle accepted, in bytes.
        clock: Unix time in seconds, for upload timeouts.
        ca_file: trusted CAs for ``OTA.Update`` over https; certifi's bundle by default.
        download_timeout: seconds each connect or read of a download may take.
        deadline: seconds ``OTA.End`` and ``OTA.Update`` may take to answer; the work
            goes on after the deadline and ``OTA.Status`` reports its outcome.

    Returns:
        The service, whose ``state`` and ``message`` ``OTA.Status`` reports.
    """
    service = OtaService(
        slots,
        public_key=public_key,
        reboot=reboot,
        max_size=max_size,
        clock=clock,
        ca_file=None if ca_file is None else os.fspath(ca_file),
        download_timeout=download_timeout,
    )
    add = dispatcher.add_handler
    add(
        "OTA.Status",
        service.status,
        description="The state of the update: 0 idle, 1 progress, 2 error, 3 success.",
    )
    add(
        "OTA.Begin",
        service.begin,
        args={
            "type": "object",
            "properties": {"size": _integer(), "timeout": _integer(600, 1), "commit_timeout": _integer(300)},
            "required": ["size"],
        },
        description="Start an upload of size bytes.",
    )
    add(
        "OTA.Write",
        service.write,
        args={
            "type": "object",
            "properties": {"offset": _integer(), "data": {"type": "string"}},
            "required": ["offset", "data"],
        },
        description="Write base64 data at offset, the number of bytes received so far.",
    )
    add("OTA.End", service.end, deadline=deadline, description="Verify and install the upload, then restart.")
    add(
        "OTA.Update",
        service.update,
        args={
            "type": "object",
            "properties": {"url": {"type": "string"}, "commit_timeout": _integer(300)},
            "required": ["url"],
        },
        deadline=deadline,
        description="Download a bundle from url, install it and restart.",
    )
    add("OTA.Commit", service.commit, description="Keep the running update.")
    add("OTA.Revert", service.revert, description="Go back to the previous slot and restart.")
    add("OTA.GetBootState", service.get_boot_state, description="The active and revert slots.")
    add(
        "OTA.SetBootState",
        service.set_boot_state,
        args={
            "type": "object",
            "properties": {
                "active_slot": _integer(),
                "revert_slot": _integer(),
                "is_committed": {"type": "boolean"},
                "commit_timeout": _integer(),
            },
            "additionalProperties": False,
        },
        description="Change the boot state.",
    )
    return service
