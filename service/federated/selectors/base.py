"""What every client selector is: who takes part in a round (``Selector.pick``), and what it hears of
how they did (``Selector.feedback``), over the run's devices and their profiles.

The runner makes one selector per run (``service.federated.selectors.make``) and, each round, asks it
to ``pick`` at the round's simulated start, plans and trains those picked, then hands it every picked
participant's ``Outcome`` (its fate, its simulated seconds, and, when it trained, its samples and mean
loss). A selector keeps what it learns in memory for the run only; the run's seed and the round's number
seed any randomness, so two runs with the same seed pick alike.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar, NamedTuple

from service.errors import FleetError, InvalidRequest
from service.federated.selectors.order import Profiles
from service.profiles.availability import next_online

MAX_ALPHA = 100.0
MAX_PREFERRED_SECONDS = 1e9


@dataclass(frozen=True)
class SelectorSettings:
    """The knobs of the selectors that have any (Oort's, named after Lai et al. 2021); each selector
    checks the ones it uses."""

    epsilon: float = 0.9
    """Oort: the share of a round's participants drawn from devices never heard from, at round 1."""
    epsilon_decay: float = 0.95
    """Oort: ``epsilon`` is multiplied by this every round after the first ..."""
    epsilon_min: float = 0.2
    """Oort: ... down to this."""
    alpha: float = 2.0
    """Oort: a device slower than the preferred duration T has its utility times (T / t) ** alpha."""
    preferred_seconds: float | None = None
    """Oort: the preferred duration T in simulated seconds (None: the 10th percentile of the durations
    heard so far, Oort's default)."""
    cut_off: float = 0.95
    """Oort: devices within this factor of the utility of the last one exploited are drawn from."""

    def check(self) -> SelectorSettings:
        """``self``, if every setting is usable; else InvalidRequest naming the first that is not."""
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None and field.name == "preferred_seconds":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidRequest(f"selection setting {field.name} must be a finite number, got {value!r}")
        for name in ("epsilon", "epsilon_min"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidRequest(f"selection setting {name} must be in [0, 1], got {getattr(self, name)}")
        if self.epsilon_min > self.epsilon:
            raise InvalidRequest(
                f"selection setting epsilon_min ({self.epsilon_min}) must not exceed epsilon ({self.epsilon})"
            )
        if not 0 < self.epsilon_decay <= 1:
            raise InvalidRequest(
                f"selection setting epsilon_decay must be in (0, 1], got {self.epsilon_decay}"
            )
        if not 0 <= self.alpha <= MAX_ALPHA:
            raise InvalidRequest(f"selection setting alpha must be in [0, {MAX_ALPHA:g}], got {self.alpha}")
        if self.preferred_seconds is not None and not 0 < self.preferred_seconds <= MAX_PREFERRED_SECONDS:
            raise InvalidRequest(
                f"selection setting preferred_seconds must be in (0, {MAX_PREFERRED_SECONDS:g}], "
                f"got {self.preferred_seconds}"
            )
        if not 0 < self.cut_off <= 1:
            raise InvalidRequest(f"selection setting cut_off must be in (0, 1], got {self.cut_off}")
        return self


class Pick(NamedTuple):
    """A round's picking: when it starts, who takes part (in ID order), and how many devices were met
    offline picking them."""

    start: float
    devices: list[str]
    offline: int


@dataclass(frozen=True)
class Outcome:
    """How one picked participant did, as the runner heard it."""

    device: str
    fate: str
    """``on_time``, ``straggler`` (both trained), ``dropped`` or ``failed`` (``selection.Plan.fate``)."""
    seconds: float = 0.0
    """Its simulated duration (0 for an unprofiled device; a dropout's is what it would have taken)."""
    samples: int = 0
    mean_loss: float | None = None
    """Its training's mean loss (None when it did not train)."""

    @property
    def trained(self) -> bool:
        return self.fate in ("on_time", "straggler")


class Selector(ABC):
    """Picks each round's participants among the run's devices; one instance per run."""

    name: ClassVar[str]
    title: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    """The ``SelectorSettings`` fields it uses (a run's view shows only these)."""

    def __init__(self, settings: SelectorSettings, seed: int) -> None:
        self.settings = settings
        self.seed = seed

    def check(self) -> None:
        """InvalidRequest naming the first setting that is not usable (every selector takes the same
        settings, each using its own)."""
        self.settings.check()

    @abstractmethod
    def pick(
        self, devices: Sequence[str], profiles: Profiles, number: int, per_round: int, at: float
    ) -> Pick:
        """Round ``number``'s participants among ``devices`` (in ID order), ``per_round`` of them at
        most, for a round due to start at simulated time ``at``."""

    def feedback(self, number: int, outcomes: Sequence[Outcome]) -> None:
        """What became of round ``number``'s participants (every picked one, in participant order);
        a selector that learns nothing ignores it."""
        return None


def first_online(devices: Sequence[str], profiles: Profiles, number: int, at: float) -> float:
    """The earliest simulated time from ``at`` on that some device is online (every profile is read);
    FleetError if none ever comes online."""
    start = min(next_online(profiles.get(i), i, at) for i in devices)
    if start == math.inf:
        raise FleetError(
            f"round {number}: no device of the run is online at simulated time {at:g} s, and none "
            "comes online later (their profiles' availability)"
        )
    return start
