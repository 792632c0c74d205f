"""When a profiled device is online: traces by their intervals, markov spells per device."""

from __future__ import annotations

import math

import pytest

from service.profiles import DeviceProfile, parse_profile
from service.profiles.availability import next_online, online, online_until

INTERVALS = [[10, 20], [30, 40]]


def trace(period: float | None = None) -> DeviceProfile:
    availability: dict[str, object] = {"kind": "trace", "intervals": INTERVALS}
    if period is not None:
        availability["period"] = period
    return parse_profile({"availability": availability})


def markov(on: float, off: float, seed: int = 7) -> DeviceProfile:
    return parse_profile(
        {"availability": {"kind": "markov", "mean_on_s": on, "mean_off_s": off}, "seed": seed}
    )


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (0, False),
        (9.999, False),
        (10, True),
        (15, True),
        (19.999, True),
        (20, False),
        (25, False),
        (30, True),
        (39.999, True),
        (40, False),
        (1e9, False),
    ],
)
def test_trace_is_online_inside_its_intervals_start_included_end_excluded(at: float, expected: bool) -> None:
    assert online(trace(), "d", at) is expected


def test_trace_next_online_and_online_until() -> None:
    profile = trace()
    assert next_online(profile, "d", 0) == 10
    assert next_online(profile, "d", 15) == 15  # online now
    assert next_online(profile, "d", 20) == 30  # the end is not online
    assert next_online(profile, "d", 40) == math.inf  # no period: never again
    assert online_until(profile, "d", 10) == 20
    assert online_until(profile, "d", 35) == 40
    assert online_until(profile, "d", 25) == 25  # offline: the time itself


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (110, True),
        (119.5, True),
        (120, False),
        (125, False),
        (130, True),
        (140, False),
        (199, False),
        (200, False),
        (210, True),
        (1_000_015, True),
        (1_000_045, False),
    ],
)
def test_trace_with_a_period_repeats_its_intervals(at: float, expected: bool) -> None:
    assert online(trace(period=100), "d", at) is expected


def test_trace_with_a_period_next_online_and_online_until() -> None:
    profile = trace(period=100)
    assert next_online(profile, "d", 45) == 110  # past the last interval: the next period's first
    assert next_online(profile, "d", 120) == 130
    assert next_online(profile, "d", 250) == 310
    assert online_until(profile, "d", 135) == 140
    assert online_until(profile, "d", 310) == 320
    assert online_until(profile, "d", 150) == 150


def test_trace_interval_at_the_edges_of_its_period() -> None:
    profile = parse_profile(
        {"availability": {"kind": "trace", "intervals": [[0, 10], [90, 100]], "period": 100}}
    )
    assert online(profile, "d", 99.5) and online(profile, "d", 100) and online(profile, "d", 0)
    assert not online(profile, "d", 10) and not online(profile, "d", 50)
    assert next_online(profile, "d", 50) == 90
    assert online_until(profile, "d", 95) == 100  # a spell across the period's edge ends at it
    assert online_until(profile, "d", 100) == 110


def pattern(profile: DeviceProfile, device_id: str, horizon: float = 20_000, step: float = 50) -> list[bool]:
    return [online(profile, device_id, i * step) for i in range(int(horizon / step))]


def test_markov_is_the_same_for_the_same_seed_and_device() -> None:
    first = pattern(markov(100, 300), "phone-1")
    assert pattern(markov(100, 300), "phone-1") == first  # a fresh profile, the same spells
    assert 0 < sum(first) < len(first)
    times = [0.0, 123.4, 5_000.0, 19_999.0]
    assert [next_online(markov(100, 300), "phone-1", t) for t in times] == [
        next_online(markov(100, 300), "phone-1", t) for t in times
    ]


def test_markov_differs_across_devices_and_seeds() -> None:
    base = pattern(markov(100, 300), "phone-1")
    assert pattern(markov(100, 300), "phone-2") != base
    assert pattern(markov(100, 300, seed=8), "phone-1") != base


def test_markov_next_online_and_online_until_bound_the_spell() -> None:
    profile = markov(100, 300)
    for at in (0.0, 777.0, 12_345.0):
        start = next_online(profile, "p", at)
        assert start >= at and online(profile, "p", start)
        end = online_until(profile, "p", start)
        assert end > start
        assert online(profile, "p", (start + end) / 2)
        assert not online(profile, "p", end)


def online_fraction(profile: DeviceProfile, device_id: str, horizon: float) -> float:
    """Online time over ``[0, horizon)``, walked spell by spell."""
    t, on = 0.0, 0.0
    while t < horizon:
        if online(profile, device_id, t):
            end = online_until(profile, device_id, t)
            on += min(end, horizon) - t
            t = end
        else:
            t = next_online(profile, device_id, t)
    return on / horizon


def test_markov_long_run_online_fraction_is_on_over_on_plus_off() -> None:
    profile = markov(100, 300)
    fractions = [online_fraction(profile, f"phone-{i}", 200_000) for i in range(5)]
    assert sum(fractions) / len(fractions) == pytest.approx(100 / 400, abs=0.05)


def test_markov_without_off_spells_is_always_on() -> None:
    profile = markov(100, 0)
    for at in (0.0, 1.0, 1e6, 1e12):
        assert online(profile, "p", at)
        assert online_until(profile, "p", at) == math.inf


def test_always_and_unprofiled_are_always_on() -> None:
    for profile in (None, parse_profile({})):
        assert online(profile, "p", 1e9)
        assert next_online(profile, "p", 5.0) == 5.0
        assert online_until(profile, "p", 5.0) == math.inf
