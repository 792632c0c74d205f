"""The participants' sample-weighted mean, added one update at a time (``WeightedMean``); the server
optimizers that step from it are strategies (``service.federated.strategies``).

Only floating-point tensors are averaged; any other tensor (a step counter, an integer table) is taken
as the first update has it. Arithmetic is float64 and cast back to each tensor's dtype at the end; the
same inputs in the same order give bit-identical outputs. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from service.errors import InvalidRequest, InvalidTensor
from service.federated.checkpoints import Weights, same_layout


def is_averaged(value: np.ndarray) -> bool:
    """Whether a tensor takes part in the arithmetic: real floating point (not ints, bools, complex)."""
    return bool(np.issubdtype(value.dtype, np.floating))


def checked_update(
    weights: Weights, samples: object, layout: Weights | None, against: str = "the others"
) -> dict[str, np.ndarray]:
    """``weights`` as arrays, once the update is found usable: a positive integer of ``samples``, at
    least one tensor, ``layout``'s names, shapes and dtypes (None: the first update, any layout) and
    finite floating-point values; else InvalidRequest or InvalidTensor naming the problem (``against``
    names what the layout is, in the message)."""
    if isinstance(samples, bool) or not isinstance(samples, int | np.integer) or samples < 1:
        raise InvalidRequest(f"samples must be a positive integer, got {samples!r}")
    values = {name: np.asarray(value) for name, value in weights.items()}
    if not values:
        raise InvalidTensor("the update has no tensors")
    if layout is not None:
        problem = same_layout(layout, values)
        if problem is not None:
            raise InvalidTensor(f"the update does not fit {against}: {problem}")
    for name, value in values.items():
        if is_averaged(value) and not np.isfinite(value).all():
            raise InvalidTensor(f"the update's tensor '{name}' has non-finite values")
    return values


class WeightedMean:
    """The sample-weighted mean of participants' weights, added one at a time.

    Holds one float64 sum per floating tensor and a copy of the first update's other tensors, never
    the updates themselves: memory is about one model (in float64) however many are added. Every update
    must have the first one's names, shapes and dtypes, finite values and at least one sample; one that
    does not is refused (InvalidTensor, InvalidRequest) and leaves the mean as it was.
    """

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._kept: dict[str, np.ndarray] = {}
        self._layout: Weights = {}
        """The first update's names, shapes and dtypes, as one-element views broadcast to each shape."""
        self._count = 0
        self._samples = 0

    @property
    def count(self) -> int:
        """Updates added."""
        return self._count

    @property
    def samples(self) -> int:
        """Samples over all updates added: the mean's denominator."""
        return self._samples

    def add(self, weights: Weights, samples: int) -> None:
        values = checked_update(weights, samples, self._layout if self._count else None)
        for name in sorted(values):
            value = values[name]
            if not is_averaged(value):
                if not self._count:
                    self._kept[name] = np.array(value, copy=True)
                continue
            contribution = np.multiply(value, float(samples), dtype=np.float64)
            if self._count:
                self._sums[name] += contribution
            else:
                self._sums[name] = contribution
        if not self._count:
            self._layout = {
                name: np.broadcast_to(np.zeros((), value.dtype), value.shape)
                for name, value in values.items()
            }
        self._count += 1
        self._samples += int(samples)

    def result(self) -> Weights:
        """The mean so far, by name, each tensor in its own dtype; InvalidRequest before any update."""
        if not self._count:
            raise InvalidRequest("no update has been added: there is no mean")
        mean: Weights = {}
        for name in sorted(self._layout):
            if name in self._sums:
                mean[name] = (self._sums[name] / float(self._samples)).astype(self._layout[name].dtype)
            else:
                mean[name] = self._kept[name].copy()
        return mean
