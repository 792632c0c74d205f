"""The API docs' pages: ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), both from vendored copies.

FastAPI's own pages load their scripts from a CDN and let the renderer fetch ``/openapi.json`` without a
key; these load everything from ``/ui/`` and fetch the document themselves (``static/docs.js``), with
the key the dashboard stored, so ``/openapi.json`` can keep needing one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

STATIC = Path(__file__).parent / "static"
PAGES = {"/docs": "docs.html", "/redoc": "redoc.html"}


def _page(file: Path) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint answering ``file``, read once: the pages are part of the package and do not change."""
    body = file.read_bytes()

    async def page(request: Request) -> Response:
        return Response(body, media_type="text/html", headers={"cache-control": "no-cache"})

    return page


def docs_routes() -> list[BaseRoute]:
    """``GET /docs`` and ``GET /redoc`` (HEAD too), left out of the OpenAPI document."""
    return [
        Route(path, _page(STATIC / name), methods=["GET", "HEAD"], include_in_schema=False)
        for path, name in PAGES.items()
    ]
