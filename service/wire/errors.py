"""The service's JSON error shape, read back into the error class the service raised."""

from __future__ import annotations

import httpx

from service.errors import ERRORS_BY_CODE, FleetError, Unavailable


def raise_for_error(response: httpx.Response) -> None:
    """Raise the error class the service named in an error response (nothing for a success)."""
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        cls, message = ERRORS_BY_CODE.get(error["code"], FleetError), error["message"]
    except (ValueError, KeyError, TypeError):
        cls, message = FleetError, f"HTTP {response.status_code}: {response.text[:200]}"
    if issubclass(cls, Unavailable):  # DeviceOffline too: when to try again
        raise cls(message, retry_after=_retry_after(response))
    raise cls(message)


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0
