"""The one table from error classes to HTTP status, and the one JSON error shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.errors import (
    BodyTooLarge,
    Conflict,
    DatasetUnavailable,
    FleetError,
    InvalidModel,
    InvalidRequest,
    InvalidTensor,
    InvocationFailed,
    NotFound,
    UnsupportedMediaType,
)

STATUS: tuple[tuple[type[FleetError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (BodyTooLarge, 413),
    (UnsupportedMediaType, 415),
    (InvalidTensor, 422),
    (InvalidModel, 422),
    (InvocationFailed, 422),
    (InvalidRequest, 400),
    (DatasetUnavailable, 503),
    (FleetError, 500),
)
"""First match wins, so subclasses come before their parents."""

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def status_of(error: FleetError) -> int:
    return next(status for cls, status in STATUS if isinstance(error, cls))


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _fleet_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FleetError)
    return error_response(status_of(exc), exc.code, exc.message)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}" for err in exc.errors()
    )
    return error_response(422, "invalid_request", f"request does not match the schema: {problems}")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}")


def install(app: FastAPI) -> None:
    app.add_exception_handler(FleetError, _fleet_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)


def documented(**descriptions: str) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` for error statuses, all in the one error shape: ``documented(e404="...")``."""
    return {
        int(key.removeprefix("e")): {
            "description": text,
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for key, text in descriptions.items()
    }
