"""``uniform``: a seeded uniform sample of the run's devices, online or not; the offline ones it picks
drop out at once, counted in the round's ``dropped`` and ``offline``."""

from __future__ import annotations

from collections import Counter

from service.federated import selectors
from service.federated.federation import Federation
from service.federated.tally import MIN_ROUND_SECONDS
from tests.federated.selectors.helpers import night, profiles
from tests.federated.test_round_profiles import FAST, make, rounds_of, run


def test_uniform_ignores_availability_and_is_seeded() -> None:
    devices = [f"d{i:03d}" for i in range(100)]
    asleep = {i: night() for i in devices[:50]}
    selector = selectors.make("uniform", seed=3)
    start, picked, offline = selector.pick(devices, profiles(asleep), 1, 20, 0.0)
    assert start == 0.0 and len(picked) == 20 and picked == sorted(picked)
    assert offline == sum(i in asleep for i in picked) > 0  # the offline ones it picked, not skipped
    assert selector.pick(devices, profiles(asleep), 1, 20, 0.0).devices == picked
    assert selectors.make("uniform", seed=3).pick(devices, profiles(), 1, 20, 0.0).devices == picked
    assert selectors.make("uniform", seed=4).pick(devices, profiles(), 1, 20, 0.0).devices != picked
    # With everyone online it picks what ``available`` picks.
    assert selectors.make("available", seed=3).pick(devices, profiles(), 1, 20, 0.0).devices == picked


def test_uniform_draws_every_device_alike() -> None:
    devices = [f"d{i}" for i in range(10)]
    selector = selectors.make("uniform", seed=0)
    counts = Counter(i for n in range(1, 2001) for i in selector.pick(devices, profiles(), n, 3, 0.0).devices)
    assert set(counts) == set(devices)
    assert all(abs(c - 600) < 90 for c in counts.values()), counts  # 2000 x 3 / 10, within ~4 sigma


def test_offline_picks_drop_out_at_once_and_the_round_does_not_wait(federation: Federation) -> None:
    sleeper = night()
    ids = make(federation, "uniform", [FAST, sleeper, FAST, sleeper, FAST, sleeper])
    view = run(federation, ids, rounds=3, participants=2, selection="uniform")
    assert view["state"] == "succeeded", view
    assert view["spec"]["selection"] == "uniform"
    for metrics in rounds_of(view):
        asleep = sum(i in ids[1::2] for i in metrics["participants"])
        assert metrics["picked"] == 2 and metrics["simulated_start"] < 100  # never waits for the night
        assert metrics["offline"] == metrics["dropped"] == asleep
        assert metrics["finished"] == 2 - asleep and metrics["failed"] == 0
    assert any(r["offline"] for r in rounds_of(view))
    assert all(federation.fleet.get(i).clock == 0 for i in ids[1::2])  # the sleepers never trained
    # A round of only offline devices makes no version and moves simulated time on by the minimum.
    night_only = run(federation, ids[1::2], rounds=2, selection="uniform")
    assert night_only["state"] == "succeeded", night_only
    for metrics in rounds_of(night_only):
        assert metrics["dropped"] == metrics["offline"] == 3 and metrics["finished"] == 0
        assert metrics["version"] is None and metrics["simulated_seconds"] == MIN_ROUND_SECONDS
    assert rounds_of(night_only)[0]["simulated_start"] == 0.0
    waits = run(federation, ids[1::2], rounds=1)  # ``available`` waits for the night instead
    assert rounds_of(waits)[0]["simulated_start"] == 100.0 and rounds_of(waits)[0]["finished"] == 3
