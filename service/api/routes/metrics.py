"""Prometheus metrics, in the format the scraper's Accept header asks for (text by default)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder

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
        }
    },
)
async def metrics(request: Request) -> Response:
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(request.app.state.metrics.registry), headers={"content-type": content_type})
