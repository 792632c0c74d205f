"""The one table from error classes to HTTP status, and the one place error bodies are shaped.

Every error body has the service's shape, ``{"error": {"code": ..., "message": ...}}``, except under
``/v2``, where the Open Inference Protocol (KServe v2) prescribes ``{"error": "<message>"}``; the status
comes from the same table either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from service.errors import (
    BodyTooLarge,
    Conflict,
    CorruptState,
    DatasetUnavailable,
    DeviceMoving,
    FleetError,
    Forbidden,
    InvalidModel,
    InvalidPartition,
    InvalidPrivacy,
    InvalidProfile,
    InvalidRequest,
    InvalidTensor,
    InvocationFailed,
    ModelCrashed,
    NotAuthenticated,
    NotFound,
    NotOwner,
    QuotaExceeded,
    SecAggFailed,
    StorageError,
    StorageFull,
    Unavailable,
    UnsupportedMediaType,
)
from service.wire.view import MOVING_HEADER

STATUS: tuple[tuple[type[FleetError], int], ...] = (
    (NotAuthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (SecAggFailed, 409),
    (BodyTooLarge, 413),
    (QuotaExceeded, 429),
    (UnsupportedMediaType, 415),
    (InvalidTensor, 422),
    (InvalidModel, 422),
    (InvalidProfile, 422),
    (InvalidPartition, 422),
    (InvalidPrivacy, 422),
    (InvocationFailed, 422),
    (InvalidRequest, 400),
    (NotOwner, 421),
    (ModelCrashed, 502),
    (Unavailable, 503),
    (StorageFull, 507),
    (StorageError, 503),
    (DatasetUnavailable, 503),
    (CorruptState, 500),
    (FleetError, 500),
)
"""First match wins, so subclasses come before their parents."""

EPOCH_HEADER = "Fleet-Epoch"
"""On a 421 (NotOwner): the epoch of the view the answering shard holds."""

OIP_PREFIX = "/v2"
"""Paths of the Open Inference Protocol, whose error bodies follow that protocol."""

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
OIP_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what went wrong"}},
}


def speaks_oip(path: str) -> bool:
    return path == OIP_PREFIX or path.startswith(f"{OIP_PREFIX}/")


def status_of(error: FleetError) -> int:
    return next(status for cls, status in STATUS if isinstance(error, cls))


def error_response(
    status: int, code: str, message: str, *, path: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The one place an error body is rendered; ``path`` (the request's) picks the protocol's shape."""
    body: dict[str, object] = (
        {"error": message} if speaks_oip(path) else {"error": {"code": code, "message": message}}
    )
    return JSONResponse(body, status_code=status, headers=headers)


def error_headers(error: FleetError) -> dict[str, str]:
    """What an error says beside its body: when to retry (and whether the device moves between
    shards), which epoch a shard holds."""
    if isinstance(error, Unavailable):
        retry = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
        return (retry | {MOVING_HEADER: "1"}) if isinstance(error, DeviceMoving) else retry
    if isinstance(error, NotOwner):
        return {EPOCH_HEADER: str(error.epoch)}  # shards send it on every answer; this one may be alone
    return {}


async def _fleet_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FleetError)
    return error_response(
        status_of(exc), exc.code, exc.message, path=request.url.path, headers=error_headers(exc)
    )


def problems(errors: Sequence[Mapping[str, Any]]) -> str:
    """Pydantic's validation errors in one line: ``inputs.0.shape: Field required; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors)


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], document: object) -> Model:
    """``document`` as ``model``, for a body a route reads by hand: failures answer 422 exactly as
    FastAPI's own validation does (``RequestValidationError``, locations under ``body``)."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message = f"request does not match the schema: {problems(exc.errors())}"
    return error_response(422, "invalid_request", message, path=request.url.path)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return error_response(exc.status_code, code, message, path=request.url.path)


def install(app: Starlette) -> None:
    app.add_exception_handler(FleetError, _fleet_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)


def documented(**descriptions: str) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` for error statuses: ``documented(e404="unknown device")``.

    Only descriptions: ``document_errors`` gives every error response its body schema, by path.
    """
    return {int(key.removeprefix("e")): {"description": text} for key, text in descriptions.items()}


def document_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """Give every operation's error responses the body schema its path gets, and a ``default`` one.

    Responses that document a body of their own (a 503 readiness report) keep it. FastAPI documents
    request validation failures with its own body; ours go through this module, so that one is replaced.
    """
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"], schemas["OIPError"] = ERROR_SCHEMA, OIP_ERROR_SCHEMA
    for path, operations in openapi.get("paths", {}).items():
        ref = {"$ref": f"#/components/schemas/{'OIPError' if speaks_oip(path) else 'Error'}"}
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if responses.get("422", {}).get("description") == "Validation Error":
                responses["422"] = {"description": "the request does not match the schema"}
            responses.setdefault("default", {"description": "any other error"})
            for status, response in responses.items():
                if status == "default" or status[0] in "45":  # also "4XX"-style ranges
                    response.setdefault("content", {"application/json": {"schema": ref}})
    return openapi
