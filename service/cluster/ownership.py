"""A shard's share of the fleet: the devices its slot wins in the committed view, fenced during a resize."""

from __future__ import annotations

import threading

from service.cluster.state import ClusterState
from service.errors import DeviceMoving, FleetError, NotOwner, Unavailable
from service.wire.view import owner_slot

MOVE_RETRY_AFTER = 0.5
"""Seconds a caller is told to wait for a device that is moving between shards."""


class SlotOwnership:
    """``service.fleet.Ownership`` for one slot of a view of ``shards`` slots at ``epoch``.

    A resize first *fences* (``fence(new_shards)``): devices whose owner changes are then owned by
    neither side, so no call can reach them while the old owner spills them; ``commit`` then adopts
    the new slot count. Reads take no lock: the fields are replaced together as one tuple.
    """

    def __init__(
        self, slot: int, shards: int, epoch: int, disk: ClusterState | None = None, incarnation: int = 0
    ) -> None:
        self.slot = slot
        self._state: tuple[int, int, int | None] = (epoch, shards, None)
        self._lock = threading.Lock()
        self.disk = disk
        """The view on the shared disk, which fences writes (None: no fence, one process alone)."""
        self.incarnation = incarnation

    @property
    def epoch(self) -> int:
        return self._state[0]

    @property
    def shards(self) -> int:
        return self._state[1]

    @property
    def pending(self) -> int | None:
        """The slot count a resize in progress moves to (None: none in progress)."""
        return self._state[2]

    def owns(self, device_id: str) -> bool:
        _, shards, pending = self._state
        if owner_slot(device_id, shards) != self.slot:
            return False
        return pending is None or owner_slot(device_id, pending) == self.slot

    def moving(self, device_id: str) -> bool:
        _, shards, pending = self._state
        return pending is not None and owner_slot(device_id, shards) != owner_slot(device_id, pending)

    def refusal(self, device_id: str) -> FleetError:
        epoch, shards, _ = self._state
        if self.moving(device_id):
            return DeviceMoving(
                f"device '{device_id}' is moving between shards (resize from epoch {epoch}); retry",
                retry_after=MOVE_RETRY_AFTER,
            )
        owner = owner_slot(device_id, shards)
        return NotOwner(f"device '{device_id}' is owned by shard {owner} in epoch {epoch}", epoch=epoch)

    def check_write(self, device_id: str) -> None:
        """Refuse a write of the device's files when the disk says another process owns it: a newer
        incarnation holds this slot, or a committed view newer than this one gives the device away.

        Checked just before the file is renamed into place. It narrows the window of a stale owner to
        that of one rename (a POSIX file system has no compare-and-set); fenced is a process that was
        partitioned or missed a resize, not one racing the commit, which waits for hand-overs.
        """
        if self.disk is None:
            return
        current = self.disk.incarnation(self.slot)
        if current > self.incarnation:
            raise Unavailable(
                f"shard {self.slot} incarnation {self.incarnation} is stale (incarnation {current} "
                "serves the slot); retry",
                retry_after=1,
            )
        membership = self.disk.membership()
        epoch = self.epoch
        if membership is not None and membership.epoch > epoch:
            owner = owner_slot(device_id, membership.shards)
            if owner != self.slot:
                raise NotOwner(
                    f"device '{device_id}' is owned by shard {owner} in epoch {membership.epoch}",
                    epoch=membership.epoch,
                )

    def fence(self, new_shards: int) -> None:
        with self._lock:
            epoch, shards, _ = self._state
            self._state = (epoch, shards, new_shards)

    def commit(self, epoch: int, shards: int) -> None:
        with self._lock:
            self._state = (epoch, shards, None)
