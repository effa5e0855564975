"""Method and user globs of mg_rpc (spec mgos-rpc.md §1.1 step 4 and §4).

A glob matches the whole text: ``?`` one character, ``*`` a run of characters
without ``/``, ``**`` any run, and ``,`` or ``|`` separate alternatives. Method
names match case-insensitively (§1.1 step 4); user names in an ACL match
case-sensitively, so that ``Admin`` never passes for ``admin``.
"""

from __future__ import annotations

import functools
import re

__all__ = ["compile_glob", "is_glob", "match_glob"]

_SPECIAL = frozenset("?*,|")


def is_glob(pattern: str) -> bool:
    """Return True if pattern holds a glob character (``? * , |``), False for a plain name."""
    return not _SPECIAL.isdisjoint(pattern)


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str, *, ignore_case: bool = True) -> re.Pattern[str]:
    """Compile a glob into a regular expression to use with ``fullmatch``.

    Args:
        pattern: the glob, e.g. ``"Config.*,FS.*"``.
        ignore_case: match letters case-insensitively (method names do, §1.1).

    Returns:
        The compiled expression; ``compiled.fullmatch(text)`` tells whether text matches.
    """
    alternatives = []
    for alternative in re.split(r"[,|]", pattern):
        parts = []
        i = 0
        while i < len(alternative):
            char = alternative[i]
            if alternative.startswith("**", i):
                parts.append(".*")
                i += 2
                continue
            if char == "*":
                parts.append("[^/]*")
            elif char == "?":
                parts.append(".")
            else:
                parts.append(re.escape(char))
            i += 1
        alternatives.append("".join(parts))
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("|".join(f"(?:{a})" for a in alternatives), flags)


def match_glob(pattern: str, text: str, *, ignore_case: bool = True) -> bool:
    """Return True if text matches the glob pattern as a whole (see `compile_glob`)."""
    return compile_glob(pattern, ignore_case=ignore_case).fullmatch(text) is not None
