"""The application object, results, requests and auth schemes, without a network."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

import pytest

from tether.http import (
    App,
    BasicAuth,
    BearerAuth,
    DigestAuth,
    FormData,
    HTTPError,
    Request,
    Response,
    UploadFile,
    write_htdigest,
)
from tether.http.auth import parse_auth_params
from tether.http.parser import Headers


def request(
    app: App, target: str = "/", method: str = "GET", headers: list[tuple[str, str]] | None = None
) -> Request:
    return Request(method, target, Headers(headers or []), app=app)


def test_routing() -> None:
    app = App()

    @app.get("/items/{name}")
    def item(r: Request) -> str:
        return "x"

    @app.route("/files/{rest:path}", methods=["GET", "put"])
    def files(r: Request) -> str:
        return "y"

    @app.delete("/items/{name}")
    @app.patch("/items/{name}")
    @app.put("/items/{name}")
    @app.post("/x")
    def other(r: Request) -> None:
        return None

    route, params, allowed = app._match("GET", "/items/a b")
    assert route is not None and route.handler is item and params == {"name": "a b"}
    assert app._match("HEAD", "/items/a")[0] is not None
    assert app._match("GET", "/items/a/b") == (None, {}, [])
    assert app._match("PUT", "/files/a/b/c")[1] == {"rest": "a/b/c"}
    route, _, allowed = app._match("POST", "/items/a")
    assert route is None and allowed == ["DELETE", "GET", "HEAD", "PATCH", "PUT"]
    with pytest.raises(ValueError):
        app.post("/x")(other)
    with pytest.raises(ValueError):
        app.get("no-slash")
    app.websocket("/ws")(other)
    with pytest.raises(ValueError):
        app.websocket("/ws")
    with pytest.raises(KeyError):
        app.broadcast("/nowhere", "x")
    assert app.websockets("/ws") == frozenset() and app.websockets("/none") == frozenset()
    assert int(app.broadcast("/ws", "x")) == 0 and "0" in repr(app.broadcast("/ws", "x"))


def test_request_target() -> None:
    app = App()
    r = request(app, "/a%20b/c?x=1&x=2&y=&z=%C3%A9")
    assert (r.path, r.raw_path, r.query_string) == ("/a b/c", "/a%20b/c", "x=1&x=2&y=&z=%C3%A9")
    assert (
        r.query["x"] == "1"
        and r.query.get_all("x") == ["1", "2"]
        and r.query["y"] == ""
        and r.query["z"] == "é"
    )
    assert len(r.query) == 3 and list(r.query) == ["x", "y", "z"] and "x" in repr(r.query)
    assert r.query.multi_items()[1] == ("x", "2")
    assert request(app, "http://host:8/p?q").raw_path == "/p" and request(app, "http://host").raw_path == "/"
    assert repr(r) == "<Request GET /a%20b/c?x=1&x=2&y=&z=%C3%A9>"


def test_response_and_upload(tmp_path: Path) -> None:
    assert Response({"a": 1}, 201, {"X": "1"}).headers == [("X", "1")]
    assert (
        Response(headers=[("Y", "2")]).headers == [("Y", "2")]
        and repr(Response(status=404)) == "<Response 404>"
    )
    path = tmp_path / "up"
    path.write_bytes(b"data")
    upload = UploadFile("C:\\Users\\me\\evil/../name.txt", "text/plain", Headers(), str(path))
    assert upload.filename == "name.txt" and upload.read() == b"data" and "name.txt" in repr(upload)
    upload.save(tmp_path / "kept")
    upload._discard()
    assert (tmp_path / "kept").read_bytes() == b"data"
    other = UploadFile("a", "b", Headers(), str(tmp_path / "gone"))
    other._discard()  # already gone: no error
    assert FormData([("a", "1")])["a"] == "1"


async def body_readers() -> None:
    app = App(max_body_size=10)
    r = Request("POST", "/", Headers([("Content-Type", "application/json")]), app=app, has_body=True)
    r._feed(b'{"a": ')
    r._feed(b"1}")
    r._end()
    assert await r.json() == {"a": 1}
    assert await r.body() == b'{"a": 1}'
    assert [c async for c in r.stream()] == [b'{"a": 1}']
    bad = Request("POST", "/", Headers(), app=app, has_body=True)
    bad._feed(b"{")
    bad._end()
    with pytest.raises(HTTPError) as info:
        await bad.json()
    assert info.value.status == 400
    big = Request("POST", "/", Headers(), app=app, has_body=True)
    big._feed(b"x" * 11)
    big._end()
    with pytest.raises(HTTPError):
        await big.body()
    with pytest.raises(Exception, match="already read"):
        await big.body()
    form = Request("POST", "/", Headers([("Content-Type", "text/plain")]), app=app, has_body=True)
    with pytest.raises(HTTPError) as info:
        await form.form()
    assert info.value.status == 415
    nobound = Request(
        "POST", "/", Headers([("Content-Type", "multipart/form-data; boundary=" + "x" * 80)]), app=app
    )
    with pytest.raises(HTTPError):
        await nobound.form()
    empty = Request("GET", "/", Headers(), app=app)
    assert await empty.body() == b"" and [c async for c in empty.stream()] == []


async def multipart_cut_short(tmp_path: Path) -> None:
    app = App(upload_dir=tmp_path)
    r = Request(
        "POST", "/", Headers([("Content-Type", "multipart/form-data; boundary=B")]), app=app, has_body=True
    )
    r._feed(b'--B\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\nabc')
    r._end()
    with pytest.raises(HTTPError):
        await r.form()
    assert list(tmp_path.iterdir()) == []
    small = App(max_form_memory=3)
    r = Request(
        "POST", "/", Headers([("Content-Type", "multipart/form-data; boundary=B")]), app=small, has_body=True
    )
    r._feed(b'--B\r\nContent-Disposition: form-data; name="f"\r\n\r\nabcdef\r\n--B--')
    r._end()
    with pytest.raises(HTTPError) as info:
        await r.form()
    assert info.value.status == 413


def test_body_readers_without_a_connection() -> None:
    asyncio.run(body_readers())


def test_multipart_cut_short_leaves_nothing(tmp_path: Path) -> None:
    asyncio.run(multipart_cut_short(tmp_path))


def basic(user: str, password: str) -> list[tuple[str, str]]:
    return [("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())]


def test_basic_and_bearer() -> None:
    app = App()
    auth = BasicAuth({"u": "p"}, realm="r")
    assert auth.authenticate(request(app, headers=basic("u", "p"))) == "u"
    for headers in (
        basic("u", "x"),
        basic("x", "p"),
        [("Authorization", "Basic !!")],
        [("Authorization", "Basic " + base64.b64encode(b"nocolon").decode())],
        [],
    ):
        with pytest.raises(HTTPError) as info:
            auth.authenticate(request(app, headers=headers))
        assert info.value.status == 401 and info.value.headers[0][1].startswith('Basic realm="r"')
    checked = BasicAuth(lambda u, p: u == p)
    assert checked.authenticate(request(app, headers=basic("a", "a"))) == "a"
    bearer = BearerAuth(["t1"])
    assert bearer.authenticate(request(app, headers=[("Authorization", "Bearer t1")])) == "bearer"
    assert (
        BearerAuth(lambda t: "me" if t == "x" else None).authenticate(
            request(app, headers=[("Authorization", "bearer x")])
        )
        == "me"
    )
    with pytest.raises(HTTPError):
        bearer.authenticate(request(app, headers=[("Authorization", "Bearer t2")]))


def test_digest_with_fake_clock(tmp_path: Path) -> None:
    path = tmp_path / "htdigest"
    write_htdigest(path, "admin", "dev", "old")
    write_htdigest(path, "admin", "dev", "pw")  # replaces the line
    write_htdigest(path, "other", "elsewhere", "pw")
    assert path.read_text().count("admin:dev:") == 1
    with pytest.raises(ValueError):
        write_htdigest(path, "a:b", "dev", "pw")
    now = [1000.0]
    auth = DigestAuth(path, "dev", nonce_lifetime=60, clock=lambda: now[0])
    app = App()
    with pytest.raises(HTTPError) as info:
        auth.authenticate(request(app, "/x"))
    challenge = parse_auth_params(info.value.headers[0][1].partition(" ")[2])
    nonce = challenge["nonce"]

    def answer(
        nc: str, password: str = "pw", uri: str = "/x", qop: str | None = "auth", nonce: str = nonce
    ) -> list[tuple[str, str]]:
        ha1 = hashlib.md5(f"admin:dev:{password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"GET:{uri}".encode()).hexdigest()
        if qop:
            response = hashlib.md5(f"{ha1}:{nonce}:{nc}:cn:auth:{ha2}".encode()).hexdigest()
            extra = f', qop=auth, nc={nc}, cnonce="cn"'
        else:
            response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
            extra = ""
        return [
            (
                "Authorization",
                f'Digest username="admin", realm="dev", nonce="{nonce}", uri="{uri}", '
                f'response="{response}"{extra}',
            )
        ]

    assert auth.authenticate(request(app, "/x", headers=answer("00000001"))) == "admin"
    assert auth.authenticate(request(app, "/x", headers=answer("00000002"))) == "admin"
    assert auth.authenticate(request(app, "/x", headers=answer("", qop=None))) == "admin"
    for bad in (
        answer("00000002"),
        answer("00000003", password="no"),
        answer("zz"),
        answer("1", nonce="Zm9yZ2Vk"),
    ):
        with pytest.raises(HTTPError) as info:
            auth.authenticate(request(app, "/x", headers=bad))
        assert info.value.status == 401
    with pytest.raises(HTTPError) as info:
        auth.authenticate(request(app, "/y", headers=answer("00000004")))
    assert info.value.status == 400  # uri is not the target
    now[0] += 61
    with pytest.raises(HTTPError) as info:
        auth.authenticate(request(app, "/x", headers=answer("00000005")))
    assert "stale=true" in info.value.headers[0][1]
    missing = DigestAuth(tmp_path / "none", "dev")
    with pytest.raises(HTTPError):
        missing.authenticate(request(app, "/x", headers=answer("00000001")))


def test_digest_authorization_answers_the_servers_challenge(tmp_path: Path) -> None:
    from tether.http.auth import digest_authorization

    path = tmp_path / "htdigest"
    write_htdigest(path, "admin", "dev", "pw")
    auth = DigestAuth(path, "dev")
    app = App()
    with pytest.raises(HTTPError) as info:
        auth.authenticate(request(app, "/rpc", method="POST"))
    challenge = parse_auth_params(info.value.headers[0][1].partition(" ")[2])
    for nc in (1, 2):
        value = digest_authorization("admin", "pw", challenge, method="POST", uri="/rpc", nc=nc)
        assert f"nc={nc:08x}" in value and "algorithm=MD5" in value
        answer = request(app, "/rpc", method="POST", headers=[("Authorization", value)])
        assert auth.authenticate(answer) == "admin"
    wrong = digest_authorization("admin", "nope", challenge, method="POST", uri="/rpc", nc=3)
    with pytest.raises(HTTPError):
        auth.authenticate(request(app, "/rpc", method="POST", headers=[("Authorization", wrong)]))
