"""A comparison's privacy, resolved in full: differential privacy (``--privacy``) and secure aggregation
(``--secure-aggregation``), as the rounds API's ``privacy`` and ``secure_aggregation`` take them.

Values are typed by the fields of ``service.privacy``'s settings (strings for the modes, a bool for
``adaptive``, numbers for the rest) and checked by those settings and by the rounds' own checks
(``RoundSpec.check``) before the run starts, so a setting the service would refuse is refused here,
before minutes of local training, with the flag and the key named. Saved resolved (every field, the
defaults filled in), so a spec runs the same even if a default changes later.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from service.errors import InvalidPrivacy, InvalidRequest
from service.privacy.secagg import SecAggSettings
from service.privacy.settings import DPSettings

PRIVACY_FLAG = "--privacy"
SECURE_FLAG = "--secure-aggregation"
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _typed_value(hint: Any, raw: object, flag: str, key: str) -> Any:
    """``raw`` (a string, or a value read back from a spec) as the field's type ``hint`` says."""
    text = raw.strip() if isinstance(raw, str) else str(raw)
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if text not in choices:
            raise ValueError(f"{flag} {key} must be one of {', '.join(choices)}, got {text!r}")
        return text
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        if text.lower() == "none":
            return None
        hint = next(kind for kind in typing.get_args(hint) if kind is not type(None))
    if hint is bool:
        if text.lower() not in (*TRUE, *FALSE):
            raise ValueError(f"{flag} {key} must be true or false, got {text!r}")
        return text.lower() in TRUE
    if hint is int:
        if not text.lstrip("-").isdigit():
            raise ValueError(f"{flag} {key} must be a whole number, got {text!r}")
        return int(text)
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{flag} {key} must be a number, got {text!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{flag} {key} must be finite, got {text!r}")
    return number


def _typed(settings: type, given: Mapping[str, object], flag: str) -> dict[str, Any]:
    """``given`` typed by the fields of dataclass ``settings``; ValueError naming an unknown key or a
    value of the wrong kind."""
    hints = typing.get_type_hints(settings)
    typed: dict[str, Any] = {}
    for key, raw in given.items():
        if key not in hints:
            raise ValueError(f"unknown {flag} key {key!r}; choose from {', '.join(hints)}")
        typed[key] = _typed_value(hints[key], raw, flag, key)
    return typed


def _flagged(message: str, fallback: str) -> str:
    """A service message (``privacy.clip must be ...``) with the flag in place of the body's name."""
    for name, flag in (("privacy.", PRIVACY_FLAG), ("secure_aggregation.", SECURE_FLAG)):
        if message.startswith(name):
            return f"{flag} {message.removeprefix(name)}"
    return f"{fallback}: {message}"


@dataclass(frozen=True)
class PrivacyChoice:
    """Differential privacy and secure aggregation, each None when off, else every setting resolved."""

    privacy: Mapping[str, Any] | None = None
    """Every ``DPSettings`` value (the given ones, the defaults for the rest)."""
    secure_aggregation: Mapping[str, Any] | None = None
    """Every ``SecAggSettings`` value."""
    given: tuple[str, ...] = ()
    """The keys asked for (``secure_aggregation.`` before the secure ones): what titles show."""

    @classmethod
    def of(
        cls, privacy: Mapping[str, object] | None, secure_aggregation: Mapping[str, object] | None
    ) -> PrivacyChoice:
        """From ``--privacy`` and ``--secure-aggregation``'s pairs (None: the flag not given); ValueError
        naming the flag and the key of a value the settings refuse."""
        dp = secure = None
        if privacy is not None:
            settings = DPSettings(**_typed(DPSettings, privacy, PRIVACY_FLAG))
            try:
                settings.check()
            except InvalidRequest as exc:
                raise ValueError(_flagged(exc.message, PRIVACY_FLAG)) from None
            dp = asdict(settings)
        if secure_aggregation is not None:
            if "threshold" not in secure_aggregation:
                raise ValueError(
                    f"{SECURE_FLAG} needs threshold=N: the shares needed to rebuild a dropped device's "
                    "secrets (at least 2, at most the participants per round)"
                )
            secure = asdict(SecAggSettings(**_typed(SecAggSettings, secure_aggregation, SECURE_FLAG)))
        given = (
            *sorted(privacy or ()),
            *(f"secure_aggregation.{k}" for k in sorted(secure_aggregation or ())),
        )
        return cls(dp, secure, given)

    @property
    def on(self) -> bool:
        return self.privacy is not None or self.secure_aggregation is not None

    def check_run(
        self,
        *,
        strategy: Mapping[str, Any],
        selection: Mapping[str, Any],
        devices: int,
        participants: int | None,
        rounds: int,
        stragglers: str,
    ) -> None:
        """The rounds' own checks of privacy (a strategy whose aggregate is the mean, a sampling the
        accountant knows, a threshold within the cohort, a budget the rounds fit in), run here so the
        comparison is refused before it starts; ValueError naming the flag. ``strategy`` and
        ``selection``: their choices' ``as_dict()``."""
        if not self.on:
            return
        from service.federated.selectors.base import SelectorSettings
        from service.federated.spec import RoundSpec
        from service.federated.strategies.base import StrategySettings

        spec = RoundSpec(
            model="-",
            devices=tuple(f"device-{i}" for i in range(devices)),
            rounds=rounds,
            participants=participants,
            aggregation=str(strategy["name"]),
            options=StrategySettings(**strategy["options"]),
            selection=str(selection["name"]),
            selection_options=SelectorSettings(**selection["options"]),
            stragglers=stragglers,  # type: ignore[arg-type]  # checked by RoundSpec.check
            privacy=None if self.privacy is None else DPSettings(**self.privacy),
            secure_aggregation=(
                None if self.secure_aggregation is None else SecAggSettings(**self.secure_aggregation)
            ),
        )
        try:
            spec.check()
        except InvalidPrivacy as exc:
            flags = [
                f for f, on in ((PRIVACY_FLAG, self.privacy), (SECURE_FLAG, self.secure_aggregation)) if on
            ]
            raise ValueError(_flagged(exc.message, " with ".join(flags))) from None

    def rounds_body(self) -> dict[str, Any]:
        """The rounds API's ``privacy`` and ``secure_aggregation``, every value explicit (none when off)."""
        body: dict[str, Any] = {}
        if self.privacy is not None:
            body["privacy"] = dict(self.privacy)
        if self.secure_aggregation is not None:
            body["secure_aggregation"] = dict(self.secure_aggregation)
        return body

    def describe(self) -> str:
        """``DP central (noise_multiplier=1.1, clip=1, delta=1e-05, rdp), SecAgg+ (threshold=3)``: the
        settings that say what a run's privacy is, and any other asked for; "" when off."""
        parts = []
        if self.privacy is not None:
            dp = self.privacy
            always = ("noise_multiplier", "clip", "delta")
            shown = [
                *always,
                *(k for k in self.given if k in dp and k not in (*always, "mode", "accountant")),
            ]
            values = ", ".join(f"{k}={_shown(dp[k])}" for k in shown)
            parts.append(f"DP {dp['mode']} ({values}, {dp['accountant']})")
        if self.secure_aggregation is not None:
            secure = self.secure_aggregation
            keys = [
                "threshold",
                *(k.split(".", 1)[1] for k in self.given if k.startswith("secure_aggregation.")),
            ]
            values = ", ".join(f"{k}={_shown(secure[k])}" for k in dict.fromkeys(keys))
            parts.append(f"SecAgg+ ({values})")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "privacy": None if self.privacy is None else dict(self.privacy),
            "secure_aggregation": None if self.secure_aggregation is None else dict(self.secure_aggregation),
            "given": list(self.given),
        }

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any] | None) -> PrivacyChoice:
        """Resolved again from what ``as_dict`` wrote (checked as a new choice is); None: no privacy (a
        spec saved before privacy existed)."""
        if saved is None:
            return cls()
        again = cls.of(saved.get("privacy"), saved.get("secure_aggregation"))
        return cls(again.privacy, again.secure_aggregation, tuple(saved.get("given", ())))


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
