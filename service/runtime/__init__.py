"""The interpreter layer: signature specs, tensor checks and invoking signature runners. No HTTP."""

from service.runtime.interpreter import CompiledModel, ModelInterpreter
from service.runtime.specs import SignatureSpec, TensorSpec

__all__ = ["CompiledModel", "ModelInterpreter", "SignatureSpec", "TensorSpec"]
