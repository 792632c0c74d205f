"""Tensor checks: what a spec takes as it is, what it converts from JSON, and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidTensor
from service.runtime import SignatureSpec, TensorSpec

TEXT = TensorSpec("path", np.dtype(np.bytes_), ())
"""A string input as TFLite describes it (``tf.string``: numpy bytes of no fixed size)."""
TEXTS = TensorSpec("words", np.dtype(np.bytes_), (-1,))


def spec(dtype: type | np.dtype, shape: tuple[int, ...] = (-1,)) -> TensorSpec:
    return TensorSpec("v", np.dtype(dtype), shape)


# -- strings --------------------------------------------------------------------------------------


def test_json_text_is_sent_as_utf8_bytes() -> None:
    converted = TEXTS.coerce(["é", "abc", ""])
    assert converted.dtype.kind == "S"
    assert converted.tolist() == ["é".encode(), b"abc", b""]
    assert TEXT.coerce("/tmp/ü").tolist() == "/tmp/ü".encode()


@pytest.mark.parametrize(
    "value",
    [
        np.array(["abc", "é"]),  # str, as JSON and npz carry it
        np.array([b"abc", "é".encode()]),  # bytes of any length, not only numpy's bytes0
        np.array(["abc", "é".encode()], dtype=object),
    ],
    ids=["str", "bytes", "objects"],
)
def test_string_inputs_take_any_text_array(value: np.ndarray) -> None:
    assert TEXTS.check(value).tolist() == [b"abc", "é".encode()]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["\ud800"], "'words' holds text that is not valid Unicode"),
        ([1, 2], "'words' must hold strings"),
        ([None], "'words' must hold strings"),
    ],
)
def test_strings_that_cannot_be_sent_are_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidTensor, match=message):
        TEXTS.coerce(value)


def test_non_text_arrays_for_strings_are_refused() -> None:
    with pytest.raises(InvalidTensor, match="'words' has dtype float32, expected string"):
        TEXTS.check(np.zeros(2, np.float32))
    with pytest.raises(InvalidTensor, match="'words' must hold strings"):
        TEXTS.check(np.array([b"a", 1], dtype=object))


def test_text_for_a_numeric_input_names_it_as_string() -> None:
    with pytest.raises(InvalidTensor, match="'v' has dtype string, expected float32"):
        spec(np.float32).check(np.array([b"abc"]))


# -- numbers from JSON: converted, never lossily --------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "value", "expected"),
    [
        (np.int8, [-128, 127], [-128, 127]),
        (np.uint8, [0, 255], [0, 255]),
        (np.int64, [2**63 - 1, -(2**63)], [2**63 - 1, -(2**63)]),
        (np.uint64, [2**64 - 1], [2**64 - 1]),
        (np.int32, [3.0, -2.0], [3, -2]),
        (np.bool_, [True, False, 0, 1], [True, False, False, True]),
        (np.float32, [1, 2**40, 0.1, 1e-50], [1.0, float(np.float32(2**40)), float(np.float32(0.1)), 0.0]),
        (np.float16, [65504, -65504.0], [65504.0, -65504.0]),
    ],
)
def test_numbers_that_fit_are_converted(dtype: type, value: list, expected: list) -> None:
    converted = spec(dtype).coerce(value)
    assert converted.dtype == np.dtype(dtype)
    assert converted.tolist() == expected


@pytest.mark.parametrize(
    ("dtype", "value", "message"),
    [
        (np.int8, [300], "'v' holds values from 300 to 300; int8 takes -128 to 127"),
        (np.uint8, [-1, 5], "holds values from -1 to 5; uint8 takes 0 to 255"),
        (np.int32, [2**31], "int32 takes -2147483648 to 2147483647"),
        (np.int64, [2**63], "int64 takes"),
        (np.uint64, [-1], "uint64 takes 0 to 18446744073709551615"),
        (np.int32, [1e10], "int32 takes"),
        (np.int64, [2.0**63], "integers past 2\\*\\*53 written as floats"),
        (np.int64, [2**53 + 1, 1.0], "integers past 2\\*\\*53 written as floats"),
        (np.bool_, [2], "bool takes 0 to 1"),
        (np.int32, [1.5], "'v' must hold integers \\(int32\\)"),
        (np.float32, [1.0, 1e39], "'v' holds values beyond the range of float32"),
        (np.float32, [-1e39], "beyond the range of float32"),
        (np.float16, [70000], "beyond the range of float16"),
        (np.float32, [float("nan")], "'v' holds NaN or infinite values"),
        (np.float32, [1e308 * 10], "'v' holds NaN or infinite values"),
        (np.int32, [10**30], "integers past 64 bits"),
    ],
)
def test_numbers_that_would_change_are_refused(dtype: type, value: list, message: str) -> None:
    with pytest.raises(InvalidTensor, match=message):
        spec(dtype).coerce(value)


# -- typed arrays (npz, binary): finite floats only ----------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_inputs_must_be_finite(dtype: type, bad: float) -> None:
    value: np.ndarray = np.zeros((2, 3), dtype)
    value[1, 2] = bad
    with pytest.raises(InvalidTensor, match="input 'v' holds NaN or infinite values"):
        spec(dtype, (-1, 3)).check(value)
    assert spec(dtype, (-1, 3)).check(np.zeros((2, 3), dtype)) is not None


def test_nan_in_one_input_of_a_signature_is_named() -> None:
    train = SignatureSpec("train", (spec(np.float32), TensorSpec("y", np.dtype(np.float32), (-1,))), ())
    with pytest.raises(InvalidTensor, match="input 'y' holds NaN"):
        train.check({"v": np.ones(2, np.float32), "y": np.array([1.0, np.nan], np.float32)})


def test_many_unexpected_names_make_a_short_message() -> None:
    one = SignatureSpec("infer", (spec(np.float32),), ())
    names = {f"n{i:03}": np.zeros(1, np.float32) for i in range(500)} | {"v": np.zeros(1, np.float32)}
    with pytest.raises(InvalidTensor, match=r"'n009'\] and 490 more; it takes \['v'\]") as raised:
        one.check(names)
    assert len(str(raised.value)) < 300
