"""Devices: create, list, show, delete; run their signatures; reset and restart them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field

from service.api.codecs import JSON, NPZ, read_inputs, tensor_response
from service.api.deps import DeviceDep, FleetDep, in_thread
from service.api.errors import documented
from service.fleet import Device

router = APIRouter(prefix="/v1/devices", tags=["devices"])
ERRORS = documented(e400="invalid device ID", e404="unknown device")
TENSOR_ERRORS = documented(
    e400="invalid device ID",
    e404="unknown device or signature",
    e409="no checkpoint to restore",
    e413="body too large",
    e415="unsupported content type",
    e422="inputs do not match the signature (names, dtype, shape, values)",
)
TENSOR_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "inputs": {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": {}},
                            "description": "each input of the signature by name, as nested lists",
                        }
                    },
                },
                "example": {"inputs": {"x": [[[0.0] * 3] * 2]}},
            },
            NPZ: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "numpy.savez of inputs by name",
                }
            },
        },
    }
}
TENSOR_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the signature's outputs by name (npz when Accept asks for it)",
        "content": {
            JSON: {"schema": {"type": "object", "properties": {"outputs": {"type": "object"}}}},
            NPZ: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class CreateDevice(BaseModel):
    id: str | None = Field(None, description="the device ID; a random one if absent")
    model: str | None = Field(None, description="model name; the embedded default if absent")


class DeviceView(BaseModel):
    id: str
    model: str
    created_at: str
    resident: bool = Field(description="whether its interpreter is in memory")
    train_steps: int
    last_loss: float | None
    has_checkpoint: bool
    checkpoint_saved_at: str | None
    checkpoint_bytes: int | None
    has_spill: bool = Field(description="unsaved weights of an evicted interpreter wait on disk")


class DevicePage(BaseModel):
    devices: list[DeviceView]
    total: int
    next_after: str | None = Field(description="pass as ?after= for the next page; null on the last")


def view(device: Device) -> DeviceView:
    return DeviceView(**asdict(device.info()))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=documented(e400="invalid ID", e404="unknown model", e409="the ID exists"),
)
async def create_device(fleet: FleetDep, request: Request, body: CreateDevice | None = None) -> DeviceView:
    """Create a device; its interpreter is made on first use."""
    body = body or CreateDevice()
    return view(await in_thread(request, fleet.create, body.id, body.model))


@router.get("")
async def list_devices(
    fleet: FleetDep,
    after: Annotated[str | None, Query(description="list IDs after this one (from next_after)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DevicePage:
    """Devices in ID order, a page at a time."""
    page = fleet.page(after, limit)
    return DevicePage(devices=[view(d) for d in page.devices], total=len(fleet), next_after=page.next_after)


@router.get("/{device_id}", responses=ERRORS)
async def get_device(device: DeviceDep) -> DeviceView:
    return view(device)


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
async def delete_device(device_id: str, fleet: FleetDep, request: Request) -> Response:
    """Remove the device and its directory."""
    await in_thread(request, fleet.delete, device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{device_id}/reset", responses=ERRORS)
async def reset_device(device: DeviceDep, fleet: FleetDep, request: Request) -> DeviceView:
    """Delete the checkpoint and start a fresh interpreter: the baseline model."""
    await in_thread(request, fleet.reset, device)
    return view(device)


@router.post("/{device_id}/restart", responses=ERRORS)
async def restart_device(device: DeviceDep, fleet: FleetDep, request: Request) -> DeviceView:
    """Drop the interpreter as an app restart would; the next one restores the checkpoint."""
    await in_thread(request, fleet.restart, device)
    return view(device)


async def run_signature(device: Device, signature: str, request: Request) -> Response:
    spec = None if signature in ("save", "restore") else device.model.signature(signature)
    inputs = await read_inputs(request, spec)
    outputs = await in_thread(request, device.run, signature, inputs)
    return tensor_response(request, outputs)


@router.post(
    "/{device_id}/signatures/{signature}",
    responses={**TENSOR_OK, **TENSOR_ERRORS},
    openapi_extra=TENSOR_BODY,
    response_class=Response,
)
async def run_any_signature(device: DeviceDep, signature: str, request: Request) -> Response:
    """Run any signature of the device's model with its inputs by name."""
    return await run_signature(device, signature, request)


def _add_signature_route(signature: str, summary: str) -> None:
    async def endpoint(device: DeviceDep, request: Request) -> Response:
        return await run_signature(device, signature, request)

    router.add_api_route(
        f"/{{device_id}}/{signature}",
        endpoint,
        methods=["POST"],
        name=f"{signature}_device",
        summary=summary,
        responses={**TENSOR_OK, **TENSOR_ERRORS},
        openapi_extra=None if signature in ("save", "restore") else TENSOR_BODY,  # those take no body
        response_class=Response,
    )


_add_signature_route("train", "One training step: inputs x, y -> loss (for the default model)")
_add_signature_route("infer", "Inference: x -> output, logits (for the default model)")
_add_signature_route("save", "Save the weights to the device's own checkpoint (no body)")
_add_signature_route("restore", "Restore the device's own checkpoint (no body; 409 if none)")
