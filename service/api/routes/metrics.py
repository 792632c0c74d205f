"""Prometheus metrics, in the format the scraper's Accept header asks for (text by default)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder

from service.api.deps import AdminDep, in_thread

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests per route, train steps, residency, checkpoints, jobs",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format, or OpenMetrics when Accept asks for it",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        },
        403: {"description": "needs an admin key"},
    },
)
async def metrics(admin: AdminDep, request: Request) -> Response:
    """Rendered in the worker pool: collecting reads fleet-wide counters under their locks."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    body = await in_thread(request, encode, request.app.state.metrics.registry)
    return Response(body, headers={"content-type": content_type})
