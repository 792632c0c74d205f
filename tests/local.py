"""In-process clients that call from a loopback address, as a harness on the service's host does.

Starlette's ``TestClient`` calls from the host name ``testclient``, which protected mode (no API keys)
refuses like any remote client.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from starlette.types import ASGIApp

LOOPBACK = ("127.0.0.1", 50000)


def local_client(app: ASGIApp, **kwargs: Any) -> TestClient:
    return TestClient(app, client=LOOPBACK, **kwargs)
