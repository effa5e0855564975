"""Which web pages may call a device's RPC from a browser (``/rpc`` over HTTP and WebSocket).

Mongoose OS answers every origin (``Access-Control-Allow-Origin: *``), so any web
page a user opens can drive a device that the user's browser can reach, a device
on ``127.0.0.1`` included: ``fetch("http://127.0.0.1:8000/rpc/Sys.Reboot")``, a
form POST, a WebSocket. tether refuses that by default and keeps everything that
is not a browser working:

- a request with an ``Origin`` header (a browser's cross-origin fetch, form POST or
  WebSocket) is served only when that origin is the device's own (its scheme-less
  ``host:port`` equals the request's ``Host``), or is in the allowed list, or the
  list has ``*`` (Mongoose OS' behaviour);
- a request without ``Origin`` that a browser marks as coming from another site
  (``Sec-Fetch-Site: cross-site`` or ``same-site``: an ``<img>`` or a link) is refused
  too, unless the list has ``*``;
- everything else (mos, curl, tether's clients, other programs) is served.

A refused request gets 403 (for a WebSocket, before the upgrade).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from tether.http.parser import HTTPError

__all__ = ["OriginPolicy"]

_FOREIGN_SITES = frozenset({"cross-site", "same-site"})


def _authority(origin: str) -> str | None:
    """The ``host[:port]`` of an ``http(s)://`` origin as written (browsers leave the default
    port out of both Origin and Host), lower-case; None for anything else (``null``…)."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    return parts.netloc.lower()


class OriginPolicy:
    """The web origins allowed to call besides the device's own (see the module docstring).

    Args:
        allowed: origins such as ``https://dash.example.com``; ``*`` allows every one.
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        allowed = [origin.strip() for origin in allowed if origin.strip()]
        self.any = "*" in allowed
        self.allowed = frozenset(origin.rstrip("/").lower() for origin in allowed if origin != "*")

    @classmethod
    def parse(cls, text: str) -> OriginPolicy:
        """A policy from a comma-separated list (the ``rpc.cors_origins`` setting)."""
        return cls(text.split(","))

    def __repr__(self) -> str:
        return f"OriginPolicy({'*' if self.any else sorted(self.allowed)!r})"

    def check(self, headers: Any) -> str:
        """The ``Access-Control-Allow-Origin`` value for the answer to a request with headers.

        Returns:
            The request's origin when it may call, or ``*`` for a request that is not
            a browser's cross-origin one.

        Raises:
            HTTPError: 403 when a web page of another origin makes the request.
        """
        origin: str | None = headers.get("origin")
        if origin is None:
            if not self.any and (headers.get("sec-fetch-site") or "").lower() in _FOREIGN_SITES:
                raise HTTPError(403, "requests from other web sites are not allowed")
            return "*"
        if self.any or origin.rstrip("/").lower() in self.allowed:
            return origin
        own = headers.get("host")
        if own is not None and _authority(origin) == own.strip().lower():
            return origin
        raise HTTPError(403, f"origin {origin!r} is not allowed")

    def authenticate(self, request: Any) -> str:
        """The check as a `tether.http.auth.Auth`, for a WebSocket upgrade (no user)."""
        self.check(request.headers)
        return ""
