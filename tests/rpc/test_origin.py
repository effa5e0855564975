"""Web pages of other origins cannot drive a device's RPC (tether.rpc.channels.origin)."""

from __future__ import annotations

import json

import httpx
import pytest

import tether.rpc as rpc
from tether.errors import HandshakeError
from tether.http.parser import HTTPError
from tether.rpc.channels import OriginPolicy
from tether.ws import connect as ws_connect

HOST = {"host": "127.0.0.1:8000"}


@pytest.mark.parametrize(
    ("headers", "allowed", "answer"),
    [
        ({}, (), "*"),  # mos, curl, tether's clients: no Origin
        ({"sec-fetch-site": "none"}, (), "*"),  # typed into the address bar
        ({"sec-fetch-site": "same-origin"}, (), "*"),
        ({"origin": "http://127.0.0.1:8000"}, (), "http://127.0.0.1:8000"),  # the device's own page
        ({"origin": "https://dash.example.com"}, ("https://dash.example.com/",), "https://dash.example.com"),
        ({"origin": "https://evil.example"}, ("*",), "https://evil.example"),  # Mongoose OS' behaviour
        ({"sec-fetch-site": "cross-site"}, ("*",), "*"),
    ],
)
def test_allowed(headers: dict[str, str], allowed: tuple[str, ...], answer: str) -> None:
    assert OriginPolicy(allowed).check({**HOST, **headers}) == answer


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "http://127.0.0.1:3000"},  # another local server is another origin
        {"origin": "http://localhost:8000"},
        {"origin": "null"},  # a sandboxed frame or a file:// page
        {"origin": "http://user@127.0.0.1:8000"},
        {"sec-fetch-site": "cross-site"},  # an <img> or a link from another site
        {"sec-fetch-site": "same-site"},
    ],
)
def test_refused(headers: dict[str, str]) -> None:
    with pytest.raises(HTTPError) as info:
        OriginPolicy(["https://dash.example.com"]).check({**HOST, **headers})
    assert info.value.status == 403


def test_parse() -> None:
    assert OriginPolicy.parse("").allowed == frozenset() and not OriginPolicy.parse("").any
    policy = OriginPolicy.parse(" https://a.example , HTTPS://B.example/ ")
    assert policy.allowed == {"https://a.example", "https://b.example"}
    assert OriginPolicy.parse("*").any
    assert "a.example" in repr(policy)


async def test_over_http_and_websocket() -> None:
    server = rpc.Server(http="127.0.0.1:0", origins=OriginPolicy(["https://dash.example.com"]))
    async with server:
        base = f"127.0.0.1:{server.http_port}"
        frame = json.dumps({"id": 1, "method": "RPC.Ping"})
        async with httpx.AsyncClient() as http:
            plain = await http.post(f"http://{base}/rpc", content=frame)
            assert plain.status_code == 200 and plain.headers["access-control-allow-origin"] == "*"
            own = await http.post(f"http://{base}/rpc", content=frame, headers={"Origin": f"http://{base}"})
            assert own.status_code == 200 and own.headers["access-control-allow-origin"] == f"http://{base}"
            listed = await http.options(
                f"http://{base}/rpc/RPC.Ping", headers={"Origin": "https://dash.example.com"}
            )
            assert listed.status_code == 200
            assert listed.headers["access-control-allow-origin"] == "https://dash.example.com"
            for method, url in (("POST", "/rpc"), ("GET", "/rpc/RPC.Ping"), ("OPTIONS", "/rpc/RPC.Ping")):
                evil = await http.request(
                    method, f"http://{base}{url}", content=frame, headers={"Origin": "https://evil.example"}
                )
                assert evil.status_code == 403, (method, url)
                assert "access-control-allow-origin" not in evil.headers
            img = await http.get(f"http://{base}/rpc/RPC.Ping", headers={"Sec-Fetch-Site": "cross-site"})
            assert img.status_code == 403
        async with ws_connect(f"ws://{base}/rpc", origin=f"http://{base}") as ws:
            await ws.send(frame)
            assert json.loads(await ws.recv())["id"] == 1
        with pytest.raises(HandshakeError) as info:
            async with ws_connect(f"ws://{base}/rpc", origin="https://evil.example"):
                pass
        assert info.value.status == 403
