"""tether.errors: the hierarchy and what each error carries."""

from __future__ import annotations

import pickle

import pytest

from tether import errors


def test_hierarchy() -> None:
    assert issubclass(errors.ProtocolError, errors.TetherError)
    assert issubclass(errors.PayloadTooBig, errors.ProtocolError)
    assert issubclass(errors.InvalidUtf8, errors.ProtocolError)
    assert issubclass(errors.Timeout, TimeoutError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.TetherError)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ProtocolError("x"), 1002),
        (errors.ProtocolError("x", 1008), 1008),
        (errors.PayloadTooBig("x"), 1009),
        (errors.InvalidUtf8("x"), 1007),
    ],
)
def test_close_codes(error: errors.ProtocolError, code: int) -> None:
    assert error.close_code == code


def test_connection_closed() -> None:
    closed = errors.ConnectionClosed(1001, "going away", rcvd_then_sent=True)
    assert (closed.code, closed.reason, closed.rcvd_then_sent) == (1001, "going away", True)
    assert closed.ok
    assert str(closed) == "connection closed with code 1001 (going away)"
    abnormal = errors.ConnectionClosed(1006)
    assert not abnormal.ok
    assert str(abnormal) == "connection closed with code 1006"


def test_handshake_error() -> None:
    error = errors.HandshakeError("refused", status=403, headers=[("X", "y")], body=b"no")
    assert (error.status, error.headers, error.body) == (403, [("X", "y")], b"no")
    assert errors.HandshakeError("bad").status == 400


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ProtocolError("x"), 0x82),
        (errors.ProtocolError("x", reason_code=0x9A), 0x9A),
        (errors.MalformedPacket("x"), 0x81),
        (errors.PayloadTooBig("x"), 0x95),
    ],
)
def test_mqtt_reason_codes(error: errors.ProtocolError, code: int) -> None:
    assert error.reason_code == code


def test_refused_carries_the_reason_code() -> None:
    refused = errors.Refused("not authorized", 0x87)
    assert refused.reason_code == 0x87
    assert str(refused) == "not authorized"


def test_rpc_error_carries_code_and_message() -> None:
    error = errors.RpcError(404, "No handler for Foo.Bar")
    assert (error.code, error.message) == (404, "No handler for Foo.Bar")
    assert str(error) == "error 404: No handler for Foo.Bar"
    assert str(errors.RpcError(0)) == "error 0"
    assert errors.RpcError(-1).message == ""
    assert isinstance(error, errors.TetherError) and not isinstance(error, errors.ProtocolError)
    # It survives pickling (e.g. from a worker process).
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.message) == (404, "No handler for Foo.Bar")
