"""Secure aggregation in rounds (issue 26, items 3-4): the sum through SecAgg+'s masks equals the plain
sum within the quantization's bound, with no dropout, with some (recovered) and with too many (the round
fails, saying why); the server only ever holds masked updates; the protocol's cost is on the clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from service.data.spec import PartitionSpec
from service.federated import private
from service.federated.checkpoints import read_weights
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.participants import Participation, Update
from service.federated.private_run import PrivateRun
from service.federated.selection import Plan, Profiles
from service.federated.spec import RoundSpec
from service.privacy.secagg import SecAggSettings
from service.privacy.settings import DPSettings
from service.profiles import DeviceProfile, parse_profile
from tests.federated.conftest import DATASET
from tests.federated.privacy.helpers import MODEL, mean_update, moved, run, trained

NETWORK = {"uplink_mbps": 10.0, "downlink_mbps": 50.0, "rtt_ms": 50.0}
SECURE = SecAggSettings(threshold=3)


def phone(dropout: float = 0.0) -> DeviceProfile:
    compute = {"train_ms_per_sample": 1.0, "infer_ms_per_sample": 0.0}
    return parse_profile({"class": "test", "compute": compute, "network": NETWORK, "dropout": dropout})


def make(federation: Federation, prefix: str, profiles: list[DeviceProfile | None]) -> tuple[str, ...]:
    ids = [f"{prefix}-{i}" for i in range(len(profiles))]
    federation.fleet.create_many(ids)
    federation.assign(DATASET, ids, PartitionSpec("iid", len(ids), 40, 10, seed=2))
    for device_id, profile in zip(ids, profiles, strict=True):
        if profile is not None:
            federation.fleet.get(device_id).set_profile(profile)
    return tuple(ids)


def spec_of(devices: tuple[str, ...], **changes: Any) -> RoundSpec:
    base = RoundSpec(
        MODEL,
        devices,
        rounds=1,
        training=LocalTraining(1, 20),
        seed=9,
        start_version=0,
        local_accuracy=False,
        device_weights="saved",
        secure_aggregation=SECURE,
    )
    return replace(base, **changes)


def bound(n: int) -> float:
    """The quantization's bound on each coordinate of the mean of ``n`` updates, with float32 rounding."""
    step = 2 * SECURE.clipping_range / (SECURE.quantization_range - 1)
    return step + 1e-6


def test_the_secure_mean_is_the_plain_mean_within_the_quantization_bound(federation):
    ids = make(federation, "sum", [None] * 5)
    view = run(federation, spec_of(ids))
    shown = view["rounds"][0]["privacy"]["secure"]
    assert shown["cohort"] == 5 and shown["survivors"] == 5 and shown["recovered"] == 0
    np.testing.assert_allclose(
        moved(federation, view), mean_update(federation, list(ids)), atol=bound(5), rtol=0
    )


def test_dropouts_after_sharing_keys_are_recovered(federation):
    quitter = phone(dropout=1.0)
    ids = make(federation, "drop", [phone(), quitter, phone(), phone(), quitter, phone()])
    view = run(federation, spec_of(ids))
    metrics = view["rounds"][0]
    assert metrics["dropped"] == 2 and metrics["privacy"]["secure"]["recovered"] == 2
    survivors = [ids[i] for i in (0, 2, 3, 5)]
    np.testing.assert_allclose(
        moved(federation, view), mean_update(federation, survivors), atol=bound(4), rtol=0
    )


def test_too_many_dropouts_fail_the_round_saying_why(federation):
    quitter = phone(dropout=1.0)
    ids = make(federation, "many", [phone(), quitter, quitter, quitter, phone()])
    view = run(federation, spec_of(ids, secure_aggregation=SecAggSettings(threshold=3)), state="failed")
    assert "threshold" in view["error"]


def test_the_protocol_costs_simulated_time_and_bytes(federation):
    ids = make(federation, "cost", [phone() for _ in range(4)])
    secure = run(federation, spec_of(ids, device_weights="trained"))
    plain = run(federation, spec_of(ids, device_weights="trained", secure_aggregation=None))
    assert secure["rounds"][0]["simulated_seconds"] > plain["rounds"][0]["simulated_seconds"]
    shown = secure["rounds"][0]["privacy"]["secure"]
    assert shown["upload_bytes"] > 0 and shown["download_bytes"] > 0


class Recorded:
    """The federation's participants as the server sees them: every update that crosses to the server."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.updates: list[Update] = []

    def participate(self, device_id: str, asked: Participation, stop: Any) -> Update:
        update = self.federation.participate(device_id, asked, stop)
        self.updates.append(update)
        return update

    def __getattr__(self, name: str) -> Any:
        return getattr(self.federation, name)


def test_the_server_only_ever_holds_masked_updates(federation):
    ids = make(federation, "masked", [None] * 4)
    recorded = Recorded(federation)
    runner = federation.rounds
    real, runner.participants = runner.participants, recorded
    try:
        view = run(
            federation,
            spec_of(
                ids,
                privacy=DPSettings(mode="distributed", noise_multiplier=0.5, clip=1.0),
                selection="uniform",
            ),
        )
    finally:
        runner.participants = real
    assert len(recorded.updates) == 4
    start = private.flatten(federation.version_weights(MODEL, 0))
    for update in recorded.updates:
        assert update.weights is None and update.payload is not None and update.payload.dtype == np.uint32
        own = trained(federation, update.device) - start
        step = 2 * SECURE.clipping_range / (SECURE.quantization_range - 1)
        quantized = np.round((np.clip(own, -8, 8) + 8) / step)
        assert np.mean(update.payload[:-1] == quantized) < 0.01  # masked: no coordinate in the clear
    assert view["rounds"][0]["privacy"]["epsilon"] > 0
    record = federation.data_dir / "rounds" / f"{view['id']}.json"
    assert record.stat().st_size < 20_000  # the run's record: no vector of 100,000 values in it


def test_no_server_file_holds_an_individual_update(federation):
    """Versions, run records, published tensors: nothing the server stores holds a participant's trained
    weights or its update (each device's own checkpoint, on its phone, holds its weights: it saved them)."""
    ids = make(federation, "files", [None] * 4)
    run(federation, spec_of(ids))
    start = federation.version_weights(MODEL, 0)
    devices_dir = federation.fleet.devices_dir
    stored = [
        p.read_bytes() for p in federation.data_dir.rglob("*") if p.is_file() and devices_dir not in p.parents
    ]
    for device in ids:
        trained = read_weights(federation.fleet.get(device).checkpoint_path)
        for name in private.floating(trained):
            changed = np.asarray(trained[name]).ravel() - np.asarray(start[name]).ravel()
            at = min(int(np.argmax(np.abs(changed))), max(changed.size - 16, 0))  # where it moved most
            weights, update = np.asarray(trained[name]).ravel()[at : at + 16], changed[at : at + 16]
            for window in (weights.astype(np.float32), update.astype(np.float32), update.astype(np.float64)):
                assert not any(window.tobytes() in content for content in stored), (device, name)


def test_distributed_noise_is_sized_for_the_fewest_inputs_a_round_sums(federation):
    """Each device adds ``z C / sqrt(fewest)``: ``min_inputs`` when given, else the threshold, so that
    every round that succeeds holds at least the central noise."""
    ids = make(federation, "share", [None] * 5)
    dp = DPSettings(mode="distributed", noise_multiplier=2.0, clip=0.5)
    weights = federation.version_weights(MODEL, 0)

    def share(secure: SecAggSettings) -> float:
        private_run = PrivateRun(spec_of(ids, selection="uniform", privacy=dp, secure_aggregation=secure))
        begun = private_run.begin(1, [Plan(d) for d in ids], weights, Profiles(federation), None)
        return begun.privatize(ids[0]).noise_stddev

    assert share(SecAggSettings(threshold=2, neighbors=2)) == pytest.approx(1.0 / 2**0.5)
    assert share(SecAggSettings(threshold=2, neighbors=2, min_inputs=4)) == pytest.approx(1.0 / 2)
