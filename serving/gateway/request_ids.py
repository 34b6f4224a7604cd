"""Every HTTP request gets an id: the caller's `X-Request-ID` when it sends a sane one (a proxy's),
else a new one. It is set as `towerflow.logs.REQUEST_ID` while the request is handled (log records
carry it), echoed in the `X-Request-ID` response header, and is the `request_id` of the
recommendations served, which clicks quote for attribution."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from towerflow.logs import REQUEST_ID

HEADER = b"x-request-id"
_SANE = re.compile(rb"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Pure ASGI (no extra task), so the id reaches the routes and everything they await."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope.get("headers", ()) if name == HEADER), b"")
        request_id = given.decode("ascii") if _SANE.match(given) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (HEADER, request_id.encode())]}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
