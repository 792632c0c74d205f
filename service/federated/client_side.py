"""A participant's side of the strategies that ask more of it than FedAvg (``ClientTask``): the extra
inputs of its training signature, and what it keeps and sends after training.

- FedProx: ``train_prox`` is fed ``mu`` and the round's global weights (``global_<weight>``) at every
  step: the proximal term's gradient ``mu * (w - global)`` is the model's to apply.
- SCAFFOLD (option II of Karimireddy et al. 2020, as NIID-Bench implements it): ``train_scaffold`` is fed
  ``correction_<weight> = c - c_i`` at every step, ``c`` the server's control variate (published by the
  run) and ``c_i`` the device's own, kept in ``CONTROL_FILE`` under the device's directory (zeros at
  its first round of a run). After ``K`` steps from global weights ``x`` to ``y``, with the model's
  learning rate ``lr``: ``c_i+ = c_i - c + (x - y) / (K * lr)``; the device keeps ``c_i+`` and sends
  ``c_i+ - c_i``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.errors import InvalidRequest
from service.federated.checkpoints import Weights, read_weights, same_layout, write_weights
from service.federated.task import ClientTask
from service.model.names import CORRECTION_PREFIX, GLOBAL_PREFIX

CONTROL_FILE = "scaffold_control.ckpt"
"""The device's SCAFFOLD control variate ``c_i``, beside its checkpoint (tensors ``<run ID>/<weight>``)."""
PUBLISHED_DIR = "published"
"""Where a run publishes what its participants read (``data_dir/published/<name>.ckpt``)."""
PUBLISHED_NAME = re.compile(r"[0-9a-f]{12}-[a-z]{1,16}-[0-9]{1,6}")
"""A published name: the run's ID, what it is, the round. Anything else is refused before it becomes a
path: a participate call may come from any devices key."""


def published_path(data_dir: Path, name: str) -> Path:
    """Where the published tensors ``name`` are; InvalidRequest for a name no run gives."""
    if not PUBLISHED_NAME.fullmatch(name):
        raise InvalidRequest(f"control {name!r} is not the name of tensors a round published")
    return data_dir / PUBLISHED_DIR / f"{name}.ckpt"


@dataclass(frozen=True)
class Prepared:
    """A participant's extra training inputs, and (SCAFFOLD) what it needs after training."""

    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    control: str | None = None
    global_weights: Weights | None = None
    server_control: Weights | None = None
    own_control: Weights | None = None
    directory: Path | None = None
    data_dir: Path | None = None

    def finish_control(self, trained: Weights, steps: int, learning_rate: float, durable: bool) -> Weights:
        """SCAFFOLD after training: keep ``c_i+`` in the device's directory and return ``c_i+ - c_i``."""
        assert self.control is not None and self.server_control is not None
        assert self.own_control is not None and self.global_weights is not None and self.directory
        if steps < 1 or not learning_rate > 0:
            raise InvalidRequest(
                f"SCAFFOLD needs at least one local step and a positive learning rate (got {steps} "
                f"steps, learning rate {learning_rate})"
            )
        run = _run_of(self.control)
        new: Weights = {}
        change: Weights = {}
        for name, server in self.server_control.items():
            own = self.own_control[name]
            moved = np.subtract(self.global_weights[name], trained[name], dtype=np.float64)
            value = own - server.astype(np.float64) + moved / (steps * learning_rate)
            new[f"{run}/{name}"] = value.astype(np.float32)
            change[name] = (value - own).astype(np.float32)
        write_weights(self.directory / CONTROL_FILE, new, durable=durable, root=self.data_dir)
        return change


def prepare(task: ClientTask, global_weights: Weights, directory: Path, data_dir: Path) -> Prepared:
    """The extra inputs ``task.signature`` takes besides the data, from the round's global weights and
    (SCAFFOLD) the server's and the device's control variates."""
    floats = {name: np.asarray(value) for name, value in global_weights.items() if _is_float(value)}
    if task.signature == "train_prox":
        inputs = {GLOBAL_PREFIX + name: value.astype(np.float32) for name, value in floats.items()}
        inputs["mu"] = np.asarray(task.proximal_mu, np.float32)
        return Prepared(inputs)
    if task.control is None:
        return Prepared()
    path = published_path(data_dir, task.control)
    if not path.is_file():
        raise InvalidRequest(f"no round published control {task.control!r} (or its run has moved on)")
    server = read_weights(path, root=data_dir)
    own = _own_control(directory, server, _run_of(task.control), data_dir)
    inputs = {
        CORRECTION_PREFIX + name: (server[name].astype(np.float64) - own[name]).astype(np.float32)
        for name in server
    }
    return Prepared(inputs, task.control, global_weights, server, own, directory, data_dir)


def _run_of(published: str) -> str:
    return published.split("-", 1)[0]


def _own_control(directory: Path, server: Weights, run: str, data_dir: Path) -> Weights:
    """The device's ``c_i`` in run ``run``: zeros at its first round of the run (a run starts from
    ``c = c_i = 0``, as NIID-Bench's experiments do), or when it was kept for other weights."""
    path = directory / CONTROL_FILE
    if path.is_file():
        kept = read_weights(path, root=data_dir)
        own = {key.split("/", 1)[1]: value for key, value in kept.items() if key.startswith(f"{run}/")}
        if len(own) == len(kept) and same_layout(server, own) is None:
            return {name: value.astype(np.float64) for name, value in own.items()}
    return {name: np.zeros(np.shape(value)) for name, value in server.items()}


def _is_float(value: np.ndarray) -> bool:
    return bool(np.issubdtype(np.asarray(value).dtype, np.floating))
