"""Models may touch no file but the checkpoint path the service passes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from service.errors import InvalidModel
from service.fleet.models import embedded_model_path
from service.runtime import CompiledModel
from service.runtime.inspection import check_file_access
from tests.hostile import build_hostile


def test_the_default_and_the_second_model_pass(regressor_model: bytes) -> None:
    check_file_access("fashion_mnist", embedded_model_path().read_bytes())
    check_file_access("regressor", regressor_model)


@pytest.mark.parametrize("where", ["infer", "save"])
def test_a_model_choosing_its_own_file_is_refused(tmp_path: Path, where: str) -> None:
    target = tmp_path / "outside" / "written-by-the-model"
    content = build_hostile(target, where)
    with pytest.raises(InvalidModel, match="Save op in signature"):
        CompiledModel.load("hostile", content)
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as client:
        response = client.put("/v1/models/hostile", content=content)
        assert response.status_code == 422, response.text
        assert "may not choose its own files" in response.json()["error"]["message"]
        assert client.get("/v1/models/hostile").status_code == 404
    assert not target.exists()


def test_the_hostile_model_would_really_write_its_file(tmp_path: Path) -> None:
    """The refusal above matters: run unchecked, the model writes where it likes."""
    import numpy as np
    import tensorflow as tf

    target = tmp_path / "written-by-the-model"
    interpreter = tf.lite.Interpreter(model_content=build_hostile(target, "infer"))
    interpreter.allocate_tensors()
    interpreter.get_signature_runner("infer")(x=np.ones((1, 3), np.float32))
    assert target.exists()
