"""An update as the privacy layer sees it: one vector of ``trained - global`` over the floating tensors
(``flatten``, ``unflatten``), and what a participant does to it before it sends it (``privatize``:
clip, noise, mask; ``task.Privatize`` says which).

The vector's order is the floating tensors' sorted names, on the device and on the server alike; a
tensor that is not floating point (a step counter) is not sent and keeps the global version's value.
"""

from __future__ import annotations

import numpy as np

from service.federated.aggregation import is_averaged
from service.federated.checkpoints import Weights
from service.federated.task import Privatize
from service.privacy.clipping import NOISE_STREAM, clip, gaussian
from service.privacy.secagg import mask

QUANTIZE_STREAM = 0x7175616E
"""Tags the generator of a device's stochastic rounding (secure aggregation), apart from its noise."""
FLAG_STREAM = 0x666C6167
"""Tags the generator of a device's share of the noise on its within-clip flag."""


def floating(weights: Weights) -> list[str]:
    """The names of the tensors that take part, in the vector's order."""
    return sorted(name for name, value in weights.items() if is_averaged(np.asarray(value)))


def dimension(weights: Weights) -> int:
    """The length of an update's vector (its flag of being within the clip included)."""
    return sum(int(np.asarray(weights[name]).size) for name in floating(weights)) + 1


def flatten(weights: Weights) -> np.ndarray:
    """The floating tensors of ``weights``, in float64, one after the other in name order."""
    names = floating(weights)
    if not names:
        return np.zeros(0)
    return np.concatenate([np.asarray(weights[name], np.float64).ravel() for name in names])


def moved(global_weights: Weights, delta: np.ndarray) -> Weights:
    """``global + delta`` as weights, in each tensor's dtype (the others kept as the global has them)."""
    result: Weights = {}
    offset = 0
    floats = set(floating(global_weights))
    for name in sorted(global_weights):
        value = np.asarray(global_weights[name])
        if name not in floats:
            result[name] = np.array(value, copy=True)
            continue
        part = delta[offset : offset + value.size].reshape(value.shape)
        result[name] = (value.astype(np.float64) + part).astype(value.dtype)
        offset += value.size
    return result


def privatize(trained: Weights, global_weights: Weights, how: Privatize, seed: tuple[int, ...]) -> np.ndarray:
    """What the participant sends: its clipped, noised update and its within-clip flag, as float64, or
    with ``how.masking`` that vector quantized and masked (uint32). ``seed`` is the participant's
    (the run's seed, the round, its key): its noise and its rounding draw from streams of their own."""
    delta = flatten(trained) - flatten(global_weights)
    within = True
    if how.clip is not None:
        delta, within = clip(delta, how.clip)
    if how.noise_stddev:
        delta = delta + gaussian(np.random.default_rng([*seed, NOISE_STREAM]), how.noise_stddev, delta.size)
    flag = 0.0
    if how.flag:
        flag = 1.0 if within else 0.0
        if how.flag_noise_stddev:
            flag += float(gaussian(np.random.default_rng([*seed, FLAG_STREAM]), how.flag_noise_stddev, 1)[0])
    vector = np.append(delta, flag)
    if how.masking is None:
        return vector
    return mask(vector, how.masking, np.random.default_rng([*seed, QUANTIZE_STREAM]))
