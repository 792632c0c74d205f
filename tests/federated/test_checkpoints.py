"""Weights files without an interpreter, checked with real interpreters of the embedded model.

Files in ``tmp_path``. A full disk is the file size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from service.errors import CorruptState, InvalidTensor, StorageError, StorageFull
from service.federated.checkpoints import Weights, read_weights, same_layout, write_weights
from service.fleet.models import embedded_model_path
from service.runtime import CompiledModel, ModelInterpreter
from tests.fleet.test_recovery import file_size_limit


@pytest.fixture(scope="module")
def model() -> CompiledModel:
    return CompiledModel.load("fashion_mnist", embedded_model_path().read_bytes())


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((32, 28, 28), dtype=np.float32)


@pytest.fixture
def trained(model: CompiledModel, images: np.ndarray) -> ModelInterpreter:
    """An interpreter whose weights are no longer the model's own: two train steps."""
    interpreter = model.interpreter()
    labels = np.eye(10, dtype=np.float32)[np.arange(len(images)) % 10]
    for _ in range(2):
        interpreter.run("train", {"x": images, "y": labels})
    return interpreter


def save(interpreter: ModelInterpreter, path: Path) -> None:
    interpreter.run("save", {"checkpoint_path": np.array(os.fsencode(path))})


def restore(interpreter: ModelInterpreter, path: Path) -> dict[str, np.ndarray]:
    return interpreter.run("restore", {"checkpoint_path": np.array(os.fsencode(path))})


def logits(interpreter: ModelInterpreter, images: np.ndarray) -> np.ndarray:
    return interpreter.run("infer", {"x": images})["logits"]


def forward(weights: Weights, images: np.ndarray) -> np.ndarray:
    """The embedded model's logits in numpy: Flatten -> Dense(128, relu) -> Dense(10)."""
    hidden = np.maximum(
        images.reshape(len(images), -1) @ weights["dense_1_kernel"] + weights["dense_1_bias"], 0
    )
    return hidden @ weights["dense_2_kernel"] + weights["dense_2_bias"]


def test_read_weights_gives_every_variable_as_the_models_restore_reads_it(
    tmp_path: Path, model: CompiledModel, trained: ModelInterpreter
) -> None:
    save(trained, tmp_path / "a.ckpt")
    weights = read_weights(tmp_path / "a.ckpt")
    restored = restore(model.interpreter(), tmp_path / "a.ckpt")
    assert (
        list(weights)
        == sorted(restored)
        == ["dense_1_bias", "dense_1_kernel", "dense_2_bias", "dense_2_kernel"]
    )
    for name, value in restored.items():
        assert weights[name].dtype == value.dtype and weights[name].shape == value.shape
        np.testing.assert_array_equal(weights[name], value)


def test_weights_written_back_restore_bit_identically_into_a_fresh_interpreter(
    tmp_path: Path, model: CompiledModel, trained: ModelInterpreter, images: np.ndarray
) -> None:
    save(trained, tmp_path / "a.ckpt")
    write_weights(tmp_path / "b.ckpt", read_weights(tmp_path / "a.ckpt"))
    assert (tmp_path / "b.ckpt").read_bytes() == (tmp_path / "a.ckpt").read_bytes()  # the model's own format
    fresh = model.interpreter()
    assert not np.array_equal(logits(fresh, images), logits(trained, images))
    restore(fresh, tmp_path / "b.ckpt")
    np.testing.assert_array_equal(logits(fresh, images), logits(trained, images))


def test_the_model_computes_with_the_weights_written(
    tmp_path: Path, model: CompiledModel, trained: ModelInterpreter, images: np.ndarray
) -> None:
    save(trained, tmp_path / "a.ckpt")
    halved = {name: value * np.float32(0.5) for name, value in read_weights(tmp_path / "a.ckpt").items()}
    write_weights(tmp_path / "halved.ckpt", halved, durable=False)
    interpreter = model.interpreter()
    restore(interpreter, tmp_path / "halved.ckpt")
    np.testing.assert_allclose(logits(interpreter, images), forward(halved, images), rtol=1e-4, atol=1e-5)
    zeros = {name: np.zeros_like(value) for name, value in halved.items()}
    write_weights(tmp_path / "zeros.ckpt", zeros)
    restore(interpreter, tmp_path / "zeros.ckpt")
    np.testing.assert_array_equal(logits(interpreter, images), np.zeros((len(images), 10), np.float32))


def corrupt_files(saved: bytes) -> dict[str, bytes]:
    middle = len(saved) // 2
    return {
        "garbage": b"not a checkpoint" * 100,
        "empty": b"",
        "truncated": saved[:middle],
        "a flipped bit": saved[:middle] + bytes([saved[middle] ^ 1]) + saved[middle + 1 :],
    }


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "a flipped bit", "missing", "a directory"])
def test_a_file_that_is_not_weights_is_corrupt_state_named_from_the_root(
    tmp_path: Path, model: CompiledModel, kind: str
) -> None:
    directory = tmp_path / "versions"
    directory.mkdir()
    path = directory / "3.ckpt"
    save(model.interpreter(), path)
    if kind == "missing":
        path.unlink()
    elif kind == "a directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(corrupt_files(path.read_bytes())[kind])
    with pytest.raises(CorruptState) as raised:
        read_weights(path, root=tmp_path)
    message = raised.value.message
    assert message.startswith("versions/3.ckpt ")
    assert str(tmp_path) not in message and os.path.realpath(tmp_path) not in message
    assert "{{" not in message and "Traceback" not in message
    with pytest.raises(CorruptState, match=r"^versions/3\.ckpt "):
        read_weights(path)  # without a root: the last two components


def test_names_are_not_patterns(tmp_path: Path) -> None:
    """TensorFlow's reader globs: ``x[1].ckpt`` would read ``x1.ckpt``, and ``*`` anything."""
    ours = {"w": np.array([1.0, 2.0], np.float32)}
    write_weights(tmp_path / "x1.ckpt", {"w": np.array([7.0, 7.0], np.float32)})
    for name in ("x[1].ckpt", "x*.ckpt", "x?.ckpt", "x\\1.ckpt"):
        write_weights(tmp_path / name, ours)
        np.testing.assert_array_equal(read_weights(tmp_path / name)["w"], ours["w"])


def test_a_tf2_checkpoint_beside_the_file_is_refused(tmp_path: Path) -> None:
    """The reader would read ``<path>.index`` and its data instead of the file the model restores."""
    write_weights(tmp_path / "w.ckpt", {"w": np.ones(2, np.float32)})
    (tmp_path / "w.ckpt.index").write_bytes(b"")
    with pytest.raises(CorruptState, match="ambiguous"):
        read_weights(tmp_path / "w.ckpt", root=tmp_path)


def test_every_dtype_the_format_holds_reads_back(tmp_path: Path) -> None:
    """Including float16, uint16 and complex, which the reader's ``get_tensor`` cannot convert."""
    dtypes = [
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "bool",
    ]
    weights = {dtype: np.arange(6).reshape(2, 3).astype(dtype) for dtype in dtypes}
    weights["scalar"] = np.array(2.5, np.float32)
    write_weights(tmp_path / "w.ckpt", weights)
    read = read_weights(tmp_path / "w.ckpt")
    assert same_layout(weights, read) is None
    for name, value in weights.items():
        np.testing.assert_array_equal(read[name], value)


def test_tensors_the_format_cannot_hold_are_invalid_and_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(InvalidTensor, match="tensor 'counts' is uint32"):
        write_weights(tmp_path / "w.ckpt", {"w": np.ones(2, np.float32), "counts": np.ones(2, np.uint32)})
    with pytest.raises(InvalidTensor, match="no tensors"):
        write_weights(tmp_path / "w.ckpt", {})
    assert list(tmp_path.iterdir()) == []


def test_a_write_where_no_file_can_be_is_storage_error(tmp_path: Path) -> None:
    weights = {"w": np.ones(2, np.float32)}
    with pytest.raises(StorageError) as raised:
        write_weights(tmp_path / "missing" / "w.ckpt", weights, root=tmp_path)
    assert not isinstance(raised.value, StorageFull)
    assert raised.value.message == "could not write missing/w.ckpt: No such file or directory"
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError) as raised:
        write_weights(tmp_path / "file" / "w.ckpt", weights, root=tmp_path)
    assert raised.value.message.startswith("could not write file/w.ckpt: ")
    assert str(tmp_path) not in raised.value.message


def test_a_full_disk_is_storage_full_and_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "w.ckpt"
    write_weights(path, {"w": np.zeros(10, np.float32)})
    before = path.read_bytes()
    with file_size_limit(100_000), pytest.raises(StorageFull) as raised:
        write_weights(path, {"w": np.zeros(100_000, np.float32)}, root=tmp_path)
    assert raised.value.message.startswith("could not write w.ckpt: ")
    assert str(tmp_path) not in raised.value.message
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.ckpt"]  # no temporary left behind


def test_a_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "w.ckpt"
    write_weights(path, {"a": np.ones(3, np.float32), "b": np.ones(1, np.int32)})
    write_weights(path, {"a": np.full(3, 2.0, np.float32)}, durable=False)
    read = read_weights(path)
    assert list(read) == ["a"]
    np.testing.assert_array_equal(read["a"], [2.0, 2.0, 2.0])
    assert [p.name for p in tmp_path.iterdir()] == ["w.ckpt"]


def test_same_layout_names_the_first_difference() -> None:
    reference: Weights = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.int64)}
    assert same_layout(reference, {"b": np.ones(4, np.int64), "a": np.ones((2, 3), np.float32)}) is None
    assert same_layout(reference, {"a": reference["a"]}) == "tensor 'b' is missing"
    assert same_layout(reference, {**reference, "c": np.zeros(1)}) == (
        "tensor 'c' is not one of the model's (2 tensors)"
    )
    assert same_layout(reference, {**reference, "a": np.zeros((3, 2), np.float32)}) == (
        "tensor 'a' has shape [3, 2], not [2, 3]"
    )
    assert (
        same_layout(reference, {**reference, "b": np.zeros(4, np.int32)}) == "tensor 'b' is int32, not int64"
    )
