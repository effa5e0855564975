"""HTTP/1.1 server (RFC 9110, RFC 9112): a sans-I/O core and an asyncio front end.

A device's web UI and REST API, as the Mongoose web server serves them::

    from tether.http import App, serve

    app = App(web_root="www")          # static files, .shtml Server Side Includes

    @app.get("/api/cpu")
    async def cpu(request):
        return {"cpu": 12.5}           # JSON

    @app.websocket("/ws")
    async def ws(websocket):
        async for message in websocket:
            await websocket.send(message)

    async with serve(app, "127.0.0.1", 8000) as server:
        await server.serve_forever()

The core is `tether.http.protocol` (with `tether.http.parser` and
`tether.http.multipart`); see docs/http.md.
"""

from __future__ import annotations

from tether.http.app import App, FormData, Request, Response, UploadFile
from tether.http.auth import BasicAuth, BearerAuth, DigestAuth, write_htdigest
from tether.http.parser import Headers, HTTPError
from tether.http.server import Server, serve

__all__ = [
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
]
