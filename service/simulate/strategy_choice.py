"""The strategy and the client selection a comparison's rounds run with, resolved in full.

Every name comes from the registries (``service.federated.strategies``, ``service.federated.selectors``),
so a strategy or a selector added there is one ``fleet simulate`` takes too. Settings are resolved to
every value the run uses (the strategy's server-optimizer defaults and the settings' defaults filled in),
so a saved spec says exactly what ran and runs the same even if a default changes later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

SERVER_FIELDS: Mapping[str, str] = {
    "learning_rate": "server_learning_rate",
    "momentum": "server_momentum",
    "beta1": "beta1",
    "beta2": "beta2",
    "tau": "tau",
}
"""The server optimizer's settings and their names in the rounds API's body."""


def parse_assignments(pairs: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``["mu=0.1", ...]`` as ``{"mu": "0.1"}``; ValueError naming a pair without ``=``."""
    found: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} takes KEY=VALUE, got {pair!r}")
        found[key.strip().replace("-", "_")] = value.strip()
    return found


def _typed(settings: type, given: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``given`` (strings or values) typed by the fields of dataclass ``settings``; ValueError naming an
    unknown key or a value that is not a finite number."""
    kinds = {f.name: f.default for f in fields(settings)}
    typed: dict[str, Any] = {}
    for key, value in given.items():
        if key not in kinds:
            raise ValueError(f"unknown {what} {key!r}; choose from {', '.join(kinds)}")
        if kinds[key] is None and (value is None or str(value).lower() == "none"):
            typed[key] = None
            continue
        number = int(value) if isinstance(kinds[key], int) and str(value).lstrip("-").isdigit() else None
        try:
            typed[key] = number if number is not None else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} {key} must be a number, got {value!r}") from None
        if isinstance(kinds[key], int) and not isinstance(typed[key], int):
            raise ValueError(f"{what} {key} must be a whole number, got {value!r}")
        if not math.isfinite(typed[key]):
            raise ValueError(f"{what} {key} must be finite, got {value!r}")
    return typed


@dataclass(frozen=True)
class StrategyChoice:
    """A strategy by name, its own settings and its server optimizer's, every one resolved."""

    name: str
    options: Mapping[str, Any]
    """Every ``StrategySettings`` value (the given ones, the defaults for the rest)."""
    server: Mapping[str, Any]
    """Every ``ServerOptimizer`` value (the strategy's defaults, then the given ones)."""
    given: tuple[str, ...] = ()
    """The options and server settings asked for (the rest are defaults): what titles show."""

    @classmethod
    def of(cls, name: str, options: Mapping[str, Any], server: Mapping[str, Any]) -> StrategyChoice:
        """Strategy ``name`` with ``options`` (``StrategySettings`` fields) and ``server``
        (``ServerOptimizer`` fields but ``kind``), checked by the strategy itself; ValueError or
        InvalidRequest when not usable."""
        from service.federated.strategies import NAMES, make, server_defaults
        from service.federated.strategies.base import ServerOptimizer, StrategySettings

        if name not in NAMES:
            raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(NAMES)}")
        settings = StrategySettings(**_typed(StrategySettings, options, "strategy option"))
        unknown = sorted(set(server) - set(SERVER_FIELDS))
        if unknown:
            raise ValueError(f"unknown server setting {unknown[0]!r}; choose from {', '.join(SERVER_FIELDS)}")
        typed = _typed(ServerOptimizer, server, "server setting")
        optimizer = replace(server_defaults(name), **{k: v for k, v in typed.items() if v is not None})
        make(name, optimizer, settings)
        resolved = asdict(optimizer)
        resolved.pop("kind")
        given = tuple(sorted({*options, *(k for k, v in server.items() if v is not None)}))
        return cls(name, asdict(settings), resolved, given)

    def rounds_body(self) -> dict[str, Any]:
        """The rounds API's ``aggregation``, server settings and ``options``, every value explicit."""
        return {
            "aggregation": self.name,
            **{SERVER_FIELDS[k]: v for k, v in self.server.items()},
            "options": dict(self.options),
        }

    def describe(self) -> str:
        """``fedprox (proximal_mu=0.1)``: the name and the settings asked for."""
        values = {**self.options, **self.server}
        shown = ", ".join(
            f"{k}={values[k]:g}" if isinstance(values[k], float) else f"{k}={values[k]}" for k in self.given
        )
        return f"{self.name} ({shown})" if shown else self.name

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "options": dict(self.options),
            "server": dict(self.server),
            "given": list(self.given),
        }

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> StrategyChoice:
        """Resolved again from what ``as_dict`` wrote (so it is checked as a new choice would be)."""
        again = cls.of(str(saved["name"]), dict(saved["options"]), dict(saved["server"]))
        return replace(again, given=tuple(saved.get("given", ())))


@dataclass(frozen=True)
class SelectionChoice:
    """A client selector by name and its settings, every one resolved."""

    name: str
    options: Mapping[str, Any]
    given: tuple[str, ...] = ()

    @classmethod
    def of(cls, name: str | None, options: Mapping[str, Any]) -> SelectionChoice:
        from service.federated.selectors import DEFAULT, NAMES, make
        from service.federated.selectors.base import SelectorSettings

        name = name or DEFAULT
        if name not in NAMES:
            raise ValueError(f"unknown selection {name!r}; choose one of {', '.join(NAMES)}")
        settings = SelectorSettings(**_typed(SelectorSettings, options, "selection option"))
        make(name, settings)
        return cls(name, asdict(settings), tuple(sorted(options)))

    def rounds_body(self) -> dict[str, Any]:
        return {"selection": self.name, "selection_options": dict(self.options)}

    def describe(self) -> str:
        shown = ", ".join(f"{k}={self.options[k]}" for k in self.given)
        return f"{self.name} ({shown})" if shown else self.name

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options), "given": list(self.given)}

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> SelectionChoice:
        again = cls.of(str(saved["name"]), dict(saved["options"]))
        return replace(again, given=tuple(saved.get("given", ())))
