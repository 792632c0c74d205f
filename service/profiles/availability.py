"""Whether a profiled device is online at a simulated time, and when it next comes online.

A ``trace`` repeats its intervals every period; an interval ending at the period and one starting at 0
make one spell across the period's edge.

A ``markov`` availability draws each device's spells from its own generators (the profile's seed and
the device's key): the same in every process and on every call, without keeping them. Simulated time is
cut into epochs of ``EPOCH_SPELLS`` mean on-and-off cycles (``epoch_seconds``); epoch ``e`` has its own
generator, ``np.random.default_rng([seed, key, e])``, its first spell on with the stationary probability
``on / (on + off)`` and its spells cut at the epoch's end. So a question about any time costs drawing
an epoch or a few, not the spells since 0. A spell cut at an epoch's end may go on in the next epoch
(the same state drawn again); ``next_online`` and ``online_until`` look at most ``MAX_EPOCHS`` epochs
ahead: a device off all that while is taken as never online again (``inf``), one on all that while as
online until the end of the last epoch looked at (neither happens but with vanishing probability).
Times before 0 are offline, and read as 0 for when the device next comes online.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math

import numpy as np

from service.profiles.profile import Availability, DeviceProfile

EPOCH_SPELLS = 64
"""Mean on-and-off cycles in one epoch of a markov availability."""
MAX_EPOCHS = 64
"""Epochs ``next_online`` and ``online_until`` look at, the one holding the time asked included."""
SPELLS_AT_ONCE = 4 * EPOCH_SPELLS
"""Spells drawn at once for an epoch: twice the mean it holds (one draw nearly always covers it)."""
MAX_DRAWS = 8
"""Draws of ``SPELLS_AT_ONCE`` spells for one epoch; should they not reach its end, the last spell
lasts to it."""
ROUNDING_STEPS = 64
"""Ulps a spell's end may be moved up so that the time returned reads back as the spell after it."""


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


def _trace_position(availability: Availability, at: float) -> tuple[float, float, int]:
    """The start of the period holding ``at`` (0 without one), ``at`` within it, and the index of the
    last interval starting at or before it (-1: none)."""
    period = availability.period
    if period is None:
        base, t = 0.0, at
    else:
        cycles, t = divmod(at, period)
        if t >= period:  # rounding, for times just below a period's start
            cycles, t = cycles + 1, 0.0
        base = cycles * period
    # (start, inf) sorts after every interval starting at or before t, before every later one.
    return base, t, bisect.bisect_right(availability.intervals, (t, math.inf)) - 1


def _wraps(availability: Availability) -> bool:
    """Whether a spell online goes on across the period's edge: the last interval ends at the period
    and the first starts at 0."""
    intervals, period = availability.intervals, availability.period
    return period is not None and intervals[0][0] == 0 and intervals[-1][1] == period


def _trace_next(availability: Availability, at: float) -> float:
    intervals, period = availability.intervals, availability.period
    base, t, index = _trace_position(availability, at)
    if index >= 0 and t < intervals[index][1]:
        return at
    if index + 1 < len(intervals):
        return base + intervals[index + 1][0]
    return math.inf if period is None else base + period + intervals[0][0]


def _trace_until(availability: Availability, at: float) -> float:
    intervals, period = availability.intervals, availability.period
    base, t, index = _trace_position(availability, at)
    if index < 0 or t >= intervals[index][1]:
        return at
    if period is not None and index == len(intervals) - 1 and _wraps(availability):
        if len(intervals) == 1:
            return math.inf  # one interval, the whole period: always online
        return base + period + intervals[0][1]
    return base + intervals[index][1]


def epoch_seconds(availability: Availability) -> float:
    """The length of a markov availability's epochs: ``EPOCH_SPELLS`` mean on-and-off cycles."""
    return EPOCH_SPELLS * (availability.mean_on_s + availability.mean_off_s)


@functools.lru_cache(maxsize=1024)
def _epoch(on: float, off: float, seed: int, key: int, epoch: int) -> tuple[bool, np.ndarray]:
    """Epoch ``epoch``'s spells: whether its first is on, and their ends from the epoch's start (the
    last one the epoch's length; read-only). Kept for the last questions asked (a round asks of a device
    often)."""
    length = EPOCH_SPELLS * (on + off)
    rng = np.random.default_rng([seed, key, epoch])
    first_on = bool(rng.random() < on / (on + off))
    # Alternate spells from the first: on, off, on, ... (or off, on, ...); SPELLS_AT_ONCE is even.
    means = np.where(np.arange(SPELLS_AT_ONCE) % 2 == 0, on if first_on else off, off if first_on else on)
    chunks: list[np.ndarray] = []
    start = 0.0
    for _ in range(MAX_DRAWS):
        ends = start + np.cumsum(rng.exponential(means))
        cut = int(np.searchsorted(ends, length, side="left"))
        if cut < SPELLS_AT_ONCE:
            chunks.append(ends[:cut])
            break
        chunks.append(ends)
        start = float(ends[-1])
    else:
        chunks[-1] = chunks[-1][:-1]  # the last spell drawn lasts to the epoch's end
    spells = np.concatenate([*chunks, [length]])
    spells.flags.writeable = False
    return first_on, spells


def _locate(length: float, at: float) -> tuple[int, float]:
    """The epoch holding ``at`` (at least 0) and ``at`` from its start."""
    epoch = max(int(at // length), 0)
    offset = at - epoch * length
    if offset >= length:  # rounding
        epoch, offset = epoch + 1, at - (epoch + 1) * length
    return epoch, max(offset, 0.0)


def _time(length: float, epoch: int, offset: float) -> float:
    """The first time that reads back (``_locate``) as ``offset`` in ``epoch`` or after it."""
    t = epoch * length + offset
    for _ in range(ROUNDING_STEPS):
        if _locate(length, t) >= (epoch, offset):
            break
        t = math.nextafter(t, math.inf)
    return t


def _spell(on: float, off: float, seed: int, key: int, epoch: int, offset: float) -> tuple[bool, int, int]:
    """The spell holding ``offset`` in ``epoch``: whether it is on, its index, and the epoch's count."""
    first_on, ends = _epoch(on, off, seed, key, epoch)
    index = min(int(np.searchsorted(ends, offset, side="right")), len(ends) - 1)
    return first_on == (index % 2 == 0), index, len(ends)


def _markov_next(availability: Availability, seed: int, key: int, at: float) -> float:
    on, off = availability.mean_on_s, availability.mean_off_s
    if off == 0:
        return at
    length = epoch_seconds(availability)
    epoch, offset = _locate(length, at)
    for step in range(MAX_EPOCHS):
        spell_on, index, count = _spell(on, off, seed, key, epoch, offset)
        if spell_on:
            return at if step == 0 and at >= 0 else _time(length, epoch, offset)
        if index + 1 < count:  # an on spell follows in this epoch
            return _time(length, epoch, float(_epoch(on, off, seed, key, epoch)[1][index]))
        epoch, offset = epoch + 1, 0.0
    return math.inf


def _markov_until(availability: Availability, seed: int, key: int, at: float) -> float:
    on, off = availability.mean_on_s, availability.mean_off_s
    if off == 0:
        return math.inf
    if at < 0:
        return at
    length = epoch_seconds(availability)
    epoch, offset = _locate(length, at)
    for step in range(MAX_EPOCHS):
        spell_on, index, count = _spell(on, off, seed, key, epoch, offset)
        if not spell_on:
            return at if step == 0 else _time(length, epoch, offset)
        if index + 1 < count:  # an off spell follows in this epoch
            return _time(length, epoch, float(_epoch(on, off, seed, key, epoch)[1][index]))
        epoch, offset = epoch + 1, 0.0
    return _time(length, epoch, 0.0)
