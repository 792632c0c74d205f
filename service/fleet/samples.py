"""A device's own labelled samples, as a phone collects them: bounded, kept in its directory.

Each upload is one chunk file, ``samples/<sequence>-<count>.npz``, so adding costs what is added,
not what is stored, and counting reads no file. Past the capacity the oldest samples go first.
Nothing is cached in memory: thousands of devices keep their samples on disk until a job reads them.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.fleet.files import write_atomic

SAMPLES_DIR = "samples"


@dataclass(frozen=True)
class SampleStats:
    count: int
    capacity: int
    added: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class Chunk:
    path: Path
    sequence: int
    count: int

    @classmethod
    def parse(cls, path: Path) -> Chunk:
        sequence, count = path.stem.split("-")
        return cls(path, int(sequence), int(count))


def _length(arrays: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values())))


class SampleStore:
    """Chunks of arrays keyed by the training signature's input names; first dimension = samples."""

    def __init__(self, directory: Path, capacity: int) -> None:
        self.directory = directory / SAMPLES_DIR
        self.capacity = capacity
        self._lock = threading.Lock()

    def _chunks(self) -> list[Chunk]:
        if not self.directory.is_dir():
            return []
        return sorted((Chunk.parse(p) for p in self.directory.glob("*-*.npz")), key=lambda c: c.sequence)

    def _write(self, sequence: int, arrays: Mapping[str, np.ndarray]) -> Chunk:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path = self.directory / f"{sequence}-{_length(arrays)}.npz"
        write_atomic(path, buffer.getvalue(), durable=False)
        return Chunk(path, sequence, _length(arrays))

    @staticmethod
    def _read(chunk: Chunk) -> dict[str, np.ndarray]:
        with np.load(chunk.path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}

    def stats(self) -> SampleStats:
        with self._lock:
            return SampleStats(count=sum(c.count for c in self._chunks()), capacity=self.capacity)

    def add(self, arrays: Mapping[str, np.ndarray]) -> SampleStats:
        """Append samples (already checked against the signature); drop the oldest past capacity."""
        added = _length(arrays)
        dropped = max(0, added - self.capacity)
        if dropped:  # only the newest fit
            arrays = {name: value[dropped:] for name, value in arrays.items()}
        with self._lock:
            self.directory.mkdir(exist_ok=True)
            chunks = self._chunks()
            chunks.append(self._write(chunks[-1].sequence + 1 if chunks else 0, arrays))
            excess = sum(c.count for c in chunks) - self.capacity
            while excess > 0:
                oldest = chunks.pop(0)
                if oldest.count > excess:  # keep its newest part, under the same sequence number
                    kept = {name: value[excess:] for name, value in self._read(oldest).items()}
                    chunks.insert(0, self._write(oldest.sequence, kept))
                oldest.path.unlink()
                removed = min(oldest.count, excess)
                dropped += removed
                excess -= removed
            return SampleStats(sum(c.count for c in chunks), self.capacity, added, dropped)

    def load(self) -> dict[str, np.ndarray]:
        """Every stored sample, oldest first; an empty dict when there are none."""
        with self._lock:
            parts = [self._read(chunk) for chunk in self._chunks()]
        if not parts:
            return {}
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def clear(self) -> None:
        with self._lock:
            for chunk in self._chunks():
                chunk.path.unlink()
