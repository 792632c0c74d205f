"""Profile mixes: named device classes with shares and speed distributions, assigned to many devices.

A device's class and speed are drawn from a generator seeded by the mix's seed and the device's key
alone, so a device gets the same profile whichever devices are assigned with it and whichever process
assigns it. Every device of a class shares that class's ``Profile`` object.

Built-in mixes take their figures from published measurements (rounded; see ``SOURCES``). They describe
phones training a model of the embedded one's size; scale the compute of a mix of your own for others.
User mixes are JSON or YAML files of the same shape as ``describe()`` gives::

    name: my-phones
    classes:
      - class: low
        share: 0.3
        speed: {lognormal: {median: 0.25, sigma: 0.3}}   # or a number, or {uniform: [lo, hi]}
        network: {uplink_mbps: 2, downlink_mbps: 10, rtt_ms: 120}
        availability: {kind: markov, mean_on_s: 1800, mean_off_s: 5400}
        dropout: 0.1
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import InvalidProfile, ProfileMixNotFound
from service.profiles.availability import device_key
from service.profiles.profile import (
    MAX_SPEED,
    MIN_SPEED,
    DeviceProfile,
    Profile,
    number_field,
    object_fields,
    speed_field,
)

MAX_CLASSES = 64
MAX_SHARE = 1e6
"""Largest share of one class (shares are relative: they need not add up to one)."""
MAX_SIGMA = 3.0
"""Largest sigma of a lognormal speed distribution (3: a factor of 20 either side of the median)."""
MAX_MIX_BYTES = 1 << 20
DAY = 86_400.0

SOURCES = {
    "compute": "AI Benchmark (Ignatov et al., 'AI Benchmark: All About Deep Learning on Smartphones in "
    "2019', ICCVW 2019): low-end phones run the same network about 10x slower than flagships",
    "network": "Ookla Speedtest Global Index, mobile, 2024: median about 50 Mbit/s down and 10 up, with "
    "a long slow tail; round trips of 30-120 ms (MobiPerf measurements used by FedScale)",
    "availability": "Bonawitz et al., 'Towards Federated Learning at Scale: System Design', MLSys 2019: "
    "phones train only while idle, charging and on unmetered Wi-Fi, mostly at night; Yang et al., "
    "'Characterizing Impacts of Heterogeneity in Federated Learning upon Large-Scale Smartphone Data', "
    "WWW 2021 (the 136k-phone traces FedScale replays): spells online of tens of minutes",
    "dropout": "Bonawitz et al. 2019: 6-10% of the devices picked for a round drop out",
}


@dataclass(frozen=True)
class Speed:
    """A class's distribution of speed factors: ``fixed``, ``lognormal`` (median, sigma) or ``uniform``
    (lo, hi). The factors, the median and the bounds are within ``MIN_SPEED`` to ``MAX_SPEED``, sigma
    within 0 to ``MAX_SIGMA``; a drawn factor is clipped into ``[MIN_SPEED, MAX_SPEED]``."""

    kind: str = "fixed"
    a: float = 1.0
    b: float = 0.0

    @classmethod
    def parse(cls, value: object, where: str) -> Speed:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cls("fixed", speed_field(value, where))
        fields = object_fields(value, where, frozenset({"lognormal", "uniform"}))
        if len(fields) != 1:
            raise InvalidProfile(
                f"{where} must be a number, {{lognormal: {{median, sigma}}}} or {{uniform: [lo, hi]}}"
            )
        if "lognormal" in fields:
            params = object_fields(fields["lognormal"], f"{where}.lognormal", frozenset({"median", "sigma"}))
            return cls(
                "lognormal",
                speed_field(params.get("median"), f"{where}.lognormal.median"),
                number_field(params.get("sigma"), f"{where}.lognormal.sigma", maximum=MAX_SIGMA),
            )
        bounds = fields["uniform"]
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise InvalidProfile(f"{where}.uniform must be [lo, hi]")
        lo = speed_field(bounds[0], f"{where}.uniform[0]")
        hi = speed_field(bounds[1], f"{where}.uniform[1]")
        if hi < lo:
            raise InvalidProfile(f"{where}.uniform is [{lo:g}, {hi:g}]: hi must be at least lo")
        return cls("uniform", lo, hi)

    def draw(self, rng: np.random.Generator) -> float:
        """A speed factor, clipped into ``[MIN_SPEED, MAX_SPEED]`` (a lognormal's tails reach past them)."""
        if self.kind == "lognormal":
            # Clip the exponent first: exp never overflows, whatever the normal draw.
            exponent = min(self.b * float(rng.standard_normal()), math.log(MAX_SPEED / self.a))
            drawn = self.a * math.exp(exponent)
        elif self.kind == "uniform":
            drawn = float(rng.uniform(self.a, self.b))
        else:
            drawn = self.a
        return min(max(drawn, MIN_SPEED), MAX_SPEED)

    def describe(self) -> object:
        if self.kind == "lognormal":
            return {"lognormal": {"median": self.a, "sigma": self.b}}
        if self.kind == "uniform":
            return {"uniform": [self.a, self.b]}
        return self.a


@dataclass(frozen=True)
class MixClass:
    profile: Profile
    share: float
    speed: Speed


@dataclass(frozen=True)
class ProfileMix:
    name: str
    classes: tuple[MixClass, ...]
    source: str = "user"

    @classmethod
    def parse(cls, value: object, where: str = "mix", source: str = "user") -> ProfileMix:
        fields = object_fields(
            value, where, frozenset({"name", "classes", "source", "sources"})
        )  # as described
        name = fields.get("name", "custom")
        if not isinstance(name, str) or not name:
            raise InvalidProfile(f"{where}.name must be a non-empty string")
        classes = fields.get("classes")
        if not isinstance(classes, list) or not 0 < len(classes) <= MAX_CLASSES:
            raise InvalidProfile(f"{where}.classes must be a list of 1 to {MAX_CLASSES} device classes")
        parsed: list[MixClass] = []
        for index, item in enumerate(classes):
            at = f"{where}.classes[{index}]"
            entry = object_fields(item, at, (Profile.FIELDS | {"share"}) - {"seed"})
            if "class" not in entry:
                raise InvalidProfile(f"{at}.class is missing: every class of a mix has a name")
            share = number_field(entry.get("share"), f"{at}.share", strict=True, maximum=MAX_SHARE)
            speed = Speed.parse(entry.get("speed", 1.0), f"{at}.speed")
            rest = {k: v for k, v in entry.items() if k not in ("share", "speed")}
            parsed.append(MixClass(Profile.parse(rest, at).profile, share, speed))
        names = [c.profile.device_class for c in parsed]
        if len(set(names)) != len(names):
            raise InvalidProfile(f"{where}.classes repeat a class name: {names}")
        return cls(name, tuple(parsed), source)

    def describe(self) -> dict[str, object]:
        classes = []
        for c in self.classes:
            described = {k: v for k, v in c.profile.describe().items() if k != "seed"}
            classes.append({**described, "share": c.share, "speed": c.speed.describe()})
        return {"name": self.name, "source": self.source, "classes": classes}

    def assign(self, device_ids: Iterable[str], seed: int = 0) -> dict[str, DeviceProfile]:
        """Each device's profile, drawn from the seed and its ID alone."""
        shares = np.array([c.share for c in self.classes], dtype=np.float64)
        bounds = np.cumsum(shares / shares.sum())
        seeded = tuple(
            Profile(
                c.profile.device_class,
                c.profile.compute,
                c.profile.network,
                c.profile.availability,
                c.profile.dropout,
                seed,
            )
            for c in self.classes
        )
        assigned: dict[str, DeviceProfile] = {}
        for device_id in device_ids:
            rng = np.random.default_rng([seed, device_key(device_id), 1])
            index = min(int(np.searchsorted(bounds, rng.random(), side="right")), len(seeded) - 1)
            assigned[device_id] = DeviceProfile(seeded[index], self.classes[index].speed.draw(rng))
        return assigned


def _markov(on: float, off: float) -> dict[str, object]:
    return {"kind": "markov", "mean_on_s": on, "mean_off_s": off}


PHONE_CLASSES: tuple[dict[str, object], ...] = (
    {
        "class": "low",
        "share": 0.3,
        "speed": {"lognormal": {"median": 0.2, "sigma": 0.3}},
        "network": {"uplink_mbps": 2.0, "downlink_mbps": 10.0, "rtt_ms": 120.0},
        "availability": _markov(1800, 5400),
        "dropout": 0.10,
    },
    {
        "class": "mid",
        "share": 0.5,
        "speed": {"lognormal": {"median": 1.0, "sigma": 0.3}},
        "network": {"uplink_mbps": 10.0, "downlink_mbps": 50.0, "rtt_ms": 60.0},
        "availability": _markov(3600, 3600),
        "dropout": 0.06,
    },
    {
        "class": "high",
        "share": 0.2,
        "speed": {"lognormal": {"median": 2.0, "sigma": 0.3}},
        "network": {"uplink_mbps": 30.0, "downlink_mbps": 150.0, "rtt_ms": 30.0},
        "availability": _markov(7200, 2400),
        "dropout": 0.02,
    },
)
"""The built-in mixes' phones (figures from ``SOURCES``)."""


def _phones(name: str, availability: Mapping[str, object] | None, dropout: bool) -> dict[str, object]:
    """The phones of ``PHONE_CLASSES``, with another availability for all, and without dropouts."""
    classes = []
    for phone in PHONE_CLASSES:
        changed: dict[str, object] = {} if availability is None else {"availability": availability}
        classes.append({**phone, **changed, **({} if dropout else {"dropout": 0.0})})
    return {"name": name, "classes": classes}


BUILTIN: dict[str, dict[str, object]] = {
    "phones": _phones("phones", None, dropout=True),
    "phones-always-on": _phones("phones-always-on", {"kind": "always"}, dropout=False),
    "phones-at-night": _phones(
        "phones-at-night", {"kind": "trace", "intervals": [[0, 6 * 3600]], "period": DAY}, dropout=True
    ),
}
"""``phones``: low/mid/high phones (30/50/20%) with lognormal speeds around 0.2x, 1x and 2x the
reference, their networks, spells online and dropout rates; ``phones-always-on``: the same phones,
always online and never dropping out (heterogeneous speed and network only); ``phones-at-night``:
the same phones, online the first 6 hours of every simulated day (charging at night)."""


def builtin_mixes() -> list[ProfileMix]:
    return [ProfileMix.parse(value, f"mix '{name}'", "built-in") for name, value in BUILTIN.items()]


def find_mix(name: str) -> ProfileMix:
    if name not in BUILTIN:
        raise ProfileMixNotFound(f"no profile mix '{name}'; the built-in ones are {', '.join(BUILTIN)}")
    return ProfileMix.parse(BUILTIN[name], f"mix '{name}'", "built-in")


def load_mix(path: Path) -> ProfileMix:
    """A mix from a JSON or YAML file (by suffix: ``.json``, else YAML, which JSON is a subset of)."""
    try:
        if path.stat().st_size > MAX_MIX_BYTES:
            raise InvalidProfile(f"{path} is larger than {MAX_MIX_BYTES} bytes")
        text = path.read_text()
    except OSError as exc:
        raise InvalidProfile(f"could not read the profile mix {path}: {exc.strerror or exc}") from exc
    if path.suffix == ".json":
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidProfile(f"{path} is not valid JSON: {exc}") from exc
    else:
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidProfile(f"{path} is not valid YAML: {exc}") from exc
    return ProfileMix.parse(value, f"mix {path.name}", str(path))


def resolve_mix(spec: str) -> ProfileMix:
    """A built-in mix's name, or the path of a mix file."""
    if spec in BUILTIN:
        return find_mix(spec)
    path = Path(spec)
    if path.suffix in (".json", ".yaml", ".yml") or path.exists():
        return load_mix(path)
    return find_mix(spec)
