"""Static files: path resolution (traversal), ranges, conditional requests, gzip, listing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.http.parser import Headers, HTTPError
from tether.http.static import FileBody, StaticFiles, content_type_for, http_date, parse_range


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    (www / "index.html").write_text("<h1>home</h1>")
    (www / "sub" / "a b.txt").write_text("spaced")
    (www / "big.bin").write_bytes(bytes(range(256)) * 1024)
    (www / ".htdigest").write_text("secret")
    (tmp_path / "secret.txt").write_text("outside")
    (www / "out").symlink_to(tmp_path / "secret.txt")
    (www / "outdir").symlink_to(tmp_path)
    (www / "in").symlink_to(www / "index.html")
    return www


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/../secret.txt", 403),
        ("/sub/../../secret.txt", 403),
        ("/%2e%2e/secret.txt", 403),
        ("/%2E%2E/secret.txt", 403),
        ("/sub/%2e%2e%2f%2e%2e%2fsecret.txt", 403),
        ("/..%2fsecret.txt", 403),
        ("/..%5csecret.txt", 403),
        ("/..\\secret.txt", 403),
        ("/sub\\..\\..\\secret.txt", 403),
        ("/index.html%00.txt", 403),
        ("/./index.html", 403),
        ("/out", 404),
        ("/outdir/secret.txt", 404),
        ("/.htdigest", 404),
        ("/missing", 404),
        ("/%ff", 400),
    ],
)
def test_traversal_refused(root: Path, path: str, status: int) -> None:
    static = StaticFiles(root)
    with pytest.raises(HTTPError) as info:
        static.resolve(path)
    assert info.value.status == status


def test_resolve(root: Path) -> None:
    static = StaticFiles(root)
    assert static.resolve("/sub/a%20b.txt")[0] == str(root / "sub" / "a b.txt")
    assert static.resolve("//sub///a%20b.txt")[0] == str(root / "sub" / "a b.txt")
    assert static.resolve("/in")[0] == str(root / "index.html")
    assert static.resolve("/")[0] == str(root)
    # Cached, and re-checked when the file changes under the same name.
    assert static.resolve("/in")[0] == str(root / "index.html")
    (root / "in").unlink()
    (root / "in").symlink_to(root.parent / "secret.txt")
    with pytest.raises(HTTPError):
        static.resolve("/in")
    with pytest.raises(ValueError):
        StaticFiles(root / "index.html")


def test_ranges() -> None:
    assert parse_range("bytes=0-1", 10) == [(0, 1)]
    assert parse_range("bytes=5-", 10) == [(5, 9)]
    assert parse_range("bytes=-3", 10) == [(7, 9)]
    assert parse_range("bytes=-30", 10) == [(0, 9)]
    assert parse_range("bytes=8-20", 10) == [(8, 9)]
    assert parse_range("bytes=0-0, 2-3", 10) == [(0, 0), (2, 3)]
    assert parse_range("bytes=10-", 10) == []
    assert parse_range("bytes=-0", 10) == []
    for bad in (
        "items=0-1",
        "bytes=",
        "bytes=a-b",
        "bytes=3-1",
        "bytes=1",
        "bytes=" + ",".join(["0-1"] * 17),
        "bytes=-",
        "bytes=1-x",
    ):
        assert parse_range(bad, 10) is None, bad


def test_file_response(root: Path) -> None:
    static = StaticFiles(root, cache_control="max-age=60")
    index = str(root / "index.html")
    status, headers, body = static.file_response("GET", Headers(), index)
    h = dict(headers)
    assert (status, body, h["Content-Type"], h["Cache-Control"]) == (
        200,
        b"<h1>home</h1>",
        "text/html; charset=utf-8",
        "max-age=60",
    )
    assert static.file_response("GET", Headers([("If-None-Match", h["ETag"])]), index)[0] == 304
    assert static.file_response("GET", Headers([("If-None-Match", f'"x", W/{h["ETag"]}')]), index)[0] == 304
    assert static.file_response("GET", Headers([("If-None-Match", "*")]), index)[0] == 304
    assert static.file_response("GET", Headers([("If-None-Match", '"x"')]), index)[0] == 200
    lm = h["Last-Modified"]
    assert static.file_response("GET", Headers([("If-Modified-Since", lm)]), index)[0] == 304
    assert (
        static.file_response("GET", Headers([("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")]), index)[
            0
        ]
        == 200
    )
    assert static.file_response("GET", Headers([("If-Modified-Since", "garbage")]), index)[0] == 200
    # Range, If-Range.
    status, headers, body = static.file_response("GET", Headers([("Range", "bytes=1-2")]), index)
    assert (status, body, dict(headers)["Content-Range"]) == (206, b"h1", "bytes 1-2/13")
    assert static.file_response("HEAD", Headers([("Range", "bytes=1-2")]), index)[0] == 200
    assert (
        static.file_response("GET", Headers([("Range", "bytes=1-2"), ("If-Range", '"old"')]), index)[0] == 200
    )
    assert (
        static.file_response("GET", Headers([("Range", "bytes=1-2"), ("If-Range", h["ETag"])]), index)[0]
        == 206
    )
    assert static.file_response("GET", Headers([("Range", "bytes=1-2"), ("If-Range", lm)]), index)[0] == 206
    status, headers, body = static.file_response("GET", Headers([("Range", "bytes=99-")]), index)
    assert (status, dict(headers)["Content-Range"]) == (416, "bytes */13")
    status, headers, body = static.file_response("GET", Headers([("Range", "bytes=0-0,-1")]), index)
    ctype = dict(headers)["Content-Type"]
    assert status == 206 and ctype.startswith("multipart/byteranges; boundary=")
    assert (
        isinstance(body, bytes)
        and b"Content-Range: bytes 0-0/13\r\n\r\n<" in body
        and b"bytes 12-12/13\r\n\r\n>" in body
    )
    # Large files are not read here.
    big = str(root / "big.bin")
    status, headers, body = static.file_response("GET", Headers(), big)
    assert isinstance(body, FileBody) and body.length == 262144 and body.segments == [(0, 262144)]
    status, headers, body = static.file_response("GET", Headers([("Range", "bytes=10-19,-5")]), big)
    assert isinstance(body, FileBody) and (10, 10) in body.segments and (262139, 5) in body.segments
    status, headers, body = static.file_response("GET", Headers([("Range", "bytes=10-19")]), big)
    assert isinstance(body, FileBody) and body.segments == [(10, 10)]
    with pytest.raises(HTTPError):
        static.file_response("GET", Headers(), str(root / "nothing"))


def test_gzip_and_cache_invalidation(root: Path) -> None:
    static = StaticFiles(root)
    css = root / "app.css"
    css.write_text("body{}")
    (root / "app.css.gz").write_bytes(b"\x1f\x8bfake")
    _, headers, body = static.file_response("GET", Headers([("Accept-Encoding", "br, gzip;q=0.5")]), str(css))
    h = dict(headers)
    assert body == b"\x1f\x8bfake" and h["Content-Encoding"] == "gzip" and h["Vary"] == "Accept-Encoding"
    assert h["Content-Type"] == "text/css; charset=utf-8"
    for refused in (None, "gzip;q=0", "br", "gzip;q=x"):
        accept = Headers([("Accept-Encoding", refused)] if refused else [])
        _status, headers, body = static.file_response("GET", accept, str(css))
        assert body == b"body{}" and dict(headers)["Vary"] == "Accept-Encoding", refused
    assert static.file_response("GET", Headers([("Accept-Encoding", "*")]), str(css))[2] == b"\x1f\x8bfake"
    css.write_text("body{color:red}")
    os.utime(css, ns=(1, 10**9))
    assert static.file_response("GET", Headers(), str(css))[2] == b"body{color:red}"


def test_listing_and_types(root: Path) -> None:
    (root / "sub" / "<script>.txt").write_text("x")
    page = StaticFiles(root).listing("/sub/", str(root / "sub")).decode()
    assert "&lt;script&gt;.txt" in page and "<script>" not in page and 'href="a%20b.txt"' in page
    assert ".htdigest" not in StaticFiles(root).listing("/", str(root)).decode()
    with pytest.raises(HTTPError):
        StaticFiles(root).listing("/x/", str(root / "x"))
    assert content_type_for("a.JS") == "text/javascript; charset=utf-8"
    assert content_type_for("a.unknownext") == "application/octet-stream"
    assert content_type_for("a.rst").startswith("text/")


@given(st.floats(min_value=0, max_value=2**33, allow_nan=False))
def test_http_date_is_the_imf_fixdate_email_utils_writes(timestamp: float) -> None:
    import email.utils

    assert http_date(timestamp) == email.utils.formatdate(timestamp, usegmt=True)
