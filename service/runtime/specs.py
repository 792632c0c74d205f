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
            "dtype": dtype_name(self.dtype),
            "shape": list(self.shape),
        }

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )

    def check(self, value: np.ndarray) -> np.ndarray:
        """``value`` if it has this spec's dtype, a shape it accepts and (floats) finite values.

        Text for a string spec may come as bytes or str: it is returned as UTF-8 bytes.
        """
        if self.is_string:
            value = self._as_text(value)
        elif value.dtype != self.dtype:
            raise InvalidTensor(
                f"input '{self.name}' has dtype {dtype_name(value.dtype)}, expected {dtype_name(self.dtype)}"
            )
        if not self.accepts_shape(value.shape):
            raise InvalidTensor(
                f"input '{self.name}' has shape {list(value.shape)}, "
                f"expected {list(self.shape)} (-1: any size)"
            )
        if value.size == 0 and not self.is_string:
            raise InvalidTensor(f"input '{self.name}' is empty (shape {list(value.shape)})")
        # NaN or infinity would reach the weights through a training step: the loss, and every
        # prediction after it, would be NaN for good.
        if self.dtype.kind in "fc" and not np.isfinite(value).all():
            raise InvalidTensor(f"input '{self.name}' holds NaN or infinite values")
        return value

    def coerce(self, value: object) -> np.ndarray:
        """Turn a JSON value (nested lists of numbers) into a checked array of this spec's dtype."""
        return self.check(self.convert(value))

    def convert(self, value: object) -> np.ndarray:
        """A JSON value (nested lists of numbers) as an array of this spec's dtype, shape unchecked.

        JSON carries no dtype, so numbers are converted, but only where nothing is lost: an integer
        input refuses fractions and values outside its dtype's range, a float input values beyond its
        range (rounding to the nearest float is fine), and nothing numeric accepts strings, nulls or
        ragged lists. A string input takes strings (sent as UTF-8).
        """
        try:
            array = np.asarray(value)
        except ValueError as exc:  # ragged nesting
            raise InvalidTensor(f"input '{self.name}' is not a rectangular array: {exc}") from exc
        if self.is_string:
            if array.dtype.kind not in "SU":
                raise InvalidTensor(f"input '{self.name}' must hold strings")
            return self._as_text(array)
        if array.dtype == object:
            raise InvalidTensor(
                f"input '{self.name}' is not a rectangular array of numbers (or holds integers past 64 bits)"
            )
        if array.dtype.kind not in "biuf":
            got = "strings" if array.dtype.kind == "U" else array.dtype.name
            raise InvalidTensor(f"input '{self.name}' must hold numbers, got {got}")
        self._check_lossless(array)
        with np.errstate(over="ignore", invalid="ignore"):  # NaN and infinity pass here; check() refuses them
            return array.astype(self.dtype, copy=False)

    def _check_lossless(self, array: np.ndarray) -> None:
        """Refuse numbers that this spec's dtype cannot hold (a cast would wrap or overflow them)."""
        if array.size == 0 or array.dtype.kind == "b":
            return
        low, high = array.min(), array.max()
        if self.dtype.kind in "fc":
            limit = float(np.finfo(self.dtype).max)
            # NaN and infinity are left to check(), which refuses them with a message of their own.
            if (np.isfinite(low) and low < -limit) or (np.isfinite(high) and high > limit):
                raise InvalidTensor(
                    f"input '{self.name}' holds values beyond the range of {self.dtype.name} (±{limit:g})"
                )
            return
        if array.dtype.kind == "f":
            if not (np.isfinite(array).all() and np.all(array == np.round(array))):
                raise InvalidTensor(f"input '{self.name}' must hold integers ({dtype_name(self.dtype)})")
            if max(-float(low), float(high)) >= EXACT_FLOAT_INTEGERS:
                raise InvalidTensor(
                    f"input '{self.name}' holds integers past 2**53 written as floats: they may have "
                    "been rounded; write them without a fraction or exponent"
                )
        if self.dtype.kind == "b":
            least, most = 0, 1
        else:
            info = np.iinfo(self.dtype)
            least, most = int(info.min), int(info.max)
        if int(low) < least or int(high) > most:
            raise InvalidTensor(
                f"input '{self.name}' holds values from {int(low)} to {int(high)}; "
                f"{dtype_name(self.dtype)} takes {least} to {most}"
            )

    def _as_text(self, value: np.ndarray) -> np.ndarray:
        """Text (bytes, str, or objects that are either) in this spec's string dtype: str as UTF-8."""
        try:
            if value.dtype.kind == "O":
                if not all(isinstance(item, (bytes, str)) for item in value.flat):
                    raise InvalidTensor(f"input '{self.name}' must hold strings")
                value = np.array([_utf8(item) for item in value.flat], dtype=np.bytes_).reshape(value.shape)
            elif value.dtype.kind == "U":
                value = np.char.encode(value, "utf-8")
            elif value.dtype.kind != "S":
                raise InvalidTensor(
                    f"input '{self.name}' has dtype {dtype_name(value.dtype)}, expected string"
                )
            if self.dtype.type is np.str_:
                return np.char.decode(value, "utf-8")
            return value.astype(object) if self.dtype.type is np.object_ else value
        except UnicodeError as exc:
            raise InvalidTensor(f"input '{self.name}' holds text that is not valid Unicode: {exc}") from exc


EXACT_FLOAT_INTEGERS = 2**53
"""From here on, a float64 may stand for more than one integer (2**53 + 1 is read as 2**53). numpy turns
a JSON list mixing integers and floats into float64s."""


def dtype_name(dtype: np.dtype) -> str:
    return "string" if dtype.type in STRING_DTYPES or dtype.kind in "SUO" else dtype.name


def _utf8(item: bytes | str) -> bytes:
    return item.encode("utf-8") if isinstance(item, str) else item


class CheckedInputs(dict[str, np.ndarray]):
    """Inputs that passed ``SignatureSpec.check`` for ``signature`` (and are not to be changed)."""

    def __init__(self, signature: SignatureSpec, arrays: dict[str, np.ndarray]) -> None:
        super().__init__(arrays)
        self.signature = signature


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
                more = f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else ""
                parts.append(f"unexpected input(s) {unexpected[:10]}{more}")
            raise InvalidTensor(f"signature '{self.name}': {', '.join(parts)}; it takes {expected}")

    def check(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checked arrays, for inputs already decoded with dtypes (binary bodies).

        What this returns passes again for free: the HTTP layer checks a request's inputs where it
        decodes them, and the device checks whatever it is given, without scanning the data twice.
        """
        if isinstance(inputs, CheckedInputs) and inputs.signature is self:
            return inputs
        self.check_names(inputs)
        return self._check_batch(
            {spec.name: spec.check(np.asarray(inputs[spec.name])) for spec in self.inputs}
        )

    def coerce(self, inputs: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Checked arrays, for inputs without dtypes (JSON bodies)."""
        self.check_names(inputs)
        return self._check_batch({spec.name: spec.coerce(inputs[spec.name]) for spec in self.inputs})

    def _check_batch(self, arrays: dict[str, np.ndarray]) -> CheckedInputs:
        """Inputs whose first dimension is dynamic are taken as one batch: their sizes must agree."""
        batched = {s.name: arrays[s.name].shape[0] for s in self.inputs if s.shape and s.shape[0] == -1}
        if len(set(batched.values())) > 1:
            sizes = ", ".join(f"'{name}' has {size}" for name, size in batched.items())
            raise InvalidTensor(f"signature '{self.name}': inputs disagree on the batch size: {sizes}")
        return CheckedInputs(self, arrays)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "inputs": [spec.describe() for spec in self.inputs],
            "outputs": [spec.describe() for spec in self.outputs],
        }
