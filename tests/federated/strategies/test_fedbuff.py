"""FedBuff on the virtual clock: the server steps every K updates, stale updates are discounted by
``(1 + tau) ** -0.5`` against the version their device downloaded, devices start only when online, at
most ``concurrency`` are in flight, and two runs with one seed give identical metrics.

Real devices training the suite's small MLP over 40 samples each; profiles set by hand where the test
needs known durations (as in ``tests/federated/test_round_profiles.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from service.data.spec import PartitionSpec
from service.errors import InvalidRequest
from service.federated.asynchronous import BufferedLoop
from service.federated.checkpoints import Weights
from service.federated.federation import Federation
from service.federated.local import LocalTraining, participation_seconds
from service.federated.participants import Participation
from service.federated.runs import Run, RunRecords
from service.federated.spec import Evaluation, RoundSpec
from service.federated.strategies import make
from service.federated.strategies.base import RoundContext, StrategySettings
from service.federated.strategies.fedbuff import DeltaBuffer, FedBuff
from service.profiles import DeviceProfile, parse_profile
from service.profiles.availability import device_key
from service.profiles.mixes import find_mix
from tests.federated.strategies.conftest import DATASET, MODEL
from tests.federated.strategies.helpers import run

TRAINING = LocalTraining(1, 20)
TRAIN, TEST = 40, 10
WAKE = 0.2
"""When the late devices come online (simulated seconds)."""
NETWORK = {"uplink_mbps": 1000.0, "downlink_mbps": 1000.0, "rtt_ms": 0.0}


def phone(**extra: object) -> DeviceProfile:
    compute = {"train_ms_per_sample": 1.0, "infer_ms_per_sample": 0.0}
    return parse_profile({"class": "test", "compute": compute, "network": NETWORK, **extra})


def devices(federation: Federation, prefix: str, count: int, seed: int = 1) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    federation.fleet.create_many(ids, model=MODEL)
    federation.assign(DATASET, ids, PartitionSpec("iid", count, TRAIN, TEST, seed=seed))
    return ids


def fedbuff(ids: list[str], rounds: int, **settings: Any) -> RoundSpec:
    return RoundSpec(
        MODEL,
        tuple(ids),
        rounds=rounds,
        training=TRAINING,
        aggregation="fedbuff",
        options=StrategySettings(**settings),
        seed=5,
        start_version=0,
    )


def steps(view: dict[str, object]) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = view["rounds"]  # type: ignore[assignment]
    return rounds


def context() -> RoundContext:
    return RoundContext(1, 1, dict, lambda name, weights: name)


def test_the_buffer_discounts_each_delta_by_its_staleness_and_weighs_samples() -> None:
    base_old: Weights = {"w": np.array([1.0, 2.0], np.float32), "step": np.array(7, np.int64)}
    base_new: Weights = {"w": np.array([2.0, 2.0], np.float32), "step": np.array(7, np.int64)}
    buffer = DeltaBuffer()
    buffer.add({"w": np.array([2.0, 4.0], np.float32), "step": np.array(8, np.int64)}, base_old, 30, 3)
    buffer.add({"w": np.array([3.0, 1.0], np.float32), "step": np.array(9, np.int64)}, base_new, 10, 0)
    strategy = make("fedbuff")
    assert isinstance(strategy, FedBuff)
    new, state = strategy.combine(base_new, buffer, {}, context())
    # (30 * 0.5 * (1, 2) + 10 * 1 * (1, -1)) / 40, stepped from the current version
    expected = np.array([2.0 + (15 + 10) / 40, 2.0 + (30 - 10) / 40], np.float32)
    np.testing.assert_array_equal(new["w"], expected)
    assert new["step"] == 8 and state == {}
    assert buffer.staleness == [3, 0]


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="buffer_size"):
        make("fedbuff", settings=StrategySettings(buffer_size=0))
    with pytest.raises(InvalidRequest, match="concurrency"):
        make("fedbuff", settings=StrategySettings(concurrency=0))


def test_the_server_steps_every_k_updates(strategy_federation: Federation) -> None:
    ids = devices(strategy_federation, "k", 6)
    view = run(strategy_federation, fedbuff(ids, 3, buffer_size=3, concurrency=4))
    made = steps(view)
    assert [s["round"] for s in made] == [1, 2, 3]
    assert [s["finished"] for s in made] == [3, 3, 3]
    assert [s["samples"] for s in made] == [3 * TRAIN] * 3
    versions = [s["version"] for s in made]
    assert versions == sorted(set(versions)) and view["version"] == versions[-1]
    # Unprofiled: slots round-robin, so after the first step every update is one step old or more.
    assert made[0]["mean_staleness"] == 0 and made[1]["mean_staleness"] > 0


def test_a_stale_update_is_stepped_with_its_staleness_weight(strategy_federation: Federation) -> None:
    """Two slots, K = 1, unprofiled: device A (first start) makes version 1 from version 0 alone; device B
    (second start) also downloaded version 0, so version 2 = version 1 + s(1) * (w_B - version 0)."""
    ids = devices(strategy_federation, "tau", 2, seed=2)
    spec = fedbuff(ids, 2, buffer_size=1, concurrency=2)
    view = run(strategy_federation, spec)
    first, second = steps(view)
    assert (first["mean_staleness"], second["mean_staleness"]) == (0, 1)
    (a,), (b,) = first["participants"], second["participants"]
    assert {a, b} == set(ids)
    v0, v1, v2 = (
        strategy_federation.version_weights(MODEL, v) for v in (0, first["version"], second["version"])
    )
    # B trained from version 0 as its start (number 1) asked; the same call gives the same weights.
    asked = Participation(MODEL, 0, TRAINING, (spec.seed, 1, device_key(b)), True, "trained", durable=False)
    trained = strategy_federation.participate(b, asked, lambda: False).weights
    assert trained is not None
    for name, value in v2.items():
        if value.dtype.kind != "f":
            continue
        delta = np.subtract(trained[name], v0[name], dtype=np.float64)
        expected = (v1[name].astype(np.float64) + 2**-0.5 * delta).astype(value.dtype)
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
        undiscounted = (v1[name].astype(np.float64) + delta).astype(value.dtype)
        assert not np.allclose(value, undiscounted, rtol=1e-6, atol=1e-7) or not delta.any()


def test_devices_start_only_when_online(strategy_federation: Federation) -> None:
    """Two devices online from t = 0.2 s on, two always (each takes about 0.05 s): nothing the late ones
    send arrives before 0.2 s plus their duration, and they do take part once online."""
    ids = devices(strategy_federation, "late", 4, seed=3)
    late = phone(availability={"kind": "trace", "intervals": [[WAKE, 10_000]]})
    for device_id in ids[:2]:
        strategy_federation.fleet.get(device_id).set_profile(late)
    for device_id in ids[2:]:
        strategy_federation.fleet.get(device_id).set_profile(phone())
    size = strategy_federation.version_size(MODEL, 0)
    seconds = participation_seconds(late, TRAINING, TRAIN, TEST, size)
    view = run(strategy_federation, fedbuff(ids, 8, buffer_size=2, concurrency=4))
    made = steps(view)
    ends = [s["simulated_start"] + s["simulated_seconds"] for s in made]
    assert any(end < WAKE for end in ends), "the always-online devices step before the late ones wake"
    for step, end in zip(made, ends, strict=True):
        if set(step["participants"]) & set(ids[:2]):
            assert end >= WAKE + seconds - 1e-9
        if end < WAKE:
            assert set(step["participants"]) <= set(ids[2:])
    assert any(set(s["participants"]) & set(ids[:2]) for s in made), "the late devices took part"


class Counting:
    """The federation, counting the participations running at once (to check the bound from outside)."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.federation, name)

    def participate(self, device_id: str, asked: Participation, stop: Any) -> Any:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return self.federation.participate(device_id, asked, stop)
        finally:
            with self.lock:
                self.running -= 1


def test_at_most_concurrency_devices_are_in_flight(strategy_federation: Federation, tmp_path: Any) -> None:
    ids = devices(strategy_federation, "bound", 8, seed=4)
    spec = fedbuff(ids, 3, buffer_size=2, concurrency=3)
    counting = Counting(strategy_federation)

    def store(target: Run, metrics: Any, weights: dict[str, np.ndarray], parent: int) -> int:
        return strategy_federation.store_version(MODEL, weights, {"parent": parent})

    loop = BufferedLoop(counting, 6, threading.Lock(), store, RunRecords(tmp_path))
    target = Run("bound", spec)
    loop.run(target, spec.strategy())
    assert [s.finished for s in target.rounds] == [2, 2, 2]
    assert loop.peak_in_flight == 3
    assert counting.most <= 3


def test_two_runs_with_one_seed_give_identical_metrics(strategy_federation: Federation) -> None:
    ids = devices(strategy_federation, "twin", 8, seed=5)
    for device_id, profile in find_mix("phones").assign(ids, seed=3).items():
        strategy_federation.fleet.get(device_id).set_profile(profile)
    spec = fedbuff(ids, 4, buffer_size=3, concurrency=4)
    spec = RoundSpec(**{**spec.__dict__, "evaluation": Evaluation(DATASET, limit=50)})

    def once() -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
        view = run(strategy_federation, spec)
        made = [{k: v for k, v in s.items() if k not in ("seconds", "version")} for s in steps(view)]
        return made, strategy_federation.version_weights(MODEL, int(view["version"]))  # type: ignore[call-overload]

    (first, first_weights), (second, second_weights) = once(), once()
    assert first == second
    assert first[-1]["simulated_start"] > 0 and first[-1]["global_accuracy"] is not None
    for name, value in first_weights.items():
        np.testing.assert_array_equal(value, second_weights[name])


def test_a_device_that_fails_is_counted_and_another_starts(strategy_federation: Federation) -> None:
    ids = devices(strategy_federation, "fail", 3, seed=6)
    strategy_federation.fleet.create_many(["fail-empty"], model=MODEL)  # no data: its part fails
    view = run(strategy_federation, fedbuff([*ids, "fail-empty"], 4, buffer_size=2, concurrency=2))
    made = steps(view)
    assert [s["finished"] for s in made] == [2, 2, 2, 2]
    failures = [f for s in made for f in s["failures"]]
    assert sum(s["failed"] for s in made) == len(failures) > 0
    assert {f["device"] for f in failures} == {"fail-empty"}


def test_a_run_whose_devices_all_fail_ends_failed(strategy_federation: Federation) -> None:
    ids = ["none-0", "none-1"]
    strategy_federation.fleet.create_many(ids, model=MODEL)
    started = strategy_federation.rounds.start(fedbuff(ids, 1, buffer_size=1, concurrency=2))
    view = strategy_federation.rounds.wait(str(started["id"]), 120)
    assert view["state"] == "failed" and "in a row sent no update" in str(view["error"])


def test_cancelling_stops_the_run(strategy_federation: Federation) -> None:
    ids = devices(strategy_federation, "stop", 3, seed=7)
    started = strategy_federation.rounds.start(fedbuff(ids, 1000, buffer_size=1, concurrency=2))
    until = time.monotonic() + 60
    while not steps(strategy_federation.rounds.get(str(started["id"]))) and time.monotonic() < until:
        time.sleep(0.01)  # cancelled while it runs, not while queued
    strategy_federation.rounds.cancel(str(started["id"]))
    view = strategy_federation.rounds.wait(str(started["id"]), 120)
    assert view["state"] == "cancelled" and len(steps(view)) < 1000
