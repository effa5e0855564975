"""The RPC access control list, ``rpc.acl`` (spec mgos-rpc.md §4 "ACL").

An ACL is a JSON array of entries ``{"method": glob, "ch_type": type, "acl": list}``;
``acl`` and at least one of ``method`` and ``ch_type`` are required. For a call:

1. No ACL: everything is allowed and no authentication is asked for, even when
   an auth file is configured (a quirk: the security docs imply otherwise).
2. The first entry whose ``ch_type`` (if given) equals the channel type and whose
   ``method`` glob (if given) matches the method decides; no entry → 403.
3. ``acl`` of ``*`` or ``+*`` allows anyone; ``-*`` refuses everyone (403).
4. Any other ``acl`` needs a user (else 401), checked against its comma-separated
   globs with ``+``/``-`` prefixes: the first that matches decides, none → 403.

Channel types: ``WS_in``, ``WS_out``, ``WSS_out``, ``HTTP``, ``UART``, ``MQTT``.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tether.rpc.patterns import match_glob

__all__ = ["Acl", "AclEntry", "Verdict", "user_allowed"]


class Verdict(enum.Enum):
    """What an ACL entry says about a call before the user is known."""

    ALLOW = "allow"  # "*" or "+*": anyone, no authentication
    DENY = "deny"  # "-*", or no entry matched: 403 unauthorized
    NEED_USER = "need_user"  # a user list: authenticate (401), then check the user (403)


@dataclass(frozen=True)
class AclEntry:
    """One ``rpc.acl`` entry.

    Attributes:
        acl: the user list: ``*``, ``-*``, or comma-separated globs with ``+``/``-`` prefixes.
        method: a method glob (§1.1 step 4 syntax), None to match every method.
        ch_type: a channel type such as ``WS_in``, None to match every channel.
    """

    acl: str
    method: str | None = None
    ch_type: str | None = None

    def applies(self, method: str, channel: str) -> bool:
        """Return True if this entry covers a call of method on a channel of type channel."""
        if self.ch_type is not None and self.ch_type != channel:
            return False
        return self.method is None or match_glob(self.method, method)

    @property
    def verdict(self) -> Verdict:
        """`Verdict.ALLOW` for ``*``/``+*``, `Verdict.DENY` for ``-*``, else `Verdict.NEED_USER`."""
        text = self.acl.strip()
        if text in ("*", "+*"):
            return Verdict.ALLOW
        if text == "-*":
            return Verdict.DENY
        return Verdict.NEED_USER

    def allows(self, user: str) -> bool:
        """Return True if user may make the call (see `user_allowed`)."""
        return user_allowed(self.acl, user)


def user_allowed(acl: str, user: str) -> bool:
    """Check user against a comma-separated list of globs with ``+``/``-`` prefixes.

    The first glob that matches decides: ``-`` refuses, ``+`` or no prefix allows;
    no match refuses. User names match case-sensitively.
    """
    for item in acl.split(","):
        item = item.strip()
        if not item:
            continue
        allow = not item.startswith("-")
        glob = item[1:] if item[0] in "+-" else item
        if match_glob(glob, user, ignore_case=False):
            return allow
    return False


class Acl:
    """An ordered list of `AclEntry`; build one with `Acl.parse` from ``rpc.acl``.

    Args:
        entries: the entries, first match wins.
    """

    def __init__(self, entries: Iterable[AclEntry]) -> None:
        self.entries = tuple(entries)

    def __repr__(self) -> str:
        return f"Acl({list(self.entries)!r})"

    @classmethod
    def parse(cls, value: str | Iterable[Mapping[str, Any]]) -> Acl:
        """Build an ACL from the value of ``rpc.acl``.

        Args:
            value: JSON text, ``@path`` of a file holding it, or already parsed entries.

        Raises:
            ValueError: if the JSON is invalid, not an array of objects, or an entry
                lacks ``acl`` or both ``method`` and ``ch_type``, or has a non-string field.
            OSError: if an ``@path`` file cannot be read.
        """
        if isinstance(value, str):
            if value.startswith("@"):
                with open(os.path.expanduser(value[1:]), encoding="utf-8") as f:
                    value = f.read()
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"rpc.acl is not JSON: {exc}") from exc
        if isinstance(value, (str, Mapping)) or not isinstance(value, Iterable):
            raise ValueError("rpc.acl must be a JSON array of entries")
        entries = []
        for i, raw in enumerate(value):
            if not isinstance(raw, Mapping):
                raise ValueError(f"rpc.acl[{i}] must be an object")
            fields = {name: raw.get(name) for name in ("acl", "method", "ch_type")}
            for name, field_value in fields.items():
                if field_value is not None and not isinstance(field_value, str):
                    raise ValueError(f"rpc.acl[{i}].{name} must be a string")
            if fields["acl"] is None or (fields["method"] is None and fields["ch_type"] is None):
                raise ValueError(f"rpc.acl[{i}] needs acl and at least one of method and ch_type")
            entries.append(AclEntry(fields["acl"], fields["method"], fields["ch_type"]))
        return cls(entries)

    def find(self, method: str, channel: str) -> AclEntry | None:
        """The first entry that covers method on channel, or None (then the call gets 403)."""
        for entry in self.entries:
            if entry.applies(method, channel):
                return entry
        return None
