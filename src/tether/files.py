"""Files written so that a crash or a power cut leaves the old version or the new one, never a part.

Every piece of device state (configuration levels, the OTA boot state, files put
into the device file system, app files) is replaced the same way: the new bytes
go to a temporary file in the same directory, which is flushed and fsynced,
renamed over the old file with `os.replace` (atomic on POSIX), and then the
directory is fsynced so that the rename itself is durable. At worst a temporary
file is left behind by a process that died while writing; `remove_stale_temporaries`
deletes those.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "copy_atomic",
    "fsync_directory",
    "move_aside",
    "remove_stale_temporaries",
    "replace_from",
    "sha256_file",
    "write_atomic",
]

TEMP_SUFFIX = ".tmp"
#: How many numbered names `move_aside` tries before it gives up.
_MAX_ASIDE = 1000
#: Bytes read at a time by `sha256_file`.
_CHUNK = 64 * 1024


def fsync_directory(directory: Path) -> None:
    """Make renames and removals in directory durable (a no-op where a directory cannot be
    opened or synced: Windows, some network file systems)."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_with(path: Path, fill: Callable[[BinaryIO], object], mode: int = 0o600) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        if mode != 0o600:  # what mkstemp gives
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            fill(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace the file at path with data, atomically and durably.

    The new file is readable by its owner only (`tempfile.mkstemp` makes it so):
    state files may hold secrets.

    Raises:
        OSError: if the file cannot be written; the old file is then untouched and
            the temporary file removed.
    """
    _replace_with(path, lambda file: file.write(data))


def replace_from(
    path: str | os.PathLike[str], fill: Callable[[BinaryIO], object], *, mode: int = 0o600
) -> None:
    """Replace the file at path with what fill writes, atomically and durably.

    For files too big to hold in memory, or written by a library that wants a file
    (`zipfile.ZipFile` takes the seekable file fill is given). fill must not close it.

    Args:
        path: the file to replace; its directory must exist.
        fill: called once with the temporary file, open for binary writing.
        mode: the new file's permission bits; private by default, as `write_atomic`.

    Raises:
        OSError: if the file cannot be written; the old file is then untouched and
            the temporary file removed. Whatever fill raises, with the same guarantee.
    """
    _replace_with(Path(path), fill, mode)


def copy_atomic(source: Path, target: Path) -> None:
    """Replace target with a copy of source, atomically and durably; creates target's folders.

    Raises:
        OSError: as `write_atomic`, or if source cannot be read.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src:
        _replace_with(target, lambda file: shutil.copyfileobj(src, file))


def remove_stale_temporaries(directory: Path, name: str) -> list[Path]:
    """Delete the temporary files `write_atomic` left for name when a process died while
    writing; returns them."""
    stale = sorted(directory.glob(f".{name}.*{TEMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of the file at path, as lowercase hex; read in blocks, so any size will do.

    Raises:
        OSError: if the file cannot be read.
    """
    # Here, not at the top: the supervisor imports this module and never hashes
    # (hashlib's OpenSSL alone is megabytes).
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def move_aside(path: Path) -> Path:
    """Rename a file that cannot be used to ``<name>.corrupt`` (or ``<name>.corrupt.N``
    if that exists), so that nothing is lost; returns the new path.

    Raises:
        OSError: if it cannot be renamed (or every name up to ``.corrupt.1000`` is taken).
    """
    for n in range(_MAX_ASIDE + 1):
        target = path.with_name(f"{path.name}.corrupt" + (f".{n}" if n else ""))
        if not target.exists():
            os.rename(path, target)
            fsync_directory(path.parent)
            return target
    raise FileExistsError(f"no free name to move {path} aside")
