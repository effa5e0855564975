"""The asyncio front end on uvloop, whose transports do not subclass asyncio's."""

from __future__ import annotations

import asyncio

import pytest

import tether.ws as ws

uvloop = pytest.importorskip("uvloop")


async def echo(conn: ws.ServerWebSocket) -> None:
    async for message in conn:
        await conn.send(message)


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_echo_on_uvloop(compression: str | None) -> None:
    async def main() -> None:
        async with ws.serve(echo, "127.0.0.1", 0, compression=compression) as server:  # type: ignore[arg-type]
            url = f"ws://127.0.0.1:{server.port}/"
            async with ws.connect(url, compression=compression, max_size=2**21) as conn:  # type: ignore[arg-type]
                await conn.send("hello")
                assert await conn.recv() == "hello"
                await conn.send(b"\x01" * 2**20)
                assert await conn.recv() == b"\x01" * 2**20
            assert conn.close_code == 1000

    uvloop.run(asyncio.wait_for(main(), 20))
