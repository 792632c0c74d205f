"""When a profiled device is online: traces by their intervals, markov spells per device."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from service.errors import InvalidProfile
from service.profiles import DeviceProfile, parse_profile
from service.profiles.availability import epoch_seconds, next_online, online, online_until

INTERVALS = [[10, 20], [30, 40]]
HOUR, DAY = 3600.0, 86_400.0


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
    assert online_until(profile, "d", 95) == 110  # a spell across the period's edge goes on past it
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


def test_touching_trace_intervals_are_refused_naming_the_interval() -> None:
    with pytest.raises(InvalidProfile, match=r"intervals\[1\].*apart"):
        parse_profile({"availability": {"kind": "trace", "intervals": [[0, 10], [10, 20]]}})


def test_a_night_spell_across_midnight_goes_on_until_the_morning() -> None:
    night = parse_profile(
        {"availability": {"kind": "trace", "intervals": [[0, 6 * HOUR], [23 * HOUR, DAY]], "period": DAY}}
    )
    assert online_until(night, "d", 23 * HOUR) == DAY + 6 * HOUR
    assert online_until(night, "d", 5 * DAY + 23.5 * HOUR) == 6 * DAY + 6 * HOUR
    assert online_until(night, "d", 5 * DAY + 3 * HOUR) == 5 * DAY + 6 * HOUR
    assert online_until(night, "d", 12 * HOUR) == 12 * HOUR
    assert next_online(night, "d", 12 * HOUR) == 23 * HOUR


def test_a_spell_ending_at_the_period_without_one_from_zero_ends_there() -> None:
    profile = parse_profile(
        {"availability": {"kind": "trace", "intervals": [[10, 20], [90, 100]], "period": 100}}
    )
    assert online_until(profile, "d", 95) == 100
    assert next_online(profile, "d", 100) == 110


def test_a_trace_of_the_whole_period_is_online_for_ever() -> None:
    profile = parse_profile({"availability": {"kind": "trace", "intervals": [[0, 100]], "period": 100}})
    assert online_until(profile, "d", 50) == math.inf
    assert online(profile, "d", 1e8 + 0.5)


def test_a_trace_reads_the_period_and_the_time_within_it_consistently() -> None:
    # floor(at / period) * period and at % period disagree here by a period; divmod does not.
    period, at = 3.7, 124249.7
    profile = parse_profile({"availability": {"kind": "trace", "intervals": [[1, 2]], "period": period}})
    cycles, _ = divmod(at, period)
    assert next_online(profile, "d", at) == pytest.approx(cycles * period + period + 1, abs=1e-6)
    assert next_online(profile, "d", at) - at < period


@pytest.mark.parametrize("at", [1e9, 1e12, 3.3e13])
def test_markov_answers_far_in_simulated_time_quickly_and_consistently(at: float) -> None:
    profile = markov(100, 300)
    started = time.perf_counter()
    start = next_online(profile, "p", at)
    end = online_until(profile, "p", start)
    assert time.perf_counter() - started < 0.5
    assert at <= start < at + 100_000  # the old spells from 0 gave up: never online
    assert online(profile, "p", start) and end > start and not online(profile, "p", end)
    assert online(profile, "p", (start + end) / 2)


def test_markov_far_in_time_is_online_its_stationary_share() -> None:
    profile = markov(100, 300)
    times = np.random.default_rng(1).uniform(1e11, 1e12, 2000)
    share = sum(online(profile, f"phone-{i % 20}", float(t)) for i, t in enumerate(times)) / len(times)
    assert share == pytest.approx(0.25, abs=0.05)


def test_markov_spells_run_on_across_epochs() -> None:
    profile = markov(100, 300)
    length = epoch_seconds(profile.profile.availability)
    for device_id in ("a", "b", "c"):
        for epoch in range(1, 30):
            at = epoch * length
            start = next_online(profile, device_id, at - 1)
            end = online_until(profile, device_id, start)
            assert online(profile, device_id, start) and not online(profile, device_id, end)
            assert end > start >= at - 1


def test_markov_is_the_same_far_in_time_for_the_same_seed_and_device() -> None:
    times = [1e10 + 37.0 * i for i in range(200)]
    first = [online(markov(100, 300), "phone-1", t) for t in times]
    assert [online(markov(100, 300), "phone-1", t) for t in times] == first
    assert [online(markov(100, 300), "phone-2", t) for t in times] != first
    assert 0 < sum(first) < len(first)


def test_markov_before_time_zero_is_offline_until_its_first_spell() -> None:
    profile = markov(100, 300)
    assert not online(profile, "p", -5.0)
    assert next_online(profile, "p", -5.0) == next_online(profile, "p", 0.0)
    assert online_until(profile, "p", -5.0) == -5.0
