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

__all__ = ["copy_atomic", "fsync_directory", "remove_stale_temporaries", "write_atomic"]

TEMP_SUFFIX = ".tmp"


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


def _replace_with(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
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
