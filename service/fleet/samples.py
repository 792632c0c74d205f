"""A device's own labelled samples, as a phone collects them: bounded, kept in its directory.

Each upload is one chunk file, ``samples/<sequence>-<count>-<bytes>.npz``, so adding costs what is
added, not what is stored, and counting reads no file. Past either capacity (samples, bytes of their
arrays) the oldest samples go first. ``samples/signature.json`` names the training signature they are
inputs of: one per store. Nothing is cached in memory: thousands of devices keep their samples on
disk until a job reads them. A chunk or manifest that cannot be read is reported (CorruptState) and
goes with ``clear()``, which reads nothing.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import CorruptState, LimitExceeded, SamplesMismatch
from service.storage import read_json, shown, storage_error, write_atomic, write_json

log = logging.getLogger(__name__)

SAMPLES_DIR = "samples"
MANIFEST = "signature.json"
SAMPLE_CAPACITY = 10_000
"""Samples kept per device by default."""
SAMPLE_CAPACITY_BYTES = 64 * 1024 * 1024
"""Bytes of samples kept per device by default."""
CLEAR_REMEDY = "clear the device's samples"


@dataclass(frozen=True)
class SampleStats:
    count: int
    capacity: int
    signature: str | None
    """The training signature the samples are inputs of; None while the store is empty."""
    added: int = 0
    dropped: int = 0
    bytes: int = 0
    """Bytes of the stored samples' arrays (their files are a little larger)."""
    capacity_bytes: int = SAMPLE_CAPACITY_BYTES


@dataclass(frozen=True)
class Chunk:
    path: Path
    sequence: int
    count: int
    nbytes: int

    @classmethod
    def parse(cls, path: Path) -> Chunk | None:
        """The chunk a file name describes; None for a name that is not a chunk's."""
        try:
            fields = [int(part) for part in path.stem.split("-")]
        except ValueError:
            return None
        if len(fields) == 3:
            return cls(path, *fields)
        if len(fields) == 2:  # written before chunks carried their size: the file's size will do
            try:
                return cls(path, fields[0], fields[1], path.stat().st_size)
            except OSError:
                return None
        return None


def _length(arrays: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values())))


def _nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    return sum(int(value.nbytes) for value in arrays.values())


class SampleStore:
    """Chunks of arrays keyed by the training signature's input names; first dimension = samples."""

    def __init__(
        self,
        directory: Path,
        capacity: int = SAMPLE_CAPACITY,
        capacity_bytes: int = SAMPLE_CAPACITY_BYTES,
        root: Path | None = None,
    ) -> None:
        """``directory`` is the device's; ``root`` the data directory, that messages name files from."""
        self.directory = directory / SAMPLES_DIR
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self._root = root
        self._lock = threading.Lock()

    def _shown(self, path: Path) -> str:
        return shown(path, self._root)

    def _chunks(self) -> list[Chunk]:
        try:
            paths = list(self.directory.glob("*.npz"))
        except OSError as exc:
            raise storage_error(f"could not list {self._shown(self.directory)}", exc) from exc
        chunks = [chunk for chunk in map(Chunk.parse, paths) if chunk is not None]
        return sorted(chunks, key=lambda c: c.sequence)

    def _write(self, sequence: int, arrays: Mapping[str, np.ndarray]) -> Chunk:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        count, nbytes = _length(arrays), _nbytes(arrays)
        path = self.directory / f"{sequence}-{count}-{nbytes}.npz"
        write_atomic(path, buffer.getvalue(), durable=False, root=self._root)
        return Chunk(path, sequence, count, nbytes)

    def _read(self, chunk: Chunk) -> dict[str, np.ndarray]:
        name = self._shown(chunk.path)
        try:
            with np.load(chunk.path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except OSError as exc:
            raise storage_error(f"could not read {name}", exc) from exc
        except (ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise CorruptState(f"{name} cannot be read: {exc}; {CLEAR_REMEDY}") from exc
        if not arrays or any(value.ndim == 0 or len(value) != chunk.count for value in arrays.values()):
            raise CorruptState(f"{name} does not hold {chunk.count} samples of each input; {CLEAR_REMEDY}")
        return arrays

    def _signature(self) -> str | None:
        path = self.directory / MANIFEST
        try:
            manifest = read_json(path, root=self._root)
        except CorruptState as exc:
            raise CorruptState(f"{exc.message}; {CLEAR_REMEDY}") from exc
        if manifest is None:
            return None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("signature"), str):
            raise CorruptState(f"{self._shown(path)} does not name a signature; {CLEAR_REMEDY}")
        return manifest["signature"]

    def _stats(
        self, chunks: list[Chunk], signature: str | None, added: int = 0, dropped: int = 0
    ) -> SampleStats:
        return SampleStats(
            count=sum(c.count for c in chunks),
            capacity=self.capacity,
            signature=signature,
            added=added,
            dropped=dropped,
            bytes=sum(c.nbytes for c in chunks),
            capacity_bytes=self.capacity_bytes,
        )

    def stats(self) -> SampleStats:
        with self._lock:
            chunks = self._chunks()
            return self._stats(chunks, self._signature() if chunks else None)

    def _fitting(self, arrays: Mapping[str, np.ndarray]) -> int:
        """How many of the upload's samples (each the same size) fit within both capacities."""
        added = _length(arrays)
        per_sample = _nbytes(arrays) // added if added else 0
        if per_sample > self.capacity_bytes:
            raise LimitExceeded(
                f"one sample is {per_sample} bytes; a device keeps at most {self.capacity_bytes} bytes "
                "of samples (FLEET_SAMPLE_CAPACITY_BYTES)"
            )
        return min(self.capacity, self.capacity_bytes // per_sample) if per_sample else self.capacity

    def add(self, signature: str, arrays: Mapping[str, np.ndarray]) -> SampleStats:
        """Append samples (already checked against ``signature``); drop the oldest past either capacity."""
        added = _length(arrays)
        dropped = max(0, added - self._fitting(arrays))
        if dropped:  # only the newest fit
            arrays = {name: value[dropped:] for name, value in arrays.items()}
        with self._lock:
            try:
                self.directory.mkdir(exist_ok=True)  # not its parents: a deleted device stays deleted
            except OSError as exc:
                raise storage_error(f"could not create {self._shown(self.directory)}", exc) from exc
            chunks = self._chunks()
            stored = self._signature() if chunks else None
            if stored is not None and stored != signature:
                raise SamplesMismatch(
                    f"the device holds samples of signature '{stored}'; "
                    f"clear them before adding samples of '{signature}'"
                )
            if stored is None:
                write_json(
                    self.directory / MANIFEST,
                    {"signature": signature, "inputs": sorted(arrays)},
                    root=self._root,
                )
            if _length(arrays):
                chunks.append(self._write(chunks[-1].sequence + 1 if chunks else 0, arrays))
            dropped += self._drop_oldest(chunks)
            return self._stats(chunks, signature, added, dropped)

    def _drop_oldest(self, chunks: list[Chunk]) -> int:
        """Drop the oldest samples until both capacities hold; ``chunks`` is updated. Returns how many."""
        count, nbytes = sum(c.count for c in chunks), sum(c.nbytes for c in chunks)
        dropped = 0
        while chunks and (count > self.capacity or nbytes > self.capacity_bytes):
            oldest = chunks.pop(0)
            per_sample = oldest.nbytes / oldest.count if oldest.count else 0
            over_bytes = math.ceil((nbytes - self.capacity_bytes) / per_sample) if per_sample else 0
            drop = max(count - self.capacity, over_bytes)
            drop = oldest.count if drop <= 0 else min(drop, oldest.count)
            kept = None
            if drop < oldest.count:  # keep its newest part, under the same sequence number
                kept = {name: value[drop:] for name, value in self._read(oldest).items()}
                chunks.insert(0, self._write(oldest.sequence, kept))
            try:
                oldest.path.unlink()
            except OSError as exc:
                raise storage_error(f"could not remove {self._shown(oldest.path)}", exc) from exc
            count -= drop
            nbytes += (chunks[0].nbytes if kept is not None else 0) - oldest.nbytes
            dropped += drop
        return dropped

    def load(self) -> tuple[str | None, dict[str, np.ndarray]]:
        """The samples' signature and every sample, oldest first; (None, {}) when there are none."""
        with self._lock:
            chunks = self._chunks()
            signature = self._signature() if chunks else None
            parts = [self._read(chunk) for chunk in chunks]
        if not parts:
            return None, {}
        names = set(parts[0])
        if any(set(part) != names for part in parts):
            raise CorruptState(
                f"the chunks in {self._shown(self.directory)} hold different inputs; {CLEAR_REMEDY}"
            )
        return signature, {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def clear(self) -> None:
        """Remove every sample and the manifest, reading none of them: the way out of a corrupt store."""
        with self._lock:
            try:
                entries = list(self.directory.iterdir()) if self.directory.is_dir() else []
                for path in entries:
                    if path.suffix == ".npz" or path.name == MANIFEST or ".tmp-" in path.name:
                        path.unlink(missing_ok=True)
            except OSError as exc:
                raise storage_error(f"could not clear {self._shown(self.directory)}", exc) from exc
