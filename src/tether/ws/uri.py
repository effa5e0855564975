"""WebSocket URIs (RFC 6455 §3)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["WebSocketURI", "for_logs", "parse_uri", "without_userinfo"]


@dataclass(frozen=True)
class WebSocketURI:
    """A parsed ``ws://`` or ``wss://`` URI.

    Attributes:
        secure: True for wss.
        host: the host name or address, without brackets.
        port: the port, 80 or 443 by default.
        path: the request target: path and query, "/" at least.
        username, password: credentials from the URI, or None.
    """

    secure: bool
    host: str
    port: int
    path: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def host_header(self) -> str:
        """The Host header value (RFC 9110 §7.2): the port only when not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == (443 if self.secure else 80):
            return host
        return f"{host}:{self.port}"

    def basic_auth(self) -> str | None:
        """An Authorization header value for the URI's credentials, or None."""
        if self.username is None:
            return None
        token = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(token).decode("ascii")

    def request_headers(
        self, headers: Sequence[tuple[str, str]] | Mapping[str, str] | None
    ) -> list[tuple[str, str]]:
        """The caller's headers as pairs, plus Basic auth from the URI unless they set
        Authorization themselves."""
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        auth = self.basic_auth()
        if auth is not None and not any(k.lower() == "authorization" for k, _ in items):
            items.append(("Authorization", auth))
        return items


def parse_uri(uri: str) -> WebSocketURI:
    """Parse a WebSocket URI.

    Raises:
        ValueError: if the scheme is not ws or wss, the host is missing, or the
            URI has a fragment (RFC 6455 §3).
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"{uri!r} is not a ws:// or wss:// URI")
    if parts.fragment or uri.endswith("#"):
        raise ValueError(f"{uri!r} has a fragment")
    if not parts.hostname:
        raise ValueError(f"{uri!r} has no host")
    secure = parts.scheme == "wss"
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{uri!r} has an invalid port") from exc
    if port is None:
        port = 443 if secure else 80
    elif port == 0:
        raise ValueError(f"{uri!r} has an invalid port: 0")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return WebSocketURI(secure, parts.hostname, port, path, username, password)


def without_userinfo(url: str) -> str:
    """url without its ``user:password@``: what logs and error messages may show."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    return scheme + sep + authority.rpartition("@")[2] + slash + path


def for_logs(url: str) -> str:
    """url as a log line may show it: without ``user:password@`` and without its query,
    where backends often take a token (``wss://backend/rpc?token=…`` shows as ``…/rpc?…``)."""
    base, query, _ = without_userinfo(url).partition("?")
    return base + "?…" if query else base
