"""The connection to one service: requests sent, error answers raised as their classes, and each device's
calls sent straight to its owner shard when asked (``direct=True``)."""

from __future__ import annotations

import re
from typing import Any, Self

import httpx

from service.wire.errors import raise_for_error
from service.wire.view import MOVING_HEADER, View

DEVICE_PATH = re.compile(r"^/v(?:1/devices|2/models)/([^/]+)(?:/|$)")
"""Routes of one device, which a sharded fleet's owner shard can answer directly."""
FLEET_ROUTES = frozenset({"bulk-create", "bulk-delete"})


class ServiceConnection:
    """HTTP to one service for ``FleetClient``; see its docstring for the arguments."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout: float,
        transport: httpx.BaseTransport | None,
        direct: bool,
    ) -> None:
        self.direct = direct
        self._view: View | None = None
        self._sharded: bool | None = None
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._to_owner(method, path, kwargs) if self.direct else None
        if response is None:
            response = self._http.request(method, path, **kwargs)
        raise_for_error(response)
        return response

    def _owner_view(self) -> View | None:
        if self._sharded is False:
            return None
        if self._view is None:
            response = self._http.get("/v1/fleet/shards")
            if response.status_code != 200:
                return None  # unavailable for now: through the front, and ask again next time
            if not response.json().get("sharded"):
                self._sharded = False  # a single process: nothing to route
                return None
            self._sharded, self._view = True, View.parse(response.json())
        return self._view

    def _to_owner(self, method: str, path: str, kwargs: dict[str, Any]) -> httpx.Response | None:
        """The answer of the device's owner shard, or None: send it through the front instead."""
        found = DEVICE_PATH.match(path)
        view = self._owner_view() if found and found.group(1) not in FLEET_ROUTES else None
        if found is None or view is None:
            return None
        address = view.owner(found.group(1)).address
        if address is None:
            return None
        try:
            response = self._http.request(method, address + path, **kwargs)
        except httpx.ConnectError:  # nothing was sent
            self._view = None
            return None
        if response.status_code == 421 or (response.status_code == 503 and MOVING_HEADER in response.headers):
            self._view = None
            return None
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()
