"""What callers run on a device: the signatures they may feed, its samples, and steps of any signature.

A training step is counted in the device's record and loss history (``Ledger``), and every step of a
profiled device advances its phone's clock (``Phone``). ``save`` and ``restore`` work on the device's
own checkpoint (``Checkpoints``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from service.errors import InvalidTensor
from service.fleet.checkpoints import Checkpoints
from service.fleet.ledger import Ledger
from service.fleet.phone import Phone
from service.fleet.record import HistorySource, scalar_loss
from service.fleet.samples import SampleStats, SampleStore
from service.fleet.stats import FleetStats
from service.fleet.weights import CHECKPOINT_SIGNATURES
from service.model.names import CORRECTION_PREFIX, GLOBAL_PREFIX
from service.runtime import ModelInterpreter, SignatureSpec

TRAINING_SIGNATURES = frozenset({"train", "train_prox", "train_scaffold"})
"""Signatures that count as a training step: ``train`` and the strategies' variants of it."""
PER_STEP_INPUTS = (GLOBAL_PREFIX, CORRECTION_PREFIX, "mu")
"""Inputs of the variants that are the same at every step (not the batch's): the batch size is not theirs."""


def batch_size(checked: Mapping[str, np.ndarray]) -> int:
    """The batch a call ran: the first batched input's length, past a variant's per-step inputs."""
    return next(
        (len(v) for k, v in checked.items() if np.ndim(v) > 0 and not k.startswith(PER_STEP_INPUTS)), 1
    )

class CallsOwner(Protocol):
    """What the calls use of their device (``service.fleet.device.Device``)."""

    lock: threading.Lock
    samples: SampleStore
    stats: FleetStats | None
    weights_changed: bool

    def require_live(self) -> None: ...

    def live_interpreter(self) -> ModelInterpreter: ...


class Calls:
    """A device's calls: each takes the device's lock, so calls on one device run one at a time."""

    __slots__ = ("_checkpoints", "_device", "_ledger", "_phone")

    def __init__(self, device: CallsOwner, ledger: Ledger, phone: Phone, checkpoints: Checkpoints) -> None:
        self._device = device
        self._ledger = ledger
        self._phone = phone
        self._checkpoints = checkpoints

    def callable_signature(self, signature: str) -> SignatureSpec:
        """The spec of a signature callers may feed: not a checkpoint one, no string inputs. Blocking
        the first time (``Device.load()``)."""
        if signature in CHECKPOINT_SIGNATURES:
            raise InvalidTensor(
                f"signature '{signature}' works on the device's own checkpoint; it takes no inputs"
            )
        spec = self._ledger.load().signature(signature)
        if spec.string_inputs:
            raise InvalidTensor(
                f"signature '{signature}' takes string input(s) {[s.name for s in spec.string_inputs]}; "
                "string inputs are refused because a model can use them as file paths"
            )
        return spec

    # -- samples -----------------------------------------------------------------------------

    def add_samples(self, signature: str, inputs: Mapping[str, np.ndarray]) -> SampleStats:
        """Keep labelled samples (inputs of a training signature) in the device's own store.

        Every input must be a batch (a first dimension, the same for all): the store keeps samples,
        not tensors. Under the device's lock, so a deleted device's store is never touched.
        """
        checked = self.callable_signature(signature).check(inputs)
        sizes = {name: value.shape[0] if value.ndim else None for name, value in checked.items()}
        if not sizes or None in sizes.values() or len(set(sizes.values())) > 1:
            raise InvalidTensor(
                f"samples of signature '{signature}' must be batches with one first dimension for every "
                f"input; got {sizes or 'no inputs'}"
            )
        device = self._device
        with device.lock:
            device.require_live()
            return device.samples.add(signature, checked)

    def sample_stats(self) -> SampleStats:
        device = self._device
        with device.lock:
            device.require_live()
            return device.samples.stats()

    def clear_samples(self) -> None:
        device = self._device
        with device.lock:
            device.require_live()
            device.samples.clear()

    # -- steps -------------------------------------------------------------------------------

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], source: HistorySource = "train"
    ) -> dict[str, np.ndarray]:
        """Run any signature on checked inputs. ``save``/``restore`` use the device's own checkpoint.

        ``train`` (and a job's training signature, ``source="job"``) counts as a training step. Such
        a step writes nothing: everything that can fail (activation, checking the history) fails before
        the interpreter runs, so a call either applies its step and counts it, or does neither.
        """
        if signature in CHECKPOINT_SIGNATURES:
            if inputs:
                raise InvalidTensor(
                    f"signature '{signature}' takes no inputs here: the service passes the device's own "
                    "checkpoint path"
                )
            return self._checkpoints.save() if signature == "save" else self._checkpoints.restore()
        checked = self.callable_signature(signature).check(inputs)
        training = signature in TRAINING_SIGNATURES or source == "job"
        device, ledger = self._device, self._ledger
        with device.lock:
            interpreter = device.live_interpreter()
            if training:
                ledger.check_history()
            # Only "infer" is known to leave weights alone; any other signature may change them.
            device.weights_changed |= signature != "infer"
            outputs = interpreter.run(signature, checked)
            record = ledger.read_record()  # in memory: the activation read it
            if record.profile is not None:  # the phone's time for the batch
                batch = batch_size(checked)
                compute = record.profile.train_seconds if training else record.profile.infer_seconds
                self._phone.advance(compute(batch))
            if training:
                record.train_steps += 1
                if device.stats is not None:
                    device.stats.train_steps.inc()
                record.last_loss = scalar_loss(outputs)
                if record.last_loss is not None:
                    ledger.add_step(
                        {
                            "step": record.train_steps,
                            "loss": record.last_loss,
                            "source": source,
                            "at": time.time(),
                        }
                    )
                ledger.record_dirty = True
            return outputs
