"""Every number of a profile or a mix is bounded, refused past its bound naming the field; drawn
speeds stay within the speed bounds; class profiles are interned least recently used first."""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import numpy as np
import pytest

from service.errors import InvalidProfile
from service.profiles import parse_profile
from service.profiles import profile as profile_module
from service.profiles.mixes import ProfileMix, Speed
from service.profiles.profile import MAX_INTERVALS, MAX_SPEED, MIN_SPEED, Profile, intern


def markov(on: object, off: object) -> dict[str, object]:
    return {"availability": {"kind": "markov", "mean_on_s": on, "mean_off_s": off}}


def trace(intervals: object, period: object = None) -> dict[str, object]:
    availability: dict[str, object] = {"kind": "trace", "intervals": intervals}
    if period is not None:
        availability["period"] = period
    return {"availability": availability}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"compute": {"speed": 1e-4}}, "profile.compute.speed"),
        ({"compute": {"speed": 1e4}}, "profile.compute.speed"),
        ({"compute": {"speed": 1e-300}}, "profile.compute.speed"),
        ({"speed": 1e-300}, "profile.speed"),
        ({"speed": 1e300}, "profile.speed"),
        ({"speed": 2e3}, "profile.speed"),
        ({"compute": {"train_ms_per_sample": 1e7}}, "profile.compute.train_ms_per_sample"),
        ({"compute": {"infer_ms_per_sample": 1e300}}, "profile.compute.infer_ms_per_sample"),
        ({"network": {"uplink_mbps": 1e-300}}, "profile.network.uplink_mbps"),
        ({"network": {"uplink_mbps": 1e-4}}, "profile.network.uplink_mbps"),
        ({"network": {"downlink_mbps": 1e7}}, "profile.network.downlink_mbps"),
        ({"network": {"rtt_ms": 1e300}}, "profile.network.rtt_ms"),
        (trace([[0, 2e9]]), "profile.availability.intervals[0][1]"),
        (trace([[0, 10], [1e300, 1e301]]), "profile.availability.intervals[1][0]"),
        (trace([[0, 10]], period=2e9), "profile.availability.period"),
        (markov(0.5, 10), "profile.availability.mean_on_s"),
        (markov(1e-300, 10), "profile.availability.mean_on_s"),
        (markov(2e9, 10), "profile.availability.mean_on_s"),
        (markov(10, 0.5), "profile.availability.mean_off_s"),
        (markov(10, 1e-300), "profile.availability.mean_off_s"),
        (markov(10, 2e9), "profile.availability.mean_off_s"),
    ],
)
def test_numbers_past_their_bounds_are_refused_naming_the_field(value: object, field: str) -> None:
    with pytest.raises(InvalidProfile, match=re.escape(field)):
        parse_profile(value)


@pytest.mark.parametrize(
    "value",
    [
        {"compute": {"speed": 1e-3}, "speed": 1e3},
        {"compute": {"speed": 1e3}, "speed": 1e-3},
        {"compute": {"train_ms_per_sample": 1e6, "infer_ms_per_sample": 0}},
        {"network": {"uplink_mbps": 1e-3, "downlink_mbps": 1e6, "rtt_ms": 1e6}},
        trace([[0, 1e9]], period=1e9),
        markov(1, 0),
        markov(1e9, 1e9),
        markov(1, 1),
    ],
)
def test_numbers_at_their_bounds_are_accepted_and_give_finite_durations(value: object) -> None:
    device = parse_profile(value)
    for seconds in (
        device.train_seconds(10**6),
        device.infer_seconds(10**6),
        device.upload_seconds(10**9),
        device.download_seconds(10**9),
    ):
        assert math.isfinite(seconds) and seconds >= 0


def mix(speed: object, share: object = 1) -> dict[str, object]:
    return {"name": "m", "classes": [{"class": "c", "share": share, "speed": speed}]}


@pytest.mark.parametrize(
    ("speed", "field"),
    [
        ({"lognormal": {"median": 1, "sigma": 1000}}, "classes[0].speed.lognormal.sigma"),
        ({"lognormal": {"median": 1, "sigma": 3.5}}, "classes[0].speed.lognormal.sigma"),
        ({"lognormal": {"median": 1e-4, "sigma": 1}}, "classes[0].speed.lognormal.median"),
        ({"lognormal": {"median": 1e300, "sigma": 1}}, "classes[0].speed.lognormal.median"),
        ({"uniform": [1e-4, 1]}, "classes[0].speed.uniform[0]"),
        ({"uniform": [1, 1e4]}, "classes[0].speed.uniform[1]"),
        ({"uniform": [1e-300, 1e300]}, "classes[0].speed.uniform[0]"),
        (1e4, "classes[0].speed"),
        (1e-300, "classes[0].speed"),
    ],
)
def test_speed_distributions_past_their_bounds_are_refused_naming_the_field(
    speed: object, field: str
) -> None:
    with pytest.raises(InvalidProfile, match=re.escape(field)):
        ProfileMix.parse(mix(speed))


def test_a_huge_share_is_refused_naming_it() -> None:
    with pytest.raises(InvalidProfile, match=re.escape("classes[0].share")):
        ProfileMix.parse(mix(1, share=1e300))


@pytest.mark.parametrize(
    "speed",
    [
        {"lognormal": {"median": 1e3, "sigma": 3}},
        {"lognormal": {"median": 1e-3, "sigma": 3}},
        {"lognormal": {"median": 1, "sigma": 3}},
        {"uniform": [1e-3, 1e3]},
    ],
)
def test_drawn_speeds_are_clipped_into_the_speed_bounds(speed: object) -> None:
    assigned = ProfileMix.parse(mix(speed)).assign([f"phone-{i}" for i in range(3000)])
    speeds = np.array([p.speed for p in assigned.values()])
    assert speeds.min() >= MIN_SPEED and speeds.max() <= MAX_SPEED
    for device in assigned.values():
        assert math.isfinite(device.train_seconds(1000)) and device.train_seconds(1000) > 0


def test_a_lognormal_draw_never_overflows_or_returns_zero() -> None:
    wild = Speed("lognormal", 1.0, 1000.0)  # past MAX_SIGMA: not parsed, but draw copes
    rng = np.random.default_rng(0)
    draws = [wild.draw(rng) for _ in range(1000)]
    assert min(draws) == MIN_SPEED and max(draws) == pytest.approx(MAX_SPEED)


def test_a_trace_holds_at_most_max_intervals() -> None:
    assert MAX_INTERVALS == 1_000
    intervals = [[2 * i, 2 * i + 1] for i in range(MAX_INTERVALS + 1)]
    parse_profile(trace(intervals[:MAX_INTERVALS]))
    with pytest.raises(InvalidProfile, match=re.escape("profile.availability.intervals")):
        parse_profile(trace(intervals))


def test_intern_drops_the_least_recently_used_profile_not_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile_module, "_INTERNED", OrderedDict())
    monkeypatch.setattr(profile_module, "MAX_INTERNED", 3)
    first, second, third = (intern(Profile(f"class-{i}")) for i in range(3))
    assert intern(Profile("class-0")) is first  # used again: now the most recent
    fourth = intern(Profile("class-3"))
    assert intern(Profile("class-0")) is first
    assert intern(Profile("class-2")) is third
    assert intern(Profile("class-3")) is fourth
    assert intern(Profile("class-1")) is not second  # the least recently used was dropped
    assert len(profile_module._INTERNED) == 3
