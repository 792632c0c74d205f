"""Differential privacy in rounds (issue 26, items 1-2): DP-FedAvg's clipping, noise and accounting,
local DP, the budget, and refusals; over the real interpreter and the small Fashion-MNIST set."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from service.data.spec import PartitionSpec
from service.errors import InvalidPrivacy
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.spec import RoundSpec
from service.privacy.accounting import Ledger
from service.privacy.settings import DPSettings
from tests.federated.conftest import DATASET
from tests.federated.privacy.helpers import MODEL, mean_update, moved, run


@pytest.fixture(scope="module")
def devices(federation: Federation) -> tuple[str, ...]:
    ids = [f"dp-{i}" for i in range(6)]
    federation.fleet.create_many(ids)
    federation.assign(DATASET, ids, PartitionSpec("iid", 6, 40, 10, seed=3))
    return tuple(ids)


def spec_of(devices: tuple[str, ...], **changes: Any) -> RoundSpec:
    base = RoundSpec(
        MODEL,
        devices,
        rounds=2,
        participants=4,
        training=LocalTraining(1, 20),
        seed=5,
        start_version=0,
        local_accuracy=False,
        selection="uniform",
        privacy=DPSettings(noise_multiplier=1.0, clip=0.5),
    )
    return replace(base, **changes)


def test_each_round_reports_epsilon_as_the_accountant_computes_it(federation, devices):
    spec = spec_of(devices, rounds=3)
    view = run(federation, spec)
    reported = [r["privacy"]["epsilon"] for r in view["rounds"]]
    ledger = Ledger(spec.privacy, spec.sampling())
    assert reported == pytest.approx([ledger.after(k, 1.0) for k in (1, 2, 3)], rel=1e-9)
    assert reported[0] < reported[1] < reported[2]
    assert all(r["privacy"]["delta"] == 1e-5 and r["privacy"]["clip"] == 0.5 for r in view["rounds"])


def test_without_noise_and_clipping_the_global_moves_by_the_mean_update(federation, devices):
    """z = 0 and a clip no update reaches: DP-FedAvg is the participants' unweighted mean update, over
    the (fixed) cohort; checked against the trained weights the devices saved."""
    spec = spec_of(
        devices, rounds=1, device_weights="saved", privacy=DPSettings(noise_multiplier=0.0, clip=1e6)
    )
    view = run(federation, spec)
    expected = mean_update(federation, view["rounds"][0]["participants"])
    np.testing.assert_allclose(moved(federation, view), expected, atol=1e-6)


def test_clipping_bounds_how_far_a_round_moves_the_global(federation, devices):
    spec = spec_of(devices, rounds=1, privacy=DPSettings(noise_multiplier=0.0, clip=1e-3))
    assert np.linalg.norm(moved(federation, run(federation, spec))) <= 1e-3 * (1 + 1e-5)


def test_noise_is_seeded_apart_and_reproducible(federation, devices):
    spec = spec_of(devices, rounds=1, privacy=DPSettings(noise_multiplier=2.0, clip=0.5))
    first, again = (
        moved(federation, run(federation, spec)),
        moved(federation, run(federation, spec)),
    )
    np.testing.assert_array_equal(first, again)
    quiet = moved(
        federation, run(federation, replace(spec, privacy=DPSettings(noise_multiplier=0.0, clip=0.5)))
    )
    noise = (first - quiet) * 4  # the noise on the sum, over the cohort of 4
    assert noise.std() == pytest.approx(2.0 * 0.5, rel=0.05)


def test_noise_moves_no_other_random_draw(federation, devices):
    """The noise has streams of its own: with it or without, the same devices are picked and train on
    the same batches (the same losses) from the same version."""
    spec = spec_of(devices, rounds=3, privacy=DPSettings(mode="local", noise_multiplier=5.0, clip=0.5))
    noisy = run(federation, spec)["rounds"]
    quiet = run(federation, replace(spec, privacy=DPSettings(mode="local", noise_multiplier=0.0, clip=0.5)))
    assert [r["participants"] for r in noisy] == [r["participants"] for r in quiet["rounds"]]
    assert len({tuple(r["participants"]) for r in noisy}) > 1  # rounds pick differently: a real check
    assert noisy[0]["mean_loss"] == quiet["rounds"][0]["mean_loss"]


def test_local_dp_noises_each_update_and_divides_by_those_that_arrived(federation, devices):
    spec = spec_of(devices, rounds=1, privacy=DPSettings(mode="local", noise_multiplier=2.0, clip=0.5))
    view = run(federation, spec)
    quiet = run(federation, replace(spec, privacy=DPSettings(mode="local", noise_multiplier=0.0, clip=0.5)))
    noise = moved(federation, view) - moved(federation, quiet)
    assert noise.std() == pytest.approx(2.0 * 0.5 / 4**0.5, rel=0.05)  # 4 devices' noise, averaged
    assert view["rounds"][0]["privacy"]["epsilon"] > 0


def test_a_budget_the_run_would_exceed_is_refused_at_its_start(federation, devices):
    spec = spec_of(devices, rounds=20, privacy=DPSettings(noise_multiplier=1.0, target_epsilon=3.0))
    with pytest.raises(InvalidPrivacy, match="target_epsilon 3 would be exceeded: 20 rounds reach epsilon"):
        federation.rounds.start(spec)


def test_a_run_told_to_stop_stops_before_the_round_that_would_exceed(federation, devices):
    dp = DPSettings(noise_multiplier=3.0, target_epsilon=8.0, on_budget="stop")
    spec = spec_of(devices, rounds=30, privacy=dp)
    view = run(federation, spec)
    fits = len(view["rounds"])
    assert 0 < fits < 30
    assert view["rounds"][-1]["privacy"]["epsilon"] <= 8.0
    assert Ledger(dp, spec.sampling()).after(fits + 1, 3.0) > 8.0
    assert "privacy budget" in view["stopped"]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"aggregation": "scaffold"}, "aggregation 'scaffold' cannot run with differential privacy"),
        ({"selection": "available"}, "selection must be 'poisson'"),
        ({"stragglers": "stale"}, "stragglers 'stale'"),
        ({"privacy": DPSettings(mode="distributed")}, "give secure_aggregation"),
        ({"privacy": DPSettings(mode="local", adaptive=True)}, "privacy.adaptive"),
        ({"privacy": DPSettings(clip=0.0)}, "privacy.clip"),
        ({"privacy": DPSettings(noise_multiplier=-1.0)}, "privacy.noise_multiplier"),
        ({"privacy": DPSettings(delta=1.0)}, "privacy.delta"),
        ({"privacy": DPSettings(accountant="pld")}, "pld"),
    ],
)
def test_settings_a_run_cannot_use_are_refused_naming_them(devices, changes, named):
    with pytest.raises(InvalidPrivacy, match=named):
        spec_of(devices, **changes).check()


def test_adaptive_clipping_moves_the_clip_towards_the_quantile(federation, devices):
    dp = DPSettings(
        noise_multiplier=0.0,
        clip=1e-4,
        adaptive=True,
        target_quantile=0.5,
        clip_learning_rate=1.0,
        clipped_count_stddev=1e-9,
    )
    view = run(federation, spec_of(devices, rounds=3, privacy=dp))
    clips = [r["privacy"]["clip"] for r in view["rounds"]]
    assert clips[0] == 1e-4 and clips[0] < clips[1] < clips[2]  # every update clipped: the norm grows
    assert view["rounds"][0]["privacy"]["unclipped_fraction"] == pytest.approx(0.0, abs=1e-6)
    assert clips[1] == pytest.approx(1e-4 * np.exp(0.5), rel=1e-4)


def test_poisson_sampling_draws_cohorts_about_the_expected_size(federation, devices):
    view = run(federation, spec_of(devices, rounds=6, participants=3, selection="poisson"))
    sizes = [r["picked"] for r in view["rounds"]]
    assert len(set(sizes)) > 1 and all(0 <= s <= 6 for s in sizes)
