"""One device's split as a function of its key alone (``device_split``), and many at once (``device_splits``).

See ``service.data.partition`` for the sampling decisions these share with ``partition``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from service.data.pools import ClassPools
from service.data.sampling import class_quotas, classes_of, draw, too_few
from service.data.shards import deal_shards, dealt_distributions, dealt_positions
from service.data.spec import DeviceSplit, PartitionSpec, check_classes_per_device, interest_row


def device_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of the device named ``key``, a function of ``(seed, key)`` alone, in any process.

    Its PCG64 state and (odd) increment are a BLAKE2b hash of both, not ``hash()`` (salted per process);
    setting them costs ~3 us, where ``default_rng([seed, key_hash])`` takes ~20 us, a fifth of a
    device's whole split.
    """
    rng = np.random.Generator(np.random.PCG64(0))
    _reseed(rng, seed, key)
    return rng


def _reseed(rng: np.random.Generator, seed: int, key: str) -> None:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=32).digest()
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(digest[:16], "little"),
            "inc": int.from_bytes(digest[16:], "little") | 1,
        },
        "has_uint32": 0,
        "uinteger": 0,
    }


class _Prior(NamedTuple):
    """What a device draws before its examples."""

    distribution: np.ndarray
    preferred: tuple[int, ...]
    dealt: np.ndarray | None = None
    """Shards: the positions in ``train_order`` of the examples dealt, shard after shard."""


def check_split(spec: PartitionSpec, pools: ClassPools) -> None:
    if spec.kind in ("interest", "shards"):
        check_classes_per_device(spec.classes_per_device, pools.num_classes)
    if spec.kind == "shards":
        k, size = spec.classes_per_device, spec.shard_size
        if pools.train_size // size < k:
            raise ValueError(
                f"shards: the train split's {pools.train_size} examples make {pools.train_size // size} "
                f"shards of {size}, fewer than the {k} distinct shards a device takes; "
                "ask for fewer examples or shards per device"
            )


def _prior(spec: PartitionSpec, pools: ClassPools, rng: np.random.Generator) -> _Prior:
    """The device's ``p_d`` and preferred classes; shards:, the shards it is dealt (after ``check_split``)."""
    if spec.kind == "shards":
        shards, drops = deal_shards(spec, pools, rng)
        dealt = dealt_positions(np.array([shards]), np.array([drops], dtype=np.int64), spec)
        distributions, preferred = dealt_distributions(dealt, spec, pools)
        return _Prior(distributions[0], preferred[0], dealt[0])
    return _Prior(*_distribution(spec, pools.num_classes, rng))


def _distribution(
    spec: PartitionSpec, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, ...]]:
    """One device's ``p_d`` and preferred classes, for iid, dirichlet and interest."""
    if spec.kind == "iid":
        return np.full(num_classes, 1.0 / num_classes), ()
    if spec.kind == "dirichlet":
        return rng.dirichlet(np.full(num_classes, spec.alpha)), ()
    return interest_row(spec, num_classes, rng)


def split_with(rng: np.random.Generator, spec: PartitionSpec, pools: ClassPools, index: int) -> DeviceSplit:
    """One device from ``rng``, class by class with ``draw``: ``partition``'s shards, and dense quotas.

    ``replace`` applies to the test draw only for shards: a device's shards are distinct, so its train
    indices are.
    """
    prior = _prior(spec, pools, rng)
    if prior.dealt is None:
        train_quotas = class_quotas(spec.train_per_device, prior.distribution)
        train = draw(pools.pools("train"), train_quotas, rng, replace=spec.replace, split="train")
    else:
        train = rng.permutation(pools.train_order[prior.dealt])
    test_quotas = class_quotas(spec.test_per_device, prior.distribution)
    test = draw(pools.pools("test"), test_quotas, rng, replace=spec.replace, split="test")
    return DeviceSplit(index, prior.distribution, train, test, prior.preferred)


DENSE = 4
"""A quota above ``1 / DENSE`` of its class's pool is drawn class by class (``draw``), not by redrawing
repeated picks, which would take many rounds as the quota nears the pool's size."""


def _reserve(drawn: int) -> int:
    """Uniforms kept per device for redrawing repeated picks: far more than quotas below ``1 / DENSE``
    of their pools need (a device that runs out is drawn class by class instead)."""
    return 32 + drawn // 4


def device_split(key: str, spec: PartitionSpec, pools: ClassPools) -> DeviceSplit:
    """The split of the device named ``key``: a function of ``(spec, key, pools)`` alone.

    ``spec.devices`` plays no part; ``index`` is 0. ValueError for a split the dataset cannot supply.
    """
    return device_splits([key], spec, pools)[0]


def device_splits(keys: Sequence[str], spec: PartitionSpec, pools: ClassPools) -> list[DeviceSplit]:
    """``device_split`` of each key, computed together: each the same as alone, in any company or order.

    Each device's generator (``device_rng``) draws its prior (``p_d``; shards: the shards dealt) and then
    one block of uniforms, in a fixed layout: one per drawn example, one shuffle key per example, a
    reserve for redraws. Everything else is arithmetic on those, done for all rows at once, so that the
    cost per device is a few numpy calls, not a few per class.

    Drawing: a pick is a uniform position in its class's range of ``pools.order`` (``floor(u * size)``).
    Without replacement, a position picked more than once is kept once and its extra picks are drawn
    again from the reserve, until none repeats: each class yields a uniform subset, since the procedure
    treats all of a class's positions alike. Train and test are then each shuffled by their keys.
    A device with a quota above ``1 / DENSE`` of its class, or whose reserve runs out, is drawn class by
    class with ``draw`` instead, from a fresh ``device_rng`` (still a function of its key alone).
    """
    check_split(spec, pools)
    drawn = spec.test_per_device + (0 if spec.kind == "shards" else spec.train_per_device)
    width = drawn + spec.train_per_device + spec.test_per_device + _reserve(drawn)
    rows = max(1, CHUNK_UNIFORMS // width)
    return [
        split
        for start in range(0, len(keys), rows)
        for split in _chunk(keys[start : start + rows], spec, pools)
    ]


CHUNK_UNIFORMS = 1 << 21
"""Uniforms drawn per chunk of ``device_splits`` (16 MB, with the chunk's other arrays a few times that)."""


def _chunk(keys: Sequence[str], spec: PartitionSpec, pools: ClassPools) -> list[DeviceSplit]:
    num_classes, n_train, n_test = pools.num_classes, spec.train_per_device, spec.test_per_device
    shards = spec.kind == "shards"
    drawn = n_test if shards else n_train + n_test
    streams = np.empty((len(keys), drawn + n_train + n_test + _reserve(drawn)))
    distributions = np.full((len(keys), num_classes), 1.0 / num_classes)  # iid: as ``_distribution``
    preferred: list[tuple[int, ...]] = [()] * len(keys)
    dealt: list[tuple[list[int], list[int]]] = []
    alpha = np.full(num_classes, spec.alpha)
    rng = np.random.Generator(np.random.PCG64(0))
    for row, key in enumerate(keys):  # the same draws as ``_prior`` makes from ``device_rng(seed, key)``
        _reseed(rng, spec.seed, key)
        if shards:
            dealt.append(deal_shards(spec, pools, rng))
        elif spec.kind == "dirichlet":
            distributions[row] = rng.dirichlet(alpha)
        elif spec.kind == "interest":
            distributions[row], preferred[row] = interest_row(spec, num_classes, rng)
        rng.random(out=streams[row])
    counts = np.zeros((len(keys), 2 * num_classes), dtype=np.int64)
    if shards:
        shard_ids, drops = (np.array(column, dtype=np.int64) for column in zip(*dealt, strict=True))
        positions_dealt = dealt_positions(shard_ids, drops, spec)
        distributions, preferred = dealt_distributions(positions_dealt, spec, pools)
    else:
        counts[:, :num_classes] = _quotas(n_train, distributions)
    counts[:, num_classes:] = _quotas(n_test, distributions)
    sizes = np.diff(pools.bounds)
    _refuse_short(keys, counts, sizes, spec.replace, num_classes)
    positions = _positions(counts, streams[:, :drawn], pools.bounds)  # train before test, class by class
    slow = np.zeros(len(keys), dtype=bool)
    if not spec.replace:
        slow = (counts * DENSE > sizes).any(axis=1)
        slow |= _deduplicate(positions, streams[:, drawn + n_train + n_test :], pools.bounds, ~slow)
    chosen = pools.order[np.hstack((positions_dealt, positions)) if shards else positions]
    shuffle = streams[:, drawn : drawn + n_train + n_test]
    train = _shuffled(chosen[:, :n_train], shuffle[:, :n_train])
    test = _shuffled(chosen[:, n_train:], shuffle[:, n_train:])
    return [
        split_with(device_rng(spec.seed, key), spec, pools, 0)
        if slow[row]
        else DeviceSplit(0, distributions[row], train[row], test[row], preferred[row])
        for row, key in enumerate(keys)
    ]


def _quotas(total: int, distributions: np.ndarray) -> np.ndarray:
    """``class_quotas`` of each row (the same counts), in a few calls for all rows."""
    exact = total * distributions / np.sum(distributions, axis=1, keepdims=True)
    counts = np.floor(exact).astype(np.int64)
    shortfall = total - counts.sum(axis=1, keepdims=True)
    by_remainder = np.argsort(-(exact - counts), axis=1, kind="stable")
    ranks = np.empty_like(by_remainder)
    np.put_along_axis(ranks, by_remainder, np.arange(distributions.shape[1])[None, :], axis=1)
    return counts + (ranks < shortfall)


def _refuse_short(
    keys: Sequence[str], counts: np.ndarray, sizes: np.ndarray, replace: bool, num_classes: int
) -> None:
    short = (counts > 0) & (sizes == 0) if replace else counts > sizes
    if short.any():
        row, c = (int(i) for i in np.argwhere(short)[0])
        split = "train" if c < num_classes else "test"
        raise too_few(c % num_classes, int(counts[row, c]), int(sizes[c]), split, keys[row])


def _positions(counts: np.ndarray, uniforms: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per row, ``counts[row, c]`` uniform positions in range ``c`` of ``bounds``, range after range."""
    rows = len(counts)
    starts = np.repeat(np.tile(bounds[:-1], rows), counts.ravel()).reshape(rows, -1)
    sizes = np.repeat(np.tile(np.diff(bounds), rows), counts.ravel()).reshape(rows, -1)
    return _uniform_at(starts, sizes, uniforms)


def _uniform_at(starts: np.ndarray, sizes: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    return starts + np.minimum((uniforms * sizes).astype(np.int64), sizes - 1)  # min: u * size may round up


def _deduplicate(
    positions: np.ndarray, reserve: np.ndarray, bounds: np.ndarray, active: np.ndarray
) -> np.ndarray:
    """Sort the ``active`` rows of ``positions`` in place, drawing repeated positions again till none repeats.

    A row's redraws take its ``reserve`` of uniforms in order (repeats in ascending position). Returns
    the rows whose reserve ran out (left unfinished).
    """
    exhausted = np.zeros(len(positions), dtype=bool)
    used = np.zeros(len(positions), dtype=np.int64)
    rows = np.flatnonzero(active)
    while len(rows):
        block = np.sort(positions[rows], axis=1)
        positions[rows] = block
        repeated = block[:, 1:] == block[:, :-1]
        dirty = repeated.any(axis=1)
        rows, block, repeated = rows[dirty], block[dirty], repeated[dirty]
        need = repeated.sum(axis=1)
        out = used[rows] + need > reserve.shape[1]
        if out.any():
            exhausted[rows[out]] = True
            rows, block, repeated, need = rows[~out], block[~out], repeated[~out], need[~out]
        r, j = np.nonzero(repeated)  # row by row, ascending
        rank = np.arange(len(r)) - np.repeat(np.cumsum(need) - need, need)  # the repeat's rank in its row
        uniforms = reserve[rows[r], used[rows[r]] + rank]
        classes = classes_of(block[r, j + 1], bounds)
        block[r, j + 1] = _uniform_at(bounds[classes], bounds[classes + 1] - bounds[classes], uniforms)
        used[rows] += need
        positions[rows] = block
    return exhausted


def _shuffled(values: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Each row of ``values`` in the order of its row of ``uniforms``.

    One int64 sort rather than an argsort of floats (several times slower): the uniforms' leading bits
    above each column's number, so that keys are distinct and the order is the same whatever the sort.
    """
    rows, width = values.shape
    column_bits = max(1, (width - 1).bit_length())
    keys = (uniforms * float(2 ** (63 - column_bits))).astype(np.int64) << column_bits
    keys |= np.arange(width)
    keys.sort(axis=1)
    keys &= (1 << column_bits) - 1
    keys += width * np.arange(rows)[:, None]
    return np.take(values, keys)
