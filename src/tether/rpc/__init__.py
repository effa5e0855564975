"""Mongoose OS-compatible RPC (mg_rpc): frames, the dispatcher, digest auth and ACL.

Serve handlers::

    dispatcher = tether.rpc.Dispatcher("tether_0A1B2C")

    @dispatcher.method("Sum", args={"type": "object",
                                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                                    "required": ["a", "b"]})
    def sum_(call):
        return call.params["a"] + call.params["b"]

    reply = await dispatcher.handle(b'{"id":1,"src":"mos","method":"Sum","params":{"a":1,"b":2}}',
                                    channel="WS_in", peer="10.0.0.9:51234")

Serve them over every channel at once with `Server`: WebSocket and HTTP on ``/rpc``
(``http`` takes the ``listen_addr`` forms of `parse_listen_addr`; a bare port listens
on all interfaces), MQTT on a client you own, a serial line, and a dial-out link::

    server = tether.rpc.Server(dispatcher, http="127.0.0.1:8000", serial="/dev/ttyS0",
                               dial_out="ws://backend:8000/rpc")
    async with server:
        await server.serve_forever()

or one channel by hand: ``tether.rpc.mount_rpc(app, dispatcher)`` on a `tether.http.App`,
``tether.rpc.DialOut(dispatcher, url)``.

Call a device::

    async with tether.rpc.connect("ws://127.0.0.1:8000/rpc") as client:
        print(await client.call("Sum", {"a": 1, "b": 2}))

or from plain blocking code, with the blocking client `tether.rpc.sync`::

    import tether.rpc.sync

    with tether.rpc.sync.connect("http://127.0.0.1:8000/rpc") as client:
        print(client.call("Sum", {"a": 1, "b": 2}))

`RpcClientCore` is the client's sans-I/O core. See docs/rpc.md.
"""

from __future__ import annotations

from tether.errors import RpcError
from tether.rpc.acl import Acl, AclEntry
from tether.rpc.auth import DigestAuth, Htdigest
from tether.rpc.channels import DialOut, RpcMount, mount_rpc
from tether.rpc.client import CallFailed, CallResult, RequestReceived, RpcClientCore
from tether.rpc.connection import RpcClient, connect
from tether.rpc.dispatch import Call, Dispatcher, HandlerInfo
from tether.rpc.frames import (
    FrameTooBig,
    InvalidFrame,
    InvalidId,
    InvalidJson,
    NotAnObject,
    RawJSON,
    Reply,
    Request,
    Response,
    WrongDestination,
    encode_request,
    parse_frame,
)
from tether.rpc.server import Server, parse_listen_addr
from tether.rpc.transports import HttpTransport, Transport, WebSocketTransport, open_transport

__all__ = [
    "Acl",
    "AclEntry",
    "Call",
    "CallFailed",
    "CallResult",
    "DialOut",
    "DigestAuth",
    "Dispatcher",
    "FrameTooBig",
    "HandlerInfo",
    "Htdigest",
    "HttpTransport",
    "InvalidFrame",
    "InvalidId",
    "InvalidJson",
    "NotAnObject",
    "RawJSON",
    "Reply",
    "Request",
    "RequestReceived",
    "Response",
    "RpcClient",
    "RpcClientCore",
    "RpcError",
    "RpcMount",
    "Server",
    "Transport",
    "WebSocketTransport",
    "WrongDestination",
    "connect",
    "encode_request",
    "mount_rpc",
    "open_transport",
    "parse_frame",
    "parse_listen_addr",
]
