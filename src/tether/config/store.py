"""Configuration files on disk: JSON the way mgos writes it, atomic writes, bad files moved aside.

A level file is replaced atomically (§5.3, DESIGN.md "State on disk") with
`tether.files.write_atomic`: after a crash at any point the directory holds the
old file or the new one, never a part of either; at worst a temporary file is
left behind, and `remove_stale_temporaries` deletes it at the next load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tether.files import fsync_directory, move_aside, remove_stale_temporaries, write_atomic

__all__ = ["encode", "fsync_directory", "move_aside", "remove_stale_temporaries", "write_atomic"]


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
