"""In-process clients that call from a loopback address, as a harness on the service's host does.

Starlette's ``TestClient`` calls from the host name ``testclient``, which protected mode (no API keys)
refuses like any remote client, and names the server ``testserver``, a Host protected mode refuses too
(only loopback names are served: DNS rebinding).
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from starlette.types import ASGIApp

LOOPBACK = ("127.0.0.1", 50000)
LOCAL_URL = "http://localhost"
JSON_TYPE = {"content-type": "application/json"}
NOT_A_PAGE = {"authorization": "Bearer not-a-web-page"}
"""A header no web page can send to another origin without a preflight: a POST bearing it may carry a
body without a content type (``service.api.browsers``). Protected mode ignores the key."""


def local_client(app: ASGIApp, **kwargs: Any) -> TestClient:
    kwargs.setdefault("base_url", LOCAL_URL)
    return TestClient(app, client=LOOPBACK, **kwargs)
