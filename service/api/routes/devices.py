"""Devices: create, list, show, delete; run their signatures; reset and restart them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field

from service.api.codecs import JSON, NPZ, read_inputs, tensor_response
from service.api.deps import (
    DeviceDep,
    FleetDep,
    PrincipalDep,
    QuotasDep,
    check_access,
    device_model,
    in_thread,
)
from service.api.errors import documented
from service.api.routes.profiles import PROFILE_DOC, ProfileFields
from service.errors import Forbidden
from service.fleet import Device, DeviceInfo
from service.profiles import DeviceProfile, parse_profile

router = APIRouter(prefix="/v1/devices", tags=["devices"])
ERRORS = documented(e400="invalid device ID", e404="unknown device (or outside the key's prefix)")
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


class CreateDevice(ProfileFields):
    id: str | None = Field(None, description="the device ID; a random one if absent")
    model: str | None = Field(None, description="model name; the embedded default if absent")


class DeviceView(BaseModel):
    id: str
    model: str | None = Field(description="null when its record cannot be read (see problem)")
    created_at: str | None
    resident: bool = Field(description="whether its interpreter is in memory")
    train_steps: int | None
    last_loss: float | None
    has_checkpoint: bool
    checkpoint_saved_at: str | None
    checkpoint_bytes: int | None
    has_spill: bool = Field(description="unsaved weights of an evicted interpreter wait on disk")
    problem: str | None = Field(
        None, description="what is wrong with the device's files, if anything; reset or delete fixes it"
    )
    profile: dict[str, Any] | None = Field(None, description="the phone it simulates; null: none")
    clock: float | None = Field(
        None, description="simulated seconds its operations took by its profile (0 without one)"
    )


class DevicePage(BaseModel):
    devices: list[DeviceView]
    total: int
    next_after: str | None = Field(description="pass as ?after= for the next page; null on the last")


def view(device: Device) -> DeviceView:
    return DeviceView(**asdict(device.info()))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=documented(
        e400="invalid ID, or both a profile and a profile_mix",
        e403="the ID is outside the key's prefix",
        e404="unknown model or profile mix",
        e409="the ID exists",
        e422="a bad profile or mix, naming the field",
        e429="the key's prefix holds FLEET_QUOTA_DEVICES devices",
    ),
)
async def create_device(
    fleet: FleetDep,
    principal: PrincipalDep,
    quotas: QuotasDep,
    request: Request,
    body: CreateDevice | None = None,
) -> DeviceView:
    """Create a device; its interpreter is made on first use.

    A ``devices`` key creates IDs under its prefix: a given ID must start with it, a random one does.
    """
    body = body or CreateDevice()
    if body.id is not None and not principal.may_touch(body.id):
        raise Forbidden(f"this key may only create devices whose IDs start with '{principal.prefix}'")
    profiles = body.profiles()

    def create() -> DeviceInfo:
        ids = None if body.id is None else [body.id]
        prefix = principal.prefix if body.id is None else ""
        with quotas.creating:
            quotas.check_devices(principal)
            device = fleet.create_many(ids, count=1, prefix=prefix, model=body.model, profiles=profiles)[0]
        return device.info()

    return DeviceView(**asdict(await in_thread(request, create)))


@router.get("")
async def list_devices(
    fleet: FleetDep,
    principal: PrincipalDep,
    request: Request,
    after: Annotated[str | None, Query(description="list IDs after this one (from next_after)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    prefix: Annotated[str, Query(max_length=128, description="only IDs that start with this")] = "",
) -> DevicePage:
    """Devices in ID order, a page at a time (a ``devices`` key sees those under its prefix only);
    ``total`` counts those the page is drawn from."""
    narrowest = _narrowest(prefix, principal.prefix)

    def page() -> DevicePage:
        if narrowest is None:
            return DevicePage(devices=[], total=0, next_after=None)
        found = fleet.page(after, limit, prefix=narrowest)
        return DevicePage(
            devices=[view(d) for d in found.devices],
            total=fleet.count(narrowest),
            next_after=found.next_after,
        )

    return await in_thread(request, page)


def _narrowest(asked: str, allowed: str) -> str | None:
    """The prefix of IDs that start with both ``asked`` and ``allowed``; None when no ID can."""
    if asked.startswith(allowed):
        return asked
    return allowed if allowed.startswith(asked) else None


@router.get("/{device_id}", responses=ERRORS)
async def get_device(device: DeviceDep, request: Request) -> DeviceView:
    return await in_thread(request, view, device)


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
async def delete_device(
    device_id: str, fleet: FleetDep, principal: PrincipalDep, request: Request
) -> Response:
    """Remove the device and its directory."""
    check_access(principal, device_id)
    await in_thread(request, fleet.delete, device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{device_id}/reset", responses=ERRORS)
async def reset_device(device: DeviceDep, fleet: FleetDep, request: Request) -> DeviceView:
    """Delete the checkpoint and start a fresh interpreter: the baseline model."""

    def reset() -> DeviceView:
        fleet.reset(device)
        return view(device)

    return await in_thread(request, reset)


@router.post("/{device_id}/restart", responses=ERRORS)
async def restart_device(device: DeviceDep, fleet: FleetDep, request: Request) -> DeviceView:
    """Drop the interpreter as an app restart would; the next one restores the checkpoint."""

    def restart() -> DeviceView:
        fleet.restart(device)
        return view(device)

    return await in_thread(request, restart)


@router.put(
    "/{device_id}/profile",
    responses=documented(
        e400="invalid device ID",
        e404="unknown device (or outside the key's prefix)",
        e422="a bad profile, naming the field",
    ),
    openapi_extra={"requestBody": {"description": f"the profile: {PROFILE_DOC}"}},
)
async def set_profile(device: DeviceDep, request: Request, body: dict[str, Any]) -> DeviceView:
    """Give the device a profile (its clock carries on from where it is)."""
    profile: DeviceProfile = parse_profile(body)

    def put() -> DeviceView:
        device.set_profile(profile)
        return view(device)

    return await in_thread(request, put)


@router.delete("/{device_id}/profile", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
async def delete_profile(device: DeviceDep, request: Request) -> Response:
    """Take the profile away: the device is an ideal phone again, without a clock."""
    await in_thread(request, device.set_profile, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def run_signature(device: Device, signature: str, request: Request) -> Response:
    model = await device_model(request, device)
    spec = None if signature in ("save", "restore") else model.signature(signature)
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
