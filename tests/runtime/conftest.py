"""Loading a model that must be refused, with no interpreter ever made of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import service.runtime.interpreter as interpreter_module
from service.errors import InvalidModel
from service.runtime import CompiledModel

Refuse = Callable[[bytes], str]


@pytest.fixture
def refuse(monkeypatch: pytest.MonkeyPatch) -> Refuse:
    """``refuse(content)``: the message of the InvalidModel that `CompiledModel.load` raises.

    Making an interpreter fails the test: a hostile model must be refused before one exists. A refusal
    names no path.
    """

    def no_interpreter() -> Any:
        raise AssertionError("an interpreter was made of a model before it was checked and verified")

    monkeypatch.setattr(interpreter_module, "_interpreter_class", no_interpreter)

    def load(content: bytes) -> str:
        with pytest.raises(InvalidModel) as caught:
            CompiledModel.load("hostile", content)
        message = caught.value.message
        assert "/" not in message, f"a refusal names no path: {message}"
        return message

    return load
