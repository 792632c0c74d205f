"""Tensors on the wire of the Open Inference Protocol (KServe v2, Triton's HTTP/REST API).

A request names each input's shape and datatype and carries its data as JSON (flat or nested), or, with
the binary tensor data extension, as raw little-endian bytes after the JSON (``binary_data_size``; the
JSON's length in the ``Inference-Header-Content-Length`` header). The declared tensor is checked with
the same ``TensorSpec`` checks as every other body; the device then checks it against its signature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import Response
from pydantic import BaseModel, Field, ValidationError

from service.api.codecs import JSON, MAX_DIM, MAX_RANK, check_shape, to_json
from service.api.errors import problems
from service.errors import BodyTooLarge, InvalidTensor, UnsupportedMediaType
from service.runtime import SignatureSpec, TensorSpec

HEADER_LENGTH = "inference-header-content-length"
BINARY = "application/octet-stream"

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.bytes_),
}
"""The protocol's datatypes that numpy has (not BF16)."""
DATATYPES: dict[str, str] = {dtype.str: name for name, dtype in DTYPES.items()}


def datatype_of(dtype: np.dtype) -> str:
    if dtype.kind in "SUO":
        return "BYTES"
    return DATATYPES.get(dtype.newbyteorder("=").str, dtype.name.upper())


def dtype_of(name: str, datatype: str) -> np.dtype:
    try:
        return DTYPES[datatype]
    except KeyError:
        raise InvalidTensor(
            f"input '{name}' has datatype {datatype!r}; use one of {sorted(DTYPES)}"
        ) from None


# -- the JSON documents, as the protocol defines them --------------------------------------------


class RequestInput(BaseModel):
    name: str
    shape: list[Annotated[int, Field(ge=0, le=MAX_DIM)]] = Field(max_length=MAX_RANK)
    datatype: str = Field(description="BOOL, UINT8 ... UINT64, INT8 ... INT64, FP16, FP32, FP64 or BYTES")
    parameters: dict[str, Any] | None = Field(
        None, description='{"binary_data_size": n}: the data is n raw bytes after the JSON'
    )
    data: Any = Field(None, description="row-major values, flat or nested (absent with binary_data_size)")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data": true}: send it as raw bytes')


class InferenceRequest(BaseModel):
    id: str | None = Field(None, description="echoed in the response")
    parameters: dict[str, Any] | None = Field(
        None, description='{"binary_data_output": true}: send every output as raw bytes'
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description="the outputs to send; all when absent")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data_size": n} for raw bytes')
    data: list[Any] | None = Field(None, description="row-major values, flat")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 where the model leaves a dimension dynamic")


# -- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: dict[str, bool] | None
    """Requested outputs by name, each with whether to send it as raw bytes; None: all of them."""
    binary_outputs: bool
    """Raw bytes for outputs not named in ``outputs``."""

    def output_names(self, spec: SignatureSpec) -> list[str]:
        """The outputs to send, in the order requested; every output of ``spec`` when none were named."""
        known = [s.name for s in spec.outputs]
        if self.outputs is None:
            return known
        unknown = [name for name in self.outputs if name not in known]
        if unknown:
            raise InvalidTensor(f"signature '{spec.name}' has no output(s) {unknown}; it gives {known}")
        return list(self.outputs)

    def wants_binary(self, name: str) -> bool:
        if self.outputs is None:
            return self.binary_outputs
        return self.outputs.get(name, self.binary_outputs)


def _flag(parameters: dict[str, Any] | None, name: str) -> bool:
    return bool((parameters or {}).get(name, False))


def _input_array(tensor: RequestInput, binary: memoryview | None) -> np.ndarray:
    """The declared tensor; nothing is allocated by its declared shape, only by the data sent."""
    shape = check_shape(tensor.name, tensor.shape)  # also bounded by the schema; here before any arithmetic
    declared = TensorSpec(tensor.name, dtype_of(tensor.name, tensor.datatype), shape)
    count = math.prod(declared.shape)
    if binary is not None:
        if declared.is_string:
            raise InvalidTensor(f"input '{tensor.name}': send BYTES inputs as JSON data")
        if len(binary) != count * declared.dtype.itemsize:
            raise InvalidTensor(
                f"input '{tensor.name}': shape {tensor.shape} of {tensor.datatype} takes "
                f"{count * declared.dtype.itemsize} bytes, binary_data_size gives {len(binary)}"
            )
        array = np.frombuffer(binary, dtype=declared.dtype.newbyteorder("<")).astype(
            declared.dtype, copy=False
        )
    else:
        if tensor.data is None:
            raise InvalidTensor(f"input '{tensor.name}' has no data (nor binary_data_size)")
        array = declared.convert(tensor.data)
        if array.size != count:
            raise InvalidTensor(
                f"input '{tensor.name}': shape {tensor.shape} holds {count} values, the data has {array.size}"
            )
    try:
        shaped = array.reshape(declared.shape)
    except (ValueError, OverflowError) as exc:  # more than 64 dimensions, or zero values in a vast shape
        raise InvalidTensor(
            f"input '{tensor.name}': shape {tensor.shape} is not an array shape: {exc}"
        ) from exc
    return declared.check(shaped)


def decode_request(
    body: bytes, headers: Mapping[str, str], max_json_bytes: int | None = None
) -> DecodedRequest:
    """An inference request's inputs as arrays of their declared datatypes and shapes.

    ``max_json_bytes`` bounds the JSON part of a binary-extension body (the whole of a JSON one is
    bounded before it is read): binary tensor data may be large, the JSON around it may not.
    """
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"content encoding {encoding!r} is not supported; send the body uncompressed"
        )
    declared_length = headers.get(HEADER_LENGTH)
    if declared_length is None:
        header, rest = body, memoryview(b"")
    elif declared_length.isascii() and declared_length.isdigit() and int(declared_length) <= len(body):
        header, rest = body[: int(declared_length)], memoryview(body)[int(declared_length) :]
    else:
        raise InvalidTensor(
            f"Inference-Header-Content-Length {declared_length!r} does not fit a {len(body)}-byte body"
        )
    if max_json_bytes is not None and len(header) > max_json_bytes:
        raise BodyTooLarge(
            f"the JSON part of the request takes {len(header)} bytes, more than the limit of "
            f"{max_json_bytes} bytes (FLEET_MAX_JSON_BODY_BYTES); send large tensors as binary data"
        )
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise InvalidTensor(f"the body is not an inference request: {problems(exc.errors())}") from exc
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in request.inputs:
        if tensor.name in inputs:
            raise InvalidTensor(f"input '{tensor.name}' is given twice")
        size = (tensor.parameters or {}).get("binary_data_size")
        binary = None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidTensor(f"input '{tensor.name}': binary_data_size {size!r} is not a byte count")
            if offset + size > len(rest):
                raise InvalidTensor(
                    f"input '{tensor.name}': binary_data_size {size!r} runs past the body's end"
                )
            binary, offset = rest[offset : offset + size], offset + size
        inputs[tensor.name] = _input_array(tensor, binary)
    if offset != len(rest):
        raise InvalidTensor(f"{len(rest) - offset} bytes after the inputs' binary data belong to no input")
    binary_outputs = _flag(request.parameters, "binary_data_output")
    outputs = (
        None
        if request.outputs is None
        else {o.name: bool((o.parameters or {}).get("binary_data", binary_outputs)) for o in request.outputs}
    )
    return DecodedRequest(request.id, inputs, outputs, binary_outputs)


# -- responses -----------------------------------------------------------------------------------


def infer_response(model_name: str, request: DecodedRequest, outputs: Mapping[str, np.ndarray]) -> Response:
    """JSON with flat data; outputs asked for as binary go as raw bytes after it (not BYTES ones)."""
    entries: list[dict[str, object]] = []
    chunks: list[bytes] = []
    for name, value in outputs.items():
        array = np.asarray(value)
        entry: dict[str, object] = {
            "name": name,
            "datatype": datatype_of(array.dtype),
            "shape": list(array.shape),
        }
        if request.wants_binary(name) and entry["datatype"] != "BYTES":
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json(array.reshape(-1))
        entries.append(entry)
    document: dict[str, object] = {"model_name": model_name, "outputs": entries}
    if request.id is not None:
        document["id"] = request.id
    header = orjson.dumps(document)
    if not chunks:
        return Response(header, media_type=JSON)
    return Response(header + b"".join(chunks), media_type=BINARY, headers={HEADER_LENGTH: str(len(header))})


def metadata_tensors(specs: tuple[TensorSpec, ...]) -> list[MetadataTensor]:
    return [MetadataTensor(name=s.name, datatype=datatype_of(s.dtype), shape=list(s.shape)) for s in specs]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` written in place, for an ``openapi_extra`` body."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return dict(resolve(schema))
