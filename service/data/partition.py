"""Split a labelled dataset across simulated devices: IID, Dirichlet over labels, "interest" or shards.

Every device first gets a label distribution ``p_d``; its local train and local test data are then both
drawn from ``p_d`` (train from the train set, test from the test set), so a device is evaluated on the
same kind of data it trains on. ``shards`` (the pathological split of McMahan et al. 2017) turns this
around: a device is dealt ``k`` contiguous shards of the label-sorted train set, and ``p_d`` is the label
histogram of what it was dealt; its test data are then drawn from that ``p_d`` like the others'.

Sampling decisions, chosen so that the measured distributions are the intended ones:

* **Stratified quotas.** A device's class counts are ``n * p_d`` rounded by largest remainder, not a
  multinomial draw, so its train and test histograms match ``p_d`` (and each other) up to rounding.
* **Without replacement within a device** (the default): no example appears twice in one device's
  train split, nor twice in its test split. A quota larger than its class's pool raises ValueError;
  ``replace=True`` allows repeats instead.
* **Independent across devices.** Each device draws from the whole pool, so two devices may share
  examples, as two phones may see similar photos; that keeps any fleet size possible.

Two ways in, both pure numpy:

* ``partition(train_labels, test_labels, spec)``: the whole fleet from one generator seeded with
  ``spec.seed``, device after device (what ``fleet simulate`` uses; the same seed, the same partition).
* ``device_split(key, spec, pools)``: one device, whose generator is seeded from a stable hash of
  ``spec.seed`` and its ``key`` (its device ID) only, so its split is the same whichever other devices
  are assigned with it, in whatever order, in whatever process; ``device_splits`` computes many at
  once, each the same as alone. ``ClassPools`` holds what every call needs (per-class index pools, the
  label-sorted train order), built once per dataset.

Shards, in detail: the train set is sorted by label (stably, so a class keeps dataset order) and cut into
contiguous shards of ``ceil(train_per_device / k)`` examples (``k = classes_per_device``); the tail that
makes no whole shard is never dealt. A device takes ``k`` distinct shards at random. When
``train_per_device`` is not a multiple of ``k``, the first ``excess = k * shard_size - train_per_device``
(fewer than ``k``) of its shards each give up one example at random, so the total is exact and every
shard still contributes (at least one example; all of it, or all but one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

import numpy as np

PartitionKind = Literal["iid", "dirichlet", "interest", "shards"]
PARTITION_KINDS: tuple[str, ...] = get_args(PartitionKind)


@dataclass(frozen=True)
class PartitionSpec:
    """How to split: the kind, the fleet's size, per-device sizes and the kind's parameters."""

    kind: PartitionKind = "iid"
    devices: int = 10
    train_per_device: int = 500
    test_per_device: int = 100
    alpha: float = 0.5
    """Dirichlet concentration: small is skewed (few classes per device), large approaches IID."""
    classes_per_device: int = 2
    """Interest: how many classes each device prefers. Shards: how many shards each device is dealt."""
    interest_share: float = 0.9
    """Interest: the share of a device's data drawn from its preferred classes."""
    replace: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in PARTITION_KINDS:
            raise ValueError(f"unknown partition {self.kind!r}; choose one of {', '.join(PARTITION_KINDS)}")
        if self.devices < 1:
            raise ValueError("devices must be at least 1")
        if self.train_per_device < 1 or self.test_per_device < 1:
            raise ValueError("train_per_device and test_per_device must be at least 1")
        if not self.alpha > 0:
            raise ValueError("alpha must be positive")
        if self.classes_per_device < 1:
            raise ValueError("classes_per_device must be at least 1")
        if not 0.0 <= self.interest_share <= 1.0:
            raise ValueError("interest_share must be in [0, 1]")
        if self.kind == "shards" and self.train_per_device < self.classes_per_device:
            raise ValueError(
                f"shards: train_per_device {self.train_per_device} is fewer than classes_per_device "
                f"{self.classes_per_device} (the shards per device); every shard needs at least one example"
            )

    @property
    def shard_size(self) -> int:
        """Shards: examples per shard, ``ceil(train_per_device / classes_per_device)``."""
        return -(-self.train_per_device // self.classes_per_device)


@dataclass(frozen=True)
class DeviceSplit:
    """One device's share: its label distribution and its indices into the train and test sets."""

    index: int
    """The device's position in ``partition``'s list; 0 from ``device_split`` (the key names the device)."""
    label_distribution: np.ndarray
    train_indices: np.ndarray
    test_indices: np.ndarray
    preferred_classes: tuple[int, ...] = field(default=())
    """Interest: the chosen classes; shards: the classes of the dealt shards (sorted); empty otherwise."""


def label_distributions(
    spec: PartitionSpec, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Each device's label distribution (devices x classes, rows sum to 1) and preferred classes."""
    n = spec.devices
    if spec.kind == "iid":
        return np.full((n, num_classes), 1.0 / num_classes), [() for _ in range(n)]
    if spec.kind == "dirichlet":
        return rng.dirichlet(np.full(num_classes, spec.alpha), size=n), [() for _ in range(n)]
    if spec.kind == "shards":
        raise ValueError(
            "shards: a device's label distribution follows from the shards it is dealt; "
            "use partition or device_split"
        )
    k = spec.classes_per_device
    _check_classes_per_device(k, num_classes)
    rows, preferred = np.empty((n, num_classes)), []
    for d in range(n):
        rows[d], chosen = _interest_row(spec, num_classes, rng)
        preferred.append(chosen)
    return rows, preferred


def class_quotas(total: int, distribution: np.ndarray) -> np.ndarray:
    """Integer counts per class summing to ``total``, proportional to ``distribution`` (largest remainder)."""
    exact = total * np.asarray(distribution, dtype=np.float64) / np.sum(distribution)
    counts = np.floor(exact).astype(np.int64)
    shortfall = total - int(counts.sum())
    # Ties go to the lower class index: a stable sort keeps the rounding itself deterministic.
    counts[np.argsort(-(exact - counts), kind="stable")[:shortfall]] += 1
    return counts


def _check_classes_per_device(k: int, num_classes: int) -> None:
    if k > num_classes:
        raise ValueError(
            f"classes_per_device {k} exceeds the dataset's {num_classes} classes; "
            f"ask for at most {num_classes}"
        )


def _too_few(c: int, count: int, available: int, split: str, device: str | None = None) -> ValueError:
    where = f" in the {split} split" if split else ""
    of = f" (device {device!r})" if device is not None else ""
    return ValueError(
        f"class {c} needs {count} examples but has {available}{where}{of}; "
        "ask for fewer per device or sample with replacement"
    )


def draw(
    pools: list[np.ndarray],
    counts: np.ndarray,
    rng: np.random.Generator,
    *,
    replace: bool = False,
    split: str = "",
) -> np.ndarray:
    """``counts[c]`` indices from each class's pool, shuffled together; ``split`` names it in errors."""
    chosen = []
    for c, (pool, count) in enumerate(zip(pools, counts, strict=True)):
        if count == 0:
            continue
        if not replace and count > len(pool):
            raise _too_few(c, int(count), len(pool), split)
        chosen.append(rng.choice(pool, size=int(count), replace=replace))
    indices = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    return rng.permutation(indices)


def class_pools(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """The indices of each class, in dataset order."""
    return [np.flatnonzero(labels == c) for c in range(num_classes)]


@dataclass(frozen=True, eq=False)
class ClassPools:
    """A dataset's labels arranged for drawing: built once (``build``), shared by every ``device_split``.

    ``train_order`` is the train set's indices sorted by label (stably, so a class keeps dataset order):
    class ``c``'s pool is ``train_order[train_bounds[c]:train_bounds[c + 1]]``, and ``shards`` cuts this
    order. The same for the test set. ``order`` and ``bounds`` put the two end to end (``2 * num_classes``
    ranges: the train classes, then the test classes), so that a device's train and test draws are one
    draw. The arrays are read-only.
    """

    num_classes: int
    train_order: np.ndarray
    train_bounds: np.ndarray
    test_order: np.ndarray
    test_bounds: np.ndarray
    order: np.ndarray
    bounds: np.ndarray

    @classmethod
    def build(
        cls, train_labels: np.ndarray, test_labels: np.ndarray, num_classes: int | None = None
    ) -> ClassPools:
        """ValueError for labels that are not 1-D integers in ``[0, num_classes)``."""
        for name, labels in (("train", train_labels), ("test", test_labels)):
            if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) == 0:
                raise ValueError(f"the {name} labels must be a non-empty 1-D array of integers")
        low = min(int(train_labels.min()), int(test_labels.min()))
        high = max(int(train_labels.max()), int(test_labels.max()))
        num_classes = num_classes or high + 1
        if low < 0 or high >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}); found {low}..{high}")
        train_order, train_bounds = _sorted_by_label(train_labels, num_classes)
        test_order, test_bounds = _sorted_by_label(test_labels, num_classes)
        order = np.concatenate((train_order, test_order))
        bounds = np.concatenate((train_bounds, test_bounds[1:] + len(train_order)))
        arrays = (train_order, train_bounds, test_order, test_bounds, order, bounds)
        for array in arrays:
            array.setflags(write=False)
        return cls(num_classes, *arrays)

    @property
    def train_size(self) -> int:
        return len(self.train_order)

    @property
    def test_size(self) -> int:
        return len(self.test_order)

    def pools(self, split: Literal["train", "test"]) -> list[np.ndarray]:
        """Each class's indices into ``split``, in dataset order (what ``class_pools`` gives)."""
        order, bounds = (
            (self.train_order, self.train_bounds) if split == "train" else (self.test_order, self.test_bounds)
        )
        return [order[bounds[c] : bounds[c + 1]] for c in range(self.num_classes)]


def _sorted_by_label(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(labels, minlength=num_classes))))
    return order, bounds


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


def _check(spec: PartitionSpec, pools: ClassPools) -> None:
    if spec.kind in ("interest", "shards"):
        _check_classes_per_device(spec.classes_per_device, pools.num_classes)
    if spec.kind == "shards":
        k, size = spec.classes_per_device, spec.shard_size
        if pools.train_size // size < k:
            raise ValueError(
                f"shards: the train split's {pools.train_size} examples make {pools.train_size // size} "
                f"shards of {size}, fewer than the {k} distinct shards a device takes; "
                "ask for fewer examples or shards per device"
            )


def _prior(spec: PartitionSpec, pools: ClassPools, rng: np.random.Generator) -> _Prior:
    """The device's ``p_d`` and preferred classes; for shards, the shards it is dealt (``_check`` first)."""
    if spec.kind == "shards":
        shards, drops = _deal(spec, pools, rng)
        dealt = _dealt_positions(np.array([shards]), np.array([drops], dtype=np.int64), spec)
        distributions, preferred = _dealt_distributions(dealt, spec, pools)
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
    return _interest_row(spec, num_classes, rng)


def _deal(spec: PartitionSpec, pools: ClassPools, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Shards: which ``k`` distinct shards a device is dealt, in the order dealt, and, for each of the
    first ``k * shard_size - train_per_device``, the offset of the example it gives up.

    From one call for ``k + excess`` uniforms (``rng.choice`` costs ~15 us a device): the shards by a
    sparse Fisher-Yates shuffle of ``range(available)``, an ordered uniform sample.
    """
    k, size = spec.classes_per_device, spec.shard_size
    available, excess = pools.train_size // size, k * size - spec.train_per_device
    uniforms = rng.random(k + excess).tolist()
    moved: dict[int, int] = {}
    shards = []
    for i in range(k):
        j = i + int(uniforms[i] * (available - i))
        shards.append(moved.get(j, j))
        moved[j] = moved.get(i, i)
    return shards, [int(u * size) for u in uniforms[k:]]


def _dealt_positions(shards: np.ndarray, drops: np.ndarray, spec: PartitionSpec) -> np.ndarray:
    """Shards: each row's dealt positions in ``train_order``, shard after shard, for rows of ``_deal``."""
    rows, size = len(shards), spec.shard_size
    positions = shards[:, :, None] * size + np.arange(size)
    keep = np.ones(positions.shape, dtype=bool)
    keep[np.arange(rows)[:, None], np.arange(drops.shape[1]), drops] = False  # one from each of the first
    return positions[keep].reshape(rows, spec.train_per_device)


def _dealt_distributions(
    dealt: np.ndarray, spec: PartitionSpec, pools: ClassPools
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Shards: each row's label histogram (its ``p_d``) and the classes present, for rows of ``_deal``."""
    rows, num_classes = len(dealt), pools.num_classes
    classes = _classes_of(dealt, pools.train_bounds) + num_classes * np.arange(rows)[:, None]
    counts = np.bincount(classes.ravel(), minlength=rows * num_classes).reshape(rows, num_classes)
    present = [tuple(c for c, n in enumerate(row) if n) for row in counts.tolist()]
    return counts / spec.train_per_device, present


def _classes_of(positions: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    return np.searchsorted(bounds, positions, side="right") - 1


def _split_with(rng: np.random.Generator, spec: PartitionSpec, pools: ClassPools, index: int) -> DeviceSplit:
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
    _check(spec, pools)
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
            dealt.append(_deal(spec, pools, rng))
        elif spec.kind == "dirichlet":
            distributions[row] = rng.dirichlet(alpha)
        elif spec.kind == "interest":
            distributions[row], preferred[row] = _interest_row(spec, num_classes, rng)
        rng.random(out=streams[row])
    counts = np.zeros((len(keys), 2 * num_classes), dtype=np.int64)
    if shards:
        shard_ids, drops = (np.array(column, dtype=np.int64) for column in zip(*dealt, strict=True))
        positions_dealt = _dealt_positions(shard_ids, drops, spec)
        distributions, preferred = _dealt_distributions(positions_dealt, spec, pools)
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
        _split_with(device_rng(spec.seed, key), spec, pools, 0)
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
        raise _too_few(c % num_classes, int(counts[row, c]), int(sizes[c]), split, keys[row])


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
        classes = _classes_of(block[r, j + 1], bounds)
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


def _interest_row(
    spec: PartitionSpec, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, ...]]:
    k = spec.classes_per_device
    chosen = np.sort(rng.choice(num_classes, size=k, replace=False))
    if k == num_classes:
        row = np.full(num_classes, 1.0 / num_classes)
    else:
        row = np.full(num_classes, (1.0 - spec.interest_share) / (num_classes - k))
        row[chosen] = spec.interest_share / k
    return row, tuple(int(c) for c in chosen)


def partition(
    train_labels: np.ndarray, test_labels: np.ndarray, spec: PartitionSpec, num_classes: int | None = None
) -> list[DeviceSplit]:
    """Split per ``spec``: every device's local train and test indices, drawn from its own ``p_d``."""
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    rng = np.random.default_rng(spec.seed)
    if spec.kind == "shards":
        pools = ClassPools.build(train_labels, test_labels, num_classes)
        _check(spec, pools)
        return [_split_with(rng, spec, pools, d) for d in range(spec.devices)]
    distributions, preferred = label_distributions(spec, num_classes, rng)
    train_pools, test_pools = class_pools(train_labels, num_classes), class_pools(test_labels, num_classes)
    splits = []
    for d in range(spec.devices):
        p = distributions[d]
        train = draw(
            train_pools, class_quotas(spec.train_per_device, p), rng, replace=spec.replace, split="train"
        )
        test = draw(
            test_pools, class_quotas(spec.test_per_device, p), rng, replace=spec.replace, split="test"
        )
        splits.append(DeviceSplit(d, p, train, test, preferred[d]))
    return splits


def balanced_subset(labels: np.ndarray, size: int, seed: int, num_classes: int | None = None) -> np.ndarray:
    """A fixed, class-balanced subset of ``size`` indices without repeats: the global test set."""
    num_classes = num_classes or int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    counts = class_quotas(min(size, len(labels)), np.full(num_classes, 1.0 / num_classes))
    return draw(class_pools(labels, num_classes), counts, rng)


def label_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of each class among ``labels``."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return counts / max(1, counts.sum())
