"""What a web page may ask of the service: nothing, unless it is one of the service's own pages.

In protected mode a loopback client stands for the admin, and a browser on this machine is on loopback
whatever page it shows. Any page can make it send requests (a form, ``fetch`` in ``no-cors`` mode), and
a page whose name its owner rebinds to 127.0.0.1 can even read the answers. Three checks keep them out:

- **Host** (DNS rebinding): such a page's requests say ``Host: evil.example``. In protected mode only
  loopback names and ``FLEET_ALLOWED_HOSTS`` are served; with keys, ``FLEET_ALLOWED_HOSTS`` when set.
- **Origin** (cross-site request forgery): a browser names the page's origin on every request but a
  plain navigation or subresource; one that is not the service's own (nor in ``FLEET_ALLOWED_ORIGINS``),
  or ``Sec-Fetch-Site: cross-site``, is refused.
- **Content type**: without asking the server first (a CORS preflight, which this service never grants),
  a page can send only GET, HEAD and POST, and a POST's body only as ``text/plain``, a form or with no
  type at all. A POST with a body must declare JSON, npz or a binary stream, unless it carries a header
  a page cannot send without a preflight (an API key, the Open Inference Protocol's binary header).
  PUT, PATCH and DELETE always need a preflight, so no page sends them to another origin. The Open
  Inference Protocol's POSTs (``/v2``) infer and change nothing; its clients often send no type.

Probes and the static pages (``/ui``, ``/docs``) hold no data and are left alone. Requests a sharded
fleet's front relays were checked by the front.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import OIP_PREFIX, error_response, status_of
from service.errors import FleetError, Forbidden, UnsupportedMediaType

DECLARED_TYPES = frozenset({"application/json", "application/x-npz", "application/octet-stream"})
"""Content types no page can send to another origin without a preflight."""
PREFLIGHTED_HEADERS = (b"authorization", b"inference-header-content-length")
"""Headers outside the CORS safelist that the service's clients send: a request bearing one did not
come from a page of another origin (its preflight would have been refused)."""
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def host_name(host: str) -> str:
    """The name in a ``Host`` header or an origin's authority, without port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_name(name: str) -> bool:
    """``localhost`` (and ``*.localhost``, which browsers resolve to loopback), or a loopback address."""
    if name in LOCAL_NAMES or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def parse_list(value: str | Iterable[str] | None) -> frozenset[str]:
    """A comma-separated setting as a set of lower-case entries (trailing slashes dropped)."""
    items = value.split(",") if isinstance(value, str) else (value or ())
    return frozenset(item.strip().lower().rstrip("/") for item in items if item.strip())


class BrowserGuard:
    """Refuses, before the body is read, the requests only a hostile page would send (see above)."""

    def __init__(
        self,
        app: ASGIApp,
        protected: bool,
        allowed_hosts: str | Iterable[str] | None = None,
        allowed_origins: str | Iterable[str] | None = None,
        open_path: Callable[[str], bool] = lambda _path: False,
    ) -> None:
        self.app = app
        self.protected = protected
        self.allowed_hosts = parse_list(allowed_hosts)
        self.allowed_origins = parse_list(allowed_origins)
        self.open_path = open_path

    def check(self, scope: Scope) -> None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of each, as the routes read them
        host = headers.get(b"host", b"").decode("latin-1")
        self._check_host(host)
        self._check_origin(host, headers)
        if scope["method"] == "POST" and not scope["path"].startswith(OIP_PREFIX):
            self._check_content_type(headers)

    def _check_host(self, host: str) -> None:
        name = host_name(host)
        if name in self.allowed_hosts or host.strip().lower() in self.allowed_hosts:
            return
        if self.allowed_hosts or self.protected:
            if self.protected and is_loopback_name(name):
                return
            raise Forbidden(
                f"the Host {host!r} is not one this service answers to: in protected mode only loopback "
                "names (localhost, 127.0.0.1, [::1]) are, and the names in FLEET_ALLOWED_HOSTS "
                "(a page whose name points at this machine must not reach it: DNS rebinding)"
            )

    def _check_origin(self, host: str, headers: dict[bytes, bytes]) -> None:
        origin = headers.get(b"origin")
        site = headers.get(b"sec-fetch-site", b"").lower()
        if origin is None:
            if site == b"cross-site":
                raise Forbidden(
                    "a request a page of another site made (Sec-Fetch-Site: cross-site) is refused; "
                    "allow that page's origin in FLEET_ALLOWED_ORIGINS if it should call the service"
                )
            return
        text = origin.decode("latin-1").strip().lower().rstrip("/")
        if text in self.allowed_origins:
            return
        authority = urlsplit(text).netloc if "://" in text else ""
        if text == "null" or authority != host.strip().lower():
            raise Forbidden(
                f"a request from a page of another origin ({text!r}) is refused: the service answers its "
                "own pages only; allow that origin in FLEET_ALLOWED_ORIGINS if it should call the service"
            )

    @staticmethod
    def _check_content_type(headers: dict[bytes, bytes]) -> None:
        if any(name in headers for name in PREFLIGHTED_HEADERS):
            return
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        if kind in DECLARED_TYPES or (not kind and not has_body):
            return
        shown = f"content type {kind!r}" if kind else "a body without a content type"
        raise UnsupportedMediaType(
            f"{shown} is refused on a POST: any web page can send one to the service without asking "
            "(cross-site request forgery); declare application/json or application/x-npz"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state") or {}
        skip = scope["type"] != "http" or state.get("relayed") or self.open_path(scope["path"])
        if not skip:
            try:
                self.check(scope)
            except FleetError as exc:
                response = error_response(status_of(exc), exc.code, exc.message, path=scope["path"])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
