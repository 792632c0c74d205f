"""The dashboard (``/ui``) and the API docs (``/docs``, ``/redoc``): static pages served from the package.

Nothing here reads the fleet: the pages' scripts call the JSON API with the key the user gives, so
the pages themselves are open and every number they show went through the API's own access checks.
Every asset lies in ``static/`` (vendored libraries under ``static/vendor/``, with their licences):
no CDN and no build step, and a Content-Security-Policy that lets a page load nothing from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.ui.docs import docs_routes

STATIC = Path(__file__).parent / "static"
ASSETS = "/ui/"
"""Every file under ``static/`` is served below this path."""
PAGES = ("/ui", "/docs", "/redoc")
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; "
        b"base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
"""Inline styles are allowed (Swagger UI and ReDoc set them); inline scripts and other hosts are not."""


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every answer of the app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _to_dashboard(_: object) -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


def ui_routes() -> list[BaseRoute]:
    """The dashboard's and the docs' routes, for the service's app and the sharded front alike."""
    pages: list[BaseRoute] = [
        Route("/ui", _to_dashboard, include_in_schema=False),
        Mount("/ui", app=StaticFiles(directory=STATIC, html=True)),
        *docs_routes(),
    ]
    for route in pages:
        route.app = SecurityHeaders(route.app)  # type: ignore[attr-defined]
    return pages
