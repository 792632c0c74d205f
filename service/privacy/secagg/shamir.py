"""Shamir's secret sharing over the prime field of ``2**521 - 1`` (a Mersenne prime: any 32-byte secret
fits in one element). A share is ``(x, f(x))`` for a random polynomial ``f`` of degree ``t - 1`` with
``f(0)`` the secret; any ``t`` shares rebuild it by Lagrange interpolation at 0, fewer tell nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

PRIME = 2**521 - 1
ELEMENT_BYTES = 66
"""Bytes of one field element (521 bits, rounded up)."""
_DRAW_BYTES = 80
"""Random bytes per coefficient: 640 bits reduced mod the 521-bit prime, a bias below 2**-119."""


def split(
    secret: bytes, threshold: int, xs: Sequence[int], random_bytes: Callable[[int], bytes]
) -> list[tuple[int, int]]:
    """``secret`` as one share per ``x`` in ``xs`` (distinct, nonzero); ``random_bytes(n)`` draws the
    polynomial's coefficients (seeded in this simulation)."""
    value = int.from_bytes(secret, "big")
    if value >= PRIME:
        raise ValueError("a secret must be below the field's prime")
    if threshold < 1 or threshold > len(xs):
        raise ValueError(f"cannot make {len(xs)} shares with threshold {threshold}")
    pool = random_bytes(_DRAW_BYTES * (threshold - 1))
    coefficients = [value] + [
        int.from_bytes(pool[i * _DRAW_BYTES : (i + 1) * _DRAW_BYTES], "big") % PRIME
        for i in range(threshold - 1)
    ]
    shares = []
    for x in xs:
        y = 0
        for coefficient in reversed(coefficients):
            y = (y * x + coefficient) % PRIME
        shares.append((x, y))
    return shares


def combine(shares: Sequence[tuple[int, int]], size: int = 32) -> bytes:
    """The secret (``size`` bytes) the shares' polynomial holds at 0; needs at least ``threshold`` shares
    with distinct ``x`` (more are fine, fewer give a wrong answer: callers count first)."""
    xs = [x for x, _ in shares]
    if len(set(xs)) != len(xs):
        raise ValueError("shares must have distinct x")
    numerator_total, denominator_total = 0, 1
    for i, (xi, yi) in enumerate(shares):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        # a/b + c/d = (ad + cb) / bd: one inversion for the whole sum
        numerator_total = (numerator_total * denominator + yi * numerator * denominator_total) % PRIME
        denominator_total = denominator_total * denominator % PRIME
    value = numerator_total * pow(denominator_total, -1, PRIME) % PRIME
    if value >= 1 << (8 * size):
        raise ValueError("the shares do not hold a secret of that size (too few, or tampered)")
    return value.to_bytes(size, "big")


def encode(value: int) -> bytes:
    return value.to_bytes(ELEMENT_BYTES, "big")


def decode(data: bytes) -> int:
    return int.from_bytes(data, "big")
