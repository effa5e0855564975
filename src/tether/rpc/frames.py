"""mg_rpc frames (spec mgos-rpc.md §1): parse and emit, pure functions, no state.

A frame is one JSON object. `parse_frame` turns the text of one frame into a
`Request` (it has a ``method``) or a `Response` (it has none), and raises an
`InvalidFrame` subclass for input the firmware treats as invalid (§1.1 step 1):
such a frame gets no reply, and a non-persistent channel (HTTP, inbound
WebSocket) closes. `Reply` and `encode_request` emit frames with the fields in
the order of §1.1.

The ``id`` is kept as the JSON text it arrived as (``Request.id_json``) and
written back verbatim, so that numbers of any size (mos uses 13-digit ids,
§1 "ids") and strings round-trip byte for byte.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from tether.errors import PayloadTooBig, ProtocolError

__all__ = [
    "MAX_FRAME_SIZE",
    "FrameTooBig",
    "InvalidFrame",
    "InvalidId",
    "InvalidJson",
    "NotAnObject",
    "RawJSON",
    "Reply",
    "Request",
    "Response",
    "WrongDestination",
    "encode_request",
    "encode_result",
    "parse_frame",
    "parse_result",
]

#: The default limit on the size of an incoming frame in bytes (``rpc.max_frame_size``, §5.5).
MAX_FRAME_SIZE = 4096

_T = TypeVar("_T")
_new_object = object.__new__
_set_attribute = object.__setattr__


def _frozen(cls: type[_T], fields: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass cls whose fields are fields, every one in order.

    The same object as ``cls(**fields)`` in half the time: a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``. For the objects
    made once per call (a `Request`, the dispatcher's `Call`).
    """
    instance = _new_object(cls)
    _set_attribute(instance, "__dict__", fields)
    return instance


class InvalidFrame(ProtocolError):
    """A frame the firmware treats as invalid (§1.1 step 1): no reply is sent.

    A channel logs it; a non-persistent channel (HTTP, inbound WebSocket) closes
    the connection, and HTTP frame mode answers ``400 Invalid request`` (§2.2).
    `close_code` is the WebSocket close code to use (1007, inconsistent data).
    """

    close_code = 1007


class FrameTooBig(InvalidFrame, PayloadTooBig):
    """A frame longer than the limit (``rpc.max_frame_size``); close with 1009."""

    close_code = 1009


class InvalidJson(InvalidFrame):
    """The frame is not UTF-8 text holding one JSON value."""


class NotAnObject(InvalidFrame):
    """The frame is JSON but not an object; an array is refused (§1: no batching)."""


class InvalidId(InvalidFrame):
    """The ``id`` is neither a number nor a string (§1 table)."""


class WrongDestination(InvalidFrame):
    """The ``dst`` names another device: dropped like an invalid frame (§1.1 step 2)."""


@dataclass(frozen=True)
class RawJSON:
    """JSON text a handler returns to have it written into the reply verbatim.

    For example ``RawJSON("3.00")`` reproduces the seed app's ``"result":3.00``
    (§1.3). The text is not checked: it must be one valid JSON value.
    """

    text: str


@dataclass(frozen=True)
class Request:
    """A frame with a ``method`` (§1): a call, or a notification when it has no ``id``.

    Attributes:
        method: the method name, as sent.
        params: ``params`` (or its deprecated synonym ``args``), None when absent.
        id: the id as a Python value (int, float or str), None for a notification.
        id_json: the id exactly as its JSON text arrived, None for a notification.
        src: the sender's id, None when absent.
        dst: the recipient's id, None when absent.
        tag: the opaque tag to copy into the reply, None when absent.
        auth: the ``auth`` object (§4) as sent, None when absent; not shown by repr.
    """

    method: str
    params: Any = None
    id: int | float | str | None = None
    id_json: str | None = None
    src: str | None = None
    dst: str | None = None
    tag: str | None = None
    auth: Any = field(default=None, repr=False)

    @property
    def is_notification(self) -> bool:
        """True when the request has no ``id``: its handler runs, nothing is sent back."""
        return self.id_json is None


@dataclass(frozen=True)
class Response:
    """A frame without a ``method`` (§1 "Matching"): the answer to an earlier call.

    Attributes:
        id: the id as a Python value, None when absent (such a response matches nothing).
        id_json: the id's JSON text, to match against pending calls.
        result: the ``result`` value (None when absent).
        error_code: ``error.code``; None when there is no ``error``. Code 0 counts as
            success, as mos treats it (§1 table, the ``Sys.SetDebug`` quirk).
        error_message: ``error.message``, "" when absent.
        src: the sender's id, None when absent.
        dst: the recipient's id, None when absent.
        tag: the tag, None when absent.
    """

    id: int | float | str | None = None
    id_json: str | None = None
    result: Any = None
    error_code: int | None = None
    error_message: str = ""
    src: str | None = None
    dst: str | None = None
    tag: str | None = None

    @property
    def ok(self) -> bool:
        """True unless the response carries a non-zero ``error.code``."""
        return not self.error_code


@dataclass(frozen=True)
class Reply:
    """A reply to send (§1.1): fields in the order ``id``, ``src``, ``dst``, ``tag``, then
    ``result`` or ``error``.

    Attributes:
        id_json: the request's id as its JSON text.
        src: the replying device's id: the request's ``dst`` if it had one, else ``device.id``.
        dst: the request's ``src``; left out when None or empty.
        tag: the request's ``tag``; left out when None or empty.
        result: the result; None is written ``"result":null``. A `RawJSON` is written verbatim.
        error_code: None for a result, else the ``error.code``.
        error_message: the ``error.message``; left out when empty.
    """

    id_json: str
    src: str
    dst: str | None = None
    tag: str | None = None
    result: Any = None
    error_code: int | None = None
    error_message: str = ""

    @classmethod
    def to(
        cls,
        request: Request,
        *,
        device_id: str,
        result: Any = None,
        error_code: int | None = None,
        error_message: str = "",
    ) -> Reply:
        """The reply to request from the device device_id (§1.1, last paragraph).

        Raises:
            ValueError: if request is a notification (it gets no reply).
        """
        if request.id_json is None:
            raise ValueError(f"request for {request.method!r} is a notification: it gets no reply")
        return cls(
            request.id_json,
            request.dst or device_id,
            request.src,
            request.tag,
            result,
            error_code,
            error_message,
        )

    @property
    def ok(self) -> bool:
        """True for a result or an error with code 0."""
        return not self.error_code

    def encode(self) -> bytes:
        """Encode the reply as compact UTF-8 JSON.

        Raises:
            TypeError: if the result holds a value JSON cannot represent.
            ValueError: if the result holds NaN or an infinity, or refers to itself.
        """
        if self.error_code is None:
            text = _result_text(self.id_json, self.src, self.dst, self.tag, self.result)
        else:
            text = _error_text(
                self.id_json, self.src, self.dst, self.tag, self.error_code, self.error_message
            )
        return text.encode("utf-8")


def _is_name(value: Any) -> bool:
    return value is None or type(value) is str


def encode_result(id_json: str, src: str, dst: str | None, tag: str | None, result: Any) -> bytes:
    """``Reply(id_json, src, dst, tag, result).encode()`` without building the `Reply`:
    the dispatcher's path for every successful call.

    Raises:
        TypeError, ValueError: as `Reply.encode`.
    """
    return _result_text(id_json, src, dst, tag, result).encode("utf-8")


def _result_text(id_json: str, src: str, dst: str | None, tag: str | None, result: Any) -> str:
    """The text of `encode_result`: always encodable as UTF-8 (see `_encodable`).

    What the WebSocket channel sends as a text message, with no bytes in between.
    """
    addressing = _addressings.get((src, dst, tag))
    if addressing is None:
        addressing = _addressing(src, dst, tag)
    text = (
        '{"id":'
        + id_json
        + addressing
        + ',"result":'
        + (result.text if isinstance(result, RawJSON) else _dumps(result))
        + "}"
    )
    return text if text.isascii() else _encodable(text)


def _error_text(id_json: str, src: str, dst: str | None, tag: str | None, code: int, message: str) -> str:
    """The text of an error reply (`Reply.encode`), always encodable as UTF-8."""
    parts = ['{"id":', id_json, _addressing(src, dst, tag), ',"error":{"code":', str(int(code))]
    if message:
        parts += [',"message":', _dumps(message)]
    parts.append("}}")
    text = "".join(parts)
    return text if text.isascii() else _encodable(text)


#: The ``,"src":…,"dst":…,"tag":…`` text of replies by (src, dst, tag): the same few
#: peers call again and again. Emptied when it grows past _MAX_ADDRESSINGS.
_addressings: dict[tuple[str, str | None, str | None], str] = {}
_MAX_ADDRESSINGS = 256
#: The same for requests: ``,"src":…,"dst":…,"tag":…,"method":…`` by (src, dst, tag, method).
_request_addressings: dict[tuple[str, str | None, str | None, str], str] = {}


def _addressing(src: str, dst: str | None, tag: str | None) -> str:
    key = (src, dst, tag)
    text = _addressings.get(key)
    if text is None:
        parts = [',"src":', _dumps(src)]
        if dst:
            parts += [',"dst":', _dumps(dst)]
        if tag:
            parts += [',"tag":', _dumps(tag)]
        text = "".join(parts)
        if len(_addressings) >= _MAX_ADDRESSINGS:
            _addressings.clear()
        _addressings[key] = text
    return text


def encode_request(
    method: str,
    params: Any = None,
    *,
    id: int | str | None = None,
    src: str | None = None,
    dst: str | None = None,
    tag: str | None = None,
    auth: Any = None,
) -> bytes:
    """Encode a request frame: ``id``, ``src``, ``dst``, ``tag``, ``method``, ``params``, ``auth``.

    Fields that are None are left out; without an id the frame is a notification.

    Raises:
        TypeError: if params or auth hold a value JSON cannot represent.
        ValueError: if params hold NaN or an infinity, or method is empty.
    """
    if not method:
        raise ValueError("method must not be empty")
    if type(id) is int and type(src) is str and type(method) is str and _is_name(dst) and _is_name(tag):
        # A client's calls: the same src, dst and method again and again, the id counting up.
        key = (src, dst, tag, method)
        rest = _request_addressings.get(key)
        if rest is None:
            rest = "".join(
                [
                    f',"{name}":{_dumps(value)}'
                    for name, value in zip(("src", "dst", "tag", "method"), key, strict=True)
                    if value is not None
                ]
            )
            if len(_request_addressings) >= _MAX_ADDRESSINGS:
                _request_addressings.clear()
            _request_addressings[key] = rest
        parts = ['{"id":', str(id), rest]
    else:
        parts = ["{"]
        for name, value in (("id", id), ("src", src), ("dst", dst), ("tag", tag), ("method", method)):
            if value is not None:
                parts += [',"' if len(parts) > 1 else '"', name, '":', _dumps(value)]
    if params is not None:
        parts += [',"params":', params.text if isinstance(params, RawJSON) else _dumps(params)]
    if auth is not None:
        parts += [',"auth":', _dumps(auth)]
    parts.append("}")
    return _utf8(parts)


def parse_frame(
    data: bytes | bytearray | memoryview | str, *, max_size: int = MAX_FRAME_SIZE
) -> Request | Response:
    """Parse one frame (§1).

    Unknown keys are ignored, and so are ``jsonrpc``, ``v``, ``key`` and mos's
    ``deadline``, ``timeout``, ``trace`` and ``nr``. ``src``, ``dst`` and ``tag``
    that are not strings count as absent. A ``method`` of ``""`` counts as absent.

    Args:
        data: the frame, as UTF-8 bytes or text; surrounding whitespace is allowed.
        max_size: the largest frame accepted, in bytes of UTF-8.

    Returns:
        A `Request` when the frame has a ``method``, else a `Response`.

    Raises:
        FrameTooBig: if data is longer than max_size bytes.
        InvalidJson: if data is not UTF-8 JSON.
        NotAnObject: if the JSON value is not an object (an array: no batching).
        InvalidId: if the ``id`` is not a number or a string.
        InvalidFrame: if ``method`` is not a string, or the object holds none of
            ``id``, ``method``, ``result`` and ``error``.
    """
    if type(data) is str or isinstance(data, str):
        size = len(data)
        if size <= max_size and not data.isascii():
            try:
                size = len(data.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise InvalidJson("frame is not valid Unicode text") from exc
        if size > max_size:
            raise FrameTooBig(f"frame of {size} bytes is over the limit of {max_size}")
        text = data
    else:
        if len(data) > max_size:
            raise FrameTooBig(f"frame of {len(data)} bytes is over the limit of {max_size}")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidJson("frame is not valid UTF-8") from exc
    parsed = _parse_common(text)
    fields, id_json = parsed if parsed is not None else _parse_object(text)
    return _frame_from(fields, id_json)


def parse_result(
    data: bytes | bytearray | memoryview | str, *, max_size: int = MAX_FRAME_SIZE
) -> tuple[str, Any] | None:
    """The fast path of `parse_frame` for what a client mostly gets: a successful response.

    Returns:
        (id_json, result) when data is ASCII text of a JSON object with a non-zero
        integer ``id``, a ``result``, and neither ``method`` nor ``error``: the
        `Response` `parse_frame` would return has just these two and is ``ok``.
        Otherwise None, for anything else, errors included: call `parse_frame`.
    """
    found = _scan_result(data, max_size)
    return None if found is None else (str(found[0]), found[1])


def _scan_result(data: bytes | bytearray | memoryview | str, max_size: int) -> tuple[int, Any] | None:
    """`parse_result` with the id as an int: what `RpcClientCore.receive_result` runs per call."""
    if type(data) is not str or len(data) > max_size or not data.isascii() or data[:1] != "{":
        return None
    try:
        fields, end = _scan_value(data, 0)
    except (StopIteration, ValueError, RecursionError):
        return None
    if end != len(data) or "result" not in fields or "method" in fields or "error" in fields:
        return None  # (what starts with "{" and scans is a dict)
    frame_id = fields.get("id")
    if type(frame_id) is not int or frame_id == 0:
        return None
    return frame_id, fields["result"]


def _parse_request(text: str, max_size: int) -> Request | None:
    """The fast path of `parse_frame` for what a server mostly gets: a request as text.

    Returns the `Request` `parse_frame` would return when text is ASCII, within
    max_size, one JSON object from its first to its last character, with a
    non-empty string ``method`` and an ``id`` whose text follows from its value
    (as `_parse_common` finds them). Otherwise None, and `parse_frame` answers
    (another `Request`, a `Response` or an `InvalidFrame`). One function on
    purpose: it runs for every call.
    """
    if len(text) > max_size or not text.isascii() or text[:1] != "{":
        return None
    try:
        fields, end = _scan_value(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return None
    method = fields.get("method")  # (what starts with "{" and scans is a dict)
    if end != len(text) or type(method) is not str or not method:
        return None
    if "id" in fields:
        frame_id = fields["id"]
        if type(frame_id) is int and frame_id != 0:
            id_json: str | None = str(frame_id)
        elif type(frame_id) is str and "\\" not in text:
            id_json = '"' + frame_id + '"'
        else:
            return None
    else:
        frame_id = id_json = None
    src, dst, tag = fields.get("src"), fields.get("dst"), fields.get("tag")
    # §1 table: "args" is the deprecated synonym of "params".
    params = fields["params"] if "params" in fields else fields.get("args")
    auth = fields.get("auth")
    request = _new_object(Request)
    _set_attribute(
        request,
        "__dict__",
        {
            "method": method,
            "params": params,
            "id": frame_id,
            "id_json": id_json,
            "src": src if type(src) is str else None,
            "dst": dst if type(dst) is str else None,
            "tag": tag if type(tag) is str else None,
            "auth": auth,
        },
    )
    return request


def _parse_common(text: str) -> tuple[dict[str, Any], str | None] | None:
    """The fast path of `parse_frame`: the whole frame by the C decoder.

    It applies when the ``id``'s JSON text follows from its value: absent, a
    non-zero integer (JSON writes integers one way only; ``-0`` and ``0`` differ),
    or a string in a frame without any backslash (so written as is). Otherwise,
    and for any error, None: `_parse_object` then keeps the id's text and words
    the error.
    """
    try:
        if text[:1] == "{" and text[-1:] == "}":  # no surrounding whitespace to skip
            fields, end = _scan_value(text, 0)
            if end != len(text):
                return None
        else:
            fields = _decoder.decode(text)
    except (StopIteration, ValueError, RecursionError):
        return None
    if type(fields) is not dict:
        return None
    if "id" not in fields:
        return fields, None
    frame_id = fields["id"]
    if type(frame_id) is int and frame_id != 0:
        return fields, str(frame_id)
    if type(frame_id) is str and "\\" not in text:
        return fields, '"' + frame_id + '"'
    return None


_ID_TYPES = frozenset([int, str, float])  # the types of a valid id that need no closer look


def _frame_from(fields: dict[str, Any], id_json: str | None) -> Request | Response:
    frame_id = fields.get("id")
    if (
        type(frame_id) not in _ID_TYPES
        and "id" in fields
        and (isinstance(frame_id, bool) or not isinstance(frame_id, (int, float, str)))
    ):
        raise InvalidId(f"id must be a number or a string, not {_json_type(frame_id)}")
    method = fields.get("method")
    if method is not None and type(method) is not str and not isinstance(method, str):
        raise InvalidFrame(f"method must be a string, not {_json_type(method)}")
    src, dst, tag = fields.get("src"), fields.get("dst"), fields.get("tag")
    if type(src) is not str:
        src = None
    if type(dst) is not str:
        dst = None
    if type(tag) is not str:
        tag = None
    if method:
        # §1 table: "args" is the deprecated synonym of "params" (mos --mgrpc-compat-args).
        params = fields["params"] if "params" in fields else fields.get("args")
        return _frozen(
            Request,
            {
                "method": method,
                "params": params,
                "id": frame_id,
                "id_json": id_json,
                "src": src,
                "dst": dst,
                "tag": tag,
                "auth": fields.get("auth"),
            },
        )
    error = fields.get("error")
    if id_json is None and "result" not in fields and error is None:
        raise InvalidFrame("frame has none of id, method, result and error")
    code: int | None = None
    message = ""
    if error is not None:
        # A malformed error object still fails the call, with the generic code -1 (§1.2).
        raw_code = error.get("code") if isinstance(error, dict) else None
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            code = raw_code
            raw_message = error.get("message")
            message = raw_message if isinstance(raw_message, str) else ""
        else:
            code, message = -1, f"malformed error {_dumps(error)}"
    return Response(frame_id, id_json, fields.get("result"), code, message, src, dst, tag)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (RFC 8259) does not.
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_decode_value = _decoder.raw_decode
#: raw_decode's C scanner without its Python wrapper: (value, end), or StopIteration at
#: ``at`` when no JSON value starts there, or a JSONDecodeError inside one.
_scan_value: Any = _decoder.scan_once  # type: ignore[attr-defined]  # set in __init__, untyped
_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]  # untyped C helper
_whitespace = re.compile(r"[ \t\n\r]*")
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_encode_string: Any = json.encoder.encode_basestring  # what the encoder above uses for a str
try:
    # JSONEncoder.encode() builds this C encoder anew for every container; built once, a
    # small reply costs much less. Without circular checks: a cycle ends in RecursionError
    # and the checking encoder reports it.
    from _json import make_encoder as _make_encoder

    _c_encoder: Any = _make_encoder(
        None, json.JSONEncoder().default, _encode_string, None, ":", ",", False, False, False
    )
except ImportError:  # pragma: no cover - an interpreter without the _json accelerator
    _c_encoder = None


def _skip_ws(text: str, at: int) -> int:
    match = _whitespace.match(text, at)
    return match.end() if match else at  # the pattern matches the empty string too


def _dumps(value: Any) -> str:
    if type(value) is str:
        text: str = _encode_string(value)
        return text
    if _c_encoder is not None:
        try:
            return "".join(_c_encoder(value, 0))
        except (TypeError, ValueError, RecursionError):
            pass  # the checking encoder below raises the error with its usual message
    return _encode(value)


def _utf8(parts: list[str]) -> bytes:
    return _encodable("".join(parts)).encode("utf-8")


def _encodable(text: str) -> str:
    """text, or, if it holds a lone surrogate (from a "\\ud800" escape), which UTF-8 cannot
    hold, text with every non-ASCII character escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return re.sub(r"[^\x00-\x7f]", lambda m: _encode_ascii(m.group())[1:-1], text)
    return text


def _parse_object(text: str) -> tuple[dict[str, Any], str | None]:
    """Parse a JSON object key by key, keeping the JSON text of its ``id``.

    Duplicate keys: the last one wins, as in `json.loads`.
    """
    fields: dict[str, Any] = {}
    id_json: str | None = None
    at = _skip_ws(text, 0)
    if not text.startswith("{", at):
        _raise_not_an_object(text)
    at = _skip_ws(text, at + 1)
    try:
        if text.startswith("}", at):
            at += 1
        else:
            while True:
                if not text.startswith('"', at):
                    raise InvalidJson(f"expected a key at offset {at}")
                key, at = _scanstring(text, at + 1)
                at = _skip_ws(text, at)
                if not text.startswith(":", at):
                    raise InvalidJson(f"expected ':' at offset {at}")
                start = _skip_ws(text, at + 1)
                value, at = _decode_value(text, start)
                if key == "id":
                    id_json = text[start:at]
                fields[key] = value
                at = _skip_ws(text, at)
                if text.startswith(",", at):
                    at = _skip_ws(text, at + 1)
                elif text.startswith("}", at):
                    at += 1
                    break
                else:
                    raise InvalidJson(f"expected ',' or '}}' at offset {at}")
    except RecursionError as exc:
        raise InvalidJson("frame is nested too deeply") from exc
    except ValueError as exc:  # json.JSONDecodeError, NaN/Infinity, int digits limit
        raise InvalidJson(f"frame is not JSON: {exc}") from exc
    if _skip_ws(text, at) != len(text):
        raise InvalidJson(f"extra data after the object at offset {at}")
    return fields, id_json


def _raise_not_an_object(text: str) -> NoReturn:
    try:
        value = _decoder.decode(text)
    except RecursionError as exc:
        raise InvalidJson("frame is nested too deeply") from exc
    except ValueError as exc:
        raise InvalidJson(f"frame is not JSON: {exc}") from exc
    if isinstance(value, list):
        raise NotAnObject("frame is an array: batches are not supported")
    raise NotAnObject(f"frame is {_json_type(value)}, not an object")
