"""The partition ``fleet simulate --dataset`` asks the datasets API for: any kind it offers, the kind's
own parameters and the seed, checked here by the service's own rules before a device is made.

Two families (``POST /v1/datasets/{name}/assign``): the sampled kinds (``iid``, ``dirichlet``,
``interest``, ``shards``: each device draws ``train_per_device`` examples, overlaps across devices) and
the disjoint ones (``homogeneous``, ``label_quantity``, ``label_dirichlet``, ``quantity_skew``,
``feature_noise``, ``natural``: the train split dealt among the devices, every example once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from service.data.disjoint_assign import DISJOINT_SCHEMES, DisjointScheme, DisjointSpec
from service.data.spec import PARTITION_KINDS, PartitionKind, PartitionSpec

KINDS: tuple[str, ...] = (*PARTITION_KINDS, *DISJOINT_SCHEMES)
SIZES = ("train_per_device", "test_per_device")
PARAMETERS: Mapping[str, tuple[str, ...]] = {
    "iid": (*SIZES, "replace"),
    "dirichlet": (*SIZES, "alpha", "replace"),
    "interest": (*SIZES, "classes_per_device", "interest_share", "replace"),
    "shards": (*SIZES, "classes_per_device", "replace"),
    "homogeneous": (),
    "label_quantity": ("labels_per_device",),
    "label_dirichlet": ("beta",),
    "quantity_skew": ("beta",),
    "feature_noise": ("noise",),
    "natural": ("group",),
}
"""The parameters each kind reads (the assign API ignores or refuses the others)."""
DEFAULTS: Mapping[str, Any] = {
    "train_per_device": 500,
    "test_per_device": 100,
    "replace": False,
    "alpha": 0.5,
    "classes_per_device": 1,
    "interest_share": 0.9,
    "labels_per_device": 2,
    "beta": 0.5,
    "noise": 0.1,
    "group": None,
}
"""``fleet simulate``'s defaults for every parameter."""


@dataclass(frozen=True)
class Partition:
    """A partition as asked: its kind, how many devices, its seed and the kind's own parameters."""

    kind: str = "interest"
    devices: int = 10
    seed: int = 0
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """The kind's parameters (``PARAMETERS[kind]``), every one given (``of`` fills the defaults)."""

    @classmethod
    def of(cls, kind: str, devices: int, seed: int, **given: Any) -> Partition:
        """The partition of ``kind`` with ``given`` parameters (None or absent: the default), the
        parameters other kinds read dropped; ValueError (or InvalidPartition) for what cannot be made."""
        if kind not in PARAMETERS:
            raise ValueError(f"unknown partition {kind!r}; choose one of {', '.join(KINDS)}")
        parameters = {
            name: DEFAULTS[name] if given.get(name) is None else given[name] for name in PARAMETERS[kind]
        }
        partition = cls(kind, devices, seed, parameters)
        partition.check()
        return partition

    @property
    def disjoint(self) -> bool:
        return self.kind in DISJOINT_SCHEMES

    @property
    def train_per_device(self) -> int | None:
        """Examples each device trains on (None for a disjoint kind: each has its part of the split)."""
        value = self.parameters.get("train_per_device")
        return None if value is None else int(value)

    def check(self) -> None:
        """The service's own checks of the kind and its parameters (ValueError, InvalidPartition)."""
        if self.kind not in PARAMETERS:
            raise ValueError(f"unknown partition {self.kind!r}; choose one of {', '.join(KINDS)}")
        unknown = sorted(set(self.parameters) - set(PARAMETERS[self.kind]))
        if unknown:
            raise ValueError(f"partition {self.kind} takes no {', '.join(unknown)}")
        if self.devices < 1:
            raise ValueError("devices must be at least 1")
        if self.disjoint:
            DisjointSpec(cast(DisjointScheme, self.kind), seed=self.seed, **self.parameters)
        else:
            PartitionSpec(
                kind=cast(PartitionKind, self.kind), devices=self.devices, seed=self.seed, **self.parameters
            )

    def assign_body(self) -> dict[str, Any]:
        """The assign API's scheme, the kind's parameters and the seed (no device selection)."""
        given = {k: v for k, v in self.parameters.items() if v is not None}
        return {"scheme": self.kind, **given, "seed": self.seed}

    def describe(self) -> str:
        """``label_dirichlet (beta=0.5, seed 7)``: the kind, its parameters and the seed."""
        shown = [
            f"{k}={_short(v)}"
            for k, v in self.parameters.items()
            if k not in SIZES and v is not None and not (k == "replace" and v is False)
        ]
        return f"{self.kind} ({', '.join([*shown, f'seed {self.seed}'])})"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "devices": self.devices, "seed": self.seed, **self.parameters}

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> Partition:
        """The partition ``as_dict`` wrote (every parameter its kind reads must be there)."""
        kind = str(saved["kind"])
        if kind not in PARAMETERS:
            raise ValueError(f"unknown partition {kind!r}; choose one of {', '.join(KINDS)}")
        missing = [name for name in PARAMETERS[kind] if name not in saved]
        if missing:
            raise ValueError(f"the saved partition {kind} lacks {', '.join(missing)}")
        partition = cls(
            kind, int(saved["devices"]), int(saved["seed"]), {name: saved[name] for name in PARAMETERS[kind]}
        )
        partition.check()
        return partition


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
