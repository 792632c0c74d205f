"""``available`` (the default): the first devices online at the round's start in a random order of the
run's devices, seeded by the run's seed and the round's number; when none is online, the round starts
when the first comes online. Availability-aware through the devices' profiles (unprofiled devices are
always online); it learns nothing from feedback.

The order is drawn as the walk goes (``SeededOrder``) and a device's profile is read when the walk
meets it: picking k devices of n costs O(k) (an unprofiled run reads only its participants' records),
however many the run holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.federated.selectors.base import Pick, Selector, first_online
from service.federated.selectors.order import Profiles, SeededOrder


class Available(Selector):
    name = "available"
    title = "Available (first online, seeded)"

    def pick(
        self, devices: Sequence[str], profiles: Profiles, number: int, per_round: int, at: float
    ) -> Pick:
        return Pick(*pick(devices, profiles, self.seed, number, per_round, at))


def pick(
    devices: Sequence[str], profiles: Profiles, seed: int, number: int, per_round: int, at: float
) -> tuple[float, list[str], int]:
    """When round ``number`` starts, its participants (in ID order), and how many offline devices were
    skipped picking them: the first ``per_round`` devices online at ``at`` in a random order seeded by
    the run's seed and the round (unprofiled devices are always online). When no device is online at
    ``at``, the round starts when the first comes online (FleetError if none ever does)."""
    order = SeededOrder(len(devices), [seed, number], per_round)
    picked, offline = _walk(devices, order, profiles, per_round, at)
    if not picked:  # every profile was read: the walk met every device
        at = first_online(devices, profiles, number, at)
        picked, offline = _walk(devices, order, profiles, per_round, at)
    return at, sorted(picked), offline


def _walk(
    devices: Sequence[str], order: SeededOrder, profiles: Profiles, per_round: int, at: float
) -> tuple[list[str], int]:
    picked: list[str] = []
    offline = 0
    for index in order:
        device_id = devices[index]
        if profiles.online(device_id, at):
            picked.append(device_id)
            if len(picked) == per_round:
                break
        else:
            offline += 1
    return picked, offline
