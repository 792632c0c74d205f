"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The fleet is loaded and the default model is ready",
    responses={
        200: {"description": "ready", "content": {"application/json": {"example": {"status": "ready"}}}},
        503: {
            "description": "starting",
            "content": {"application/json": {"example": {"status": "starting"}}},
        },
    },
)
async def readyz(request: Request) -> JSONResponse:
    ready = getattr(request.app.state, "fleet", None) is not None
    return JSONResponse({"status": "ready" if ready else "starting"}, status_code=200 if ready else 503)
