"""Whether a profiled device is online at a simulated time, and when it next comes online.

A ``markov`` availability draws each device's spells from its own generator (the profile's seed and
the device's key): the same in every process and on every call, without keeping them. Its first spell
is on with the stationary probability ``on / (on + off)``.
"""

from __future__ import annotations

import bisect
import hashlib
import math

import numpy as np

from service.profiles.profile import Availability, DeviceProfile

SPELLS_AT_ONCE = 256
MAX_SPELLS = 1_000_000
"""Spells drawn to answer one question before giving up (a time a billion mean spells away)."""


def device_key(device_id: str) -> int:
    """A stable 64-bit number for a device ID (not Python's ``hash``: the same in every process)."""
    return int.from_bytes(hashlib.blake2b(device_id.encode(), digest_size=8).digest(), "little")


def online(profile: DeviceProfile | None, device_id: str, at: float) -> bool:
    return next_online(profile, device_id, at) == at


def next_online(profile: DeviceProfile | None, device_id: str, at: float) -> float:
    """``at`` if the device is online then, else the start of its next online spell (``inf``: never)."""
    if profile is None or profile.profile.availability.kind == "always":
        return at
    availability = profile.profile.availability
    if availability.kind == "trace":
        return _trace_next(availability, at)
    return _markov_next(availability, profile.profile.seed, device_key(device_id), at)


def online_until(profile: DeviceProfile | None, device_id: str, at: float) -> float:
    """When the online spell holding ``at`` ends (``inf`` for ``always``); ``at`` itself if offline."""
    if profile is None or profile.profile.availability.kind == "always":
        return math.inf
    availability = profile.profile.availability
    if availability.kind == "trace":
        return _trace_until(availability, at)
    return _markov_until(availability, profile.profile.seed, device_key(device_id), at)


def _trace_next(availability: Availability, at: float) -> float:
    intervals, period = availability.intervals, availability.period
    base, t = (0.0, at) if period is None else (math.floor(at / period) * period, at % period)
    starts = [start for start, _ in intervals]
    index = bisect.bisect_right(starts, t) - 1
    if index >= 0 and t < intervals[index][1]:
        return at
    if index + 1 < len(intervals):
        return base + intervals[index + 1][0]
    return math.inf if period is None else base + period + intervals[0][0]


def _trace_until(availability: Availability, at: float) -> float:
    intervals, period = availability.intervals, availability.period
    base, t = (0.0, at) if period is None else (math.floor(at / period) * period, at % period)
    index = bisect.bisect_right([start for start, _ in intervals], t) - 1
    if index >= 0 and t < intervals[index][1]:
        return base + intervals[index][1]
    return at


def _markov_spells(availability: Availability, seed: int, key: int, at: float) -> tuple[bool, float, float]:
    """The spell holding ``at``: whether it is on, its start and its end."""
    on, off = availability.mean_on_s, availability.mean_off_s
    if off == 0:
        return True, 0.0, math.inf
    rng = np.random.default_rng([seed, key])
    state = bool(rng.random() < on / (on + off))
    start, drawn = 0.0, 0
    while drawn < MAX_SPELLS:
        # Alternate spells from the current state: on, off, on, ... (or off, on, ...).
        means = np.where(np.arange(SPELLS_AT_ONCE) % 2 == 0, on if state else off, off if state else on)
        ends = start + np.cumsum(rng.exponential(means))
        index = int(np.searchsorted(ends, at, side="right"))
        if index < SPELLS_AT_ONCE:
            spell_on = state if index % 2 == 0 else not state
            spell_start = start if index == 0 else float(ends[index - 1])
            return spell_on, spell_start, float(ends[index])
        start, drawn = float(ends[-1]), drawn + SPELLS_AT_ONCE
    return False, at, math.inf


def _markov_next(availability: Availability, seed: int, key: int, at: float) -> float:
    spell_on, _, end = _markov_spells(availability, seed, key, at)
    return at if spell_on else end


def _markov_until(availability: Availability, seed: int, key: int, at: float) -> float:
    spell_on, _, end = _markov_spells(availability, seed, key, at)
    return end if spell_on else at
