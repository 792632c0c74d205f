"""The Open Inference Protocol (KServe v2): each device is a model, named by its device ID.

Health, metadata and inference only (no repository, versions or shared memory): a device's weights are
one mutable state, so it has no versions. Inference runs the device's ``infer`` signature through the
same device layer and tensor checks as ``/v1``; errors keep their statuses and take the protocol's
``{"error": "<message>"}`` body (``service.api.errors``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.api.codecs import INLINE_BYTES, JSON
from service.api.deps import DeviceDep, PrincipalDep, device_model, in_thread
from service.api.errors import documented
from service.api.oip import (
    BINARY,
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    decode_request,
    infer_response,
    inline_schema,
    metadata_tensors,
)
from service.version import __version__

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
INFER = "infer"
PLATFORM = "tflite"
MODEL_ERRORS = documented(
    e400="invalid device ID", e404="unknown device, or its model has no infer signature"
)


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str = Field(description="the device ID")
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


@router.get("", summary="Server metadata")
async def server_metadata(principal: PrincipalDep) -> ServerMetadata:
    return ServerMetadata(name="tflite-fleet", version=__version__, extensions=["binary_tensor_data"])


@router.get("/health/live", summary="The server is up")
async def live() -> Live:
    return Live(live=True)


@router.get(
    "/health/ready",
    summary="The fleet is loaded: devices can infer",
    responses={
        200: {"description": "ready", "model": Ready},
        503: {"description": "still starting", "model": Ready},
    },
)
async def ready(request: Request) -> JSONResponse:
    is_ready = request.app.state.fleet is not None
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{device_id}", summary="A device as a model: its infer signature", responses=MODEL_ERRORS)
async def model_metadata(device: DeviceDep, request: Request) -> ModelMetadata:
    spec = (await device_model(request, device)).signature(INFER)
    return ModelMetadata(
        name=device.id,
        platform=PLATFORM,
        inputs=metadata_tensors(spec.inputs),
        outputs=metadata_tensors(spec.outputs),
    )


@router.get("/models/{device_id}/ready", summary="The device can infer", responses=MODEL_ERRORS)
async def model_ready(device: DeviceDep, request: Request) -> ModelReady:
    """Its interpreter is made (restoring its checkpoint) on the first inference if not resident."""
    (await device_model(request, device)).signature(INFER)
    return ModelReady(name=device.id, ready=True)


INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": inline_schema(InferenceRequest),
                "example": {
                    "id": "42",
                    "inputs": [{"name": "x", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}],
                    "outputs": [{"name": "output"}],
                },
            },
            BINARY: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "binary tensor data extension: the JSON request (its length in "
                    "the Inference-Header-Content-Length header), then each binary input's raw "
                    "little-endian bytes",
                }
            },
        },
    }
}


@router.post(
    "/models/{device_id}/infer",
    summary="Inference on a device with its own (trained) weights",
    response_class=Response,
    openapi_extra=INFER_BODY,
    responses={
        200: {
            "description": "the outputs; with binary outputs, raw bytes follow the JSON "
            "(its length in the Inference-Header-Content-Length header)",
            "content": {
                JSON: {"schema": inline_schema(InferenceResponse)},
                BINARY: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **documented(
            e400="invalid device ID",
            e404="unknown device, or its model has no infer signature",
            e413="body too large",
            e415="compressed body",
            e422="inputs do not match the request's own shapes or the signature (names, datatype, shape)",
        ),
    },
)
async def infer(device: DeviceDep, request: Request) -> Response:
    spec = (await device_model(request, device)).signature(INFER)
    body = await request.body()
    max_json: int = request.app.state.settings.max_json_body_bytes
    if len(body) <= INLINE_BYTES:  # as read_inputs does: large bodies are decoded off the event loop
        decoded = decode_request(body, request.headers, max_json)
    else:
        decoded = await in_thread(request, decode_request, body, request.headers, max_json)
    names = decoded.output_names(spec)
    outputs = await in_thread(request, device.run, INFER, decoded.inputs)
    return infer_response(device.id, decoded, {name: outputs[name] for name in names})
