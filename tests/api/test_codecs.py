"""The npz fast path reads exactly what ``np.load`` reads, and falls back where it cannot."""

from __future__ import annotations

import io

import numpy as np
import pytest

from service.api.codecs import _stored_arrays, decode_npz
from service.errors import InvalidTensor

ARRAYS = {
    "x": np.random.default_rng(0).random((5, 28, 28), dtype=np.float32),
    "scalar": np.float32(3.5),
    "empty": np.zeros((0, 3)),
    "big_endian": np.arange(6, dtype=">i8").reshape(2, 3),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "flags": np.array([True, False]),
}


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_decode_matches_numpy(save) -> None:
    buffer = io.BytesIO()
    save(buffer, **ARRAYS)
    decoded = decode_npz(buffer.getvalue())
    assert set(decoded) == set(ARRAYS)
    for name, expected in ARRAYS.items():
        np.testing.assert_array_equal(decoded[name], expected)
        assert decoded[name].dtype.isnative and decoded[name].dtype == np.asarray(
            expected
        ).dtype.newbyteorder("=")


def test_fast_path_takes_plain_archives_and_declines_others() -> None:
    plain, compressed = io.BytesIO(), io.BytesIO()
    np.savez(plain, x=ARRAYS["x"], y=np.eye(10, dtype=np.float32)[:5])
    np.savez_compressed(compressed, x=ARRAYS["x"])
    fast = _stored_arrays(plain.getvalue())
    assert fast is not None and np.array_equal(fast["x"], ARRAYS["x"])
    assert _stored_arrays(compressed.getvalue()) is None


def test_pickled_objects_are_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InvalidTensor, match="not a valid"):
        decode_npz(buffer.getvalue())


def test_truncated_archive_is_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=ARRAYS["x"])
    with pytest.raises(InvalidTensor):
        decode_npz(buffer.getvalue()[:-100])
