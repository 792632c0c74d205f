"""A participant's update as bytes: what ``POST /v1/devices/{id}/participate`` answers, and how the
server of a sharded fleet's round reads it back (npz: ``w/<tensor>`` arrays, SCAFFOLD's ``c/<tensor>``,
a privatized update's vector as ``p`` instead of the weights, and a ``meta`` JSON)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from service.errors import InvalidTensor
from service.federated.participants import Update

WEIGHT_PREFIX = "w/"
CONTROL_PREFIX = "c/"
META = "meta"
PAYLOAD = "p"


def encode_update(update: Update) -> bytes:
    meta = {
        "device": update.device,
        "samples": update.samples,
        "steps": update.steps,
        "mean_loss": update.mean_loss,
        "local_accuracy": update.local_accuracy,
        "train_seconds": round(update.train_seconds, 6),
    }
    arrays = {f"{WEIGHT_PREFIX}{name}": value for name, value in (update.weights or {}).items()}
    arrays.update({f"{CONTROL_PREFIX}{name}": value for name, value in (update.control or {}).items()})
    if update.payload is not None:
        arrays[PAYLOAD] = update.payload
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{META: np.array(json.dumps(meta))})
    return buffer.getvalue()


def decode_update(body: bytes) -> Update:
    """The update in ``body``; InvalidTensor if it is not one (a participant answered something else)."""
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            meta = json.loads(str(archive[META]))
            weights, control = (
                {name[len(prefix) :]: archive[name] for name in archive.files if name.startswith(prefix)}
                for prefix in (WEIGHT_PREFIX, CONTROL_PREFIX)
            )
            payload = archive[PAYLOAD] if PAYLOAD in archive.files else None
        return Update(
            device=str(meta["device"]),
            samples=int(meta["samples"]),
            steps=int(meta["steps"]),
            mean_loss=meta["mean_loss"],
            local_accuracy=meta["local_accuracy"],
            weights=weights or None,
            train_seconds=float(meta["train_seconds"]),
            control=control or None,
            payload=payload,
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise InvalidTensor(f"the participant's answer is not an update: {exc}") from exc
