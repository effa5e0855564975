"""The device dashboard: static HTML, CSS and ES modules served from package data.

Every tether device serves it at ``/`` (see docs/dashboard.md). The page talks to
the device only through the public RPC on the WebSocket ``/rpc``: calls, and the
``Console.Event`` and ``Metrics.Event`` notifications on the same connection. It
needs no build step and makes no request to any other host: the responses carry a
Content-Security-Policy that lets the browser load nothing from elsewhere.

Mount it on any `tether.http.App`::

    from tether import web
    from tether.http import App

    app = App()
    web.mount(app)                 # GET / and the assets beside it
    web.mount(other, prefix="/dashboard/")
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Callable
from typing import TYPE_CHECKING

from tether.http import App, Request, Response
from tether.http.static import content_type_for

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["CONTENT_SECURITY_POLICY", "asset_names", "mount"]

#: Sent with every asset: the page may load and connect to its own origin only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"
)

_INDEX = "index.html"


def _static() -> Traversable:
    return importlib.resources.files(__name__).joinpath("static")


def asset_names() -> list[str]:
    """The file names of the dashboard, sorted (``index.html`` among them)."""
    return sorted(entry.name for entry in _static().iterdir() if entry.is_file())


def _handler(name: str) -> Callable[[Request], Response]:
    resource = _static().joinpath(name)
    content_type = content_type_for(name)

    def serve(request: Request) -> Response:
        # Read on each request: the dashboard is loaded rarely and a device keeps no copy.
        body = resource.read_bytes()
        etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
        headers = [
            ("ETag", etag),
            ("Cache-Control", "no-cache"),
            ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ]
        match = request.headers.get("if-none-match")
        if match is not None and etag in (tag.strip() for tag in match.split(",")):
            return Response(b"", 304, headers)
        return Response(body, headers=headers, content_type=content_type)

    return serve


def mount(app: App, *, prefix: str = "/") -> None:
    """Serve the dashboard on app: ``GET prefix`` is the page, its assets are beside it.

    Args:
        app: the HTTP app (a device's ``device.http``).
        prefix: the path of the page, starting and ending with ``/``; a prefix other
            than ``/`` also answers without its trailing slash, with a redirect.

    Raises:
        ValueError: if prefix is malformed, or app already has a GET route at one of
            the dashboard's paths (nothing is registered then).
    """
    if not (prefix.startswith("/") and prefix.endswith("/")) or "//" in prefix:
        raise ValueError(f"prefix {prefix!r} must start and end with '/'")
    routes: dict[str, Callable[[Request], Response]] = {prefix: _handler(_INDEX)}
    for name in asset_names():
        routes[prefix + name] = _handler(name)
    if prefix != "/":
        location = prefix

        def redirect(request: Request) -> Response:
            return Response(b"", 308, [("Location", location)])

        routes[prefix[:-1]] = redirect
    for path in routes:
        if app.has_route("GET", path):
            raise ValueError(f"route GET {path} is already registered")
    for path, handler in routes.items():
        app.get(path)(handler)
