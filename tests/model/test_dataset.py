"""The Fashion-MNIST loader: Debian's files, IDX parsing, the fall-back to Keras and its failure."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.errors import DatasetUnavailable
from service.model.dataset import DEBIAN_DIR, FILES, NUM_CLASSES, FashionMNIST, one_hot, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x000008NN, big-endian dims, raw bytes."""
    header = (0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(dim.to_bytes(4, "big") for dim in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(idx_bytes(array)))
    return path


def test_debian_files_are_the_full_dataset(fashion_mnist: FashionMNIST) -> None:
    data = fashion_mnist
    assert data.source == str(DEBIAN_DIR)
    assert data.train_images.shape == (60_000, 28, 28)
    assert data.test_images.shape == (10_000, 28, 28)
    assert data.train_labels.shape == (60_000,)
    assert data.test_labels.shape == (10_000,)
    for images in (data.train_images, data.test_images):
        assert images.dtype == np.float32
        assert images.min() == 0.0
        assert images.max() == 1.0
    assert np.bincount(data.train_labels, minlength=NUM_CLASSES).tolist() == [6_000] * NUM_CLASSES
    assert np.bincount(data.test_labels, minlength=NUM_CLASSES).tolist() == [1_000] * NUM_CLASSES
    # The published mean pixel, 72.94 / 255: the images are scaled, not just cast.
    assert data.train_images.mean() == pytest.approx(0.2860, abs=1e-4)


def test_one_hot_rows() -> None:
    rows = one_hot(np.array([0, 9, 3], dtype=np.uint8))
    assert rows.dtype == np.float32
    assert rows.shape == (3, NUM_CLASSES)
    assert rows.argmax(axis=1).tolist() == [0, 9, 3]
    assert rows.sum(axis=1).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("shape", [(5,), (3, 28, 28)])
def test_read_idx_round_trip(tmp_path: Path, shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", array)), array)


def test_read_idx_rejects_truncated_payload(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(DatasetUnavailable, match="truncated"):
        read_idx(path)


@pytest.mark.parametrize(
    "content", [b"\x00\x00", idx_bytes(np.zeros((2, 2), np.uint8))], ids=["header", "2-d"]
)
def test_read_idx_rejects_what_is_not_idx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(content))
    with pytest.raises(DatasetUnavailable, match="not a uint8 IDX file"):
        read_idx(path)


@pytest.mark.parametrize("damage", ["cut-gzip-stream", "not-gzip"])
def test_read_idx_rejects_a_corrupt_gzip_file(tmp_path: Path, damage: str) -> None:
    compressed = gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    path = tmp_path / "corrupt.gz"
    path.write_bytes(compressed[: len(compressed) // 2] if damage == "cut-gzip-stream" else b"plain bytes")
    with pytest.raises(DatasetUnavailable):
        read_idx(path)


# Keras' cache directory is fixed when Keras is imported (from HOME or KERAS_HOME), and by then this test
# session has imported it; so the fall-back runs in a fresh interpreter with its own HOME. An unreachable
# proxy makes Keras' download fail at once (connection refused) rather than depend on DNS.
LOAD_SCRIPT = """
import json, sys
from pathlib import Path
from service.errors import DatasetUnavailable
from service.model.dataset import load_fashion_mnist
try:
    data = load_fashion_mnist(Path(sys.argv[1]))
except DatasetUnavailable as exc:
    print(json.dumps({"error": exc.message}))
else:
    shapes = {"train": data.train_images.shape, "test": data.test_images.shape}
    print(json.dumps({"source": data.source, **shapes}))
"""


def load_in_fresh_process(home: Path, directory: Path) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env.pop("KERAS_HOME", None)
    unreachable = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env.update(HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3", HTTPS_PROXY=unreachable, https_proxy=unreachable)
    env.update(HTTP_PROXY=unreachable, http_proxy=unreachable)
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_falls_back_to_keras_cache(tmp_path: Path) -> None:
    """A directory without the files: Keras' loader reads the same four files from its cache."""
    cache = tmp_path / "home" / ".keras" / "datasets" / "fashion-mnist"
    rng = np.random.default_rng(0)
    sizes = {"train": 7, "t10k": 3}
    for name in FILES.values():
        count = sizes[name.split("-")[0]]
        shape = (count, 28, 28) if "images" in name else (count,)
        write_idx(cache / name, rng.integers(0, 10, size=shape, dtype=np.uint8))
    (tmp_path / "empty").mkdir()

    result = load_in_fresh_process(tmp_path / "home", tmp_path / "empty")

    assert result == {"source": f"keras ({cache})", "train": [7, 28, 28], "test": [3, 28, 28]}


def test_unavailable_names_both_places(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "partial").mkdir()
    write_idx(tmp_path / "partial" / FILES["train_labels"], np.zeros(1, np.uint8))  # one file of four

    result = load_in_fresh_process(tmp_path / "home", tmp_path / "partial")

    message = str(result["error"])
    assert f"{tmp_path / 'partial'} lacks the four IDX files" in message
    assert str(tmp_path / "home" / ".keras" / "datasets" / "fashion-mnist") in message
    assert "Connection refused" in message
