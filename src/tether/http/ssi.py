"""Server Side Includes in .shtml files, as the Mongoose web server does them.

Directives::

    <!--#include virtual="/header.html" -->   a URL path in the web root (relative to the page)
    <!--#include file="part.html" -->          a file name relative to the page's directory
    <!--#call name -->                         the text returned by the app's @app.ssi("name") handler

Included .shtml files are processed in turn, up to a nesting limit. Whatever
an include names must resolve inside the web root. A directive that fails is
replaced by an HTML comment saying why, and the error is logged; the page
itself is still served.
"""

from __future__ import annotations

import inspect
import logging
import os
import posixpath
import re
from collections.abc import Awaitable, Callable
from typing import Any

from tether.http.parser import HTTPError
from tether.http.static import StaticFiles

__all__ = ["render"]

logger = logging.getLogger("tether.http")

_DIRECTIVE = re.compile(rb"<!--#([a-z]+)\s+(.*?)\s*-->", re.DOTALL)
_ARG = re.compile(rb'([a-z]+)\s*=\s*"([^"]*)"')
_MAX_FILE = 4 * 2**20

SsiHandler = Callable[[Any], "str | Awaitable[str]"]


def _comment(text: str) -> bytes:
    import html  # only for error comments

    return f"<!-- ssi: {html.escape(text).replace('--', '- -')} -->".encode()


async def render(
    static: StaticFiles,
    real: str,
    url_path: str,
    handlers: dict[str, SsiHandler],
    request: Any,
    *,
    max_depth: int = 8,
    _depth: int = 0,
) -> bytes:
    """Process the .shtml file at real (served as url_path) and return the page.

    Args:
        static: the web root the file and its includes live in.
        real: the file's resolved path.
        url_path: its URL path, the base of relative ``virtual`` includes.
        handlers: the ``#call`` handlers by name; each takes the request and
            returns (or, if async, resolves to) text inserted as it is.
        request: passed to the handlers.
        max_depth: the deepest nesting of includes.
    """
    try:
        with open(real, "rb") as f:
            source = f.read(_MAX_FILE + 1)
    except OSError:
        return _comment("cannot read included file")
    if len(source) > _MAX_FILE:
        return _comment("file too large for SSI")
    out: list[bytes] = []
    at = 0
    for match in _DIRECTIVE.finditer(source):
        out.append(source[at : match.start()])
        at = match.end()
        name = match.group(1).decode()
        args = match.group(2)
        try:
            if name == "call":
                out.append(await _call(args, handlers, request))
            elif name == "include":
                out.append(
                    await _include(
                        static, real, url_path, args, handlers, request, max_depth=max_depth, depth=_depth
                    )
                )
            else:
                out.append(_comment(f"unknown directive {name}"))
        except _SsiError as exc:
            logger.warning("SSI in %s: %s", url_path, exc)
            out.append(_comment(str(exc)))
    out.append(source[at:])
    return b"".join(out)


class _SsiError(Exception):
    pass


async def _call(args: bytes, handlers: dict[str, SsiHandler], request: Any) -> bytes:
    name = args.split()[0].decode("latin-1") if args.split() else ""
    handler = handlers.get(name)
    if handler is None:
        raise _SsiError(f"no handler for #call {name}")
    result = handler(request)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, bytes):
        return result
    return str(result).encode("utf-8")


async def _include(
    static: StaticFiles,
    real: str,
    url_path: str,
    args: bytes,
    handlers: dict[str, SsiHandler],
    request: Any,
    *,
    max_depth: int,
    depth: int,
) -> bytes:
    found = _ARG.match(args)
    if found is None:
        raise _SsiError('#include needs virtual="..." or file="..."')
    kind, value = found.group(1).decode(), found.group(2).decode("utf-8", "replace")
    if depth >= max_depth:
        raise _SsiError(f"includes nested deeper than {max_depth}")
    if kind == "virtual":
        target_url = value.partition("?")[0]
        if not target_url.startswith("/"):
            target_url = posixpath.join(posixpath.dirname(url_path), target_url)
        try:
            target, _ = static.resolve(target_url)
        except HTTPError as exc:
            raise _SsiError(f"#include virtual {value!r}: {exc.status}") from None
        if os.path.isdir(target):
            raise _SsiError(f"#include virtual {value!r} is a directory")
    elif kind == "file":
        if value.startswith("/") or "\\" in value or "\x00" in value:
            raise _SsiError(f"#include file {value!r} must be a relative path")
        target = os.path.realpath(os.path.join(os.path.dirname(real), value))
        hidden = os.path.basename(target).lower().startswith(".ht")  # .htdigest, as for static files
        if hidden or not static.inside(target) or not os.path.isfile(target):
            raise _SsiError(f"#include file {value!r} is not a file in the web root")
        target_url = posixpath.join(posixpath.dirname(url_path), value)
    else:
        raise _SsiError(f"#include {kind}= is not supported")
    if target.endswith(".shtml"):
        return await render(
            static, target, target_url, handlers, request, max_depth=max_depth, _depth=depth + 1
        )
    try:
        with open(target, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError:
        raise _SsiError(f"cannot read {value!r}") from None
    if len(data) > _MAX_FILE:
        raise _SsiError(f"{value!r} is too large to include")
    return data
