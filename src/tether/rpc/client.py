"""The sans-I/O core of an RPC client (spec mgos-rpc.md §1 "Matching", §4).

Theory of operation. `RpcClientCore.call` builds a request frame with a fresh
id and remembers the call; the front end sends what `frames_to_send` returns
over its channel, and feeds every frame that arrives to `receive_frame`. A
response is matched by the exact text of its id; unknown ids are ignored. When a
call comes back with 401 and the core has credentials, it resends the call once
with a digest ``auth`` object (§4) instead of reporting the error. What happened
is read from `events_received`: `CallResult`, `CallFailed`, and `RequestReceived`
for requests the peer sends (a backend calling the device over a dial-out link).

Ids are like mos's: a random start in ``2^40 | rand(2^40)``, then counting up.
At most ``max_pending`` calls wait; one more fails the oldest with 429
``Request queue overflow``. There is no clock here: the front end gives up on a
call with `cancel` when its own timeout fires.

Every call costs a front end the work of `start_call` and `receive_result`, so
both are short: a waiting call is a tuple under its integer id (a JSON integer
has one text only, so matching the integer is matching the text), and the text
of a request is a cached template per method and ``dst`` with the id put in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tether.errors import RpcError
from tether.rpc.auth import make_auth, parse_challenge
from tether.rpc.frames import (
    _MAX_ADDRESSINGS,
    MAX_FRAME_SIZE,
    RawJSON,
    Request,
    _dumps,
    _encodable,
    _scan_result,
    encode_request,
    parse_frame,
)

__all__ = ["CallFailed", "CallResult", "Event", "RequestReceived", "RpcClientCore"]


@dataclass(frozen=True)
class CallResult:
    """A call succeeded (a ``result``, or an ``error`` with code 0)."""

    id: int
    result: Any


@dataclass(frozen=True)
class CallFailed:
    """A call failed: the peer's error, or 429 when the queue evicted it."""

    id: int
    error: RpcError = field(compare=False)


@dataclass(frozen=True)
class RequestReceived:
    """The peer sent a request; hand it to a `tether.rpc.Dispatcher`."""

    request: Request


Event = CallResult | CallFailed | RequestReceived


#: A waiting call: (method, params, dst, tag), what its digest retry sends again (§4).
_Pending = tuple[str, Any, "str | None", "str | None"]


class RpcClientCore:
    """Builds request frames and matches replies, without I/O.

    Args:
        src: this client's id, the ``src`` of its frames (mos uses ``mos``).
        dst: the default ``dst`` of calls, None to leave it out.
        credentials: (user, password) to answer a 401 digest challenge with.
        max_pending: calls that may wait for a reply (``rpc.max_queue_length``).
        max_frame_size: the largest frame `receive_frame` accepts.
        rng: the source of ids and cnonces (a seeded one for tests).
    """

    def __init__(
        self,
        src: str | None = "tether",
        *,
        dst: str | None = None,
        credentials: tuple[str, str] | None = None,
        max_pending: int = 25,
        max_frame_size: int = 1 << 20,
        rng: random.Random | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        self._src = src
        self.dst = dst
        self.credentials = credentials
        self.max_pending = max_pending
        self.max_frame_size = max(max_frame_size, MAX_FRAME_SIZE)
        self._rng = rng or random.Random()
        self._next_id = (1 << 40) | self._rng.getrandbits(40)
        self._pending: dict[int, _Pending] = {}  # oldest first
        self._retried: set[int] = set()  # the calls sent again with a digest answer
        # The request text after the id, without the closing "}", by method (dst None)
        # or (method, dst); emptied when src changes.
        self._templates: dict[str | tuple[str, str], str] = {}
        self._outgoing: list[bytes] = []
        self._events: list[Event] = []

    def __repr__(self) -> str:
        user = None if self.credentials is None else self.credentials[0]
        return (
            f"RpcClientCore(src={self.src!r}, dst={self.dst!r}, user={user!r}, pending={len(self._pending)})"
        )

    @property
    def src(self) -> str | None:
        """This client's id, the ``src`` of its frames; None to leave it out."""
        return self._src

    @src.setter
    def src(self, value: str | None) -> None:
        self._src = value
        self._templates.clear()

    @property
    def pending(self) -> int:
        """The number of calls waiting for a reply."""
        return len(self._pending)

    def call(self, method: str, params: Any = None, *, dst: str | None = None, tag: str | None = None) -> int:
        """Queue a call; returns its id, which `CallResult`/`CallFailed` will carry.

        Raises:
            ValueError: if method is empty, or params cannot be JSON.
            TypeError: if params hold a value JSON cannot represent.
        """
        call_id = self._next_id
        call: _Pending = (method, params, dst if dst is not None else self.dst, tag)
        frame = self._encode(call_id, call, None)
        self._next_id = call_id + 1
        self._outgoing.append(frame)
        self._add(call_id, call)
        return call_id

    def start_call(self, method: str, params: Any = None, *, dst: str | None = None) -> tuple[int, str]:
        """`call`, for a front end that sends the frame itself: returns the id and the frame's text.

        Nothing is queued for `frames_to_send`; the text is what `call` would queue
        (as UTF-8), made from a template kept per method and dst. A call that
        evicts the oldest one queues its `CallFailed` as `call` does.

        Raises:
            ValueError: if method is empty, or params cannot be JSON.
            TypeError: if params hold a value JSON cannot represent.
        """
        if dst is None:
            dst = self.dst
        rest = self._templates.get(method if dst is None else (method, dst))
        if rest is None:
            rest = self._template(method, dst)
        call_id = self._next_id
        if params is None:
            text = '{"id":' + str(call_id) + rest + "}"
        else:
            text = (
                '{"id":'
                + str(call_id)
                + rest
                + ',"params":'
                + (params.text if isinstance(params, RawJSON) else _dumps(params))
                + "}"
            )
            if not text.isascii():
                text = _encodable(text)
        self._next_id = call_id + 1
        pending = self._pending
        pending[call_id] = (method, params, dst, None)
        if len(pending) > self.max_pending:
            self._evict()
        return call_id, text

    def _template(self, method: str, dst: str | None) -> str:
        # What encode_request writes between the id and the params, so the text is the same.
        head = '{"id":0'
        text = encode_request(method, id=0, src=self.src, dst=dst).decode("utf-8")
        assert text.startswith(head) and text.endswith("}")
        if len(self._templates) >= _MAX_ADDRESSINGS:
            self._templates.clear()
        rest = self._templates[method if dst is None else (method, dst)] = text[len(head) : -1]
        return rest

    def _add(self, call_id: int, call: _Pending) -> None:
        self._pending[call_id] = call
        if len(self._pending) > self.max_pending:
            self._evict()

    def _evict(self) -> None:
        # §1 "Matching": the oldest pending call is failed locally.
        oldest = next(iter(self._pending))
        del self._pending[oldest]
        self._retried.discard(oldest)
        self._events.append(CallFailed(oldest, RpcError(429, "Request queue overflow")))

    def notify(self, method: str, params: Any = None, *, dst: str | None = None) -> None:
        """Queue a notification: a request without an id, which gets no reply."""
        self._outgoing.append(
            encode_request(method, params, src=self.src, dst=dst if dst is not None else self.dst)
        )

    def cancel(self, call_id: int) -> bool:
        """Forget a call (its timeout fired); a late reply is then ignored. False if unknown."""
        self._retried.discard(call_id)
        return self._pending.pop(call_id, None) is not None

    def frames_to_send(self) -> list[bytes]:
        """The frames to send, in order, each one message (or line) of its own."""
        frames, self._outgoing = self._outgoing, []
        return frames

    def events_received(self) -> list[Event]:
        """What happened since the last time, in order."""
        events, self._events = self._events, []
        return events

    def receive_result(self, data: bytes | bytearray | memoryview | str) -> tuple[int, Any] | None:
        """The fast path of `receive_frame` for what a client mostly gets: a successful reply.

        Returns:
            (id, result) when data is a successful response to a waiting call (as
            `tether.rpc.frames.parse_result` finds them); the call is then done, and
            no `CallResult` is queued for it. Otherwise None, and nothing changed:
            pass data to `receive_frame`.
        """
        found = _scan_result(data, self.max_frame_size)
        if found is None or self._pending.pop(found[0], None) is None:
            return None
        if self._retried:
            self._retried.discard(found[0])
        return found

    def receive_frame(self, data: bytes | bytearray | memoryview | str) -> None:
        """Take one frame the peer sent.

        Raises:
            InvalidFrame: (see `tether.rpc.frames.parse_frame`) if it is not a frame;
                the caller logs it and goes on.
        """
        success = self.receive_result(data)
        if success is not None:
            self._events.append(CallResult(*success))
            return
        frame = parse_frame(data, max_size=self.max_frame_size)
        if isinstance(frame, Request):
            self._events.append(RequestReceived(frame))
            return
        id_json = frame.id_json
        # Our ids are positive integers: only such text can match one.
        call_id = int(id_json) if id_json is not None and id_json.isascii() and id_json.isdigit() else None
        call = self._pending.pop(call_id, None) if call_id is not None else None
        if call_id is None or call is None:
            return  # §1 "Matching": unknown ids are ignored.
        retried = call_id in self._retried
        self._retried.discard(call_id)
        if frame.ok:
            self._events.append(CallResult(call_id, frame.result))
            return
        code = frame.error_code if frame.error_code is not None else -1
        if code == 401 and self.credentials is not None and not retried:
            challenge = parse_challenge(frame.error_message)
            if challenge is not None:
                user, password = self.credentials
                try:
                    auth = make_auth(challenge, user, password, self._rng.getrandbits(32))
                except ValueError:
                    pass
                else:
                    # §4: mos sends the call again with the same id and an auth object.
                    self._retried.add(call_id)
                    self._pending[call_id] = call
                    self._outgoing.append(self._encode(call_id, call, auth))
                    return
        self._events.append(CallFailed(call_id, RpcError(code, frame.error_message)))

    def _encode(self, call_id: int, call: _Pending, auth: Any) -> bytes:
        method, params, dst, tag = call
        return encode_request(method, params, id=call_id, src=self.src, dst=dst, tag=tag, auth=auth)
