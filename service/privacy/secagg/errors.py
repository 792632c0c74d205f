"""Secure aggregation's one error of its own, from the one vocabulary (``service.errors``): the round
cannot finish (a protocol failure, not a bad request), and the message says why."""

from __future__ import annotations

from service.errors import SecAggFailed

__all__ = ["SecAggFailed"]
