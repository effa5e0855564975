"""The dashboard's assets (tether.web): served from package data, self-contained, no external URL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

import pytest

from tether import web
from tether.http import App, Request, serve

STATIC = files("tether.web").joinpath("static")
TEXT_ASSETS = [name for name in web.asset_names() if name.endswith((".html", ".js", ".css", ".svg"))]


async def fetch(port: int, path: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in fields.items()}, body


@asynccontextmanager
async def running(app: App) -> AsyncIterator[int]:
    async with serve(app, "127.0.0.1", 0) as server:
        yield server.port


def test_the_assets_are_package_data() -> None:
    names = web.asset_names()
    assert {"index.html", "app.js", "rpc.js", "digest.js", "style.css", "icon.svg"} <= set(names)
    for module in re.findall(r'from "\./([\w.]+)"', STATIC.joinpath("app.js").read_text()):
        assert module in names, module  # every import of the page is shipped


@pytest.mark.parametrize("name", TEXT_ASSETS)
def test_no_asset_reaches_another_host(name: str) -> None:
    text = STATIC.joinpath(name).read_text()
    # http://, https://, ws://, protocol-relative //host: none. The one namespace URL an SVG needs is fine.
    text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"\b(?:https?|wss?|ftp):", text, re.IGNORECASE), name
    assert not re.search(r"""(?:src|href|url\()\s*=?\s*["']?//""", text, re.IGNORECASE), name
    assert not re.search(r"@import", text), name


def test_every_form_control_in_the_page_has_a_label() -> None:
    page = STATIC.joinpath("index.html").read_text()
    labelled = set(re.findall(r'<label for="([\w-]+)"', page))
    for tag, attributes in re.findall(r"<(input|select|textarea)\b([^>]*)>", page):
        control = re.search(r'id="([\w-]+)"', attributes)
        assert control is not None, f"<{tag}{attributes}> has no id"
        assert control.group(1) in labelled or "aria-label=" in attributes, control.group(1)


async def test_mount_serves_the_page_and_its_assets() -> None:
    app = App()
    web.mount(app)
    async with running(app) as port:
        status, headers, body = await fetch(port, "/")
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert body == STATIC.joinpath("index.html").read_bytes()
        assert headers["content-security-policy"] == web.CONTENT_SECURITY_POLICY
        assert "connect-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-cache"
        expected = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
        expected[".svg"] = "image/svg+xml"
        for name in web.asset_names():
            status, fields, content = await fetch(port, f"/{name}")
            assert status == 200 and content == STATIC.joinpath(name).read_bytes(), name
            suffix = name[name.rfind(".") :]
            if suffix in expected:
                assert fields["content-type"] == expected[suffix], name

        # Revalidation: the same ETag gets 304 with no body.
        etag = headers["etag"]
        status, _, body = await fetch(port, "/", f'If-None-Match: W/"x", {etag}\r\n')
        assert (status, body) == (304, b"")
        status, _, _ = await fetch(port, "/", 'If-None-Match: "other"\r\n')
        assert status == 200
        status, _, _ = await fetch(port, "/missing.js")
        assert status == 404


async def test_mount_under_a_prefix() -> None:
    app = App()
    web.mount(app, prefix="/dash/")
    async with running(app) as port:
        status, headers, _ = await fetch(port, "/dash")
        assert (status, headers["location"]) == (308, "/dash/")
        status, headers, _ = await fetch(port, "/dash/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert (await fetch(port, "/dash/app.js"))[0] == 200
        assert (await fetch(port, "/"))[0] == 404


@pytest.mark.parametrize("prefix", ["", "dash/", "/dash", "//", "/a//b/"])
def test_mount_refuses_a_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="must start and end with '/'"):
        web.mount(App(), prefix=prefix)


def test_mount_refuses_to_shadow_a_route_and_registers_nothing() -> None:
    app = App()

    @app.get("/style.css")
    def own_style(request: Request) -> str:
        return "body {}"

    with pytest.raises(ValueError, match=r"route GET /style\.css is already registered"):
        web.mount(app)
    assert app._match("GET", "/")[0] is None  # nothing half-mounted
    web.mount(app, prefix="/ui/")  # elsewhere it fits
