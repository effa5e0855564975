"""The HTTP channel: ``POST /rpc`` (frame mode) and ``/rpc/<Method>`` (REST mode), spec mgos-rpc.md §2.2.

Frame mode: the body is one request frame; the answer is 200 with the whole reply
frame, errors included; a frame without ``id`` gets an empty 200; an invalid frame
400 ``Invalid request``.

REST mode: any HTTP method on ``/rpc/<Method>``; the args are the raw body, or,
for an empty body, an object built from the query string whose values are read as
JSON (``?a=1&b=2`` → ``{"a":1,"b":2}``) and as strings where they are not JSON.
The answer is the bare ``result`` (200), or the ``error`` object with status 403 or
404 for those codes, 500 for any other.

Both modes: a call that needs a user and has none answers HTTP 401 with an empty
body and a ``WWW-Authenticate: Digest`` challenge; the client repeats the request
with an ``Authorization`` header, checked (RFC 7616, MD5) against the dispatcher's
htdigest file and realm, whose user the call then runs as. ``OPTIONS`` answers 200
(CORS). Every answer carries ``Content-Type: application/json`` and
``Access-Control-Allow-Origin`` (the calling page's origin, or ``*`` for a caller that
is not a web page); a body ends with CRLF, as the firmware's. Unlike the firmware, a
web page of another origin is refused with 403 unless allowed (`OriginPolicy`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import urllib.parse
from typing import Any

from tether.http.app import App, Request, Response
from tether.http.auth import DigestAuth as HttpDigestAuth
from tether.http.parser import Headers, HTTPError
from tether.rpc.channels.origin import OriginPolicy
from tether.rpc.channels.ws import format_peer
from tether.rpc.dispatch import Dispatcher
from tether.rpc.frames import InvalidFrame, RawJSON, Reply, parse_frame
from tether.rpc.frames import Request as RpcRequest

__all__ = ["HttpChannel", "http_digest_for", "mount_http", "parse_query_args"]

logger = logging.getLogger("tether.rpc")

_CORS_HEADERS = ("Access-Control-Allow-Headers", "*")
_JSON = "application/json"
_REST_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def http_digest_for(dispatcher: Dispatcher) -> HttpDigestAuth:
    """The HTTP Digest check matching a dispatcher's in-frame auth (same file and realm).

    Without in-frame auth there is no password file: the challenge is still sent
    (realm ``RPC``), and no answer to it is valid.
    """
    auth = dispatcher.auth
    if auth is None:
        return HttpDigestAuth(os.devnull, "RPC")
    return HttpDigestAuth(auth.htdigest.path, auth.realm)


def parse_query_args(query: str) -> dict[str, Any]:
    """The args object of a REST-mode GET from its query string (§2.2).

    Values are read as JSON, as the firmware inserts them raw (``a=1`` is the number
    1, ``s=%22x%22`` the string ``x``); a value that is not JSON is taken as a string.
    """
    args: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args


class _Unauthenticated:
    """A request without credentials, to draw a fresh challenge from the HTTP auth."""

    __slots__ = ("headers", "method", "target")

    def __init__(self, request: Request) -> None:
        self.method = request.method
        self.target = request.target
        self.headers = Headers([])


class HttpChannel:
    """The HTTP handlers of ``/rpc`` (frame mode) and ``/rpc/{method}`` (REST mode).

    Use `mount_http` (or `tether.rpc.channels.mount_rpc`) rather than building it.

    Args:
        dispatcher: where calls go.
        http_auth: the HTTP Digest check; by default `http_digest_for(dispatcher)`.
        channel: the channel type ACL entries see.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        http_auth: HttpDigestAuth | None = None,
        channel: str = "HTTP",
        origins: OriginPolicy | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.origins = origins if origins is not None else OriginPolicy()
        self.http_auth = http_auth if http_auth is not None else http_digest_for(dispatcher)
        self.channel = channel
        self._rng = random.Random()

    def _user(self, request: Request) -> str | None:
        if not request.headers.get("authorization"):
            return None
        try:
            return self.http_auth.authenticate(request)
        except HTTPError:
            return None  # treated as no user: a call that needs one gets a fresh challenge

    def _unauthorized(self, request: Request, cors: list[tuple[str, str]]) -> Response:
        try:
            self.http_auth.authenticate(_Unauthenticated(request))
        except HTTPError as exc:
            headers = [*cors, *exc.headers]
        else:  # pragma: no cover - a request without credentials never passes
            headers = list(cors)
        return Response(b"", 401, headers, content_type=_JSON)

    def _cors(self, request: Request) -> list[tuple[str, str]]:
        """The CORS fields of the answer; HTTPError 403 for a web page of another origin."""
        allowed = self.origins.check(request.headers)
        fields = [("Access-Control-Allow-Origin", allowed), _CORS_HEADERS]
        if allowed != "*":
            fields.append(("Vary", "Origin"))
        return fields

    @staticmethod
    def _answer(cors: list[tuple[str, str]], body: bytes, status: int = 200) -> Response:
        return Response(body + b"\r\n" if body else b"", status, cors, content_type=_JSON)

    @staticmethod
    def _invalid(cors: list[tuple[str, str]]) -> Response:
        return Response(b"Invalid request\r\n", 400, cors, content_type="text/plain; charset=utf-8")

    async def frame_mode(self, request: Request) -> Response:
        """``POST /rpc``: one frame in, the reply frame out."""
        cors = self._cors(request)
        if request.method == "OPTIONS":
            return self._answer(cors, b"")
        body = await request.body()
        dispatcher = self.dispatcher
        try:
            frame = parse_frame(body, max_size=dispatcher.max_frame_size)
            if not isinstance(frame, RpcRequest):
                return self._answer(cors, b"")  # a response: nothing waits for it here
            reply = await dispatcher.dispatch(
                frame, channel=self.channel, peer=format_peer(request.client), user=self._user(request)
            )
        except InvalidFrame as exc:
            logger.info("invalid frame from %s: %s", format_peer(request.client), exc)
            return self._invalid(cors)
        if reply is None:
            return self._answer(cors, b"")  # a notification: the quirk answers nothing; tether, an empty 200
        if reply.error_code == 401:
            return self._unauthorized(request, cors)
        return self._answer(cors, dispatcher.encode(reply))

    async def rest_mode(self, request: Request) -> Response:
        """``/rpc/<Method>``: args from the body or the query, the bare result out."""
        cors = self._cors(request)
        if request.method == "OPTIONS":
            return self._answer(cors, b"")
        method = request.path_params["method"]
        body = await request.body()
        dispatcher = self.dispatcher
        params: Any = None
        if len(body) > dispatcher.max_frame_size:
            return self._invalid(cors)
        if body.strip():
            try:
                params = json.loads(body)
            except ValueError:
                return self._invalid(cors)
        elif request.query_string:
            params = parse_query_args(request.query_string)
        call_id = self._rng.getrandbits(31) + 1
        rpc_request = RpcRequest(method, params, call_id, str(call_id))
        reply = await dispatcher.dispatch(
            rpc_request, channel=self.channel, peer=format_peer(request.client), user=self._user(request)
        )
        assert reply is not None  # the request has an id
        if reply.error_code == 401:
            return self._unauthorized(request, cors)
        if reply.ok:
            result = self._result(reply)
            if result is None:
                return self._answer(cors, b'{"code":500,"message":"internal error"}', 500)
            return self._answer(cors, result)
        error: dict[str, Any] = {"code": reply.error_code}
        if reply.error_message:
            error["message"] = reply.error_message
        status = reply.error_code if reply.error_code in (403, 404) else 500
        return self._answer(cors, _ENCODER.encode(error).encode("utf-8"), status)

    def _result(self, reply: Reply) -> bytes | None:
        result = reply.result
        if isinstance(result, RawJSON):
            return result.text.encode("utf-8")
        try:
            return _ENCODER.encode(result).encode("utf-8")
        except (TypeError, ValueError):
            # As Dispatcher.encode does for a frame: never a traceback to the client.
            logger.exception("result of %s is not JSON", reply.id_json)
            return None


def mount_http(
    app: App,
    dispatcher: Dispatcher,
    path: str = "/rpc",
    *,
    http_auth: HttpDigestAuth | None = None,
    origins: OriginPolicy | None = None,
) -> HttpChannel:
    """Serve RPC over HTTP on path (frame mode) and path/<Method> (REST mode), §2.2.

    Args:
        origins: the web pages of other origins that may call (`OriginPolicy`); by
            default none: a browser page may call only from the device's own origin.

    Returns:
        The channel's handlers.
    """
    channel = HttpChannel(dispatcher, http_auth=http_auth, origins=origins)
    app.route(path, ("POST", "OPTIONS"))(channel.frame_mode)
    app.route(path + "/", ("POST", "OPTIONS"))(channel.frame_mode)
    app.route(path + "/{method}", _REST_METHODS)(channel.rest_mode)
    return channel
