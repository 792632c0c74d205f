"""What a simulated phone is like: how fast it computes, how its network carries bytes, when it is
online, and how often it drops out. Parsed from JSON-like values, refused with the field named.

A device's profile is its class's ``Profile`` (shared by every device of that class: one object, however
many devices) and its own ``speed`` (a draw of the mix's speed distribution): ``DeviceProfile``. That
keeps 100,000 profiled devices at a small object each (a pointer and a float).

Every number is bounded (``MIN_SPEED`` to ``MAX_SPEED``, ``MAX_MS_PER_SAMPLE``, ``MIN_MBPS`` to
``MAX_MBPS``, ``MAX_RTT_MS``, ``MAX_SECONDS``) so that no accepted profile makes a duration infinite or
not a number.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from service.errors import InvalidProfile

AvailabilityKind = Literal["always", "trace", "markov"]
AVAILABILITY_KINDS: tuple[AvailabilityKind, ...] = ("always", "trace", "markov")
MAX_INTERVALS = 1_000
"""On/off intervals one trace may hold."""
MAX_CLASS_NAME = 64
MIN_SPEED, MAX_SPEED = 1e-3, 1e3
"""Bounds of every speed factor: a compute's, a device's, and one drawn from a mix's distribution."""
MAX_MS_PER_SAMPLE = 1e6
MIN_MBPS, MAX_MBPS = 1e-3, 1e6
MAX_RTT_MS = 1e6
MAX_SECONDS = 1e9
"""Bound of a trace's interval ends and period, and of a markov availability's mean spells (about 32
years)."""
MIN_SPELL_S = 1.0
"""Shortest mean spell of a markov availability (its ``mean_off_s`` may also be 0: never off)."""

REFERENCE_TRAIN_MS = 0.5
"""Milliseconds a reference phone (``speed`` 1) takes to train one sample: a mid-range phone training
the embedded 784-128-10 model (about 0.1 MFLOP forward, 0.3 MFLOP with the backward pass) through
TFLite's Flex delegate, which runs one sample in well under a millisecond (the mixes scale it by
class: ``mixes.SOURCES``)."""
REFERENCE_INFER_MS = 0.1
"""Milliseconds a reference phone takes to predict one sample (a forward pass only)."""


def number_field(
    value: object, where: str, *, minimum: float = 0.0, maximum: float = math.inf, strict: bool = False
) -> float:
    """``value`` as a float within ``[minimum, maximum]`` (``(minimum, maximum]`` if ``strict``), else
    ``InvalidProfile`` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidProfile(f"{where} must be a finite number (got {value!r})")
    if value < minimum or (strict and value == minimum):
        bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
        raise InvalidProfile(f"{where} must be {bound} (got {value!r})")
    if value > maximum:
        raise InvalidProfile(f"{where} must be at most {maximum:g} (got {value!r})")
    return float(value)


def speed_field(value: object, where: str) -> float:
    """A speed factor: a number from ``MIN_SPEED`` to ``MAX_SPEED``."""
    return number_field(value, where, minimum=MIN_SPEED, maximum=MAX_SPEED)


def object_fields(value: object, where: str, allowed: frozenset[str]) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise InvalidProfile(f"{where} must be an object (got {type(value).__name__})")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise InvalidProfile(f"{where} has unknown field(s) {unknown}; it takes {sorted(allowed)}")
    return value


@dataclass(frozen=True)
class Compute:
    train_ms_per_sample: float = REFERENCE_TRAIN_MS
    infer_ms_per_sample: float = REFERENCE_INFER_MS

    @classmethod
    def parse(cls, value: object, where: str = "compute") -> Compute:
        """``{"train_ms_per_sample", "infer_ms_per_sample"}`` (each 0 to ``MAX_MS_PER_SAMPLE``), or
        ``{"speed": s}``: the reference phone's times divided by ``s`` (2 computes twice as fast; from
        ``MIN_SPEED`` to ``MAX_SPEED``)."""
        fields = object_fields(
            value, where, frozenset({"train_ms_per_sample", "infer_ms_per_sample", "speed"})
        )
        if "speed" in fields:
            if len(fields) > 1:
                raise InvalidProfile(f"{where}: give either speed or the times per sample, not both")
            speed = speed_field(fields["speed"], f"{where}.speed")
            return cls(REFERENCE_TRAIN_MS / speed, REFERENCE_INFER_MS / speed)
        return cls(
            number_field(
                fields.get("train_ms_per_sample", REFERENCE_TRAIN_MS),
                f"{where}.train_ms_per_sample",
                maximum=MAX_MS_PER_SAMPLE,
            ),
            number_field(
                fields.get("infer_ms_per_sample", REFERENCE_INFER_MS),
                f"{where}.infer_ms_per_sample",
                maximum=MAX_MS_PER_SAMPLE,
            ),
        )

    def describe(self) -> dict[str, object]:
        return {
            "train_ms_per_sample": self.train_ms_per_sample,
            "infer_ms_per_sample": self.infer_ms_per_sample,
        }


@dataclass(frozen=True)
class Network:
    uplink_mbps: float = 10.0
    downlink_mbps: float = 50.0
    rtt_ms: float = 50.0

    @classmethod
    def parse(cls, value: object, where: str = "network") -> Network:
        """``{"uplink_mbps", "downlink_mbps"}`` (each ``MIN_MBPS`` to ``MAX_MBPS``) and ``rtt_ms`` (0 to
        ``MAX_RTT_MS``), each optional."""
        fields = object_fields(value, where, frozenset({"uplink_mbps", "downlink_mbps", "rtt_ms"}))
        default = cls()

        def rate(name: str, fallback: float) -> float:
            return number_field(
                fields.get(name, fallback), f"{where}.{name}", minimum=MIN_MBPS, maximum=MAX_MBPS
            )

        return cls(
            rate("uplink_mbps", default.uplink_mbps),
            rate("downlink_mbps", default.downlink_mbps),
            number_field(fields.get("rtt_ms", default.rtt_ms), f"{where}.rtt_ms", maximum=MAX_RTT_MS),
        )

    def describe(self) -> dict[str, object]:
        return {"uplink_mbps": self.uplink_mbps, "downlink_mbps": self.downlink_mbps, "rtt_ms": self.rtt_ms}


@dataclass(frozen=True)
class Availability:
    """When the phone is online, in simulated seconds.

    ``always``; ``trace``: online during the ``intervals`` ``[start, end)``, sorted and apart (an
    interval starts after the previous one ends: touching ones are refused; write them as one), ends at
    most ``MAX_SECONDS``, repeated every ``period`` seconds (at most ``MAX_SECONDS``) when one is given
    (a day's pattern; an interval ending at the period and one starting at 0 make one spell across the
    period's edge); ``markov``: a two-state process whose on and off spells last exponentially long
    with means ``mean_on_s`` (``MIN_SPELL_S`` to ``MAX_SECONDS``) and ``mean_off_s`` (0, never off, or
    ``MIN_SPELL_S`` to ``MAX_SECONDS``), its spells drawn per device and per epoch of simulated time
    from the device's ID and the profile's seed (``service.profiles.availability``).
    """

    kind: AvailabilityKind = "always"
    intervals: tuple[tuple[float, float], ...] = ()
    period: float | None = None
    mean_on_s: float = 0.0
    mean_off_s: float = 0.0

    @classmethod
    def parse(cls, value: object, where: str = "availability") -> Availability:
        if isinstance(value, str):
            value = {"kind": value}
        fields = object_fields(
            value, where, frozenset({"kind", "intervals", "period", "mean_on_s", "mean_off_s"})
        )
        kind = fields.get("kind", "always")
        if kind not in AVAILABILITY_KINDS:
            raise InvalidProfile(
                f"{where}.kind must be one of {', '.join(AVAILABILITY_KINDS)} (got {kind!r})"
            )
        allowed = {
            "always": {"kind"},
            "trace": {"kind", "intervals", "period"},
            "markov": {"kind", "mean_on_s", "mean_off_s"},
        }
        extra = sorted(set(fields) - allowed[kind])
        if extra:
            raise InvalidProfile(f"{where}: {extra} do not apply to availability '{kind}'")
        if kind == "trace":
            intervals = _intervals(fields.get("intervals"), f"{where}.intervals")
            period = fields.get("period")
            if period is not None:
                period = number_field(period, f"{where}.period", strict=True, maximum=MAX_SECONDS)
                if intervals[-1][1] > period:
                    raise InvalidProfile(
                        f"{where}.intervals end at {intervals[-1][1]:g}, after the period of {period:g} s"
                    )
            return cls("trace", intervals, period)
        if kind == "markov":
            mean_on = number_field(
                fields.get("mean_on_s"), f"{where}.mean_on_s", minimum=MIN_SPELL_S, maximum=MAX_SECONDS
            )
            mean_off = number_field(fields.get("mean_off_s"), f"{where}.mean_off_s", maximum=MAX_SECONDS)
            if 0 < mean_off < MIN_SPELL_S:
                raise InvalidProfile(
                    f"{where}.mean_off_s must be 0 (never off) or at least {MIN_SPELL_S:g} (got {mean_off:g})"
                )
            return cls("markov", mean_on_s=mean_on, mean_off_s=mean_off)
        return cls()

    def describe(self) -> dict[str, object]:
        if self.kind == "trace":
            described: dict[str, object] = {"kind": "trace", "intervals": [list(i) for i in self.intervals]}
            if self.period is not None:
                described["period"] = self.period
            return described
        if self.kind == "markov":
            return {"kind": "markov", "mean_on_s": self.mean_on_s, "mean_off_s": self.mean_off_s}
        return {"kind": "always"}


def _intervals(value: object, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list | tuple) or not value:
        raise InvalidProfile(f"{where} must be a non-empty list of [start, end] pairs in seconds")
    if len(value) > MAX_INTERVALS:
        raise InvalidProfile(f"{where} holds {len(value)} intervals; at most {MAX_INTERVALS}")
    intervals: list[tuple[float, float]] = []
    for index, pair in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise InvalidProfile(f"{at} must be a [start, end] pair (got {pair!r})")
        start = number_field(pair[0], f"{at}[0]", maximum=MAX_SECONDS)
        end = number_field(pair[1], f"{at}[1]", maximum=MAX_SECONDS)
        if end <= start:
            raise InvalidProfile(f"{at} ends at {end:g}, not after its start {start:g}")
        if intervals and start <= intervals[-1][1]:
            raise InvalidProfile(
                f"{at} starts at {start:g}, not after interval {index - 1} ends ({intervals[-1][1]:g}): "
                "intervals must be sorted and apart (neither overlapping nor touching; join touching ones)"
            )
        intervals.append((start, end))
    return tuple(intervals)


@dataclass(frozen=True)
class Profile:
    """A class of phone. ``dropout``: the probability that it drops out of a job or a round it is in."""

    device_class: str = "custom"
    compute: Compute = field(default_factory=Compute)
    network: Network = field(default_factory=Network)
    availability: Availability = field(default_factory=Availability)
    dropout: float = 0.0
    seed: int = 0
    """Seeds what is drawn per device (a ``markov`` availability's spells, with the device's ID)."""

    FIELDS = frozenset({"class", "compute", "network", "availability", "dropout", "speed", "seed"})

    @classmethod
    def parse(cls, value: object, where: str = "profile") -> DeviceProfile:
        """A device's profile from JSON: these fields, each optional, and ``speed`` (the device's own
        factor on its compute times, default 1, from ``MIN_SPEED`` to ``MAX_SPEED``)."""
        fields = object_fields(value, where, cls.FIELDS)
        name = fields.get("class", "custom")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_CLASS_NAME:
            raise InvalidProfile(f"{where}.class must be a name of 1 to {MAX_CLASS_NAME} characters")
        dropout = number_field(fields.get("dropout", 0.0), f"{where}.dropout")
        if dropout > 1:
            raise InvalidProfile(f"{where}.dropout is a probability: at most 1 (got {dropout:g})")
        seed = fields.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise InvalidProfile(f"{where}.seed must be a non-negative integer (got {seed!r})")
        profile = cls(
            name,
            Compute.parse(fields.get("compute", {}), f"{where}.compute"),
            Network.parse(fields.get("network", {}), f"{where}.network"),
            Availability.parse(fields.get("availability", "always"), f"{where}.availability"),
            dropout,
            seed,
        )
        return DeviceProfile(profile, speed_field(fields.get("speed", 1.0), f"{where}.speed"))

    def describe(self) -> dict[str, object]:
        return {
            "class": self.device_class,
            "compute": self.compute.describe(),
            "network": self.network.describe(),
            "availability": self.availability.describe(),
            "dropout": self.dropout,
            "seed": self.seed,
        }


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """One device's profile: its class's (shared) and its own speed factor on the compute times."""

    profile: Profile
    speed: float = 1.0

    def describe(self) -> dict[str, object]:
        return {**self.profile.describe(), "speed": self.speed}

    def train_seconds(self, samples: int) -> float:
        return samples * self.profile.compute.train_ms_per_sample / self.speed / 1000.0

    def infer_seconds(self, samples: int) -> float:
        return samples * self.profile.compute.infer_ms_per_sample / self.speed / 1000.0

    def download_seconds(self, size: int) -> float:
        """One request that brings ``size`` bytes down: a round trip plus the bytes at the downlink rate."""
        network = self.profile.network
        return network.rtt_ms / 1000.0 + size * 8 / (network.downlink_mbps * 1e6)

    def upload_seconds(self, size: int) -> float:
        network = self.profile.network
        return network.rtt_ms / 1000.0 + size * 8 / (network.uplink_mbps * 1e6)


_INTERNED: OrderedDict[Profile, Profile] = OrderedDict()
_INTERNED_LOCK = threading.Lock()
MAX_INTERNED = 4096
"""Distinct class profiles kept for sharing (a mix has a few; a fleet of hand-set ones may have more)."""


def intern(profile: Profile) -> Profile:
    """One shared object per distinct class profile: devices read back from disk share them again.
    At most ``MAX_INTERNED`` are kept; past that the least recently interned or found one is dropped
    (devices that hold it keep it, later ones get a new shared object)."""
    with _INTERNED_LOCK:
        found = _INTERNED.get(profile)
        if found is not None:
            _INTERNED.move_to_end(profile)
            return found
        _INTERNED[profile] = profile
        if len(_INTERNED) > MAX_INTERNED:
            _INTERNED.popitem(last=False)
        return profile


def parse_profile(value: object, where: str = "profile") -> DeviceProfile:
    """``Profile.parse``, its class profile shared with every device that has the same one."""
    parsed = Profile.parse(value, where)
    return DeviceProfile(intern(parsed.profile), parsed.speed)
