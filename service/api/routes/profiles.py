"""Device profiles over HTTP: the profile mixes, and assigning one to many devices (seeded per device)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from service.api.deps import FederationDep, PrincipalDep, in_thread
from service.api.errors import documented
from service.api.routes.datasets import DeviceSelection
from service.errors import InvalidRequest
from service.fleet import Fleet
from service.fleet.fleet import ProfilesFor
from service.fleet.record import RECORD
from service.profiles import mixes, parse_profile
from service.profiles.mixes import ProfileMix
from service.storage import make_durable, storage_error

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])
MIX_DOC = "a built-in mix's name, or a mix object of the shape GET /v1/profiles/mixes shows"


def mix_from(value: str | dict[str, Any]) -> ProfileMix:
    """A mix given over HTTP: a built-in one by name, or an object. Never a path: the server's files
    are not the caller's to read (``resolve_mix`` is for the command line)."""
    return mixes.find_mix(value) if isinstance(value, str) else ProfileMix.parse(value, "mix")


PROFILE_DOC = (
    "class, compute {train_ms_per_sample, infer_ms_per_sample} or {speed}, network {uplink_mbps, "
    "downlink_mbps, rtt_ms}, availability ('always', {kind: trace, intervals, period} or {kind: markov, "
    "mean_on_s, mean_off_s}), dropout, speed, seed; each optional"
)


class ProfileFields(BaseModel):
    """What profiles devices as they are created (``POST /v1/devices`` and ``bulk-create``)."""

    profile: dict[str, Any] | None = Field(None, description=f"every new device's profile: {PROFILE_DOC}")
    profile_mix: str | dict[str, Any] | None = Field(
        None, description=f"or each new device's profile drawn from a mix: {MIX_DOC}"
    )
    profile_seed: int = Field(0, ge=0, le=2**63 - 1, description="seeds the draw from profile_mix")

    def profiles(self) -> ProfilesFor | None:
        """What gives the new devices their profiles, checked before anything is created."""
        if self.profile is not None and self.profile_mix is not None:
            raise InvalidRequest("give the devices either a profile or a profile_mix, not both")
        if self.profile is not None:
            profile = parse_profile(self.profile)
            return lambda ids: dict.fromkeys(ids, profile)
        if self.profile_mix is not None:
            mix, seed = mix_from(self.profile_mix), self.profile_seed
            return lambda ids: mix.assign(ids, seed)
        return None


class AssignProfiles(DeviceSelection):
    mix: str | dict[str, Any] = Field(description=MIX_DOC)
    seed: int = Field(0, ge=0, le=2**63 - 1, description="with each device's ID, draws its class and speed")


def assign_profiles(fleet: Fleet, ids: Sequence[str], mix: ProfileMix, seed: int) -> dict[str, object]:
    """Give each device its profile from ``mix``, the records flushed to disk together at the end."""
    if not ids:
        raise InvalidRequest("the assignment selects no devices")
    assigned = mix.assign(ids, seed)
    devices = [fleet.get(device_id) for device_id in ids]
    for device in devices:
        device.set_profile(assigned[device.id], durable=False)
    try:
        make_durable([device.directory / RECORD for device in devices], fleet.devices_dir)
    except OSError as exc:
        raise storage_error("could not flush the devices' records to disk", exc) from exc
    classes = Counter(p.profile.device_class for p in assigned.values())
    return {"mix": mix.name, "seed": seed, "assigned": len(assigned), "classes": dict(classes)}


@router.get("/mixes", summary="The built-in profile mixes, and where their figures come from")
async def list_mixes(principal: PrincipalDep) -> dict[str, object]:
    return {"mixes": [mix.describe() for mix in mixes.builtin_mixes()], "sources": mixes.SOURCES}


@router.get("/mixes/{name}", summary="One built-in profile mix", responses=documented(e404="unknown mix"))
async def get_mix(name: str, principal: PrincipalDep) -> dict[str, object]:
    return mixes.find_mix(name).describe()


@router.post(
    "/assign",
    summary="Give devices profiles drawn from a mix (each device's from the seed and its ID alone)",
    responses=documented(
        e400="no devices selected, or not exactly one of ids, prefix, all",
        e404="unknown mix or device",
        e422="a mix object that is not one, naming the field",
    ),
)
async def assign(
    body: AssignProfiles, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    mix = mix_from(body.mix)

    def run() -> dict[str, object]:
        ids = federation.select(body.selection(), principal.touches)
        return assign_profiles(federation.fleet, ids, mix, body.seed)

    return await in_thread(request, run)
