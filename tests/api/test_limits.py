"""BodyLimit at the ASGI level: what the application behind it receives, and what the client is sent."""

from __future__ import annotations

import anyio
import orjson
from starlette.types import Message, Receive, Scope, Send

from service.api.limits import BodyLimit

LIMIT = 100


class Recorder:
    """An ASGI application that reads every message it is given until the body ends, and answers 200."""

    def __init__(self) -> None:
        self.called = False
        self.received: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def run(
    messages: list[Message], headers: list[tuple[bytes, bytes]], path: str = "/v1/x"
) -> tuple[Recorder, list[Message]]:
    """Pass ``messages`` (then a disconnect) through BodyLimit; the app behind it, and what was sent."""
    app, sent = Recorder(), []
    pending = [*messages, {"type": "http.disconnect"}]

    async def receive() -> Message:
        return pending.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    anyio.run(BodyLimit(app, LIMIT), scope, receive, send)
    return app, sent


def chunk(body: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def test_a_chunked_body_within_the_limit_reaches_the_app_as_one_message() -> None:
    app, sent = run([chunk(b"a" * 60), chunk(b"b" * 40), chunk(b"", more=False)], [])
    assert app.received == [{"type": "http.request", "body": b"a" * 60 + b"b" * 40, "more_body": False}]
    assert sent[0]["status"] == 200


def test_a_chunked_body_past_the_limit_is_refused_here_in_the_paths_error_shape() -> None:
    for path, error in (("/v1/x", {"code": "body_too_large"}), ("/v2/models/a/infer", None)):
        app, sent = run([chunk(b"a" * 60), chunk(b"b" * 41)], [], path)
        assert not app.called
        assert sent[0]["status"] == 413
        body = orjson.loads(sent[1]["body"])
        if error:
            assert body["error"]["code"] == "body_too_large"
        else:
            assert isinstance(body["error"], str) and "larger than the limit of 100 bytes" in body["error"]


def test_a_client_leaving_mid_body_is_not_answered() -> None:
    app, sent = run([chunk(b"a" * 10)], [])  # then the disconnect
    assert not app.called and sent == []


def test_a_content_length_decides_at_once() -> None:
    app, sent = run([chunk(b"a" * 101, more=False)], [(b"content-length", b"101")])
    assert not app.called and sent[0]["status"] == 413
    app, sent = run([chunk(b"a" * 100, more=False)], [(b"content-length", b"100")])
    assert app.received == [chunk(b"a" * 100, more=False)] and sent[0]["status"] == 200
