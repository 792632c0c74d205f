"""Who is calling: API keys from ``FLEET_API_KEYS_FILE``, or protected mode when there are none.

The keys file holds one key per line, ``KEY admin`` or ``KEY devices PREFIX`` (``#`` starts a comment).
An ``admin`` key may do anything; a ``devices`` key may touch only devices whose IDs start with its
prefix (others look absent: 404). Keys travel as ``Authorization: Bearer KEY`` and are compared in
constant time: the presented key's digest is compared with every stored digest, whatever matches.

With no keys file the service runs in *protected mode*, as Redis does: clients on a loopback address
stand for the admin, and every other client is refused with a message saying how to configure keys.
Health probes are always open.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response, status_of
from service.errors import AccessDenied, Forbidden, InvalidRequest, NotAuthenticated
from service.ui import ASSETS, PAGES

Role = Literal["admin", "devices"]
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", *PAGES})
"""Probes answer anyone: orchestrators and load balancers carry no keys. So do the dashboard's and the
API docs' pages (``/ui/...``, ``/docs``): static files holding no data, whose scripts then call the API
with the key the user types in."""
KEY_PATTERN = re.compile(r"[\x21-\x22\x24-\x7e]{16,256}")
"""Keys: 16 to 256 printable ASCII characters but space and ``#`` (``openssl rand -hex 32`` makes one)."""
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Principal:
    """The caller: an admin, or a holder of a ``devices`` key limited to IDs with ``prefix``."""

    role: Role
    prefix: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_touch(self, device_id: str) -> bool:
        return self.is_admin or device_id.startswith(self.prefix)

    @property
    def touches(self) -> Callable[[str], bool] | None:
        """``may_touch`` for a selection to check each device with; None for an admin, who may touch
        every one (a selection of all of a million devices is then not walked to check them)."""
        return None if self.is_admin else self.may_touch

    def require_admin(self, what: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"{what} needs an admin key; this key may only touch devices '{self.prefix}*'")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(ASSETS)


LOOPBACK_ADMIN = Principal("admin")
FRONT_HEADER = b"fleet-front"
"""Carries a sharded fleet's front token from the front to its shards (never from clients)."""
PEER_HEADER = b"fleet-peer"
"""Carries a shard's own calls to another shard (a round's participant): the fleet acting as admin.
The front strips it from clients' requests, as it strips ``FRONT_HEADER``."""


def peer_token(front_token: bytes) -> bytes:
    """The secret of shard-to-shard calls: derived from the front token, never equal to it (the front
    adds its token to every client request it forwards, whatever key the client holds)."""
    return hmac.new(front_token, b"fleet peer", hashlib.sha256).hexdigest().encode()


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


class KeyRing:
    """The keys of a keys file, by digest; the keys themselves are not kept."""

    def __init__(self, entries: list[_Entry]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def parse(cls, text: str, source: str = "the keys file") -> KeyRing:
        """Read ``KEY admin`` / ``KEY devices PREFIX`` lines; errors name the line, never the key."""
        entries: list[_Entry] = []
        seen: set[bytes] = set()
        for number, raw in enumerate(text.splitlines(), start=1):
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            where = f"{source}, line {number}"
            key, rest = words[0], words[1:]
            if not KEY_PATTERN.fullmatch(key):
                raise InvalidRequest(f"{where}: a key must be 16-256 printable characters without spaces")
            if rest == ["admin"]:
                principal = Principal("admin")
            elif len(rest) == 2 and rest[0] == "devices" and PREFIX_PATTERN.fullmatch(rest[1]):
                principal = Principal("devices", rest[1])
            else:
                raise InvalidRequest(
                    f"{where}: expected 'KEY admin' or 'KEY devices PREFIX' (a prefix of letters, digits, "
                    "'_', '.' or '-', starting with a letter or digit)"
                )
            digest = _digest(key)
            if digest in seen:
                raise InvalidRequest(f"{where}: this key is already given on an earlier line")
            seen.add(digest)
            entries.append(_Entry(digest, principal))
        if not entries:
            raise InvalidRequest(f"{source} holds no keys; remove the setting to run in protected mode")
        return cls(entries)

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise InvalidRequest(f"cannot read the API keys file (FLEET_API_KEYS_FILE): {reason}") from exc
        return cls.parse(text, f"the API keys file {path.name}")

    def identify(self, key: bytes) -> Principal | None:
        """The key's principal, comparing its digest with every entry's (constant time in the key)."""
        digest = _digest(key)
        found = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1, and IPv4 loopback as a dual-stack socket reports it (``::ffff:127.0.0.1``)."""
    try:
        address = ipaddress.ip_address(host) if host is not None else None
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


LOOPBACK_PROXIES = "127.0.0.0/8,::1,::ffff:127.0.0.0/104"
"""In protected mode, the only peers whose X-Forwarded-For uvicorn may believe: the addresses
`is_loopback` accepts, no more (trusting a header from anywhere else would let any client claim to be
on loopback) and no fewer (a proxy on 127.0.0.2 is local, and so are the clients it says it serves)."""


PROTECTED_MODE = (
    "the service runs in protected mode (no API keys are configured), so it answers loopback clients "
    "only. To reach it from elsewhere, write keys to a file, one per line as 'KEY admin' or "
    "'KEY devices PREFIX', point FLEET_API_KEYS_FILE at it, restart, and send 'Authorization: Bearer KEY'"
)


class Authenticate:
    """Puts the caller's ``Principal`` in ``scope["state"]["principal"]``, or answers 401/403 itself.

    It runs before the body is read, so a stranger cannot make the service read, decode or store
    anything. What each route lets a principal do is checked by the routes' dependencies.
    """

    def __init__(self, app: ASGIApp, keys: KeyRing | None, front_token: bytes | None = None) -> None:
        """``front_token``: a shard's secret shared with its front (``service.cluster``); in protected
        mode a request bearing it counts as local, since the front answers local clients only."""
        self.app = app
        self.keys = keys
        self.front_token = None if front_token is None else _digest(front_token)
        self.peer_token = None if front_token is None else _digest(peer_token(front_token))

    def principal(self, scope: Scope) -> Principal:
        if self._bears(scope, PEER_HEADER, self.peer_token):
            return LOOPBACK_ADMIN
        if self.keys is None:
            client = scope.get("client")
            if is_loopback(client[0] if client else None) or self._from_front(scope):
                return LOOPBACK_ADMIN
            raise Forbidden(PROTECTED_MODE)
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, key = header.partition(b" ")
        if scheme.lower() != b"bearer" or not key.strip():
            raise NotAuthenticated("this route needs an API key: send 'Authorization: Bearer KEY'")
        principal = self.keys.identify(key.strip())
        if principal is None:
            raise NotAuthenticated("the API key is not valid")
        return principal

    def _from_front(self, scope: Scope) -> bool:
        return self._bears(scope, FRONT_HEADER, self.front_token)

    @staticmethod
    def _bears(scope: Scope, header: bytes, digest: bytes | None) -> bool:
        if digest is None:
            return False
        token = dict(scope["headers"]).get(header)
        return token is not None and hmac.compare_digest(_digest(token), digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and is_open(scope["path"])):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websocket routes: nothing else is let in
            await send({"type": "websocket.close", "code": 1008})
            return
        try:
            principal = self.principal(scope)
        except AccessDenied as exc:
            status = status_of(exc)
            response = error_response(status, exc.code, exc.message, path=scope["path"])
            if status == 401:
                response.headers["www-authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["peer"] = self._bears(scope, PEER_HEADER, self.peer_token)  # another process of the fleet
        state["relayed"] = state["peer"] or self._from_front(scope)  # checked where it entered the fleet
        await self.app(scope, receive, send)


def tenant(principal: Principal) -> str | None:
    """Whose runs and versions a key sees: all for an admin (None), else those its prefix's keys made
    (and, of versions, those an admin published)."""
    return None if principal.is_admin else principal.prefix
