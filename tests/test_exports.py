"""The public API: what `__all__` lists is pinned here, and every listed name exists.

A change to a pinned list is an API change: update the list here and CHANGELOG.md together.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import tether
import tether.errors
import tether.mqtt
import tether.ws

PINNED = {
    "tether.http": [
        "App",
        "BasicAuth",
        "BearerAuth",
        "DigestAuth",
        "FormData",
        "HTTPError",
        "Headers",
        "Request",
        "Response",
        "Server",
        "UploadFile",
        "serve",
        "write_htdigest",
    ],
    "tether.rpc": [
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
    ],
    "tether.ws": [
        "ClientConnection",
        "ClientWebSocket",
        "Connection",
        "ConnectionClosed",
        "Data",
        "DeflateParams",
        "Handler",
        "HandshakeError",
        "Headers",
        "InvalidState",
        "InvalidUtf8",
        "Opcode",
        "PayloadTooBig",
        "ProtocolError",
        "Request",
        "Response",
        "Server",
        "ServerConnection",
        "ServerWebSocket",
        "State",
        "WebSocket",
        "connect",
        "serve",
    ],
    "tether.config": [
        "Config",
        "ConfigError",
        "Leaf",
        "REDACTED",
        "Schema",
        "UnknownKey",
        "check_access",
        "expand_placeholders",
    ],
    "tether.errors": [
        "ConfigError",
        "ConnectionClosed",
        "HandshakeError",
        "InvalidState",
        "InvalidUtf8",
        "MalformedPacket",
        "PayloadTooBig",
        "ProtocolError",
        "Refused",
        "RpcError",
        "TetherError",
        "Timeout",
    ],
    "tether.mqtt": [
        "Client",
        "Connected",
        "ConnectionClosed",
        "InvalidState",
        "MQTT_3_1_1",
        "MQTT_5",
        "Message",
        "MessageStream",
        "Outbox",
        "OutboxEntry",
        "OutboxFull",
        "Properties",
        "ProtocolError",
        "ReasonCode",
        "Refused",
        "Subscription",
        "Timeout",
        "Will",
        "topic_matches",
    ],
}


def all_modules() -> list[ModuleType]:
    modules = [tether]
    for info in pkgutil.walk_packages(tether.__path__, "tether."):
        if info.name != "tether.__main__":  # running it is its only purpose
            modules.append(importlib.import_module(info.name))
    return modules


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == PINNED[name]
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("module", all_modules(), ids=lambda m: m.__name__)
def test_every_listed_name_exists(module: ModuleType) -> None:
    names = getattr(module, "__all__", [])
    assert len(set(names)) == len(names), f"{module.__name__}.__all__ has duplicates"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module.__name__}.__all__ lists missing names {missing}"


def test_ws_reexports_the_same_objects() -> None:
    for name in PINNED["tether.errors"]:
        if name in PINNED["tether.ws"]:
            assert getattr(tether.ws, name) is getattr(tether.errors, name)


def test_error_tree() -> None:
    # The tree drawn in tether.errors' docstring.
    e = tether.errors
    assert issubclass(e.ProtocolError, e.TetherError)
    assert issubclass(e.PayloadTooBig, e.ProtocolError)
    assert issubclass(e.InvalidUtf8, e.ProtocolError)
    for cls in (e.InvalidState, e.ConnectionClosed, e.HandshakeError, e.RpcError, e.ConfigError, e.Timeout):
        assert cls.__bases__[0] is e.TetherError
    assert issubclass(e.Timeout, TimeoutError)
    assert issubclass(e.TetherError, Exception)


def test_error_attributes() -> None:
    e = tether.errors
    assert e.ProtocolError("x").close_code == 1002
    assert e.ProtocolError("x", 1008).close_code == 1008
    assert e.PayloadTooBig("x").close_code == 1009
    assert e.InvalidUtf8("x").close_code == 1007
    closed = e.ConnectionClosed(1000, "bye", rcvd_then_sent=True)
    assert (closed.code, closed.reason, closed.rcvd_then_sent) == (1000, "bye", True)
    assert str(closed) == "connection closed with code 1000 (bye)"
    config = e.ConfigError("wifi.sta.ssid", "[wifi.sta.ssid] is not a string")
    assert (config.path, str(config)) == ("wifi.sta.ssid", "[wifi.sta.ssid] is not a string")
    assert str(e.ConnectionClosed(1006)) == "connection closed with code 1006"
    assert e.ConnectionClosed(1001).ok and not e.ConnectionClosed(1011).ok
    error = e.HandshakeError("no", status=403, headers=(("A", "1"),), body=b"b")
    assert (error.status, error.headers, error.body) == (403, [("A", "1")], b"b")
    assert (e.HandshakeError("no").status, e.HandshakeError("no").headers) == (400, [])
