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

Channels (WebSocket, HTTP, MQTT, serial) and the connected client are not here
yet; `RpcClientCore` is the client's sans-I/O core. See docs/rpc.md.
"""

from __future__ import annotations

from tether.errors import RpcError
from tether.rpc.acl import Acl, AclEntry
from tether.rpc.auth import DigestAuth, Htdigest
from tether.rpc.client import CallFailed, CallResult, RequestReceived, RpcClientCore
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

__all__ = [
    "Acl",
    "AclEntry",
    "Call",
    "CallFailed",
    "CallResult",
    "DigestAuth",
    "Dispatcher",
    "FrameTooBig",
    "HandlerInfo",
    "Htdigest",
    "InvalidFrame",
    "InvalidId",
    "InvalidJson",
    "NotAnObject",
    "RawJSON",
    "Reply",
    "Request",
    "RequestReceived",
    "Response",
    "RpcClientCore",
    "RpcError",
    "WrongDestination",
    "encode_request",
    "parse_frame",
]
