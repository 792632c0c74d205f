"""One compiled model (bytes + signature specs) and the interpreters made from it."""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import InvalidModel, InvocationFailed, SignatureNotFound
from service.runtime.inspection import check_operators
from service.runtime.specs import SignatureSpec, TensorSpec

warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
_import_lock = threading.Lock()


def _interpreter_class() -> Any:
    """``tf.lite.Interpreter``, imported on first use: importing TensorFlow costs seconds."""
    with _import_lock:
        from tensorflow.lite.python.interpreter import Interpreter

    return Interpreter


def _with_signatures(listed: Any, full: Any) -> Any:
    """``tf.lite.Interpreter`` answering with signature defs read once per model.

    Its ``GetSignatureDefs()`` leaks every dict and list it returns (about 2.2 KB of Python objects a
    call for the default model; tensorflow/tensorflow#56236), and it is called once per interpreter
    and once per signature runner: 9.4 KB an activation, 470 MB over 50,000 activations.
    """

    class Interpreter(_interpreter_class()):  # type: ignore[misc]
        def get_signature_list(self) -> Any:
            return listed

        def _get_full_signature_list(self) -> Any:
            return full

    return Interpreter


def _specs(details: Mapping[str, Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(
            name=name,
            dtype=np.dtype(detail["dtype"]),
            shape=tuple(int(d) for d in detail.get("shape_signature", detail["shape"])),
        )
        for name, detail in sorted(details.items())
    )


@dataclass(frozen=True)
class CompiledModel:
    """A `.tflite` file's bytes and what its signatures take and give; shared by every device using it."""

    name: str
    content: bytes = field(repr=False)
    signatures: Mapping[str, SignatureSpec]
    num_threads: int = 1
    interpreter_class: Any = field(default=None, repr=False, compare=False)
    """``tf.lite.Interpreter`` with this model's signature defs (see ``_with_signatures``)."""
    isolated: Any = field(default=None, repr=False, compare=False)
    """The model's worker processes (``service.runtime.isolation``), when it runs out of process."""

    @classmethod
    def load(cls, name: str, content: bytes, num_threads: int = 1) -> CompiledModel:
        """Check ``content``'s operators, then that it loads in an interpreter and has signatures.

        The operators are checked first: preparing an interpreter already constructs the TensorFlow
        kernels of Flex ops, and some of those open files when constructed.
        """
        check_operators(name, content)
        try:
            interpreter = _interpreter_class()(model_content=content, num_threads=num_threads)
            listed = interpreter.get_signature_list()
            interpreter_class = _with_signatures(listed, interpreter._get_full_signature_list())
            signature_names = list(listed)
            signatures = {}
            for sig in signature_names:
                runner = interpreter.get_signature_runner(sig)
                signatures[sig] = SignatureSpec(
                    sig, _specs(runner.get_input_details()), _specs(runner.get_output_details())
                )
        except (ValueError, RuntimeError) as exc:
            raise InvalidModel(f"model '{name}' does not load in the TFLite interpreter: {exc}") from exc
        if not signatures:
            raise InvalidModel(f"model '{name}' has no signatures; on-device training needs named signatures")
        return cls(
            name=name,
            content=content,
            signatures=signatures,
            num_threads=num_threads,
            interpreter_class=interpreter_class,
        )

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def signature(self, name: str) -> SignatureSpec:
        try:
            return self.signatures[name]
        except KeyError:
            raise SignatureNotFound(
                f"model '{self.name}' has no signature '{name}'; it has {sorted(self.signatures)}"
            ) from None

    def interpreter(self) -> ModelInterpreter:
        if self.isolated is not None:
            remote: ModelInterpreter = self.isolated.interpreter(self)
            return remote
        return ModelInterpreter(self)

    def close(self) -> None:
        """Stop the model's worker processes, if it has any."""
        if self.isolated is not None:
            self.isolated.close()

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "size_bytes": len(self.content),
            "sha256": self.sha256,
            "signatures": [spec.describe() for spec in self.signatures.values()],
        }


class ModelInterpreter:
    """One ``tf.lite.Interpreter`` and its signature runners. Not thread-safe: callers serialise."""

    alive = True
    """An interpreter in this process lives as long as it is referenced (a worker's may die first)."""

    def __init__(self, model: CompiledModel) -> None:
        self.model = model
        try:
            self._interpreter = (model.interpreter_class or _interpreter_class())(
                model_content=model.content, num_threads=model.num_threads
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise InvalidModel(f"model '{model.name}' failed to load: {exc}") from exc
        self._runners: dict[str, Any] = {}
        self._error_text = ""

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Invoke ``signature`` on inputs already checked against its spec; outputs by name."""
        spec = self.model.signature(signature)
        runner = self._runners.get(signature)
        if runner is None:
            runner = self._runners[signature] = self._interpreter.get_signature_runner(signature)
        try:
            return dict(runner(**inputs))
        except (ValueError, RuntimeError) as exc:
            # TFLite's error text accumulates across failures: report only what this call added.
            text = str(exc)
            new = text.removeprefix(self._error_text) if text.startswith(self._error_text) else text
            self._error_text = text
            raise InvocationFailed(
                f"signature '{spec.name}' of model '{self.model.name}' failed: {new.strip() or text}"
            ) from exc
