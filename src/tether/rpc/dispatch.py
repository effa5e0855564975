"""The RPC dispatcher: handlers by method name or glob, auth and ACL, limits (spec mgos-rpc.md §1.1).

Theory of operation. A channel hands each frame it receives to `Dispatcher.handle`
with the channel type (``WS_in``, ``HTTP``, ``MQTT``…) and the peer's address, and
sends back what it returns: the encoded reply, or None (a notification, a
response, or nothing to say). A frame the firmware treats as invalid raises an
`tether.rpc.frames.InvalidFrame` subclass instead: the channel logs it and, if
it is non-persistent, closes. The steps follow §1.1:

1. parse (`tether.rpc.frames.parse_frame`); a response is ignored here;
2. a ``dst`` that is not one of the device's ids → `WrongDestination`;
3. handler lookup, last registration first → 404 ``No handler for <method>``;
4. ACL and auth (§4) → 401 with a digest challenge, 403 ``unauthorized``, 400, 500;
5. the params against the handler's description → 400;
6. more than ``max_pending`` calls running → 429 ``Request queue overflow``;
7. the handler, within its deadline → its result, its `RpcError`, 504 ``deadline
   exceeded``, or 500 ``internal error`` (the exception is logged, never sent).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tether.errors import RpcError
from tether.rpc import schema
from tether.rpc.acl import Acl, Verdict
from tether.rpc.auth import DigestAuth, challenge_message
from tether.rpc.frames import (
    MAX_FRAME_SIZE,
    Reply,
    Request,
    WrongDestination,
    _error_text,
    _frozen,
    _parse_request,
    _result_text,
    parse_frame,
)
from tether.rpc.patterns import compile_glob, is_glob

__all__ = ["DEADLINE_EXCEEDED", "Call", "Dispatcher", "Handler", "HandlerInfo"]

logger = logging.getLogger("tether.rpc")

#: The error code of a call that outlived its deadline. The spec has no such code
#: (mgos has no per-call timeout, §1 "Matching"); 504 follows its HTTP-like codes.
DEADLINE_EXCEEDED = 504

Handler = Callable[["Call"], Any]
"""A handler takes a `Call` and returns the result, or an awaitable of it."""

H = TypeVar("H", bound=Handler)

#: Result types that are never awaitable: no `inspect.isawaitable` for them.
_PLAIN_RESULTS = frozenset([dict, list, str, int, float, bool, type(None)])


@dataclass(frozen=True)
class Call:
    """What a handler gets: the request and where it came from.

    Attributes:
        params: the params, checked against the handler's description with its
            defaults filled in; ``{}`` when the frame had none (§1: absent = empty).
        request: the parsed frame (method as called, id, src, dst, tag).
        channel: the channel type, e.g. ``WS_in``, ``HTTP``, ``MQTT``, ``UART``.
        peer: the peer's address (``RPC.Ping``'s ``channel_info``), "" if none.
        user: the authenticated user, None when the call needed none.
        push: sends a frame (a notification, e.g. a log line) to the caller on the
            connection the call came in on; returns False when it was dropped
            because the connection's send buffer is full, raises
            `tether.errors.ConnectionClosed` once the connection is gone. None on
            channels that carry no such frames (HTTP, MQTT).
    """

    params: Any
    request: Request
    channel: str
    peer: str = ""
    user: str | None = None
    push: Callable[[bytes], bool] | None = None

    @property
    def method(self) -> str:
        """The method as the caller spelled it."""
        return self.request.method


@dataclass(frozen=True)
class HandlerInfo:
    """A registered handler and its description.

    Attributes:
        name: the method name or glob it was registered with.
        handler: the callable.
        args: the JSON-Schema-like description of its params (`tether.rpc.schema`), or None.
        args_fmt: the scanf-like format ``RPC.Describe`` reports, or None.
        description: a sentence on what it does, "" if none.
        deadline: seconds it may run, None for the dispatcher's default.
        blocking: True to run a plain function in a worker thread.
    """

    name: str
    handler: Handler = field(repr=False)
    args: Mapping[str, Any] | None = None
    args_fmt: str | None = None
    description: str = ""
    deadline: float | None = None
    blocking: bool = False
    order: int = field(default=0, repr=False)
    pattern: re.Pattern[str] | None = field(default=None, repr=False)


class Dispatcher:
    """Routes request frames to handlers, with auth, ACL and limits (§1.1, §4).

    ``RPC.List``, ``RPC.Describe`` and ``RPC.Ping`` are registered at once (§3).

    Args:
        device_id: ``device.id``: the ``src`` of replies and a local ``dst``.
        local_ids: more ids the device answers to (e.g. added by a library).
        acl: the ``rpc.acl``; None allows every call without authentication (§4 rule 1).
        auth: in-frame digest checking (``rpc.auth_domain`` + ``rpc.auth_file``); None to
            take users only from the channel.
        max_pending: calls that may run at once; one more gets 429.
        deadline: seconds a handler may run by default, None for no limit.
        max_frame_size: the largest frame `handle` accepts, in bytes.
        clock: Unix time in seconds, for digest nonces.
    """

    def __init__(
        self,
        device_id: str = "tether",
        *,
        local_ids: Iterable[str] = (),
        acl: Acl | None = None,
        auth: DigestAuth | None = None,
        max_pending: int = 100,
        deadline: float | None = 30.0,
        max_frame_size: int = MAX_FRAME_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        self.device_id = device_id
        self.local_ids = frozenset([device_id, *local_ids])
        self.acl = acl
        self.auth = auth
        self.max_pending = max_pending
        self.deadline = deadline
        self.max_frame_size = max_frame_size
        self._clock = clock
        self._pending = 0
        self._order = 0
        self._exact: dict[str, HandlerInfo] = {}
        self._globs: list[HandlerInfo] = []
        self.add_handler("RPC.Ping", self._ping, description="The peer's address as the device sees it.")
        self.add_handler(
            "RPC.Describe",
            self._describe,
            args={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
            description="The description of a method's arguments.",
        )
        self.add_handler("RPC.List", self._list, description="The methods, most recent registration first.")

    # Registration (§1.1 step 4: last registration first).

    def add_handler(
        self,
        name: str,
        handler: Handler,
        *,
        args: Mapping[str, Any] | None = None,
        args_fmt: str | None = None,
        description: str = "",
        deadline: float | None = None,
        blocking: bool = False,
    ) -> None:
        """Register handler for a method name or glob; it overrides earlier matches.

        A name registered again replaces the earlier handler of that name (names
        compare case-insensitively, as methods match).

        Args:
            name: a method name such as ``Sum``, or a glob (``?``, ``*``, ``**``, ``,``/``|``).
            handler: called with a `Call`; returns the result or an awaitable of it,
                or raises `RpcError` to answer with that error.
            args: a description of the params (`tether.rpc.schema`): checked before
                the handler runs (400 on mismatch) and shown by ``RPC.Describe``.
            args_fmt: the format ``RPC.Describe`` reports; derived from args if None.
            description: what the method does.
            deadline: seconds this handler may run; None for the dispatcher's default.
            blocking: run a plain function in a worker thread instead of the event loop.

        Raises:
            ValueError: if name is empty or args is not a valid description.
        """
        if not name:
            raise ValueError("a handler needs a name")
        if args is not None:
            schema.check_schema(args)
        self.remove_handler(name)
        self._order += 1
        fmt = args_fmt if args_fmt is not None else schema.args_fmt(args)
        info = HandlerInfo(
            name,
            handler,
            args,
            fmt,
            description,
            deadline,
            blocking,
            self._order,
            compile_glob(name) if is_glob(name) else None,
        )
        if info.pattern is None:
            self._exact[name.lower()] = info
        else:
            self._globs.append(info)

    def method(
        self,
        name: str,
        *,
        args: Mapping[str, Any] | None = None,
        args_fmt: str | None = None,
        description: str = "",
        deadline: float | None = None,
        blocking: bool = False,
    ) -> Callable[[H], H]:
        """A decorator that registers a handler with `add_handler`::

        @dispatcher.method("Sum", args={"type": "object", "properties": {"a": {"type": "number"}}})
        def sum_(call):
            return call.params["a"] + 1
        """

        def register(handler: H) -> H:
            self.add_handler(
                name,
                handler,
                args=args,
                args_fmt=args_fmt,
                description=description,
                deadline=deadline,
                blocking=blocking,
            )
            return handler

        return register

    def remove_handler(self, name: str) -> bool:
        """Forget the handler registered under name; returns False if there was none."""
        key = name.lower()
        if self._exact.pop(key, None) is not None:
            return True
        for i, info in enumerate(self._globs):
            if info.name.lower() == key:
                del self._globs[i]
                return True
        return False

    def handlers(self) -> list[HandlerInfo]:
        """The registered handlers, most recent first."""
        return sorted([*self._exact.values(), *self._globs], key=lambda h: -h.order)

    def lookup(self, method: str) -> HandlerInfo | None:
        """The handler a call of method goes to, or None (§1.1 step 4)."""
        best = self._exact.get(method.lower())
        for info in reversed(self._globs):
            if best is not None and info.order < best.order:
                break
            assert info.pattern is not None
            if info.pattern.fullmatch(method):
                return info
        return best

    @property
    def pending(self) -> int:
        """The number of calls running now."""
        return self._pending

    # Serving.

    async def handle(
        self,
        data: bytes | bytearray | memoryview | str,
        *,
        channel: str,
        peer: str = "",
        user: str | None = None,
        push: Callable[[bytes], bool] | None = None,
    ) -> bytes | None:
        """Answer one frame received on a channel.

        Args:
            data: the frame's bytes or text.
            channel: the channel type (``WS_in``, ``WS_out``, ``HTTP``, ``MQTT``, ``UART``…),
                which ACL entries' ``ch_type`` compare with.
            peer: the peer's address, e.g. ``10.0.0.9:51234``.
            user: the user the channel authenticated (HTTP Digest, WebSocket handshake), if any.
            push: how a handler sends the caller further frames (`Call.push`), if the
                channel can.

        Returns:
            The encoded reply to send back, or None for a notification or a response.

        Raises:
            InvalidFrame: (a `tether.rpc.frames` subclass: `FrameTooBig`, `InvalidJson`,
                `NotAnObject`, `InvalidId`, `WrongDestination`) for a frame that gets
                no reply; a non-persistent channel closes.
        """
        reply = self._handle_now(data, channel, peer, user, push)
        if reply is not None and not isinstance(reply, str):
            reply = await reply  # the rest of a handler that waits
        return None if reply is None else reply.encode("utf-8")

    def _handle_now(
        self,
        data: bytes | bytearray | memoryview | str,
        channel: str,
        peer: str,
        user: str | None,
        push: Callable[[bytes], bool] | None = None,
    ) -> str | Coroutine[Any, Any, str | None] | None:
        """`handle` without a coroutine for a handler that answers at once.

        Returns the reply's text (always encodable as UTF-8; a WebSocket sends it as
        a text message as it is) or None, or, when the handler returned an awaitable
        (or is blocking), a coroutine that finishes the call: its caller must run it
        at once, the call counts as pending until it ends. This is the path of every
        frame: one plain call for a plain handler (most, and the built-ins), no
        nested coroutines, and the request parsed by one function when it has the
        usual shape (`tether.rpc.frames._parse_request`).
        """
        request = _parse_request(data, self.max_frame_size) if type(data) is str else None
        if request is None:
            frame = parse_frame(data, max_size=self.max_frame_size)
            if not isinstance(frame, Request):
                return None  # §1 "Matching": responses go to a client; here nothing waits.
            request = frame
        dst = request.dst
        if dst and dst not in self.local_ids:
            raise WrongDestination(f"dst {dst!r} is not this device")
        info = None if self._globs or self.acl is not None else self._exact.get(request.method.lower())
        if info is not None and info.args is None and self._pending < self.max_pending:
            # What _prepare does when there is nothing to check: no glob, ACL or description.
            params = request.params
            call: Call = _frozen(
                Call,
                {
                    "params": {} if params is None else params,
                    "request": request,
                    "channel": channel,
                    "peer": peer,
                    "user": user,
                    "push": push,
                },
            )
        else:
            try:
                info, call = self._prepare(request, channel, peer, user, push)
            except RpcError as error:
                return self._error_reply(request, error)
        self._pending += 1
        if info.blocking:
            return self._finish(request, self._run(info, call))
        try:
            result = info.handler(call)
        except RpcError as error:
            return self._error_reply(request, error)
        except Exception:
            logger.exception("handler of %s raised", request.method)
            return self._error_reply(request, RpcError(500, "internal error"))
        else:
            if type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
                self._pending += 1  # until _finish ends
                deadline = self.deadline if info.deadline is None else info.deadline
                return self._finish(request, self._awaited(self._within(result, deadline), call))
        finally:
            self._pending -= 1
        id_json = request.id_json
        if id_json is None:
            return None
        try:
            return _result_text(id_json, dst or self.device_id, request.src, request.tag, result)
        except (TypeError, ValueError):
            return self._encode_result(request, result)  # logs it, answers 500

    async def _finish(self, request: Request, running: Awaitable[Any]) -> str | None:
        """The rest of a call whose handler waits; `_handle_now` counted it as pending."""
        try:
            result = await running
        except RpcError as error:
            return self._error_reply(request, error)
        finally:
            self._pending -= 1
        if request.id_json is None:
            return None
        return self._encode_result(request, result)

    @staticmethod
    async def _awaited(running: Awaitable[Any], call: Call) -> Any:
        try:
            return await running
        except RpcError:
            raise
        except Exception:
            logger.exception("handler of %s raised", call.method)
            raise RpcError(500, "internal error") from None

    def _error_reply(self, request: Request, error: RpcError) -> str | None:
        """The text of the error reply to request, None for a notification."""
        if request.id_json is None:
            return None
        return _error_text(
            request.id_json,
            request.dst or self.device_id,
            request.src,
            request.tag,
            error.code,
            error.message,
        )

    def _encode_result(self, request: Request, result: Any) -> str:
        """The text of `encode` of the reply to request, without building a `Reply` first."""
        id_json = request.id_json
        assert id_json is not None
        try:
            return _result_text(id_json, request.dst or self.device_id, request.src, request.tag, result)
        except (TypeError, ValueError):
            logger.exception("result of call %s is not JSON", id_json)
            return _error_text(
                id_json, request.dst or self.device_id, request.src, request.tag, 500, "internal error"
            )

    async def dispatch(
        self,
        request: Request,
        *,
        channel: str,
        peer: str = "",
        user: str | None = None,
        push: Callable[[bytes], bool] | None = None,
    ) -> Reply | None:
        """Run a parsed request (steps 2-7 above); the lower-level twin of `handle`.

        Returns:
            The reply, or None for a notification. Encode it with `encode`.

        Raises:
            WrongDestination: if the request's ``dst`` is not one of the device's ids.
        """
        if request.dst and request.dst not in self.local_ids:
            raise WrongDestination(f"dst {request.dst!r} is not this device")
        try:
            result = await self._call(request, channel, peer, user, push)
        except RpcError as error:
            if request.id_json is None:
                return None
            return Reply.to(
                request, device_id=self.device_id, error_code=error.code, error_message=error.message
            )
        if request.id_json is None:
            return None
        return Reply.to(request, device_id=self.device_id, result=result)

    def encode(self, reply: Reply) -> bytes:
        """Encode a reply; a result JSON cannot represent becomes 500 ``internal error``."""
        try:
            return reply.encode()
        except (TypeError, ValueError):
            logger.exception("result of call %s is not JSON", reply.id_json)
            return Reply(reply.id_json, reply.src, reply.dst, reply.tag, None, 500, "internal error").encode()

    async def _call(
        self,
        request: Request,
        channel: str,
        peer: str,
        channel_user: str | None,
        push: Callable[[bytes], bool] | None,
    ) -> Any:
        info, call = self._prepare(request, channel, peer, channel_user, push)
        self._pending += 1
        try:
            return await self._run(info, call)
        finally:
            self._pending -= 1

    def _prepare(
        self,
        request: Request,
        channel: str,
        peer: str,
        channel_user: str | None,
        push: Callable[[bytes], bool] | None = None,
    ) -> tuple[HandlerInfo, Call]:
        """Steps 3-6: the handler and its `Call`; raises RpcError 404, 401, 403, 400, 429."""
        method = request.method
        info = self.lookup(method) if self._globs else self._exact.get(method.lower())
        if info is None:
            raise RpcError(404, f"No handler for {method}")
        user = channel_user if self.acl is None else self._authorize(request, channel, channel_user)
        params = {} if request.params is None else request.params
        if info.args is not None:
            try:
                params = schema.validate(info.args, params)
            except schema.InvalidArgs as exc:
                raise RpcError(400, str(exc)) from None
        if self._pending >= self.max_pending:
            raise RpcError(429, "Request queue overflow")
        call: Call = _frozen(
            Call,
            {
                "params": params,
                "request": request,
                "channel": channel,
                "peer": peer,
                "user": user,
                "push": push,
            },
        )
        return info, call

    def _authorize(self, request: Request, channel: str, channel_user: str | None) -> str | None:
        """Apply the ACL (§4); returns the user, raises RpcError 400/401/403/500."""
        if self.acl is None:
            return channel_user  # §4 rule 1: no ACL, no authentication
        entry = self.acl.find(request.method, channel)
        verdict = Verdict.DENY if entry is None else entry.verdict
        if verdict is Verdict.ALLOW:
            return channel_user
        if entry is None or verdict is Verdict.DENY:
            raise RpcError(403, "unauthorized")
        now = self._clock()
        if request.auth is not None and self.auth is not None:
            user = self.auth.authenticate(request.auth, now)
        elif channel_user:
            user = channel_user
        elif self.auth is not None:
            raise self.auth.challenge(now)
        else:
            raise RpcError(401, challenge_message("RPC", int(now)))
        if not entry.allows(user):
            raise RpcError(403, "unauthorized")
        return user

    async def _run(self, info: HandlerInfo, call: Call) -> Any:
        deadline = self.deadline if info.deadline is None else info.deadline
        try:
            if info.blocking:
                loop = asyncio.get_running_loop()
                return await self._within(loop.run_in_executor(None, info.handler, call), deadline)
            result = info.handler(call)
            if type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
                result = await self._within(result, deadline)
            return result
        except RpcError:
            raise
        except Exception:
            logger.exception("handler of %s raised", call.method)
            raise RpcError(500, "internal error") from None

    @staticmethod
    async def _within(awaitable: Awaitable[Any], deadline: float | None) -> Any:
        if deadline is None:
            return await awaitable

        async def outcome() -> tuple[bool, Any]:
            # Keep the handler's own TimeoutError apart from the deadline's.
            try:
                return True, await awaitable
            except Exception as exc:
                return False, exc

        try:
            ok, value = await asyncio.wait_for(outcome(), deadline)
        except asyncio.TimeoutError:
            raise RpcError(DEADLINE_EXCEEDED, "deadline exceeded") from None
        if not ok:
            raise value
        return value

    # Built-in services (§3).

    def _ping(self, call: Call) -> dict[str, str]:
        return {"channel_info": call.peer}

    def _list(self, call: Call) -> list[str]:
        return [info.name for info in self.handlers()]

    def _describe(self, call: Call) -> dict[str, Any]:
        name = call.params["name"]
        info = self._exact.get(name.lower()) or next(
            (g for g in self._globs if g.name.lower() == name.lower()), None
        )
        if info is None:
            raise RpcError(404, "name not found")
        description: dict[str, Any] = {"name": info.name, "args_fmt": info.args_fmt}
        # tether's additions after mgos's two fields: the full description, when given.
        if info.args is not None:
            description["args"] = info.args
        if info.description:
            description["description"] = info.description
        return description
