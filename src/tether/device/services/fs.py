"""The ``FS.*`` RPC service: a device's files under one root directory (spec mgos-rpc.md §3 "FS").

Methods, with params, results and errors as rpc-service-fs (§3), plus tether's
``FS.Mkdir`` and ``FS.Rmdir``:

- ``FS.List {path}`` (default ``/``) → the sorted names in the directory, ``[]`` if it
  cannot be read (as the firmware); ``FS.ListExt`` → ``[{"name", "size"}]`` (0 for a
  directory).
- ``FS.Get {filename, offset 0, len -1}`` → ``{"data": base64, "left": bytes after the
  chunk}``; an offset past the end reads nothing; 400 ``filename is required``,
  ``illegal offset`` (negative), ``failed to open file "X"``.
- ``FS.Put {filename, data, append, offset, size}`` → ``null``; see "Uploads" below. The
  directories above the file are created as needed: on the firmware's flat file systems
  (SPIFFS) ``data/f`` is just a name, which mos puts without making ``data`` first.
- ``FS.Remove {filename}`` → ``null``; 500 ``remove failed``.
- ``FS.Rename {src, dst}`` → ``null``; 400 ``src and dst are required``, 500 ``rename failed``.
- ``FS.Mkdir {path}`` (with parents, no error if it exists) / ``FS.Rmdir {path}`` (empty
  directories only) → ``null``; 400 ``path is required``, 500 ``mkdir failed`` /
  ``rmdir failed``.

Paths. ``"/a/b"`` and ``"a/b"`` both name ``root/a/b``; empty and ``.`` parts are
skipped. A path with ``..``, a NUL byte, a part longer than 255 bytes, a part that
looks like a working file (``.<name>.part``), or one that leads outside the root
through a symbolic link gets 400 ``illegal path "X"``; so does the root itself where a
file is expected to be removed or renamed.

Uploads: theory of operation. mos writes a file in 512-byte chunks: the first with
``offset`` 0 and ``append`` false, then ``append`` true with the running offset (§3).
Writing them into the file itself would leave half a file where the whole one should
be if the upload stops part way, so the chunks go into a hidden working file
``.<name>.part`` beside the target (a hashed name when the target's is too long for
the suffix), which listings never show:

1. A Put with ``offset`` 0 starts an upload: the part file is created with the data
   (an upload of that file still going on is dropped: its writer started again).
2. A Put with ``offset`` equal to the part file's size extends it; another offset gets
   400 ``illegal offset`` and leaves the upload as it was.
3. The upload completes, and the part file is renamed over the target atomically (after
   an fsync), when

   a. the caller sent tether's ``size`` (total bytes) and the part file reached it; or
   b. the caller sent no ``size`` (mos), and no chunk arrived for ``upload_idle``
      seconds, or another FS call touched the file (``FS.Get`` of it, ``FS.List`` of a
      directory above it, ``FS.Rename``, ``FS.Rmdir``).

   An upload with a ``size`` is never completed short: when it goes idle, its part file
   is removed. ``FS.Remove`` of the target drops any upload of it.
4. Data that would take the file past ``max_file_size`` (or past its ``size``) gets 400,
   and the part file is removed.
5. A mos upload whose idle time ran out between two chunks (a slow link) goes on: a
   Put without ``size`` whose ``offset`` equals the size of the completed file starts a
   new part file from a copy of it.

A Put without ``offset``, or whose ``size`` equals the length of its data, writes the
whole file atomically at once (``append`` true without ``offset`` adds to the end of the
existing file, in the same way). Part files left over from a crash are never the real
file: `register` removes them at start.

Handlers run on the event loop, one at a time, so the upload table needs no lock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import RpcError
from tether.files import fsync_directory
from tether.rpc.dispatch import Call, Dispatcher

__all__ = ["register"]

logger = logging.getLogger("tether.device")

#: The longest name of one path part, in bytes (NAME_MAX).
_NAME_MAX = 255
_PART_SUFFIX = ".part"


#: The most bytes one ``FS.Get`` returns; ``left`` tells the caller to ask for the rest.
MAX_GET = 1 << 20


def _is_part_name(name: str) -> bool:
    """True for names of the form ``.<name>.part``: working files, never shown or served."""
    return len(name) > len(_PART_SUFFIX) + 1 and name.startswith(".") and name.endswith(_PART_SUFFIX)


def _part_name(name: str) -> str:
    candidate = f".{name}{_PART_SUFFIX}"
    if len(os.fsencode(candidate)) <= _NAME_MAX:
        return candidate
    return f".{hashlib.sha256(os.fsencode(name)).hexdigest()}{_PART_SUFFIX}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _params(call: Call) -> dict[str, Any]:
    # The firmware reads params with json_scanf: anything but an object gives no fields.
    return call.params if isinstance(call.params, dict) else {}


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _read_regular(path: Path) -> bytes:
    """The contents of a regular file.

    Raises:
        OSError: if it is missing, or not a regular file (a FIFO would block the loop).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
        return f.read()


@dataclass
class _Upload:
    target: Path
    part: Path
    size: int | None
    timer: asyncio.TimerHandle | None = None


class _FileService:
    def __init__(
        self,
        root: Path,
        max_file_size: int,
        upload_idle: float,
        protected: Callable[[], set[Path]] | None,
        min_free: int,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.protected = protected
        self.min_free = min_free
        self._root_text = str(self.root)
        self._prefix = self._root_text if self._root_text.endswith(os.sep) else self._root_text + os.sep
        self.max_file_size = max_file_size
        self.upload_idle = upload_idle
        self._uploads: dict[Path, _Upload] = {}

    # Paths.

    def _inside(self, real: str) -> bool:
        return real == self._root_text or real.startswith(self._prefix)

    def _is_protected(self, path: Path | str) -> bool:
        if self.protected is None:
            return False
        real = Path(os.path.realpath(path))
        return any(real == Path(os.path.realpath(p)) for p in self.protected())

    def resolve(self, name: str, call: Call | None = None) -> Path:
        """The path of name under the root, its last part not followed if a symlink.

        Raises:
            RpcError: 400 if name could reach outside the root or names a working file;
                403 if it holds credentials and call's caller is not authenticated.
        """
        illegal = RpcError(400, f'illegal path "{name}"')
        if "\0" in name:
            raise illegal
        parts = [part for part in name.split("/") if part not in ("", ".")]
        for part in parts:
            if part == ".." or len(os.fsencode(part)) > _NAME_MAX or _is_part_name(part):
                raise illegal
        if not parts:
            return self.root
        parent = os.path.realpath(self.root.joinpath(*parts[:-1]))
        path = os.path.join(parent, parts[-1])
        if not (self._inside(parent) and self._inside(os.path.realpath(path))):
            raise illegal
        if call is not None and call.user is None and self._is_protected(path):
            raise RpcError(403, "unauthorized")  # §1.2's code for a denied call
        return Path(path)

    def _not_root(self, path: Path, name: str) -> Path:
        if path == self.root:
            raise RpcError(400, f'illegal path "{name}"')
        return path

    # Uploads.

    def remove_leftovers(self) -> None:
        """Remove part files a crash left behind: they are never the real file."""
        for directory, _, files in os.walk(self.root):
            for name in files:
                if _is_part_name(name):
                    path = Path(directory, name)
                    logger.info("removing the unfinished upload %s", path)
                    _unlink_quietly(path)

    def _forget(self, upload: _Upload) -> None:
        if self._uploads.get(upload.target) is upload:
            del self._uploads[upload.target]
        if upload.timer is not None:
            upload.timer.cancel()
            upload.timer = None

    def _discard(self, upload: _Upload) -> None:
        self._forget(upload)
        _unlink_quietly(upload.part)

    def _commit(self, upload: _Upload) -> None:
        """Rename the part file over the target; on OSError the upload is gone and the error raised."""
        self._forget(upload)
        try:
            fd = os.open(upload.part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(upload.part, upload.target)
        except OSError:
            _unlink_quietly(upload.part)
            raise
        fsync_directory(upload.target.parent)

    def _settle(self, path: Path, *, moving: bool = False) -> None:
        """Another call touches path: complete the uploads without ``size`` at or under it.

        moving: path is about to be renamed or removed: also drop uploads with a ``size``.
        """
        for upload in [u for u in self._uploads.values() if u.target == path or path in u.target.parents]:
            if upload.size is None:
                try:
                    self._commit(upload)
                except OSError as exc:
                    logger.warning("could not complete the upload of %s: %s", upload.target, exc)
            elif moving:
                self._discard(upload)

    def _idle(self, upload: _Upload) -> None:
        upload.timer = None
        if self._uploads.get(upload.target) is not upload:
            return
        if upload.size is not None:
            logger.info("dropping the unfinished upload of %s", upload.target)
            self._discard(upload)
            return
        try:
            self._commit(upload)
        except OSError as exc:
            logger.warning("could not complete the upload of %s: %s", upload.target, exc)

    def _arm(self, upload: _Upload) -> None:
        if upload.timer is not None:
            upload.timer.cancel()
        upload.timer = asyncio.get_running_loop().call_later(self.upload_idle, self._idle, upload)

    def _write_atomic(self, target: Path, data: bytes) -> None:
        part = target.parent / _part_name(target.name)
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            with open(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, target)
        except OSError:
            _unlink_quietly(part)
            raise
        fsync_directory(target.parent)

    def _start(self, target: Path, data: bytes, size: int | None) -> _Upload:
        upload = _Upload(target, target.parent / _part_name(target.name), size)
        fd = os.open(upload.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with open(fd, "wb") as f:
            f.write(data)
        self._uploads[target] = upload
        return upload

    def _check_space(self, more: int) -> None:
        """Refuse a write that would leave the file system (shared with the configuration and
        the OTA slots) with less than ``min_free`` bytes."""
        if self.min_free and shutil.disk_usage(self.root).free - more < self.min_free:
            raise RpcError(500, "no space left on the device file system")

    def _check_size(self, filename: str, total: int, size: int | None = None) -> None:
        if total > self.max_file_size:
            raise RpcError(400, f'file "{filename}" is over the limit of {self.max_file_size} bytes')
        if size is not None and total > size:
            raise RpcError(400, f'data for "{filename}" is over its size of {size} bytes')

    # Handlers.

    def list_names(self, call: Call, *, ext: bool = False) -> list[Any]:
        path = _params(call).get("path", "/")
        if not isinstance(path, str):
            raise RpcError(400, f"illegal path {path!r}")
        directory = self.resolve(path, call)
        self._settle(directory)
        try:
            names = sorted(name for name in os.listdir(directory) if not _is_part_name(name))
        except OSError:
            return []  # the firmware lists what it cannot open as empty
        if call.user is None and self.protected is not None:
            names = [name for name in names if not self._is_protected(directory / name)]
        if not ext:
            return names
        entries = []
        for name in names:
            entry = directory / name
            if not self._inside(os.path.realpath(entry)):
                continue  # a symlink out of the root: not ours to describe
            try:
                st = os.stat(entry)
            except OSError:
                continue  # as the firmware: entries it cannot stat are left out
            entries.append({"name": name, "size": st.st_size if stat.S_ISREG(st.st_mode) else 0})
        return entries

    def list_ext(self, call: Call) -> list[Any]:
        return self.list_names(call, ext=True)

    def get(self, call: Call) -> dict[str, Any]:
        params = _params(call)
        filename = params.get("filename")
        if not isinstance(filename, str):
            raise RpcError(400, "filename is required")
        offset = params.get("offset", 0)
        length = params.get("len", -1)
        if not _is_int(offset) or offset < 0:
            raise RpcError(400, "illegal offset")
        if not _is_int(length):
            raise RpcError(400, f"illegal len {length!r}")
        target = self.resolve(filename, call)
        self._settle(target)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK)
            with open(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise IsADirectoryError(filename)
                size = st.st_size
                offset = min(offset, size)
                if length < 0 or offset + length > size:
                    length = size - offset
                length = min(length, MAX_GET)  # the caller asks again for the rest (`left`)
                f.seek(offset)
                data = f.read(length)
        except OSError:
            raise RpcError(400, f'failed to open file "{filename}"') from None
        # §12 item 3: mos needs both fields.
        return {"data": base64.b64encode(data).decode("ascii"), "left": size - offset - len(data)}

    def put(self, call: Call) -> None:
        params = _params(call)
        filename = params.get("filename")
        if not isinstance(filename, str):
            raise RpcError(400, "filename is required")
        offset = params.get("offset")
        size = params.get("size")
        encoded = params.get("data", "")
        append = params.get("append") is True
        if offset is not None and not _is_int(offset):
            raise RpcError(400, "illegal offset")
        if size is not None and (not _is_int(size) or size < 0):
            raise RpcError(400, f"illegal size {size!r}")
        if not isinstance(encoded, str):
            raise RpcError(400, "data must be a base64 string")
        try:
            data = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise RpcError(400, f'data for "{filename}" is not valid base64') from None
        target = self.resolve(filename, call)
        if target == self.root or target.is_dir():
            raise RpcError(400, f'failed to open file "{filename}"')
        if size is not None:
            self._check_size(filename, size)
        self._check_space(len(data))
        try:
            self._put(target, filename, data, append, offset, size)
        except OSError as exc:
            logger.warning("writing %s failed: %s", target, exc)
            upload = self._uploads.get(target)
            if upload is not None:
                self._discard(upload)
            raise RpcError(500, "failed to write data") from None

    def _put(
        self, target: Path, filename: str, data: bytes, append: bool, offset: int | None, size: int | None
    ) -> None:
        upload = self._uploads.get(target)
        if offset is None or offset < 0:
            if upload is not None and append:
                offset = upload.part.stat().st_size  # an upload going on: more of it
            else:
                # §3: no offset → append to or truncate the file; here in one atomic write.
                self._make_parent(target, filename)
                if upload is not None:
                    self._discard(upload)
                prefix = b""
                if append:
                    with contextlib.suppress(FileNotFoundError):
                        prefix = _read_regular(target)
                self._check_size(filename, len(prefix) + len(data))
                self._write_atomic(target, prefix + data)
                return
        if offset == 0:
            if upload is not None:
                self._discard(upload)  # the writer started again
            self._check_size(filename, len(data), size)
            self._make_parent(target, filename)
            if size == len(data):
                self._write_atomic(target, data)
                return
            self._arm(self._start(target, data, size))
            return
        if upload is None:
            upload = self._resume(target, filename, offset, size)
        elif offset != upload.part.stat().st_size:
            raise RpcError(400, "illegal offset")
        try:
            self._check_size(filename, offset + len(data), upload.size)
        except RpcError:
            self._discard(upload)
            raise
        with open(upload.part, "ab") as f:
            f.write(data)
        if upload.size is not None and offset + len(data) == upload.size:
            self._commit(upload)
        else:
            self._arm(upload)

    def _make_parent(self, target: Path, filename: str) -> None:
        """Create the directories above target: on the firmware's flat file systems (SPIFFS)
        ``data/f`` is just a name, so mos puts it without making ``data`` first."""
        try:
            os.makedirs(target.parent, exist_ok=True)
        except OSError:
            raise RpcError(400, f'failed to open file "{filename}"') from None

    def _resume(self, target: Path, filename: str, offset: int, size: int | None) -> _Upload:
        """Step 5 of the theory: a mos upload whose idle time ran out between chunks."""
        try:
            existing = _read_regular(target)
        except OSError:
            raise RpcError(400, f'failed to open file "{filename}"') from None
        if size is not None or offset != len(existing):
            raise RpcError(400, "illegal offset")
        return self._start(target, existing, None)

    def remove(self, call: Call) -> None:
        filename = _params(call).get("filename")
        if not isinstance(filename, str):
            raise RpcError(400, "filename is required")
        target = self._not_root(self.resolve(filename, call), filename)
        upload = self._uploads.get(target)
        if upload is not None:
            self._discard(upload)
        try:
            os.remove(target)
        except FileNotFoundError:
            if upload is None:
                raise RpcError(500, "remove failed") from None
        except OSError:
            raise RpcError(500, "remove failed") from None

    def rename(self, call: Call) -> None:
        params = _params(call)
        src, dst = params.get("src"), params.get("dst")
        if not isinstance(src, str) or not isinstance(dst, str):
            raise RpcError(400, "src and dst are required")
        source = self._not_root(self.resolve(src, call), src)
        destination = self._not_root(self.resolve(dst, call), dst)
        self._settle(source, moving=True)
        self._settle(destination, moving=True)
        try:
            os.rename(source, destination)
        except OSError:
            raise RpcError(500, "rename failed") from None

    def mkdir(self, call: Call) -> None:
        path = _params(call).get("path")
        if not isinstance(path, str):
            raise RpcError(400, "path is required")
        try:
            os.makedirs(self.resolve(path, call), exist_ok=True)
        except OSError:
            raise RpcError(500, "mkdir failed") from None

    def rmdir(self, call: Call) -> None:
        path = _params(call).get("path")
        if not isinstance(path, str):
            raise RpcError(400, "path is required")
        directory = self._not_root(self.resolve(path, call), path)
        self._settle(directory, moving=True)
        try:
            os.rmdir(directory)
        except OSError:
            raise RpcError(500, "rmdir failed") from None


def register(
    dispatcher: Dispatcher,
    root: Path,
    *,
    max_file_size: int = 64 * 2**20,
    upload_idle: float = 2.0,
    protected: Callable[[], set[Path]] | None = None,
    min_free: int = 16 * 2**20,
) -> None:
    """Serve the files under root as ``FS.*`` on dispatcher (see the module docstring).

    Creates root if it is missing and removes the part files of uploads a crash cut
    short. Call it from the thread that runs the dispatcher's event loop, or before it.

    Args:
        dispatcher: where the methods are registered.
        root: the directory ``/`` stands for.
        max_file_size: the largest file ``FS.Put`` writes, in bytes.
        upload_idle: seconds after the last chunk at which an upload without ``size``
            completes (one with ``size`` is dropped).
        protected: returns the files that hold credentials (an htdigest file, TLS keys):
            only authenticated callers may read, write, list or remove them (403 else).
        min_free: writes that would leave the file system (shared with the configuration
            and the OTA slots) with less free space than this are refused (500).

    Raises:
        ValueError: if max_file_size is negative or upload_idle is not positive.
        OSError: if root cannot be created.
    """
    if max_file_size < 0:
        raise ValueError(f"max_file_size must not be negative, not {max_file_size}")
    if upload_idle <= 0:
        raise ValueError(f"upload_idle must be positive, not {upload_idle}")
    root.mkdir(parents=True, exist_ok=True)
    service = _FileService(root, max_file_size, upload_idle, protected, min_free)
    service.remove_leftovers()
    add = dispatcher.add_handler
    add("FS.List", service.list_names, args_fmt="{path: %Q}", description="The names in a directory, sorted.")
    add(
        "FS.ListExt",
        service.list_ext,
        args_fmt="{path: %Q}",
        description="The names and sizes of the entries of a directory, sorted by name.",
    )
    add(
        "FS.Get",
        service.get,
        args_fmt="{filename: %Q, offset: %ld, len: %ld}",
        description="A chunk of a file, base64, and the bytes left after it.",
    )
    add(
        "FS.Put",
        service.put,
        args_fmt="{filename: %Q, offset: %ld, data: %V, append: %B, size: %ld}",
        description="Writes a chunk of a file; a chunked upload lands atomically when complete.",
    )
    add("FS.Remove", service.remove, args_fmt="{filename: %Q}", description="Removes a file.")
    add("FS.Rename", service.rename, args_fmt="{src: %Q, dst: %Q}", description="Renames a file.")
    add("FS.Mkdir", service.mkdir, args_fmt="{path: %Q}", description="Creates a directory and its parents.")
    add("FS.Rmdir", service.rmdir, args_fmt="{path: %Q}", description="Removes an empty directory.")
