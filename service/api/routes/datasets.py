"""Datasets kept on the server, and assigning devices their local data from one."""

from __future__ import annotations

from typing import Annotated, Literal, cast

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field

from service.api.codecs import NPZ, decode_npz, media_type
from service.api.deps import AdminDep, FederationDep, PrincipalDep, in_thread
from service.api.errors import documented
from service.data.disjoint_assign import DISJOINT_SCHEMES, DisjointScheme, DisjointSpec, split_dataset
from service.data.heatmap import heatmap_png
from service.data.spec import PartitionKind, PartitionSpec
from service.errors import InvalidRequest, UnsupportedMediaType
from service.federated.federation import Selection

router = APIRouter(prefix="/v1/datasets", tags=["federated"])
ERRORS = documented(e400="invalid dataset name", e404="unknown dataset")


class DeviceSelection(BaseModel):
    """Exactly one of ``ids``, ``prefix`` or ``all``."""

    ids: list[str] | None = Field(None, max_length=100_000, description="these devices")
    prefix: str | None = Field(None, max_length=128, description="every device whose ID starts with it")
    all: bool = Field(False, description="every device (the key's own, for a key limited to a prefix)")

    def selection(self) -> Selection:
        return Selection(tuple(self.ids) if self.ids is not None else None, self.prefix, self.all)


DISJOINT = (
    "Disjoint partitions (NIID-Bench): the train split is dealt among the selected devices, every example "
    "to one device (device i = the i-th selected ID, sorted), and the test split by the same plan; "
    "train_per_device and test_per_device do not apply. homogeneous (IID, equal parts); label_quantity "
    "(#C=k: device i holds label i mod K and labels_per_device - 1 others); label_dirichlet (each label "
    "shared out by Dir(beta)); quantity_skew (IID labels, sizes by Dir(beta)); feature_noise (homogeneous, "
    "and device i adds Gaussian noise of sigma noise * i / (N - 1) to its inputs, drawn afresh per batch); "
    "natural (each writer's or user's examples on one device: the dataset's group array)."
)


class DisjointParameters(BaseModel):
    labels_per_device: int = Field(2, ge=1, le=10_000, description="label_quantity: k of #C=k")
    beta: float = Field(0.5, gt=0, le=1e6, description="label_dirichlet, quantity_skew: Dir(beta)")
    noise: float = Field(0.1, ge=0, le=100, description="feature_noise: the last device's sigma")
    group: str | None = Field(
        None, max_length=128, description="natural: the group array (default: the dataset's own)"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1)

    def disjoint(self, scheme: DisjointScheme) -> DisjointSpec:
        return DisjointSpec(scheme, self.labels_per_device, self.beta, self.noise, self.group, self.seed)


class Assign(DeviceSelection, DisjointParameters):
    scheme: Literal["iid", "dirichlet", "interest", "shards", DisjointScheme] = Field(
        "iid",
        description="iid; dirichlet (labels ~ Dirichlet(alpha)); interest (classes_per_device classes "
        "take interest_share of the data); shards (classes_per_device shards of the label-sorted data). "
        + DISJOINT,
    )
    train_per_device: int = Field(600, ge=1, le=100_000)
    test_per_device: int = Field(100, ge=1, le=100_000)
    alpha: float = Field(0.5, gt=0, le=1e6)
    classes_per_device: int = Field(2, ge=1, le=10_000)
    interest_share: float = Field(0.9, ge=0, le=1)
    replace: bool = Field(False, description="sample with replacement within a device")
    parties: list[str] | None = Field(
        None,
        max_length=100_000,
        description="disjoint schemes: every device of the partition, when this call assigns some of "
        "them (a sharded fleet's front sends it to each shard); default: the selected devices",
    )

    def ignored(self) -> list[str]:
        """Fields given that the scheme does not use (a disjoint scheme uses every example)."""
        unused = (
            {
                "train_per_device",
                "test_per_device",
                "alpha",
                "classes_per_device",
                "interest_share",
                "replace",
            }
            if self.scheme in DISJOINT_SCHEMES
            else {"labels_per_device", "beta", "noise", "group", "parties"}
        )
        return sorted(unused & self.model_fields_set)


class PartitionQuery(DisjointParameters):
    scheme: DisjointScheme = Field(description=DISJOINT)
    devices: int = Field(ge=1, le=100_000, description="how many devices the partition is over")


@router.get("", summary="The datasets: the built-in ones and those added")
async def list_datasets(
    federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    return {"datasets": await in_thread(request, federation.datasets.describe_all)}


@router.get("/{name}", summary="One dataset: its splits, arrays, label and classes", responses=ERRORS)
async def get_dataset(
    name: str, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    return (await in_thread(request, federation.datasets.get, name)).describe()


@router.put(
    "/{name}",
    status_code=status.HTTP_201_CREATED,
    summary="Add a dataset: an npz of arrays named <split>/<input> (or <input> for train) (admin)",
    responses=documented(
        e400="invalid name, or arrays that cannot be samples",
        e403="needs an admin key",
        e409="the name is taken",
        e413="body too large",
        e415="not npz",
        e422="arrays that do not fit together (sizes, dtypes, shapes) or a bad label array",
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {NPZ: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_dataset(
    name: str,
    federation: FederationDep,
    admin: AdminDep,
    request: Request,
    label: Annotated[
        str | None, Query(description="the array holding each sample's class (integer or one-hot)")
    ] = "y",
    group: Annotated[
        str | None,
        Query(
            max_length=128,
            description="an array holding each sample's writer or user (integers), kept apart from the "
            "samples (not a model input): what the natural partition splits by",
        ),
    ] = None,
) -> dict[str, object]:
    if media_type(request.headers.get("content-type")) != NPZ:
        raise UnsupportedMediaType(f"a dataset is sent as {NPZ} (numpy.savez)")
    settings = request.app.state.settings
    body = await request.body()
    arrays = await in_thread(request, decode_npz, body, settings.max_body_bytes, settings.max_npz_members)
    if label == "":
        label = None
    return (await in_thread(request, federation.datasets.add, name, arrays, label, group)).describe()


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an added dataset (admin); devices assigned to it then fail naming it",
    responses=documented(e403="needs an admin key", e404="unknown dataset"),
)
async def delete_dataset(name: str, federation: FederationDep, admin: AdminDep, request: Request) -> Response:
    await in_thread(request, federation.datasets.delete, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{name}/assign",
    summary="Give devices their own local train and test data from the dataset, by a seeded scheme",
    responses=documented(
        e400="a bad scheme parameter, no devices selected, or more samples than a class has",
        e404="unknown dataset or device",
        e422="the dataset's arrays do not match the devices' training signature, or a disjoint partition "
        "that cannot be made as asked (naming the setting)",
    ),
)
async def assign(
    name: str, body: Assign, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    """Each device's data is an index view into the dataset, kept in its directory; a device's
    split depends only on the seed and its ID, never on which other devices are assigned with it."""

    def run() -> dict[str, object]:
        ids = federation.select(body.selection(), principal.touches)
        if body.scheme in DISJOINT_SCHEMES:
            disjoint = body.disjoint(cast(DisjointScheme, body.scheme))
            result = federation.assign(name, ids, disjoint, body.parties)
            return {**result, "ignored": body.ignored()} if body.ignored() else result
        try:
            spec = PartitionSpec(
                kind=cast(PartitionKind, body.scheme),
                devices=max(1, len(ids)),
                train_per_device=body.train_per_device,
                test_per_device=body.test_per_device,
                alpha=body.alpha,
                classes_per_device=body.classes_per_device,
                interest_share=body.interest_share,
                replace=body.replace,
                seed=body.seed,
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        return federation.assign(name, ids, spec)

    return await in_thread(request, run)


PARTITION_ERRORS = documented(
    e400="a dataset without a test split or a label array",
    e404="unknown dataset",
    e422="a partition that cannot be made as asked (naming the setting)",
)


@router.get(
    "/{name}/partition",
    summary="A disjoint partition's statistics, assigning nothing: examples and labels per device, "
    "distinct examples, labels on no device (train and test splits)",
    responses=PARTITION_ERRORS,
)
async def get_partition(
    name: str,
    query: Annotated[PartitionQuery, Query()],
    federation: FederationDep,
    principal: PrincipalDep,
    request: Request,
) -> dict[str, object]:
    def run() -> dict[str, object]:
        return split_dataset(
            federation.datasets.get(name), query.disjoint(query.scheme), query.devices
        ).describe()

    return await in_thread(request, run)


@router.get(
    "/{name}/partition.png",
    summary="A disjoint partition's heatmap: examples of each label on each device (past 100 devices, a row "
    "shows the mean of consecutive devices; past 100 labels, a column sums consecutive labels)",
    responses={**PARTITION_ERRORS, 200: {"content": {"image/png": {}}, "description": "a PNG"}},
    response_class=Response,
)
async def get_partition_png(
    name: str,
    query: Annotated[PartitionQuery, Query()],
    federation: FederationDep,
    principal: PrincipalDep,
    request: Request,
    split: Annotated[
        Literal["train", "test"], Query(description="the split whose counts it shows")
    ] = "train",
) -> Response:
    def run() -> bytes:
        dealt = split_dataset(federation.datasets.get(name), query.disjoint(query.scheme), query.devices)
        counts = (dealt.train_stats if split == "train" else dealt.test_stats).counts
        parameters = ", ".join(f"{k}={v}" for k, v in dealt.spec.parameters().items())
        title = f"{name} {split}: {query.scheme} {parameters} seed={query.seed}, {query.devices} devices"
        return heatmap_png(counts, title)

    return Response(await in_thread(request, run), media_type="image/png")
