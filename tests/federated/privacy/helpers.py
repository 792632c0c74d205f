"""What the privacy round tests share: a run's wait, how far a run moved the global weights, and what
the devices trained (their saved checkpoints)."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.federated import private
from service.federated.checkpoints import read_weights
from service.federated.federation import Federation
from service.federated.spec import RoundSpec

MODEL = "fashion_mnist"
WAIT = 180.0


def run(federation: Federation, spec: RoundSpec, state: str = "succeeded") -> dict[str, Any]:
    """Start ``spec``, wait for it to end in ``state``; its view."""
    view = federation.rounds.wait(str(federation.rounds.start(spec)["id"]), WAIT)
    assert view["state"] == state, view
    return view


def moved(federation: Federation, view: dict[str, Any]) -> np.ndarray:
    """The run's last version minus its first, as one vector."""
    start = federation.version_weights(MODEL, int(view["start_version"]))
    return private.flatten(federation.version_weights(MODEL, int(view["version"]))) - private.flatten(start)


def trained(federation: Federation, device: str) -> np.ndarray:
    """The weights the device saved, as one vector."""
    return private.flatten(read_weights(federation.fleet.get(device).checkpoint_path))


def mean_update(federation: Federation, devices: list[str]) -> np.ndarray:
    """The mean of what those devices trained (their saved checkpoints) minus version 0."""
    start = private.flatten(federation.version_weights(MODEL, 0))
    return np.mean([trained(federation, d) - start for d in devices], axis=0)
