"""A device's own labelled samples, as a phone collects them: bounded, kept in its directory.

Each upload is one chunk file, ``samples/<sequence>-<count>.npz``, so adding costs what is added,
not what is stored, and counting reads no file. Past the capacity the oldest samples go first.
``samples/signature.json`` names the training signature they are inputs of: one per store.
Nothing is cached in memory: thousands of devices keep their samples on disk until a job reads them.
"""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import CorruptState, SamplesMismatch, StorageError
from service.fleet.files import read_json, write_atomic, write_json

SAMPLES_DIR = "samples"
MANIFEST = "signature.json"


@dataclass(frozen=True)
class SampleStats:
    count: int
    capacity: int
    signature: str | None
    """The training signature the samples are inputs of; None while the store is empty."""
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
        try:
            with np.load(chunk.path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CorruptState(f"samples chunk {chunk.path.name} cannot be read: {exc}") from exc

    def _signature(self) -> str | None:
        manifest = read_json(self.directory / MANIFEST)
        return None if manifest is None else str(manifest["signature"])

    def stats(self) -> SampleStats:
        with self._lock:
            chunks = self._chunks()
            signature = self._signature() if chunks else None
            return SampleStats(sum(c.count for c in chunks), self.capacity, signature)

    def add(self, signature: str, arrays: Mapping[str, np.ndarray]) -> SampleStats:
        """Append samples (already checked against ``signature``); drop the oldest past capacity."""
        added = _length(arrays)
        dropped = max(0, added - self.capacity)
        if dropped:  # only the newest fit
            arrays = {name: value[dropped:] for name, value in arrays.items()}
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"could not create {self.directory}: {exc}") from exc
            chunks = self._chunks()
            stored = self._signature() if chunks else None
            if stored is not None and stored != signature:
                raise SamplesMismatch(
                    f"the device holds samples of signature '{stored}'; "
                    f"clear them before adding samples of '{signature}'"
                )
            if stored is None:
                write_json(self.directory / MANIFEST, {"signature": signature, "inputs": sorted(arrays)})
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
            return SampleStats(sum(c.count for c in chunks), self.capacity, signature, added, dropped)

    def load(self) -> tuple[str | None, dict[str, np.ndarray]]:
        """The samples' signature and every sample, oldest first; (None, {}) when there are none."""
        with self._lock:
            chunks = self._chunks()
            signature = self._signature() if chunks else None
            parts = [self._read(chunk) for chunk in chunks]
        if not parts:
            return None, {}
        return signature, {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def clear(self) -> None:
        with self._lock:
            for chunk in self._chunks():
                chunk.path.unlink(missing_ok=True)
            (self.directory / MANIFEST).unlink(missing_ok=True)
