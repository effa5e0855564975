"""Configuration files on disk: JSON the way mgos writes it, atomic writes, bad files moved aside.

A level file is replaced atomically (§5.3, DESIGN.md "State on disk"): the new
text goes to a temporary file in the same directory, which is flushed and
fsynced, renamed over the old file with `os.replace`, and then the directory is
fsynced so that the rename itself survives a power cut. After a crash at any
point the directory holds the old file or the new one, never a part of either;
at worst a temporary file is left behind, and `remove_stale_temporaries` deletes
it at the next load.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["encode", "fsync_directory", "move_aside", "remove_stale_temporaries", "write_atomic"]

#: How many numbered names `move_aside` tries before it gives up.
_MAX_ASIDE = 1000
_TEMP_SUFFIX = ".tmp"


def encode(value: Any, *, indent: int | None = None) -> str:
    """JSON text of a configuration value as mgos emits it (§5.2).

    Floats have six decimals (``2.000000``); None (an unset string) is ``""``,
    never ``null``, which mos cannot read; dict keys keep their order.

    Args:
        value: a value or a subtree from `tether.config.Config.get`.
        indent: None for compact text (``Config.Get``), else the spaces per level
            of pretty text (the level files).

    Raises:
        TypeError: for a value no configuration holds (a list, bytes…).
    """
    parts: list[str] = []
    _encode(value, indent, 0, parts)
    return "".join(parts)


def _encode(value: Any, indent: int | None, depth: int, parts: list[str]) -> None:
    if value is None:
        parts.append('""')
    elif isinstance(value, bool):
        parts.append("true" if value else "false")
    elif isinstance(value, int):
        parts.append(str(value))
    elif isinstance(value, float):
        parts.append(f"{value:.6f}")  # mgos prints doubles with "%f"
    elif isinstance(value, str):
        parts.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Mapping):
        if not value:
            parts.append("{}")
            return
        inner = "" if indent is None else "\n" + " " * (indent * (depth + 1))
        outer = "" if indent is None else "\n" + " " * (indent * depth)
        colon = ":" if indent is None else ": "
        parts.append("{")
        for i, (key, item) in enumerate(value.items()):
            parts.append(("," if i else "") + inner + json.dumps(str(key), ensure_ascii=False) + colon)
            _encode(item, indent, depth + 1, parts)
        parts.append(outer + "}")
    else:
        raise TypeError(f"a configuration holds no {type(value).__name__}")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace the file at path with data atomically and durably (see the module docstring).

    Args:
        path: the file to write; its directory must exist.
        data: the whole new content. The new file is readable by its owner only
            (`tempfile.mkstemp` makes it so), as level files may hold secrets.

    Raises:
        OSError: if the file cannot be written; the old file is then untouched and
            the temporary file removed.
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make renames and removals in directory durable (a no-op where directories cannot be opened)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def remove_stale_temporaries(directory: Path, name: str) -> list[Path]:
    """Delete the temporary files `write_atomic` left for name when a process died while
    writing; returns them."""
    stale = sorted(directory.glob(f".{name}.*{_TEMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
