"""Samples of active jobs kept in memory between their slices, within a byte budget.

A job whose samples were dropped reads them again at its next turn (``service.fleet.job_run``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

SAMPLE_CACHE_BYTES = 128 * 1024 * 1024


class SampleCache:
    """Samples of active jobs kept between slices, least recently used out past a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._sets: OrderedDict[Hashable, dict[str, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(samples: dict[str, np.ndarray]) -> int:
        return sum(a.nbytes for a in samples.values())

    def get(self, run: Hashable) -> dict[str, np.ndarray] | None:
        with self._lock:
            samples = self._sets.get(run)
            if samples is not None:
                self._sets.move_to_end(run)
            return samples

    def put(self, run: Hashable, samples: dict[str, np.ndarray]) -> None:
        size = self._size(samples)
        with self._lock:
            self._discard(run)
            if size > self.budget:
                return
            self._sets[run] = samples
            self._bytes += size
            while self._bytes > self.budget:
                _, dropped = self._sets.popitem(last=False)
                self._bytes -= self._size(dropped)

    def discard(self, run: Hashable) -> None:
        with self._lock:
            self._discard(run)

    def _discard(self, run: Hashable) -> None:
        dropped = self._sets.pop(run, None)
        if dropped is not None:
            self._bytes -= self._size(dropped)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes
