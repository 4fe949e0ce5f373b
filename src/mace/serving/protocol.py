"""The Open Inference Protocol (KServe v2) over REST, as a pure codec: no server, no engine.

Requests are a JSON object, optionally followed by raw little-endian tensor bytes (the binary-tensor extension: the
``Inference-Header-Content-Length`` header says how long the JSON part is, each binary input says its
``binary_data_size``). Every problem is one ProtocolError whose message names the HTTP field or the tensor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"

# KServe v2 datatype <-> numpy dtype (BYTES, strings, is not a tensor type mace runs)
DATATYPES: dict[str, np.dtype[Any]] = {
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
}
_BY_DTYPE = {dtype: name for name, dtype in DATATYPES.items()}


class ProtocolError(ValueError):
    """A request the protocol cannot accept (HTTP 400 unless ``status`` says otherwise)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def datatype_of(dtype: np.dtype[Any] | str) -> str:
    """The KServe datatype of a numpy dtype (or dtype name)."""
    d = np.dtype(dtype)
    if d not in _BY_DTYPE:
        raise ProtocolError(f"numpy dtype {d} has no KServe v2 datatype", status=500)
    return _BY_DTYPE[d]


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: a dimension that varies

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: not said (the request's binary_data_output decides)


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None = None  # None: every output
    id: str | None = None
    binary_output: bool = False  # the request-level binary_data_output parameter
    parameters: dict[str, Any] = field(default_factory=dict)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _flag(params: Mapping[str, Any], key: str, where: str) -> bool | None:
    if key not in params:
        return None
    value = params[key]
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}.parameters.{key}: expected true or false, got {value!r}")
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ProtocolError(f"{where}.shape: expected a list of integers, got {value!r}")
    if any(v < 0 for v in value):
        raise ProtocolError(f"{where}.shape: negative dimension in {value}")
    return tuple(value)


def _flatten_json(data: Any, where: str) -> list[Any]:
    """A nested or flat JSON array as one flat list (its leaves must be numbers or booleans)."""
    if not isinstance(data, list):
        data = [data]
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            if len(stack) > 64:
                raise ProtocolError(f"{where}.data: nested deeper than 64 levels")
            stack.append(iter(item))
        elif isinstance(item, (bool, int, float)):
            out.append(item)
        else:
            raise ProtocolError(f"{where}.data: element {item!r} is not a number or boolean")
    return out


_END = object()


def _json_tensor(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    flat = _flatten_json(data, where)
    count = math.prod(shape)
    if len(flat) != count:
        raise ProtocolError(f"{where}.data: {len(flat)} elements, the shape {list(shape)} holds {count}")
    dtype = DATATYPES[datatype]
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise ProtocolError(f"{where}.data: BOOL elements must be true or false")
    elif dtype.kind in "iu":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            raise ProtocolError(f"{where}.data: {datatype} elements must be integers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise ProtocolError(f"{where}.data: a value is out of the range of {datatype}")
    elif any(isinstance(v, bool) for v in flat):
        raise ProtocolError(f"{where}.data: {datatype} elements must be numbers, not booleans")
    try:
        array = np.array(flat, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise ProtocolError(f"{where}.data: not {datatype}: {exc}") from exc
    return array.reshape(shape)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode a POST /v2/models/{name}/infer body; ``header_length`` is the Inference-Header-Content-Length header."""
    if header_length is not None:
        text = header_length.strip()
        if not text.isdigit():
            raise ProtocolError(f"header {HEADER_LENGTH}: expected a byte count, got {header_length!r}")
        json_size = int(text)
        if json_size > len(body):
            raise ProtocolError(f"header {HEADER_LENGTH}: {json_size} bytes, but the body has only {len(body)}")
    else:
        json_size = len(body)
    try:
        doc = json.loads(body[:json_size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"request body: malformed JSON: {exc}") from exc
    doc = _object(doc, "request body")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"id: expected a string, got {request_id!r}")
    params = _object(doc.get("parameters", {}), "parameters")
    binary_output = _flag(params, "binary_data_output", "request") or False

    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("inputs: expected a non-empty list of tensors")
    binary = memoryview(body)[json_size:]
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    for index, raw in enumerate(raw_inputs):
        where = f"inputs[{index}]"
        tensor = _object(raw, where)
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"{where}.name: expected a string")
        where = f"input {name!r}"
        if name in inputs:
            raise ProtocolError(f"{where}: given twice")
        datatype = tensor.get("datatype")
        if datatype not in DATATYPES:
            raise ProtocolError(f"{where}.datatype: {datatype!r} is not one of {', '.join(DATATYPES)}")
        shape = _shape(tensor.get("shape"), where)
        tparams = _object(tensor.get("parameters", {}), f"{where}.parameters")
        if "binary_data_size" in tparams:
            size = tparams["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"{where}.parameters.binary_data_size: expected a byte count, got {size!r}")
            if "data" in tensor:
                raise ProtocolError(f"{where}: has both data and binary_data_size")
            dtype = DATATYPES[datatype]
            expected = math.prod(shape) * dtype.itemsize
            if size != expected:
                raise ProtocolError(f"{where}.parameters.binary_data_size: {size} bytes, but {datatype}"
                                    f"{list(shape)} takes {expected}")
            if offset + size > len(binary):
                raise ProtocolError(f"{where}: binary data ends at byte {offset + size} of the binary part, which "
                                    f"has only {len(binary)} bytes")
            chunk = bytes(binary[offset:offset + size])
            offset += size
            inputs[name] = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
        else:
            if "data" not in tensor:
                raise ProtocolError(f"{where}: no data and no parameters.binary_data_size")
            inputs[name] = _json_tensor(tensor["data"], datatype, shape, where)
    if offset != len(binary):
        raise ProtocolError(f"request body: {len(binary) - offset} bytes after the tensors' binary data "
                            f"(check {HEADER_LENGTH} and binary_data_size)")

    outputs: list[RequestedOutput] | None = None
    if "outputs" in doc:
        raw_outputs = doc["outputs"]
        if not isinstance(raw_outputs, list):
            raise ProtocolError("outputs: expected a list")
        outputs = []
        for index, raw in enumerate(raw_outputs):
            tensor = _object(raw, f"outputs[{index}]")
            name = tensor.get("name")
            if not isinstance(name, str) or not name:
                raise ProtocolError(f"outputs[{index}].name: expected a string")
            oparams = _object(tensor.get("parameters", {}), f"output {name!r}.parameters")
            outputs.append(RequestedOutput(name, _flag(oparams, "binary_data", f"output {name!r}")))
    return InferRequest(inputs, outputs, request_id, binary_output, params)


def check_inputs(request: InferRequest, inputs: Sequence[TensorMeta], admits: Mapping[str, Any] | None = None) -> None:
    """Names, datatypes and shapes against the model's metadata; ``admits`` maps an input name to a function
    shape -> problem sentence or None (the model's own ranges), checked after the -1 pattern."""
    expected = {t.name: t for t in inputs}
    unknown = sorted(set(request.inputs) - set(expected))
    if unknown:
        raise ProtocolError(f"input {unknown[0]!r}: the model has no such input (it takes {sorted(expected)})")
    missing = sorted(set(expected) - set(request.inputs))
    if missing:
        raise ProtocolError(f"input {missing[0]!r}: missing (the model takes {sorted(expected)})")
    for name, value in request.inputs.items():
        meta = expected[name]
        datatype = datatype_of(value.dtype)
        if datatype != meta.datatype:
            raise ProtocolError(f"input {name!r}.datatype: {datatype}, the model takes {meta.datatype}")
        shape = tuple(value.shape)
        if len(shape) != len(meta.shape) or any(e != -1 and e != v for e, v in zip(meta.shape, shape)):
            raise ProtocolError(f"input {name!r}.shape: {list(shape)}, the model takes {list(meta.shape)}")
        check = (admits or {}).get(name)
        problem = check(shape) if check is not None else None
        if problem:
            raise ProtocolError(f"input {name!r}.shape: {problem}")


def check_outputs(request: InferRequest, outputs: Sequence[str]) -> None:
    for wanted in request.outputs or []:
        if wanted.name not in outputs:
            raise ProtocolError(f"output {wanted.name!r}: the model has no such output (it gives {list(outputs)})")


def build_infer_response(model_name: str, request: InferRequest, results: Mapping[str, np.ndarray],
                         model_version: str = "1") -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the length of its JSON part (for the
    Inference-Header-Content-Length header)."""
    wanted = request.outputs if request.outputs else [RequestedOutput(n, None) for n in results]
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in wanted:
        value = np.asarray(results[out.name])
        tensor: dict[str, Any] = {"name": out.name, "datatype": datatype_of(value.dtype), "shape": list(value.shape)}
        binary = out.binary if out.binary is not None else request.binary_output
        if binary:
            raw = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = value.reshape(-1).tolist()
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": tensors}
    if request.id is not None:
        doc["id"] = request.id
    header = json.dumps(doc, allow_nan=True).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
