"""What the robust strategies' tests share: a round of updates where 10 honest participants land near one
point and a few others send poisoned weights, collected and combined as a run would."""

from __future__ import annotations

import numpy as np

from service.federated.checkpoints import Weights
from service.federated.participants import Update
from service.federated.strategies import make
from service.federated.strategies.base import RoundContext, StrategySettings

HONEST = 10
DIMENSION = 50
START = {"w": np.zeros(DIMENSION, np.float32), "b": np.ones((2, 3), np.float32), "step": np.array(7)}
"""The global weights the round starts from."""


def context(momentum: float = 0.0, limit: int = 1 << 30) -> RoundContext:
    return RoundContext(
        1, 100, lambda: {"momentum": momentum}, lambda name, _: name, max_buffered_bytes=limit
    )


def update(device: str, weights: Weights, samples: int = 10, steps: int = 5) -> Update:
    return Update(device, samples, steps, None, None, weights)


def honest_round(seed: int = 0) -> list[Weights]:
    """Ten updates near ``START + 0.5`` (noise of 0.005 per weight)."""
    rng = np.random.default_rng(seed)
    return [
        {
            "w": (START["w"] + 0.5 + rng.normal(0, 0.005, DIMENSION)).astype(np.float32),
            "b": (START["b"] + 0.5 + rng.normal(0, 0.005, (2, 3))).astype(np.float32),
            "step": np.array(8),
        }
        for _ in range(HONEST)
    ]


def attacked(honest: list[Weights], attack: str) -> list[Weights]:
    """The honest updates, then: ``scaled`` two sending 100 times their delta; ``mixed`` two sending
    -4 times theirs (sign-flipped) and one 100 times."""
    factors = {"scaled": (100.0, 100.0), "mixed": (-4.0, -4.0, 100.0)}[attack]
    poisoned = []
    for factor, base in zip(factors, honest, strict=False):
        poisoned.append(
            {
                name: (START[name] + factor * (value - START[name])).astype(value.dtype)
                if value.dtype.kind == "f"
                else value
                for name, value in base.items()
            }
        )
    return honest + poisoned


def combined(name: str, updates: list[Weights], settings: StrategySettings | None = None) -> Weights:
    """The next global weights strategy ``name`` makes from ``updates`` (10 samples each, except the
    poisoned ones, which claim 100)."""
    strategy = make(name, None, settings)
    round_context = context()
    collected = strategy.collector(round_context)
    for i, weights in enumerate(updates):
        collected.add(update(f"d{i}", weights, samples=10 if i < HONEST else 100))
    new, _ = strategy.combine(START, collected, {}, round_context)
    return new


def honest_mean(updates: list[Weights]) -> Weights:
    return {name: np.mean([u[name] for u in updates[:HONEST]], axis=0) for name in ("w", "b")}


def distance(a: Weights, b: Weights) -> float:
    """The largest difference of any floating weight."""
    return max(float(np.max(np.abs(np.asarray(a[n], np.float64) - b[n]))) for n in ("w", "b"))
