"""What a signature takes and gives, read from the interpreter, and the checks of inputs against it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidTensor

STRING_DTYPES = (np.bytes_, np.str_, np.object_)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    """Dimensions, -1 where the model leaves one dynamic (usually the batch)."""

    @property
    def is_string(self) -> bool:
        return self.dtype.type in STRING_DTYPES

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "dtype": "string" if self.is_string else self.dtype.name,
            "shape": list(self.shape),
        }

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )

    def check(self, value: np.ndarray) -> np.ndarray:
        """Return ``value`` if it has this spec's dtype and a shape it accepts, else raise InvalidTensor."""
        if value.dtype != self.dtype:
            raise InvalidTensor(
                f"input '{self.name}' has dtype {value.dtype.name}, expected {self.describe()['dtype']}"
            )
        if not self.accepts_shape(value.shape):
            raise InvalidTensor(
                f"input '{self.name}' has shape {list(value.shape)}, "
                f"expected {list(self.shape)} (-1: any size)"
            )
        if value.size == 0 and not self.is_string:
            raise InvalidTensor(f"input '{self.name}' is empty (shape {list(value.shape)})")
        return value

    def coerce(self, value: object) -> np.ndarray:
        """Turn a JSON value (nested lists of numbers) into a checked array of this spec's dtype."""
        return self.check(self.convert(value))

    def convert(self, value: object) -> np.ndarray:
        """A JSON value (nested lists of numbers) as an array of this spec's dtype, shape unchecked.

        JSON carries no dtype, so numbers are converted, but only where nothing is lost:
        an integer input refuses fractions, and nothing numeric accepts strings, nulls or ragged lists.
        """
        try:
            array = np.asarray(value)
        except ValueError as exc:  # ragged nesting
            raise InvalidTensor(f"input '{self.name}' is not a rectangular array: {exc}") from exc
        if array.dtype == object:
            raise InvalidTensor(f"input '{self.name}' is not a rectangular array of numbers")
        if not self.is_string and array.dtype.kind not in "biuf":
            got = "strings" if array.dtype.kind == "U" else array.dtype.name
            raise InvalidTensor(f"input '{self.name}' must hold numbers, got {got}")
        lossy = self.dtype.kind in "iu" and array.dtype.kind == "f"
        if lossy and not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
            raise InvalidTensor(f"input '{self.name}' must hold integers ({self.dtype.name})")
        return array.astype(self.dtype, copy=False) if array.size else array.astype(self.dtype)


@dataclass(frozen=True)
class SignatureSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise InvalidTensor(f"signature '{self.name}' has no input '{name}'")

    @property
    def string_inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(spec for spec in self.inputs if spec.is_string)

    def check_names(self, names: Mapping[str, object]) -> None:
        expected = [spec.name for spec in self.inputs]
        missing = [n for n in expected if n not in names]
        unexpected = [n for n in names if n not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing input(s) {missing}")
            if unexpected:
                parts.append(f"unexpected input(s) {unexpected}")
            raise InvalidTensor(f"signature '{self.name}': {', '.join(parts)}; it takes {expected}")

    def check(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checked arrays, for inputs already decoded with dtypes (binary bodies)."""
        self.check_names(inputs)
        return self._check_batch(
            {spec.name: spec.check(np.asarray(inputs[spec.name])) for spec in self.inputs}
        )

    def coerce(self, inputs: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Checked arrays, for inputs without dtypes (JSON bodies)."""
        self.check_names(inputs)
        return self._check_batch({spec.name: spec.coerce(inputs[spec.name]) for spec in self.inputs})

    def _check_batch(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs whose first dimension is dynamic are taken as one batch: their sizes must agree."""
        batched = {s.name: arrays[s.name].shape[0] for s in self.inputs if s.shape and s.shape[0] == -1}
        if len(set(batched.values())) > 1:
            sizes = ", ".join(f"'{name}' has {size}" for name, size in batched.items())
            raise InvalidTensor(f"signature '{self.name}': inputs disagree on the batch size: {sizes}")
        return arrays

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "inputs": [spec.describe() for spec in self.inputs],
            "outputs": [spec.describe() for spec in self.outputs],
        }
