"""Secure aggregation's one error of its own: the round cannot finish (a protocol failure, not a bad
request), and the message says why (which device, how many shares, the threshold)."""

from __future__ import annotations

from service.errors import FleetError


class SecAggFailed(FleetError):
    """A secure-aggregation round that cannot produce its sum: too few survivors to rebuild a secret,
    too few masked inputs, a share that fails authentication, or a request a client refuses."""

    code = "secagg_failed"
