"""tether's HTTP server against real clients: httpx, aiohttp, curl and raw sockets.

Each test starts its own server on 127.0.0.1, port 0, inside one event loop run;
curl runs as a subprocess that ends by itself (or is killed by PID). Nothing waits
on a clock: the slowloris test configures a short header timeout and awaits the
server's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import os
import tracemalloc
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tether.http import App, BasicAuth, BearerAuth, DigestAuth, Request, Response, serve, write_htdigest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TIMEOUT = 30.0
CURL = "/usr/bin/curl"


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "data.txt").write_bytes(b"0123456789" * 10)
    (root / "app.js").write_text("console.log('plain');\n")
    (root / "app.js.gz").write_bytes(gzip.compress(b"console.log('zipped');\n"))
    (root / "big.bin").write_bytes(os.urandom(300_000))
    (root / "page.shtml").write_text('<p><!--#call device --></p><!--#include virtual="part.html" -->')
    (root / "part.html").write_text("<i>part</i>")
    (root / ".htdigest").write_text("admin:device:HASH")
    (root / "leak.shtml").write_text(
        '<!--#include file=".htdigest" --><!--#include file="../secret.txt" -->'
        '<!--#include virtual="/../secret.txt" --><!--#include virtual="page.shtml" -->'
    )
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    return root


def make_app(www: Path, **kwargs: Any) -> App:
    app = App(web_root=www, **kwargs)

    @app.get("/api/cpu")
    async def cpu(request: Request) -> dict[str, Any]:
        return {"cpu": 12.5}

    @app.post("/echo")
    async def echo(request: Request) -> bytes:
        return await request.body()

    @app.get("/chunks")
    async def chunks(request: Request) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"part{i};".encode()

        return gen()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        form = await request.form()
        return {k: (v if isinstance(v, str) else v.size) for k, v in form.items()}

    @app.ssi("device")
    def device(request: Request) -> str:
        return "pump-7"

    return app


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        CURL, "-sS", "--max-time", "20", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, 9)
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


async def raw(port: int, data: bytes, *, until_eof: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await reader.read() if until_eof else await reader.read(65536)
    finally:
        writer.close()


# ------------------------------------------------------------------ static files


def test_conditional_requests_with_httpx_and_curl(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www)) as server:
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base) as client:
                first = await client.get("/index.html")
                assert first.status_code == 200 and first.text == "<h1>home</h1>\n"
                assert first.headers["content-type"] == "text/html; charset=utf-8"
                again = await client.get("/index.html", headers={"If-None-Match": first.headers["etag"]})
                assert again.status_code == 304 and again.content == b""
                since = await client.get("/", headers={"If-Modified-Since": first.headers["last-modified"]})
                assert since.status_code == 304
            rc, out, _ = await curl(
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                f"If-None-Match: {first.headers['etag']}",
                base + "/index.html",
            )
            assert (rc, out) == (0, b"304")
            rc, out, _ = await curl(
                "-z", first.headers["last-modified"], "-w", "%{http_code}", base + "/index.html"
            )
            assert (rc, out) == (0, b"304")

    run(main())


def test_ranges_with_curl_and_aiohttp(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www)) as server:
            base = f"http://127.0.0.1:{server.port}"
            rc, out, _ = await curl("-r", "10-14", base + "/data.txt")
            assert (rc, out) == (0, b"01234")
            rc, out, _ = await curl("-r", "0-1,-2", "-D", "-", base + "/data.txt")
            assert b"206" in out.split(b"\r\n")[0] and b"multipart/byteranges; boundary=" in out
            assert (
                b"Content-Range: bytes 0-1/100\r\n\r\n01" in out
                and b"Content-Range: bytes 98-99/100\r\n\r\n89" in out
            )
            rc, out, _ = await curl("-r", "500-", "-o", "/dev/null", "-w", "%{http_code}", base + "/data.txt")
            assert out == b"416"
            big = (www / "big.bin").read_bytes()
            async with aiohttp.ClientSession() as session:
                async with session.get(base + "/big.bin", headers={"Range": "bytes=100000-"}) as resp:
                    assert resp.status == 206 and await resp.read() == big[100000:]
                    assert resp.headers["Content-Range"] == f"bytes 100000-{len(big) - 1}/{len(big)}"
                async with session.get(base + "/big.bin", headers={"Range": "bytes=0-9,-10"}) as resp:
                    body = await resp.read()
                    assert resp.status == 206 and big[:10] in body and big[-10:] in body
                async with session.get(base + "/big.bin") as resp:
                    assert await resp.read() == big  # sent with sendfile
                async with session.head(base + "/big.bin") as resp:
                    assert resp.headers["Content-Length"] == str(len(big)) and await resp.read() == b""
                async with session.get(base + "/data.txt", headers={"Range": "bytes=200-"}) as resp:
                    assert resp.status == 416 and resp.headers["Content-Range"] == "bytes */100"

    run(main())


def test_precompressed_gzip(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www)) as server:
            base = f"http://127.0.0.1:{server.port}"
            _rc, out, _ = await curl("--compressed", "-D", "-", base + "/app.js")
            assert b"Content-Encoding: gzip" in out and out.endswith(b"console.log('zipped');\n")
            assert b"Vary: Accept-Encoding" in out and b"Content-Type: text/javascript" in out
            async with httpx.AsyncClient() as client:
                plain = await client.get(base + "/app.js", headers={"Accept-Encoding": "identity"})
                assert plain.text == "console.log('plain');\n" and plain.headers["vary"] == "Accept-Encoding"
                zipped = await client.get(base + "/app.js")
                assert (
                    zipped.text == "console.log('zipped');\n" and zipped.headers["content-encoding"] == "gzip"
                )

    run(main())


TRAVERSAL = [
    "/../secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/.%2e/secret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/%5c..%5csecret.txt",
    "/index.html%00/../../secret.txt",
    "/escape",
    "/./../secret.txt",
    "//../secret.txt",
    "/%252e%252e/secret.txt",
]


def test_traversal_table(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www, directory_listing=True)) as server:
            for path in TRAVERSAL:
                answer = await raw(
                    server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
                status = answer.split(b" ", 2)[1]
                assert status in (b"403", b"404"), (path, answer[:100])
                assert b"TOP SECRET" not in answer, path
                _rc, out, _ = await curl(
                    "--path-as-is",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    f"http://127.0.0.1:{server.port}{path}",
                )
                assert out in (b"400", b"403", b"404"), (path, out)

    run(main())


def test_directory_listing_ssi_and_redirect(www: Path) -> None:
    async def main() -> None:
        (www / "sub").mkdir()
        (www / "sub" / "<b>.txt").write_text("x")
        async with (
            serve(make_app(www, directory_listing=True)) as server,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
        ):
            page = await client.get("/page.shtml")
            assert page.text == "<p>pump-7</p><i>part</i>" and page.headers["content-type"].startswith(
                "text/html"
            )
            leak = await client.get("/leak.shtml")
            assert "HASH" not in leak.text and "TOP SECRET" not in leak.text and "<p>pump-7</p>" in leak.text
            moved = await client.get("/sub")
            assert moved.status_code == 301 and moved.headers["location"] == "/sub/"
            listing = await client.get("/sub/")
            assert "&lt;b&gt;.txt" in listing.text and "<b>.txt" not in listing.text
        async with (
            serve(make_app(www)) as server,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
        ):
            assert (await client.get("/sub/")).status_code == 403

    run(main())


# ---------------------------------------------------------------------- protocol


def test_chunked_both_ways_with_curl_and_httpx(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www)) as server:
            base = f"http://127.0.0.1:{server.port}"
            _, out, _ = await curl("-D", "-", base + "/chunks")
            assert b"Transfer-Encoding: chunked" in out and out.endswith(b"part0;part1;part2;")
            _rc, out, _ = await curl(
                "-H", "Transfer-Encoding: chunked", "--data-binary", "hello chunked", base + "/echo"
            )
            assert out == b"hello chunked"

            async def parts() -> AsyncIterator[bytes]:
                for i in range(50):
                    yield b"x" * i

            async with httpx.AsyncClient() as client:
                echoed = await client.post(base + "/echo", content=parts())
                assert echoed.content == b"".join(b"x" * i for i in range(50))
                streamed = await client.get(base + "/chunks")
                assert streamed.text == "part0;part1;part2;"

    run(main())


def test_pipelining_answers_in_order(www: Path) -> None:
    async def main() -> None:
        app = make_app(www)

        @app.get("/slow/{n}")
        async def slow(request: Request) -> str:
            await asyncio.sleep(0)  # yields to the loop: the next requests are already buffered
            return request.path_params["n"]

        async with serve(app) as server:
            requests = b"".join(f"GET /slow/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5))
            requests += b"GET /data.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-2\r\n\r\n"
            requests += b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            requests += b"GET /api/cpu HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            answer = await raw(server.port, requests)
            bodies = [part.split(b"\r\n\r\n", 1)[1][:20] for part in answer.split(b"HTTP/1.1 ")[1:]]
            assert bodies == [b"0", b"1", b"2", b"3", b"4", b"012", b"abc", b'{"cpu":12.5}']

    run(main())


def test_expect_100_continue(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www)) as server:
            base = f"http://127.0.0.1:{server.port}"
            _rc, out, err = await curl(
                "-v", "-H", "Expect: 100-continue", "--data-binary", "x" * 2000, base + "/echo"
            )
            assert out == b"x" * 2000 and b"HTTP/1.1 100 Continue" in err
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
            )
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(5) == b"hello"
            # Refused before the body: no 100, a final answer, and the connection closes.
            writer.write(
                b"POST /missing HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
            )
            answer = await reader.read()
            assert answer.startswith(b"HTTP/1.1 404") and b"Connection: close" in answer
            writer.close()

    run(main())


def test_head_and_keep_alive_with_aiohttp(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www)) as server:
            base = f"http://127.0.0.1:{server.port}"
            connector = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=connector) as session:
                for _ in range(20):
                    async with session.get(base + "/api/cpu") as resp:
                        assert await resp.json() == {"cpu": 12.5}
                async with session.head(base + "/api/cpu") as resp:
                    assert resp.headers["Content-Length"] == "12" and await resp.read() == b""
            assert len(server._connections) <= 1

    run(main())


@pytest.mark.parametrize(
    "line",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1 x\r\nHost: x\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTX/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
    ],
)
def test_malformed_request_lines_get_400(www: Path, line: bytes) -> None:
    async def main() -> None:
        async with serve(make_app(www)) as server:
            answer = await raw(server.port, line)
            assert answer.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in answer
            assert b"Traceback" not in answer

    run(main())


def test_oversized_heads(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www), max_head_size=4096, max_request_line=1024) as server:
            answer = await raw(
                server.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 431 ")
            answer = await raw(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n")
            assert answer.startswith(b"HTTP/1.1 431 ")
            answer = await raw(server.port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 414 ")
            async with httpx.AsyncClient() as client:
                resp = await client.get(f"http://127.0.0.1:{server.port}/", headers={"X-Big": "a" * 5000})
                assert resp.status_code == 431

    run(main())


def test_slowloris_cut_off_while_others_are_served(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www), header_timeout=0.5) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
            cut_off = asyncio.ensure_future(reader.read())
            async with httpx.AsyncClient() as client:
                for _ in range(5):
                    assert (await client.get(f"http://127.0.0.1:{server.port}/api/cpu")).status_code == 200
            assert not cut_off.done()
            answer = await cut_off  # the server answers 408 and closes
            assert answer.startswith(b"HTTP/1.1 408 ")
            writer.close()
            # A client that connects and sends nothing is closed too.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await reader.read() == b""
            writer.close()

    run(main())


def test_ten_thousand_requests_flat_memory(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www)) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            batch = (
                b"GET /api/cpu HTTP/1.1\r\nHost: x\r\n\r\nGET /index.html HTTP/1.1\r\nHost: x\r\n\r\n" * 50
            )

            async def round_trip() -> None:
                writer.write(batch)
                for _ in range(100):
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)

            for _ in range(10):  # warm up: caches, free lists
                await round_trip()
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for _ in range(100):  # 10,000 requests on one connection
                    await round_trip()
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            writer.close()
            assert after - before < 256 * 1024, f"memory grew by {after - before} bytes"

    run(main())


def test_graceful_shutdown_finishes_in_flight_requests(www: Path) -> None:
    async def main() -> None:
        app = make_app(www)
        started = asyncio.Event()
        release = asyncio.Event()

        @app.get("/wait")
        async def wait(request: Request) -> str:
            started.set()
            await release.wait()
            return "finished"

        server = await serve(app)
        async with httpx.AsyncClient() as client:
            pending = asyncio.ensure_future(client.get(f"http://127.0.0.1:{server.port}/wait"))
            await started.wait()
            server.close()
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", server.port)
            release.set()
            response = await pending
            assert response.text == "finished" and response.headers["connection"] == "close"
        await server.wait_closed()

    run(main())


def test_max_connections(www: Path) -> None:
    async def main() -> None:
        async with serve(make_app(www), max_connections=1) as server:
            first = await asyncio.open_connection("127.0.0.1", server.port)
            answer = await raw(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503 ")
            first[1].write(b"GET /api/cpu HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await first[0].read()).startswith(b"HTTP/1.1 200 ")
            first[1].close()

    run(main())


# ---------------------------------------------------------------- auth and forms


def test_auth_challenges_and_success(www: Path, tmp_path: Path) -> None:
    async def main() -> None:
        htdigest = tmp_path / ".htdigest"
        write_htdigest(htdigest, "admin", "device", "s3cret")
        app = make_app(www, static_auth=BasicAuth({"alice": "wonderland"}))

        @app.get("/digest", auth=DigestAuth(htdigest, "device"))
        def digest(request: Request) -> str:
            return f"hello {request.user}"

        @app.get("/basic", auth=BasicAuth({"alice": "wonderland"}))
        def basic(request: Request) -> str:
            return f"hello {request.user}"

        @app.get("/bearer", auth=BearerAuth({"t0ken": "robot"}))
        def bearer(request: Request) -> str:
            return f"hello {request.user}"

        async with serve(app) as server:
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base) as client:
                challenge = await client.get("/digest")
                assert challenge.status_code == 401
                value = challenge.headers["www-authenticate"]
                assert (
                    value.startswith('Digest realm="device"') and 'qop="auth"' in value and "nonce=" in value
                )
                assert (
                    await client.get("/digest", auth=httpx.DigestAuth("admin", "s3cret"))
                ).text == "hello admin"
                assert (
                    await client.get("/digest", auth=httpx.DigestAuth("admin", "wrong"))
                ).status_code == 401
                assert (
                    (await client.get("/basic"))
                    .headers["www-authenticate"]
                    .startswith('Basic realm="tether"')
                )
                assert (await client.get("/basic", auth=("alice", "wonderland"))).text == "hello alice"
                assert (await client.get("/basic", auth=("alice", "nope"))).status_code == 401
                assert (await client.get("/bearer")).status_code == 401
                wrong = await client.get("/bearer", headers={"Authorization": "Bearer bad"})
                assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
                ok = await client.get("/bearer", headers={"Authorization": "Bearer t0ken"})
                assert ok.text == "hello robot"
                assert (await client.get("/index.html")).status_code == 401
                assert (await client.get("/index.html", auth=("alice", "wonderland"))).status_code == 200
            _, out, _ = await curl("--digest", "-u", "admin:s3cret", base + "/digest")
            assert out == b"hello admin"
            _rc, out, _ = await curl(
                "-o", "/dev/null", "-w", "%{http_code}", "--digest", "-u", "admin:bad", base + "/digest"
            )
            assert out == b"401"

    run(main())


def test_uploads_and_limits(www: Path, tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()

    async def main() -> None:
        app = make_app(www, upload_dir=uploads, max_upload_size=100_000, max_body_size=1000)
        async with serve(app) as server:
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base) as client:
                ok = await client.post(
                    "/upload", data={"name": "pump"}, files={"f": ("a.bin", b"z" * 50_000)}
                )
                assert ok.json() == {"name": "pump", "f": 50_000}
                urlencoded = await client.post("/upload", data={"a": "1", "b": "é"})
                assert urlencoded.json() == {"a": "1", "b": "é"}
                # Announced too big: refused before the handler runs.
                big = await client.post("/upload", files={"f": ("a.bin", b"z" * 200_000)})
                assert big.status_code == 413
                # Chunked, so only found too big while streaming to disk.
                body = (
                    b'--B\r\nContent-Disposition: form-data; name="f"; filename="x.bin"\r\n\r\n'
                    + b"z" * 200_000
                    + b"\r\n--B--\r\n"
                )

                async def pieces() -> AsyncIterator[bytes]:
                    for i in range(0, len(body), 8192):
                        yield body[i : i + 8192]

                streamed = await client.post(
                    "/upload", content=pieces(), headers={"Content-Type": "multipart/form-data; boundary=B"}
                )
                assert streamed.status_code == 413
                too_big_body = await client.post("/echo", content=b"x" * 5000)
                assert too_big_body.status_code == 413
            _rc, out, _ = await curl(
                "-o", "/dev/null", "-w", "%{http_code}", "-F", "f=@" + str(www / "big.bin"), base + "/upload"
            )
            assert out == b"413"
        assert list(uploads.iterdir()) == []  # nothing left behind, refused or not

    run(main())


def test_handler_errors_never_leak_a_traceback(www: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        app = make_app(www)

        @app.get("/boom")
        async def boom(request: Request) -> None:
            raise RuntimeError("secret detail")

        @app.get("/sync-boom")
        def sync_boom(request: Request) -> None:
            raise KeyError("secret detail")

        @app.get("/teapot")
        def teapot(request: Request) -> Response:
            return Response("short and stout", status=418, headers={"X-Pot": "1"})

        async with (
            serve(app) as server,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
        ):
            for path in ("/boom", "/sync-boom"):
                resp = await client.get(path)
                assert resp.status_code == 500 and "secret" not in resp.text and "Traceback" not in resp.text
            resp = await client.get("/teapot")
            assert (resp.status_code, resp.text, resp.headers["x-pot"]) == (418, "short and stout", "1")
            resp = await client.post("/api/cpu")
            assert resp.status_code == 405 and resp.headers["allow"] == "GET, HEAD"

    run(main())
    assert "secret detail" in caplog.text  # logged on the server's side


def test_websocket_on_the_same_port_and_broadcast(www: Path) -> None:
    async def main() -> None:
        app = make_app(www)
        joined = asyncio.Event()

        @app.websocket("/ws")
        async def ws(websocket: Any) -> None:
            joined.set()
            async for message in websocket:
                await websocket.send(f"echo {message}")

        async with serve(app) as server, aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{server.port}"
            async with session.ws_connect(base + "/ws") as client:
                await client.send_str("hi")
                assert (await client.receive()).data == "echo hi"
                await joined.wait()
                assert await app.broadcast("/ws", "pushed") == 1
                assert (await client.receive()).data == "pushed"
                assert int(app.broadcast("/ws", b"bin")) == 1
                assert (await client.receive()).data == b"bin"
            async with session.get(base + "/ws") as resp:
                assert resp.status == 426

    run(main())
