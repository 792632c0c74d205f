"""Stale updates wait for the round they arrive in, by simulated time, and are dropped past the limits."""

from __future__ import annotations

import numpy as np

from service.federated.participants import Update
from service.federated.selection import Plan
from service.federated.spec import RoundSpec
from service.federated.staleness import MAX_PENDING_STALE, MAX_STALENESS, LateUpdates

MODEL = "fashion_mnist"
TRAIN = 40


def _update(name: str) -> Update:
    return Update(name, TRAIN, 1, None, None, {"w": np.zeros(1, np.float32)})


def test_a_stale_update_arrives_in_the_first_round_ending_after_it() -> None:
    late = LateUpdates(RoundSpec(MODEL, ("a",), rounds=10, deadline=1.0, stragglers="stale"))
    # Round 1 starts at 0; a straggler takes 2.5 s: it arrives at 2.5. Round 2 (1 to 1.2: nobody late)
    # and round 3 (1.2 to 2.2) end before it; round 4 (2.2 to 3.2) is the first to end after: 3 late,
    # where assuming every round lasts the deadline would say 2.
    late.offer(1, Plan("a", 2.5, "straggler"), _update("a"), 0.0)
    assert late.arriving(1, 1.0) == [] and late.arriving(2, 1.2) == [] and late.arriving(3, 2.2) == []
    assert [(u.device, k) for u, k in late.arriving(4, 3.2)] == [("a", 3)]
    # A round that starts late (waiting for a device to come online) takes it at once: 1 late.
    late.offer(4, Plan("b", 30.0, "straggler"), _update("b"), 2.2)
    assert [(u.device, k) for u, k in late.arriving(5, 1000.0)] == [("b", 1)]
    # One arriving exactly at a round's end is that round's.
    late.offer(5, Plan("c", 2.0, "straggler"), _update("c"), 999.0)
    assert [(u.device, k) for u, k in late.arriving(6, 1001.0)] == [("c", 1)]


def test_stale_updates_more_than_max_staleness_rounds_late_or_past_the_limit_are_dropped() -> None:
    late = LateUpdates(RoundSpec(MODEL, ("a",), rounds=100, deadline=1.0, stragglers="stale"))
    late.offer(1, Plan("a", 100.0, "straggler"), _update("a"), 0.0)
    for number in range(2, MAX_STALENESS + 3):
        assert late.arriving(number, float(number - 1) * 0.5) == []
    assert late.arriving(MAX_STALENESS + 3, 1e9) == []  # it would arrive now, but too late
    for i in range(MAX_PENDING_STALE + 5):
        late.offer(10, Plan(f"d{i}", 2.0, "straggler"), _update(f"d{i}"), 0.0)
    assert len(late.arriving(11, 10.0)) == MAX_PENDING_STALE
    dropping = LateUpdates(RoundSpec(MODEL, ("a",), deadline=1.0, stragglers="drop"))
    dropping.offer(1, Plan("a", 2.0, "straggler"), _update("a"), 0.0)
    assert dropping.arriving(2, 10.0) == []
