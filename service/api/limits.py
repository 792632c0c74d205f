"""A cap on request body size, enforced before the body is read into memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.errors import BodyTooLarge


class BodyLimit:
    """413 for a body past ``max_bytes``, answered here: the application never sees such a request.

    A Content-Length past the limit is refused at once; one within it is passed on as it is, since the
    server reads no more than it announces. A body without one (chunked) is read here, up to the limit,
    and handed on as one message. Raising from inside ``receive`` instead would reach whatever is
    reading the body, and FastAPI turns errors while it parses a pydantic body into a 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than the limit of {self.max_bytes} bytes (FLEET_MAX_BODY_BYTES)"
        response = error_response(413, BodyTooLarge.code, message, path=scope["path"])
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left mid-body: nobody to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()  # after the body, what the server has to say (a disconnect)
            message, body = body, None
            return message

        await self.app(scope, replay, send)
