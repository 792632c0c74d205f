"""What every request passes before any route, in the service and at a sharded fleet's front.

Outermost first: who is calling (``Authenticate``: 401/403 before the body is read), whether a browser
sent it for a page of another origin (``BrowserGuard``), and how large its body may be (``BodyLimit``).
"""

from __future__ import annotations

from starlette.applications import Starlette

from service.api.auth import Authenticate, KeyRing, is_open
from service.api.browsers import BrowserGuard
from service.api.limits import BodyLimit
from service.config import Settings


def guard(app: Starlette, settings: Settings, keys: KeyRing | None, front_token: bytes | None = None) -> None:
    """Add the three, innermost first (Starlette runs the last one added first)."""
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, max_json_bytes=settings.max_json_body_bytes
    )
    app.add_middleware(
        BrowserGuard,
        protected=keys is None,
        allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.allowed_origins,
        open_path=is_open,
    )
    app.add_middleware(Authenticate, keys=keys, front_token=front_token)
