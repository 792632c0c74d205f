"""Who owns which device: a member view with an epoch, and rendezvous hashing over its shard slots.

Pure Python, no Ray: the coordinator, every shard, the front and ``FleetClient``'s fast path all
compute owners with this one function, so they agree whenever they hold the same epoch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

MOVING_HEADER = "Fleet-Moving"
"""On a 503 (``DeviceMoving``): refused, not applied, because the device moves between shards; the
front and ``FleetClient(direct=True)`` send the call again. A header, not the body's error code: an
error under ``/v2`` (the Open Inference Protocol's shape) carries no code."""


def _score(slot: int, device_id: str) -> int:
    digest = hashlib.blake2b(f"{slot}\0{device_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_slot(device_id: str, shards: int) -> int:
    """The slot (0..shards-1) that owns ``device_id``: highest-random-weight (rendezvous) hashing.

    Going from N to N+1 slots moves only the devices that slot N wins (about 1/(N+1) of them), and
    going back moves exactly those back; no other device changes owner.
    """
    if shards < 1:
        raise ValueError("a view has at least one shard")
    return max(range(shards), key=lambda slot: _score(slot, device_id))


@dataclass(frozen=True)
class ShardInfo:
    """One shard slot and the process that serves it now."""

    slot: int
    address: str | None = None
    """``http://host:port`` of the shard's own HTTP server (None while it starts)."""
    node: str = ""
    pid: int = 0
    incarnation: int = 0
    """Bumped each time a process takes the slot (a start, or Ray's restart after a crash)."""

    @classmethod
    def parse(cls, value: Mapping[str, Any]) -> ShardInfo:
        return cls(
            slot=int(value["slot"]),
            address=value.get("address"),
            node=str(value.get("node", "")),
            pid=int(value.get("pid", 0)),
            incarnation=int(value.get("incarnation", 0)),
        )


@dataclass(frozen=True)
class View:
    """The committed member view: which slots exist, who serves them, and its epoch.

    ``epoch`` rises with every change of the slot count (a resize); a shard's new incarnation changes
    its address but not the epoch, since ownership depends on the slot count alone.
    """

    epoch: int
    shards: tuple[ShardInfo, ...] = field(default_factory=tuple)

    @property
    def size(self) -> int:
        return len(self.shards)

    def owner(self, device_id: str) -> ShardInfo:
        return self.shards[owner_slot(device_id, self.size)]

    def partition(self, device_ids: Iterable[str]) -> dict[int, list[str]]:
        """The IDs by owning slot, each list in the given order."""
        out: dict[int, list[str]] = {}
        for device_id in device_ids:
            out.setdefault(owner_slot(device_id, self.size), []).append(device_id)
        return out

    def with_shard(self, info: ShardInfo) -> View:
        shards = list(self.shards)
        shards[info.slot] = info
        return replace(self, shards=tuple(shards))

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "shards": [asdict(s) for s in self.shards]}

    @classmethod
    def parse(cls, value: Mapping[str, Any]) -> View:
        shards = tuple(ShardInfo.parse(s) for s in value["shards"])
        if [s.slot for s in shards] != list(range(len(shards))):
            raise ValueError("a view's shards must be slots 0..N-1 in order")
        return cls(epoch=int(value["epoch"]), shards=shards)
