"""RPC channels: the ways frames reach a `tether.rpc.Dispatcher` (spec mgos-rpc.md §2).

`mount_rpc` puts the WebSocket channel and both HTTP modes on ``/rpc`` of a
`tether.http.App`; `DialOut` is the outbound WebSocket channel. MQTT and serial
live in `tether.rpc.channels.mqtt` and `tether.rpc.channels.serial`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.http.app import App
from tether.rpc.channels.dialout import DialOut
from tether.rpc.channels.http import HttpChannel, http_digest_for, mount_http
from tether.rpc.channels.origin import OriginPolicy
from tether.rpc.channels.ws import WebSocketChannel, mount_websocket
from tether.rpc.dispatch import Dispatcher

__all__ = ["DialOut", "HttpChannel", "OriginPolicy", "RpcMount", "WebSocketChannel", "mount_rpc"]


@dataclass(frozen=True)
class RpcMount:
    """What `mount_rpc` put on the app.

    Attributes:
        websocket: the WebSocket channel, None if not mounted.
        http: the HTTP channel, None if not mounted.
    """

    websocket: WebSocketChannel | None
    http: HttpChannel | None


def mount_rpc(
    app: App,
    dispatcher: Dispatcher,
    path: str = "/rpc",
    *,
    websocket: bool = True,
    http: bool = True,
    ping_interval: float | None = 20.0,
    origins: OriginPolicy | None = None,
) -> RpcMount:
    """Serve dispatcher on path of app: WebSocket (§2.1), HTTP frame and REST modes (§2.2).

    Example::

        app = tether.http.App()
        mount_rpc(app, dispatcher)
        async with tether.http.serve(app, "127.0.0.1", 8000) as server:
            await server.serve_forever()

    Args:
        app: the HTTP application.
        dispatcher: where the calls go; its ``acl`` and ``auth`` apply to every channel.
        path: ``/rpc`` as the firmware; REST mode is path + ``/<Method>``.
        websocket: mount the WebSocket channel (``rpc.ws.enable``).
        http: mount the HTTP channel (``rpc.http_enable``).
        ping_interval: seconds between WebSocket keepalive pings, None for none.
        origins: the web pages of other origins that may call (`OriginPolicy`; ``["*"]``
            for any, as Mongoose OS); by default a web page may call only from the
            server's own origin, and programs that are not browsers always may.

    Returns:
        The mounted channels.

    Raises:
        ValueError: if path already has routes.
    """
    http_auth = http_digest_for(dispatcher)
    ws_channel = (
        mount_websocket(
            app, dispatcher, path, http_auth=http_auth, ping_interval=ping_interval, origins=origins
        )
        if websocket
        else None
    )
    http_channel = mount_http(app, dispatcher, path, http_auth=http_auth, origins=origins) if http else None
    return RpcMount(ws_channel, http_channel)
