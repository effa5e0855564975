"""{name}: a tether app.

init(device) runs once at start. This skeleton does what the classic Mongoose OS
WebSocket-client skeleton does:

- a ``Sum`` RPC method (``tether call Sum '{"a":1,"b":2}'`` prints ``3.00``);
- a WebSocket client that dials ``app.backend`` once the network is up (``wss://``
  verified against the CA bundle, or ``app.ca_file`` on the device FS) and writes a
  JSON-RPC notification every ``app.interval_ms``. Point it at your backend with
  ``tether config-set app.backend=wss://example.net/ws``.
"""

import asyncio
import json

from tether import tls, ws
from tether.errors import ConnectionClosed, RpcError
from tether.rpc import RawJSON


def init(device):
    @device.rpc("Sum", description="{a: %lf, b: %lf}: a + b with two decimals")
    def sum_(call):
        a, b = call.params.get("a"), call.params.get("b")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
            raise RpcError(-1, 'Bad request. Expected: {"a":N1,"b":N2}')
        device.log.debug("Sum: %s + %s", a, b)
        return RawJSON(f"{a + b:.2f}")

    backend = {"task": None}

    async def dial(url):
        ca_file = device.config["app.ca_file"]
        context = None
        if url.startswith("wss:"):
            context = tls.client_context(ca_file=device.fs_root / ca_file if ca_file else None)
        frame = json.dumps({"jsonrpc": "2.0", "method": "test", "params": {"id": device.id}})
        async for connection in ws.connect(url, subprotocols=["json-rpc"], ssl=context):
            device.log.info("connected to %s", url)
            try:
                while True:
                    await connection.send(frame)
                    await asyncio.sleep(device.config["app.interval_ms"] / 1000)
            except ConnectionClosed as exc:
                device.log.warning("backend connection closed: %s", exc)

    def start(_data=None):
        url = device.config["app.backend"]
        if backend["task"] is None and url:
            backend["task"] = asyncio.get_running_loop().create_task(dial(url))

    device.on("net.connected", start)
    device.on("init.done", start)
    device.log.info("{name} is up; device id %s", device.id)
