"""What a device keeps on disk, by file, and the record and history as read back from it.

Everything durable about a device is in its directory (``data_dir/devices/<id>/``), so that any
process sharing the data directory can take the device over: these are the names and shapes of
those files. ``service.fleet.device`` holds the live part (interpreter, lock, residency).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from service.errors import CorruptState, InvalidProfile
from service.profiles import DeviceProfile, parse_profile
from service.storage import shown, storage_error

RECORD = "device.json"
HISTORY = "history.jsonl"
"""The loss history: one JSON line per training step, appended (``storage.append``)."""
LEGACY_HISTORY = "history.json"
"""The loss history as earlier versions wrote it (one JSON list); read once, replaced by ``HISTORY``."""
CHECKPOINT = "checkpoint.ckpt"
SPILL = "spill.ckpt"
HANDOVER = "handover.ckpt"
INCOMING = "incoming.ckpt"
"""A private copy of weights the device adopts (a model version), removed once restored."""
OUTGOING = "outgoing.ckpt"
"""The device's weights written for the server to read (a federated update), removed once read."""
TRASH = "trash"
"""``data_dir/trash/``: deleted devices' directories, moved there in one rename, then removed."""


def remove_file(path: Path, data_dir: Path) -> None:
    """Remove one of a device's files if it is there; StorageError (naming it from ``data_dir``) if not."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise storage_error(f"could not remove {shown(path, data_dir)}", exc) from exc


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class DeviceRecord:
    id: str
    model: str
    created_at: str
    train_steps: int = 0
    last_loss: float | None = None
    profile: DeviceProfile | None = None
    """What phone the device simulates (``service.profiles``); None: an ideal one, with no clock."""
    clock: float = 0.0
    """Simulated seconds its operations took, by its profile (``DeviceProfile.train_seconds`` etc.)."""

    def to_json(self) -> dict[str, object]:
        value: dict[str, object] = {
            "id": self.id,
            "model": self.model,
            "created_at": self.created_at,
            "train_steps": self.train_steps,
            "last_loss": self.last_loss,
        }
        if self.profile is not None:
            value["profile"] = self.profile.describe()
            value["clock"] = self.clock
        return value

    @classmethod
    def parse(cls, device_id: str, value: object, name: str) -> DeviceRecord:
        """The record in ``value`` (``device.json``'s JSON; ``name`` for messages), else CorruptState.

        The directory names the device: an ``id`` that differs (a copied directory) is overridden.
        Fields this version does not know (a newer one wrote them) are ignored.
        """
        if not isinstance(value, dict):
            raise CorruptState(f"{name} is not a device record: it holds a {type(value).__name__}")
        try:
            record = cls(**{key: item for key, item in value.items() if key in cls.__dataclass_fields__})
        except TypeError as exc:  # missing fields
            raise CorruptState(f"{name} is not a device record: {exc}") from exc
        wrong = [
            field
            for field, ok in (
                ("model", isinstance(record.model, str) and record.model != ""),
                ("created_at", isinstance(record.created_at, str)),
                ("train_steps", isinstance(record.train_steps, int) and is_number(record.train_steps)),
                ("last_loss", record.last_loss is None or is_number(record.last_loss)),
            )
            if not ok
        ]
        if wrong or record.train_steps < 0:
            raise CorruptState(f"{name} is not a device record: bad {', '.join(wrong or ['train_steps'])}")
        if record.profile is not None:
            try:
                record.profile = parse_profile(record.profile)
            except InvalidProfile as exc:
                raise CorruptState(f"{name} holds a profile that cannot be read: {exc.message}") from exc
            if not is_number(record.clock) or not 0 <= record.clock < math.inf:
                raise CorruptState(f"{name} is not a device record: bad clock")
            record.clock = float(record.clock)
        else:
            record.clock = 0.0
        record.id = device_id
        return record


@dataclass(frozen=True)
class DeviceInfo:
    id: str
    model: str | None
    """None, like ``created_at`` and ``train_steps``, when the record cannot be read (see ``problem``)."""
    created_at: str | None
    resident: bool
    train_steps: int | None
    last_loss: float | None
    has_checkpoint: bool
    checkpoint_saved_at: str | None
    checkpoint_bytes: int | None
    has_spill: bool
    problem: str | None = None
    """What is wrong with the device's files and the way out; None when nothing is known to be."""
    profile: dict[str, object] | None = None
    """The profile's ``describe()``; None for an unprofiled device (or an unreadable record)."""
    clock: float | None = None
    """Simulated seconds its operations took; None when the record cannot be read."""

    @classmethod
    def of(
        cls,
        device_id: str,
        record: DeviceRecord | None,
        checkpoint: os.stat_result | None,
        *,
        resident: bool,
        has_spill: bool,
        problems: list[str],
    ) -> DeviceInfo:
        """The info of a device with ``record`` (None: unreadable) and ``checkpoint`` (its stat; None:
        no checkpoint); ``problems`` are what is wrong with its files."""
        return cls(
            id=device_id,
            model=record.model if record else None,
            created_at=record.created_at if record else None,
            resident=resident,
            train_steps=record.train_steps if record else None,
            last_loss=record.last_loss if record else None,
            has_checkpoint=checkpoint is not None,
            checkpoint_saved_at=(
                datetime.fromtimestamp(checkpoint.st_mtime, UTC).isoformat(timespec="milliseconds")
                if checkpoint
                else None
            ),
            checkpoint_bytes=checkpoint.st_size if checkpoint else None,
            has_spill=has_spill,
            problem=" | ".join(problems) or None,
            profile=record.profile.describe() if record and record.profile else None,
            clock=record.clock if record else None,
        )


HISTORY_LIMIT = 10_000
"""Loss history entries kept per device."""
HISTORY_COMPACT_LINES = 2 * HISTORY_LIMIT
"""Lines past which the history file is rewritten with its last HISTORY_LIMIT entries."""
HistorySource = Literal["train", "job", "round"]
HistoryEntry = dict[str, object]


def is_history_entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("step"), int)
        and is_number(entry.get("loss"))
        and isinstance(entry.get("source"), str)
        and is_number(entry.get("at"))
        and 0 <= entry["at"] < LATEST_TIME
    )


LATEST_TIME = 253402300800.0
"""The start of the year 10000 in Unix seconds: any later "at" is no time a step ran at."""


def scalar_loss(outputs: Mapping[str, np.ndarray]) -> float | None:
    """The step's loss: the ``loss`` output, else the only output when it is a scalar; None if
    there is none or it is not finite (a diverged step has no loss worth recording)."""
    value = outputs.get("loss")
    if value is None and len(outputs) == 1:
        value = next(iter(outputs.values()))
    if value is None or np.size(value) != 1:
        return None
    loss = float(np.asarray(value).reshape(()))
    return loss if math.isfinite(loss) else None
