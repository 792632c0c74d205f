"""A device's own data and background training: samples, jobs, loss history."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field

from service.api.codecs import read_inputs
from service.api.deps import DeviceDep, FleetDep, PrincipalDep, QuotasDep, device_model, in_thread
from service.api.errors import documented
from service.api.routes.devices import TENSOR_BODY
from service.fleet.jobs import Job, JobSpec
from service.fleet.samples import SampleStats

router = APIRouter(prefix="/v1/devices/{device_id}", tags=["personalization"])
ERRORS = documented(e400="invalid device ID", e404="unknown device or job")
SignatureQuery = Annotated[str, Query(description="the training signature the samples are inputs of")]


class SampleStatsView(BaseModel):
    count: int = Field(description="samples stored now")
    capacity: int
    bytes: int = Field(description="bytes the stored samples take")
    capacity_bytes: int
    signature: str | None = Field(description="the training signature they are inputs of")
    added: int = 0
    dropped: int = Field(0, description="oldest samples dropped to stay within capacity")


class StartJob(BaseModel):
    epochs: int = Field(1, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=100_000)
    save: bool = Field(False, description="save a checkpoint when the job succeeds")
    shuffle: bool = True
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    signature: str | None = Field(None, description="the training signature; default: the samples'")
    data: Literal["samples", "assigned"] | None = Field(
        None,
        description="train over the uploaded samples or the data assigned from a dataset; "
        "default: the samples if there are any, else the assigned data",
    )
    steps: int | None = Field(
        None, ge=1, le=100_000_000, description="stop after this many steps (batches), even within an epoch"
    )


class JobView(BaseModel):
    id: str
    device: str
    state: str = Field(
        description="queued, running, succeeded, failed, cancelled, interrupted or dropped (profile dropout)"
    )
    epochs: int
    batch_size: int
    save: bool
    shuffle: bool
    seed: int | None
    signature: str
    data: str | None = Field(None, description="samples or assigned")
    steps: int | None = Field(None, description="the step limit asked for, if any")
    steps_done: int
    steps_total: int
    epoch: int = Field(description="epochs finished")
    loss: float | None = Field(description="the last step's loss")
    epoch_losses: list[float] = Field(description="mean loss of each finished epoch")
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    simulated_seconds: float | None = Field(
        None, description="what the job's steps took on the device's profile (null without one)"
    )


class JobList(BaseModel):
    jobs: list[JobView]


class HistoryEntry(BaseModel):
    step: int
    loss: float
    source: str = Field(description="train (a call), job or round (a federated round)")
    at: str


class History(BaseModel):
    device: str
    history: list[HistoryEntry]


def job_view(job: Job) -> JobView:
    return JobView.model_validate(job.view())


@router.post(
    "/samples",
    responses=documented(
        e404="unknown device",
        e413="body too large",
        e422="samples do not match the signature",
        e429="the key's devices hold FLEET_QUOTA_SAMPLE_BYTES of samples",
    ),
    openapi_extra=TENSOR_BODY,
)
async def add_samples(
    device: DeviceDep,
    principal: PrincipalDep,
    quotas: QuotasDep,
    request: Request,
    signature: SignatureQuery = "train",
) -> SampleStatsView:
    """Add labelled samples (the training signature's inputs by name) to the device's own store."""
    await device_model(request, device)  # loaded off the loop, so the lookup below reads no file
    inputs = await read_inputs(request, device.callable_signature(signature))

    def add() -> SampleStats:
        before = device.sample_stats().bytes
        quotas.check_sample_bytes(principal, sum(int(value.nbytes) for value in inputs.values()))
        after = device.add_samples(signature, inputs)
        quotas.added(principal, after.bytes - before)
        return after

    return SampleStatsView(**asdict(await in_thread(request, add)))


@router.get("/samples", responses=ERRORS)
async def sample_stats(device: DeviceDep, request: Request) -> SampleStatsView:
    return SampleStatsView(**asdict(await in_thread(request, device.sample_stats)))


@router.delete("/samples", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
async def clear_samples(device: DeviceDep, request: Request) -> Response:
    await in_thread(request, device.clear_samples)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    responses=documented(
        e400="the job would take more steps than FLEET_MAX_JOB_STEPS",
        e404="unknown device or signature",
        e409="no samples (or assigned data), or a job is running",
        e429="the key has FLEET_QUOTA_JOBS jobs queued or running",
    ),
)
async def start_job(
    device: DeviceDep,
    fleet: FleetDep,
    body: StartJob,
    principal: PrincipalDep,
    quotas: QuotasDep,
    request: Request,
) -> JobView:
    """Train over the device's samples (or assigned data) in the background for E epochs of batch B."""

    def start() -> Job:
        quotas.check_jobs(principal)
        return fleet.jobs.start(device, JobSpec(**body.model_dump()))

    return job_view(await in_thread(request, start))


@router.get("/jobs", responses=ERRORS)
async def list_jobs(device: DeviceDep, fleet: FleetDep, request: Request) -> JobList:
    return JobList(jobs=[job_view(job) for job in await in_thread(request, fleet.jobs.jobs, device)])


@router.get("/jobs/{job_id}", responses=ERRORS)
async def get_job(device: DeviceDep, fleet: FleetDep, job_id: str, request: Request) -> JobView:
    return job_view(await in_thread(request, fleet.jobs.job, device, job_id))


@router.post("/jobs/{job_id}/cancel", responses=ERRORS)
async def cancel_job(device: DeviceDep, fleet: FleetDep, job_id: str, request: Request) -> JobView:
    """Ask the job to stop; it ends within one training step."""
    return job_view(await in_thread(request, fleet.jobs.cancel, device, job_id))


@router.get("/history", responses=ERRORS)
async def history(device: DeviceDep, request: Request) -> History:
    """Loss per training step (calls and jobs), oldest first."""
    entries = await in_thread(request, device.history)
    return History(
        device=device.id,
        history=[
            HistoryEntry(
                step=int(e["step"]),  # type: ignore[call-overload]
                loss=float(e["loss"]),  # type: ignore[arg-type]
                source=str(e["source"]),
                at=datetime.fromtimestamp(float(e["at"]), UTC).isoformat(timespec="milliseconds"),  # type: ignore[arg-type]
            )
            for e in entries
        ],
    )
