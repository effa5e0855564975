"""CPU time of tether's RPC layer per call, in one process, without sockets or WebSocket framing.

``python bench/rpc/inproc.py [--calls 50000] [--repeat 7]`` prints microseconds per call
(the best of ``--repeat`` rounds, `time.process_time`) for:

==========  =========================================================================
server      a request frame handed to the ``/rpc`` WebSocket channel, up to the reply
            text it gives the connection's ``send_nowait`` (``RPC.Ping``)
round trip  `tether.rpc.RpcClient.call` over a WebSocket transport wired straight to
            that channel: the client's and the server's Python work of one call
client      round trip minus server
==========  =========================================================================

The WebSocket connections are stand-ins that pass text straight through, so these
figures are what RPC adds to the WebSocket it rides on, and they move much less
with a noisy machine than calls/s over the wire (``run.py``). Use them to compare
two versions of the code on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from tether.rpc import Dispatcher, RpcClient
from tether.rpc.channels.ws import WebSocketChannel
from tether.rpc.transports import WebSocketTransport
from tether.ws.protocol import State

#: What tether.rpc.connect sends for RPC.Ping (the id counts up from here).
FRAME = '{"id":1099511627776,"src":"tether","method":"RPC.Ping"}'


class _Socket:
    """The part of a tether.ws WebSocket the RPC channel and client use, passing text through."""

    state = State.OPEN
    request = None
    remote_address = ("127.0.0.1", 54321)

    def __init__(self) -> None:
        self.handler: Callable[[str], object] | None = None
        self.peer: _Socket | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def set_message_handler(self, handler: Callable[[str], object] | None) -> None:
        self.handler = handler

    def send_nowait(self, message: str) -> bool:
        if self.peer is not None and self.peer.handler is not None:
            self.peer.handler(message)
        return True

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed)

    async def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _measure(calls: int, repeat: int) -> dict[str, float]:
    server_ws, client_ws = _Socket(), _Socket()
    server_ws.peer, client_ws.peer = client_ws, server_ws
    serving = asyncio.ensure_future(WebSocketChannel(Dispatcher("bench"))(server_ws))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the channel sets its message handler
    assert server_ws.handler is not None
    client = RpcClient(WebSocketTransport(client_ws))  # type: ignore[arg-type]
    on_request = server_ws.handler
    server_ws.peer = None  # the server alone: its replies go nowhere
    best_server = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(calls):
            on_request(FRAME)
        best_server = min(best_server, time.process_time() - start)
    server_ws.peer = client_ws
    best_trip = float("inf")
    call = client.call
    batches, batch = max(1, calls // 1000), min(calls, 1000)
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(batches):
            for _ in range(batch):
                await call("RPC.Ping")  # answered at once: it does not wait
            await asyncio.sleep(0)  # a turn of the loop, for the client's timers
        best_trip = min(best_trip, time.process_time() - start)
    await client.close()
    await server_ws.close()
    await serving
    server, trip = best_server / calls * 1e6, best_trip / (batches * batch) * 1e6
    return {"server": server, "round trip": trip, "client": trip - server}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the best is printed")
    args = parser.parse_args(argv)
    results: Any = asyncio.run(_measure(args.calls, args.repeat))
    for name, us in results.items():
        print(f"{name:10} {us:6.2f} µs/call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
