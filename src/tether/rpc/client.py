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
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tether.errors import RpcError
from tether.rpc.auth import make_auth, parse_challenge
from tether.rpc.frames import MAX_FRAME_SIZE, Request, encode_request, parse_frame, parse_result

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


@dataclass
class _Pending:
    id: int
    method: str
    params: Any
    dst: str | None
    tag: str | None
    retried: bool = False


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
        self.src = src
        self.dst = dst
        self.credentials = credentials
        self.max_pending = max_pending
        self.max_frame_size = max(max_frame_size, MAX_FRAME_SIZE)
        self._rng = rng or random.Random()
        self._next_id = (1 << 40) | self._rng.getrandbits(40)
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._outgoing: list[bytes] = []
        self._events: list[Event] = []

    def __repr__(self) -> str:
        user = None if self.credentials is None else self.credentials[0]
        return (
            f"RpcClientCore(src={self.src!r}, dst={self.dst!r}, user={user!r}, pending={len(self._pending)})"
        )

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
        call = _Pending(self._next_id, method, params, dst if dst is not None else self.dst, tag)
        frame = self._encode(call, None)
        self._next_id += 1
        self._outgoing.append(frame)
        self._pending[str(call.id)] = call
        if len(self._pending) > self.max_pending:
            # §1 "Matching": the oldest pending call is failed locally.
            _, oldest = self._pending.popitem(last=False)
            self._events.append(CallFailed(oldest.id, RpcError(429, "Request queue overflow")))
        return call.id

    def notify(self, method: str, params: Any = None, *, dst: str | None = None) -> None:
        """Queue a notification: a request without an id, which gets no reply."""
        self._outgoing.append(
            encode_request(method, params, src=self.src, dst=dst if dst is not None else self.dst)
        )

    def cancel(self, call_id: int) -> bool:
        """Forget a call (its timeout fired); a late reply is then ignored. False if unknown."""
        return self._pending.pop(str(call_id), None) is not None

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
        success = parse_result(data, max_size=self.max_frame_size)
        if success is None:
            return None
        done = self._pending.pop(success[0], None)
        if done is None:
            return None
        return done.id, success[1]

    def receive_frame(self, data: bytes | bytearray | memoryview | str) -> None:
        """Take one frame the peer sent.

        Raises:
            InvalidFrame: (see `tether.rpc.frames.parse_frame`) if it is not a frame;
                the caller logs it and goes on.
        """
        success = parse_result(data, max_size=self.max_frame_size)
        if success is not None:
            id_json, result = success
            done = self._pending.pop(id_json, None)
            if done is not None:
                self._events.append(CallResult(done.id, result))
            return
        frame = parse_frame(data, max_size=self.max_frame_size)
        if isinstance(frame, Request):
            self._events.append(RequestReceived(frame))
            return
        call = self._pending.pop(frame.id_json, None) if frame.id_json is not None else None
        if call is None:
            return  # §1 "Matching": unknown ids are ignored.
        if frame.ok:
            self._events.append(CallResult(call.id, frame.result))
            return
        code = frame.error_code if frame.error_code is not None else -1
        if code == 401 and self.credentials is not None and not call.retried:
            challenge = parse_challenge(frame.error_message)
            if challenge is not None:
                user, password = self.credentials
                try:
                    auth = make_auth(challenge, user, password, self._rng.getrandbits(32))
                except ValueError:
                    pass
                else:
                    # §4: mos sends the call again with the same id and an auth object.
                    call.retried = True
                    self._pending[str(call.id)] = call
                    self._outgoing.append(self._encode(call, auth))
                    return
        self._events.append(CallFailed(call.id, RpcError(code, frame.error_message)))

    def _encode(self, call: _Pending, auth: Any) -> bytes:
        return encode_request(
            call.method, call.params, id=call.id, src=self.src, dst=call.dst, tag=call.tag, auth=auth
        )
