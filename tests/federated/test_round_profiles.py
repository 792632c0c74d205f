"""Rounds over profiled devices: simulated time, offline devices, dropouts, deadlines and stale updates.

One process's federation over real devices and a small dataset cut from Fashion-MNIST; each test makes
devices of its own (IDs with the test's prefix) and sets their profiles directly. Profiles are chosen
so that a participant's simulated duration is known by hand: no round trips, fast links, and a train
time per sample set by the device's speed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from service.cluster.ownership import SlotOwnership
from service.cluster.participants import ShardParticipants
from service.data.spec import PartitionSpec
from service.federated.checkpoints import Weights
from service.federated.federation import Federation
from service.federated.local import LocalTraining, participation_seconds
from service.federated.mean import staleness_weight
from service.federated.participants import Participation
from service.federated.selection import Profiles, pick
from service.federated.spec import RoundSpec
from service.federated.staleness import MAX_STALENESS
from service.federated.tally import MIN_ROUND_SECONDS
from service.profiles import DeviceProfile, parse_profile
from service.profiles.availability import device_key
from service.profiles.mixes import find_mix
from tests.federated.conftest import DATASET

MODEL = "fashion_mnist"
TRAIN, TEST = 40, 10
"""Samples assigned per device."""
TRAINING = LocalTraining(epochs=1, batch_size=20)
DEADLINE = 1.0
TRAIN_MS = 1.0
"""A profiled phone of speed 1 trains a sample in 1 ms: 40 samples in 0.04 s."""
NETWORK = {"uplink_mbps": 1000.0, "downlink_mbps": 1000.0, "rtt_ms": 0.0}
WAIT = 180.0


def phone(speed: float = 1.0, **extra: object) -> DeviceProfile:
    compute = {"train_ms_per_sample": TRAIN_MS, "infer_ms_per_sample": 0.0}
    return parse_profile({"class": "test", "compute": compute, "network": NETWORK, "speed": speed, **extra})


FAST = phone(1.0)
"""Well within the deadline: about 0.04 s of training and a few ms of transfers."""
SLOW = phone(0.01)
"""4 s of training: past a 1 s deadline, 4 rounds late."""
LATE_BY_ONE = phone(0.025)
"""1.6 s of training: past a 1 s deadline, one round late."""


def make(federation: Federation, prefix: str, profiles: list[DeviceProfile | None]) -> list[str]:
    """Devices ``<prefix>-<i>`` with those profiles (None: unprofiled), each assigned its own data."""
    ids = [f"{prefix}-{i}" for i in range(len(profiles))]
    federation.fleet.create_many(ids)
    spec = PartitionSpec("iid", len(ids), TRAIN, TEST, seed=1)
    federation.assign(DATASET, ids, spec)
    for device_id, profile in zip(ids, profiles, strict=True):
        if profile is not None:
            federation.fleet.get(device_id).set_profile(profile)
    return ids


def run(federation: Federation, ids: list[str], **spec: Any) -> dict[str, Any]:
    """Run rounds over ``ids`` to the end (at most ``WAIT`` seconds) and give the run's view."""
    fields: dict[str, Any] = {"rounds": 2, "training": TRAINING, "seed": 7, "start_version": 0, **spec}
    started = federation.rounds.start(RoundSpec(MODEL, tuple(ids), **fields))
    view = federation.rounds.wait(str(started["id"]), WAIT)
    assert view["state"] not in ("queued", "running"), f"the run did not end within {WAIT} s"
    return view


def rounds_of(view: dict[str, Any]) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = view["rounds"]
    return rounds


def version(federation: Federation, view: dict[str, Any]) -> Weights:
    return federation.version_weights(MODEL, int(view["version"]))


def seconds(federation: Federation, device_id: str, profile: DeviceProfile, weights: bool = True) -> float:
    size = federation.version_size(MODEL, 0) if weights else 0
    return participation_seconds(profile, TRAINING, TRAIN, TEST, size)


# -- deadlines -------------------------------------------------------------------------------


def test_a_deadline_drops_exactly_the_slow_devices(federation: Federation) -> None:
    ids = make(federation, "deadline", [FAST, SLOW, FAST, FAST, SLOW, FAST])
    slow, fast = [ids[1], ids[4]], [ids[0], ids[2], ids[3], ids[5]]
    assert seconds(federation, ids[1], SLOW) > DEADLINE > seconds(federation, ids[0], FAST)
    view = run(federation, ids, deadline=DEADLINE, stragglers="drop")
    assert view["state"] == "succeeded", view
    for metrics in rounds_of(view):
        assert metrics["picked"] == 6 and metrics["finished"] == 4 and metrics["straggled"] == 2
        assert metrics["stragglers"] == slow and metrics["dropped"] == 0 and metrics["stale_added"] == 0
        assert metrics["samples"] == 4 * TRAIN
        assert metrics["simulated_seconds"] == DEADLINE  # someone missed it: the round waited it out
    assert [r["simulated_start"] for r in rounds_of(view)] == [0.0, DEADLINE]
    assert view["simulated_time"] == 2 * DEADLINE
    # The stragglers trained (a phone does not know it is late), but their updates were left out:
    # the aggregate is that of a run over the fast devices alone, bit for bit.
    assert all(federation.fleet.get(i).clock >= seconds(federation, i, SLOW) for i in slow)
    alone = run(federation, fast)
    assert alone["state"] == "succeeded"
    assert [r["simulated_seconds"] for r in rounds_of(alone)] == [
        pytest.approx(seconds(federation, ids[0], FAST))
    ] * 2
    ours, theirs = version(federation, view), version(federation, alone)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name])
    everyone = run(federation, ids)  # no deadline: everyone's update counts, and it differs
    assert any(not np.array_equal(version(federation, everyone)[n], ours[n]) for n in ours), (
        "the slow devices' updates should change the aggregate"
    )
    assert rounds_of(everyone)[0]["simulated_seconds"] == pytest.approx(seconds(federation, ids[1], SLOW))


def test_a_device_clock_counts_what_the_round_planned(federation: Federation) -> None:
    profile = parse_profile(
        {
            "compute": {"train_ms_per_sample": 3.0, "infer_ms_per_sample": 0.7},
            "network": {"uplink_mbps": 2.0, "downlink_mbps": 20.0, "rtt_ms": 40.0},
        }
    )
    (device_id,) = make(federation, "clock", [profile])
    view = run(federation, [device_id], rounds=1)
    assert view["state"] == "succeeded", view
    planned = rounds_of(view)[0]["simulated_seconds"]
    assert planned == pytest.approx(seconds(federation, device_id, profile))
    assert federation.fleet.get(device_id).clock == pytest.approx(planned, rel=1e-9)


# -- availability and dropouts ---------------------------------------------------------------


def test_offline_devices_are_never_picked(federation: Federation) -> None:
    night = phone(availability={"kind": "trace", "intervals": [[100, 200]], "period": 1000})
    ids = make(federation, "offline", [FAST, night, FAST, night])
    view = run(federation, ids, rounds=3, participants=2)
    assert view["state"] == "succeeded", view
    for metrics in rounds_of(view):
        # Picking walks the devices in a seeded order and stops at the second online one: it may meet
        # both offline devices, one, or none.
        assert metrics["participants"] == [ids[0], ids[2]] and 0 <= metrics["offline"] <= 2
    everyone = run(federation, ids, rounds=1)  # all of them: the walk meets every device
    assert rounds_of(everyone)[0]["offline"] == 2
    assert all(federation.fleet.get(i).clock == 0 for i in (ids[1], ids[3]))


def test_a_trace_that_comes_online_later_starts_the_round_then(federation: Federation) -> None:
    later = phone(availability={"kind": "trace", "intervals": [[100, 200], [500, 600]]})
    ids = make(federation, "later", [later, later])
    view = run(federation, ids, rounds=2)
    assert view["state"] == "succeeded", view
    first, second = rounds_of(view)
    d = seconds(federation, ids[0], later)
    assert first["simulated_start"] == 100 and first["simulated_seconds"] == pytest.approx(d)
    assert second["simulated_start"] == pytest.approx(100 + d) and second["offline"] == 0
    assert view["simulated_time"] == pytest.approx(100 + 2 * d)
    # From 300 on, the next spell starts at 500; after 600, none ever does.
    assert rounds_of(run(federation, ids, rounds=1, start_time=300))[0]["simulated_start"] == 500
    never = run(federation, ids, rounds=1, start_time=700)
    assert never["state"] == "failed" and "none comes online later" in never["error"]


def test_a_participant_whose_spell_ends_before_its_part_drops_out(federation: Federation) -> None:
    short = phone(availability={"kind": "trace", "intervals": [[0, 0.01]]})
    ids = make(federation, "short", [FAST, short])
    view = run(federation, ids, rounds=1)
    assert view["state"] == "succeeded", view
    metrics = rounds_of(view)[0]
    assert metrics["picked"] == 2 and metrics["dropped"] == 1 and metrics["finished"] == 1
    assert federation.fleet.get(ids[1]).read_record().train_steps == 0


def test_dropout_probability_one_drops_everyone_profiled_that_way(federation: Federation) -> None:
    quitter = phone(dropout=1.0)
    ids = make(federation, "quit", [quitter, None, quitter, None, FAST])
    view = run(federation, ids, rounds=2, deadline=DEADLINE)
    assert view["state"] == "succeeded", view
    for metrics in rounds_of(view):
        assert metrics["picked"] == 5 and metrics["dropped"] == 2 and metrics["finished"] == 3
        assert metrics["simulated_seconds"] == DEADLINE
    for device_id in (ids[0], ids[2]):  # a dropout costs no work
        device = federation.fleet.get(device_id)
        assert device.clock == 0 and device.read_record().train_steps == 0
    # A run whose every participant drops out makes no version, and says so per round.
    gone = run(federation, [ids[0], ids[2]], rounds=2)
    assert gone["state"] == "succeeded" and gone["version"] == 0
    assert [(r["version"], r["finished"], r["dropped"]) for r in rounds_of(gone)] == [(None, 0, 2)] * 2


# -- stale updates ---------------------------------------------------------------------------


def test_stale_updates_are_added_in_a_later_round_with_the_discounted_weight(federation: Federation) -> None:
    ids = make(federation, "stale", [FAST, LATE_BY_ONE, FAST, FAST])
    late = ids[1]
    assert math.ceil(seconds(federation, late, LATE_BY_ONE) / DEADLINE) - 1 == 1
    view = run(federation, ids, deadline=DEADLINE, stragglers="stale", local_accuracy=False)
    assert view["state"] == "succeeded", view
    first, second = rounds_of(view)
    assert (first["straggled"], first["stale_added"], first["stragglers"]) == (1, 0, [late])
    # Round 2: the round-1 update of the straggler arrives; its own round-2 update would arrive in
    # round 3, after the run's last: it is dropped.
    assert (second["straggled"], second["stale_added"], second["finished"]) == (1, 1, 3)
    # Each participant's update is reproducible: the same version and seed give the same weights.
    v1 = int(first["version"])

    def update(device_id: str, version: int, number: int) -> Weights:
        asked = Participation(MODEL, version, TRAINING, (7, number, device_key(device_id)), False)
        result = federation.participate(device_id, asked)
        assert result.weights is not None and result.samples == TRAIN
        return result.weights

    fresh = [update(i, v1, 2) for i in (ids[0], ids[2], ids[3])]
    stale = update(late, 0, 1)
    made = version(federation, view)

    def mean(discount: float) -> Weights:  # every update has TRAIN samples
        return {
            name: (sum(w[name].astype(np.float64) for w in fresh) + discount * stale[name]) / (3 + discount)
            for name in made
        }

    discounted, undiscounted = mean(staleness_weight(1)), mean(1.0)
    for name, value in made.items():
        np.testing.assert_allclose(value, discounted[name], rtol=0, atol=2e-6, err_msg=name)
    assert not all(np.allclose(made[n], undiscounted[n], rtol=0, atol=2e-6) for n in made)
    assert staleness_weight(1) == pytest.approx(2**-0.5)


def test_updates_more_than_max_staleness_rounds_late_are_dropped(federation: Federation) -> None:
    far = phone(TRAIN * TRAIN_MS / 1000 / (MAX_STALENESS + 1.5))  # 5.5 s: 5 rounds late at 1 s
    ids = make(federation, "far", [FAST, far])
    assert math.ceil(seconds(federation, ids[1], far) / DEADLINE) - 1 == MAX_STALENESS + 1
    view = run(federation, ids, rounds=MAX_STALENESS + 2, deadline=DEADLINE, stragglers="stale")
    assert view["state"] == "succeeded", view
    assert [r["stale_added"] for r in rounds_of(view)] == [0] * (MAX_STALENESS + 2)
    assert all(r["straggled"] == 1 for r in rounds_of(view))


# -- reproducibility and the sharded coordinator ---------------------------------------------


def test_two_runs_with_the_same_seed_give_identical_metrics(federation: Federation) -> None:
    ids = make(federation, "twin", [None] * 8)
    for device_id, profile in find_mix("phones").assign(ids, seed=3).items():
        federation.fleet.get(device_id).set_profile(profile)
    spec = {"rounds": 3, "participants": 4, "deadline": 0.5, "stragglers": "stale", "start_time": 3600.0}
    first, second = run(federation, ids, **spec), run(federation, ids, **spec)
    assert first["state"] == second["state"] == "succeeded", first
    # The mix's phones go offline, straggle and arrive late: the runs exercise all of it.
    for count in ("offline", "straggled", "stale_added"):
        assert any(r[count] for r in rounds_of(first)), count
    wall = ("seconds", "version")
    assert [{k: v for k, v in r.items() if k not in wall} for r in rounds_of(first)] == [
        {k: v for k, v in r.items() if k not in wall} for r in rounds_of(second)
    ]
    assert first["simulated_time"] == second["simulated_time"] > 3600.0


def test_the_sharded_coordinator_reads_the_profiles_one_process_has(federation: Federation) -> None:
    ids = make(federation, "shardread", [FAST, None, SLOW])
    sharded = ShardParticipants(federation, SlotOwnership(0, 1, 0), lambda: None, b"token")  # type: ignore[arg-type,return-value]
    try:
        assert [sharded.profile(i) for i in ids] == [federation.profile(i) for i in ids] == [FAST, None, SLOW]
        assert sharded.sample_counts(ids[0]) == federation.sample_counts(ids[0]) == (TRAIN, TEST)
        federation.fleet.get(ids[1]).set_profile(LATE_BY_ONE)  # the record file changed: read again
        assert sharded.profile(ids[1]) == LATE_BY_ONE
    finally:
        sharded.close()


def test_unprofiled_rounds_take_no_simulated_time(federation: Federation) -> None:
    ids = make(federation, "plain", [None] * 4)
    view = run(federation, ids, participants=3, deadline=DEADLINE)
    assert view["state"] == "succeeded", view
    for metrics in rounds_of(view):
        assert metrics["simulated_seconds"] == 0 and metrics["finished"] == 3
        assert (metrics["straggled"], metrics["dropped"], metrics["offline"]) == (0, 0, 0)
    assert view["simulated_time"] == 0


# -- the smallest deadline -------------------------------------------------------------------


def test_a_tiny_deadline_runs_with_every_profiled_participant_straggling(federation: Federation) -> None:
    ids = make(federation, "tiny", [FAST, None])
    view = run(federation, ids, deadline=0.001, stragglers="stale", start_time=1e12)
    assert view["state"] == "succeeded", view
    for metrics in rounds_of(view):
        assert (metrics["straggled"], metrics["finished"], metrics["simulated_seconds"]) == (1, 1, 0.001)


# -- simulated time always moves -------------------------------------------------------------


def test_a_round_everyone_drops_out_of_lasts_until_the_last_drop(federation: Federation) -> None:
    short = phone(availability={"kind": "trace", "intervals": [[0, 0.01], [0.02, 0.03]], "period": 1.0})
    quitter = phone(dropout=1.0)
    ids = make(federation, "alldrop", [short, quitter])
    view = run(federation, ids, rounds=3)  # no deadline
    assert view["state"] == "succeeded", view
    d = seconds(federation, ids[1], quitter)
    starts = [r["simulated_start"] for r in rounds_of(view)]
    for metrics in rounds_of(view):
        assert metrics["finished"] == 0 and metrics["dropped"] + metrics["offline"] == 2
        if metrics["picked"] == 2:  # the dropout draw's part would have ended last
            assert metrics["simulated_seconds"] == pytest.approx(d)
        assert metrics["simulated_seconds"] > 0
    assert starts == sorted(set(starts)) and view["simulated_time"] > starts[-1]


def test_a_zero_length_part_still_moves_simulated_time(federation: Federation) -> None:
    instant = parse_profile(
        {
            "class": "test",
            "compute": {"train_ms_per_sample": 0.0, "infer_ms_per_sample": 0.0},
            "network": {"uplink_mbps": 1000.0, "downlink_mbps": 1000.0, "rtt_ms": 0.0},
            "dropout": 1.0,
        }
    )
    ids = make(federation, "instant", [instant])
    view = run(federation, ids, rounds=2, aggregation="none", local_accuracy=False)
    assert view["state"] == "succeeded", view
    assert [r["simulated_start"] for r in rounds_of(view)] == [0.0, MIN_ROUND_SECONDS]


# -- picking ---------------------------------------------------------------------------------


def test_the_sharded_coordinator_picks_what_one_process_picks(federation: Federation) -> None:
    night = phone(availability={"kind": "trace", "intervals": [[100, 200]], "period": 1000})
    ids = make(federation, "shardpick", [FAST, night, None, night, SLOW, None, night, FAST])
    sharded = ShardParticipants(federation, SlotOwnership(0, 1, 0), lambda: None, b"token")  # type: ignore[arg-type,return-value]
    try:
        for number in range(1, 6):
            here = pick(sorted(ids), Profiles(federation), 7, number, 3, 0.0)
            there = pick(sorted(ids), Profiles(sharded), 7, number, 3, 0.0)
            assert here == there and not set(here[1]) & {ids[1], ids[3], ids[6]}
    finally:
        sharded.close()
