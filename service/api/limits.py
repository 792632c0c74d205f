"""Caps on request body size, enforced before the body is read into memory.

JSON bodies get a smaller cap than binary ones: decoding a JSON tensor costs about 10 times what the
same tensor costs as npz, in memory (Python numbers) and CPU.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.errors import BodyTooLarge

BINARY_TYPES = frozenset({b"application/x-npz", b"application/octet-stream"})
"""Bodies of these types (npz tensors, models, the v2 binary extension) get the larger cap."""


class BodyLimit:
    """413 for a body past ``max_bytes``, answered here: the application never sees such a request.

    A Content-Length past the limit is refused at once; one within it is passed on as it is, since the
    server reads no more than it announces. A body without one (chunked) is read here, up to the limit,
    and handed on as one message. Raising from inside ``receive`` instead would reach whatever is
    reading the body, and FastAPI turns errors while it parses a pydantic body into a 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_json_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_bytes = min(max_bytes, max_json_bytes or max_bytes)

    def _limit(self, scope: Scope) -> tuple[int, str]:
        """The cap for this body's content type, and the setting that sets it.

        Anything not declared binary gets the JSON cap: the routes read a body without a content
        type as JSON. The content type is the first such header, as the routes read it. The Open
        Inference Protocol's binary extension (its header, under ``/v2``) gets the body cap; the
        JSON part of such a body is held to the JSON cap where it is decoded.
        """
        kind = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
        kind = kind.split(b";")[0].strip().lower()
        binary = kind in BINARY_TYPES or (
            scope["path"].startswith("/v2/")
            and any(name == b"inference-header-content-length" for name, _ in scope["headers"])
        )
        if binary or self.max_json_bytes >= self.max_bytes:
            return self.max_bytes, "FLEET_MAX_BODY_BYTES"
        return self.max_json_bytes, "FLEET_MAX_JSON_BODY_BYTES"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: tuple[int, str]) -> None:
        message = f"request body is larger than the limit of {limit[0]} bytes ({limit[1]})"
        response = error_response(413, BodyTooLarge.code, message, path=scope["path"])
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        max_bytes = limit[0]
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > max_bytes:
                await self._refuse(scope, receive, send, limit)
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
            if size > max_bytes:
                await self._refuse(scope, receive, send, limit)
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
