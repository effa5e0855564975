"""What a device serves at ``/``: the dashboard, the app's own page, or ``http.document_root``."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from tests.web.test_mount import fetch

from tether.device.runtime import Runtime
from tether.errors import ConfigError

MANIFEST = 'name: pages\nversion: "1.0"\nfilesystem: [fs]\n'
OWN_ROOT = """
def init(device):
    @device.http.get("/")
    def home(request):
        return "the app's own page"
"""


def write_app(path: Path, main: str = "") -> Path:
    (path / "fs" / "www").mkdir(parents=True)
    (path / "tether.yml").write_text(MANIFEST)
    (path / "main.py").write_text(main or "def init(device):\n    pass\n")
    (path / "fs" / "index.html").write_text("<p>fs root</p>")
    (path / "fs" / "www" / "index.html").write_text("<p>www</p>")
    (path / "fs" / "rpc_auth.txt").write_text("admin:RPC:0123\n")
    return path


@asynccontextmanager
async def device(tmp_path: Path, *overrides: str, main: str = "") -> AsyncIterator[int]:
    runtime = Runtime(
        write_app(tmp_path / "app", main),
        tmp_path / "state",
        ["http.listen_addr=127.0.0.1:0", *overrides],
        log_stream=io.StringIO(),
    )
    await runtime.start()
    try:
        assert runtime.server is not None and runtime.server.http_port is not None
        yield runtime.server.http_port
    finally:
        await runtime.close()


async def test_the_dashboard_is_served_at_the_root(tmp_path: Path) -> None:
    async with device(tmp_path) as port:
        status, headers, body = await fetch(port, "/")
        assert status == 200 and b'<script type="module" src="app.js">' in body
        assert "content-security-policy" in headers
        assert (await fetch(port, "/rpc.js"))[0] == 200
        assert (await fetch(port, "/rpc_auth.txt"))[0] == 404  # the file system is not served


async def test_an_app_that_routes_the_root_keeps_it(tmp_path: Path) -> None:
    async with device(tmp_path, main=OWN_ROOT) as port:
        status, _, body = await fetch(port, "/")
        assert (status, body) == (200, b"the app's own page")
        assert (await fetch(port, "/app.js"))[0] == 404  # no dashboard at all


async def test_document_root_serves_the_device_file_system(tmp_path: Path) -> None:
    async with device(tmp_path, "http.document_root=/") as port:
        status, _, body = await fetch(port, "/")
        assert (status, body) == (200, b"<p>fs root</p>")
        assert (await fetch(port, "/www/"))[2] == b"<p>www</p>"
        assert (await fetch(port, "/app.js"))[0] == 404  # no dashboard
        # Rooted in the device file system: nothing above it is reachable.
        for path in ("/../tether.yml", "/%2e%2e/tether.yml", "/..%2fapp-files.json", "/www/../../conf9.json"):
            assert (await fetch(port, path))[0] in (400, 403, 404), path


async def test_document_root_names_a_folder_of_the_file_system(tmp_path: Path) -> None:
    async with device(tmp_path, "http.document_root=www") as port:
        assert (await fetch(port, "/"))[2] == b"<p>www</p>"
        assert (await fetch(port, "/index.html"))[2] == b"<p>www</p>"
        assert (await fetch(port, "/../index.html"))[0] in (400, 403, 404)


async def test_a_missing_document_root_serves_nothing(tmp_path: Path) -> None:
    async with device(tmp_path, "http.document_root=missing") as port:
        assert (await fetch(port, "/"))[0] == 404


async def test_a_document_root_outside_the_file_system_is_refused(tmp_path: Path) -> None:
    runtime = Runtime(
        write_app(tmp_path / "app"),
        tmp_path / "state",
        ["http.listen_addr=127.0.0.1:0", "http.document_root=../.."],
        log_stream=io.StringIO(),
    )
    with pytest.raises(ConfigError, match="leaves the file system"):
        await runtime.start()
    await runtime.close()
