"""What the strategy tests share: a built model's interpreter and its weights, and a run's wait."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from service.federated.federation import Federation
from service.federated.spec import RoundSpec

WAIT = 180.0


def interpreter(model: bytes) -> tf.lite.Interpreter:
    made = tf.lite.Interpreter(model_content=model)
    made.allocate_tensors()
    return made


def weights_of(made: tf.lite.Interpreter, path: Path) -> dict[str, np.ndarray]:
    """The interpreter's weights, saved to ``path`` and read back through its restore."""
    made.get_signature_runner("save")(checkpoint_path=np.array(str(path).encode()))
    return {
        k: np.array(v)
        for k, v in made.get_signature_runner("restore")(checkpoint_path=np.array(str(path).encode())).items()
    }


def run(federation: Federation, spec: RoundSpec) -> dict[str, object]:
    """Start ``spec`` and wait for it to end; its view."""
    view = federation.rounds.wait(str(federation.rounds.start(spec)["id"]), WAIT)
    assert view["state"] == "succeeded", view
    return view
