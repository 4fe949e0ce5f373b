"""The `.mace` model file: a versioned header, a JSON graph description, 64-byte aligned raw weights, a sha256 trailer.

Layout (little-endian; docs/model-format.md has the byte-by-byte table):
    header (64 bytes) | graph JSON (UTF-8) | padding | weights (each array 64-byte aligned) | sha256 (32 bytes)
The weights can be memory-mapped: every constant is a raw little-endian array at an aligned offset.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mace.errors import ModelFormatError
from mace.fileio import UnreadableFileError, atomic_write, open_regular
from mace.model.dynamic import DynamicModel
from mace.model.ir import Graph, Node, TensorInfo
from mace.model.shapes import ShapeSpec
from mace.model.validate import graph_problems

MAGIC = b"MACEMDL\0"
FORMAT_VERSION = 0x00010000  # major.minor in the high/low 16 bits; a reader accepts its own major version
DYNAMIC_VERSION = 0x00010001  # minor 1 adds dynamic models (kind "dynamic"); static files are still written as 1.0
HEADER = struct.Struct("<8sIIQQQQQQ")  # magic, version, header size, json off/len, weights off/len, file size, flags
HEADER_SIZE = 64
ALIGNMENT = 64
TRAILER_SIZE = 32
ALLOWED_DTYPES = {"float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"}

Fail = Callable[[int | None, str], ModelFormatError]
"""``fail(byte_offset, reason)``: the ModelFormatError to raise for the file being decoded."""


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def encode(model: Graph | DynamicModel) -> bytes:
    """Serialize a graph (or a dynamic model) to the bytes of a .mace file."""
    if isinstance(model, DynamicModel):
        return _seal(_dynamic_description(model), model.source, DYNAMIC_VERSION)
    graph = model
    weights = bytearray()
    table: list[dict[str, Any]] = []
    for name, value in graph.constants.items():
        array = np.ascontiguousarray(value)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        weights.extend(b"\0" * (_align(len(weights)) - len(weights)))
        table.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                      "offset": len(weights), "nbytes": array.nbytes})
        weights.extend(array.tobytes())
    description = {
        "name": graph.name,
        "data_type": graph.data_type,
        "inputs": [t.to_json() for t in graph.inputs],
        "outputs": [t.to_json() for t in graph.outputs],
        "tensors": [t.to_json() for t in graph.tensors.values()],
        "nodes": [n.to_json() for n in graph.nodes],
        "constants": table,
        "metadata": graph.metadata,
    }
    return _seal(description, bytes(weights), FORMAT_VERSION)


def _dynamic_description(model: DynamicModel) -> dict[str, Any]:
    return {
        "kind": "dynamic",
        "name": model.name,
        "data_type": model.data_type,
        "inputs": [{"name": s.input, "shape": s.to_json(), "dtype": model.dtypes[s.input]} for s in model.specs],
        "outputs": list(model.outputs),
        "output_names": model.output_names,
        "source": {"format": "onnx", "offset": 0, "nbytes": len(model.source)},
        "metadata": model.metadata,
    }


def _seal(description: dict[str, Any], weights: bytes, version: int) -> bytes:
    """Header, JSON description, aligned weights area, sha256 trailer."""
    text = json.dumps(description, separators=(",", ":"), sort_keys=False).encode("utf-8")
    json_offset = HEADER_SIZE
    weights_offset = _align(json_offset + len(text))
    total = weights_offset + len(weights) + TRAILER_SIZE
    header = HEADER.pack(MAGIC, version, HEADER_SIZE, json_offset, len(text), weights_offset, len(weights), total, 0)
    body = header.ljust(HEADER_SIZE, b"\0") + text
    body = body.ljust(weights_offset, b"\0") + bytes(weights)
    return body + hashlib.sha256(body).digest()


def save(model: Graph | DynamicModel, path: str | os.PathLike[str]) -> Path:
    """Write atomically: a temp file in the same directory, fsync, rename over the target, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, encode(model))
    return path


def load_graph(path: str | os.PathLike[str]) -> Graph:
    """``load`` for callers that need fixed shapes: a dynamic model is an error saying how to fix them."""
    model = load(path)
    if isinstance(model, DynamicModel):
        specs = ", ".join(f"{s.input}={s.describe()}" for s in model.specs)
        raise ModelFormatError(str(path), None, f"a dynamic model ({specs}): give concrete shapes with "
                               "--input-shape NAME=DIMS (or run it through mace.Engine, which specializes per shape)")
    return model


def load(path: str | os.PathLike[str]) -> Graph | DynamicModel:
    """Read and validate a .mace file; weights are views of a read-only memory map of the file."""
    path = Path(path)
    try:
        fd, st = open_regular(path)  # O_NONBLOCK: a FIFO is named at once, not waited on forever
    except UnreadableFileError as exc:
        raise ModelFormatError(str(path), None, str(exc).removeprefix(f"{path}: ")) from exc
    except OSError as exc:
        raise ModelFormatError(str(path), None, f"cannot read: {exc.strerror or exc}") from exc
    try:
        with open(fd, "rb") as f:
            if st.st_size == 0:
                raise ModelFormatError(str(path), 0, "the file is empty")
            data: bytes | mmap.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise ModelFormatError(str(path), None, f"cannot read: {exc.strerror or exc}") from exc
    return decode(data, str(path))


def decode(data: bytes | mmap.mmap, source: str = "<bytes>") -> Graph | DynamicModel:
    def fail(offset: int | None, reason: str) -> ModelFormatError:
        return ModelFormatError(source, offset, reason)

    size = len(data)
    if size < HEADER_SIZE:
        raise fail(size, f"truncated header: the file has {size} bytes, the header needs {HEADER_SIZE}")
    magic, version, header_size, json_off, json_len, w_off, w_len, total, _flags = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise fail(0, f"bad magic {bytes(magic)!r}, expected {MAGIC!r} (not a .mace model file)")
    if version >> 16 != FORMAT_VERSION >> 16:
        raise fail(8, f"unsupported format version 0x{version:08x} (this mace reads 0x{FORMAT_VERSION:08x})")
    if header_size != HEADER_SIZE:
        raise fail(12, f"header size {header_size}, expected {HEADER_SIZE}")
    if total != size:
        where = min(total, size)
        raise fail(where, f"the header says the file has {total} bytes but it has {size} (truncated or padded)")
    body_end = size - TRAILER_SIZE
    if not HEADER_SIZE <= json_off <= json_off + json_len <= body_end:
        raise fail(16, f"graph description range [{json_off}, {json_off + json_len}) is outside the file")
    if w_off % ALIGNMENT or not json_off + json_len <= w_off <= w_off + w_len <= body_end:
        raise fail(32, f"weights range [{w_off}, {w_off + w_len}) is misaligned or outside the file")
    digest = hashlib.sha256(memoryview(data)[:body_end]).digest()
    if digest != bytes(data[body_end:size]):
        raise fail(body_end, "sha256 mismatch: the content was modified or corrupted")

    try:
        description = json.loads(bytes(data[json_off:json_off + json_len]).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise fail(json_off + exc.start, "graph description is not valid UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise fail(json_off + exc.pos, f"graph description is not valid JSON: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:  # an integer over the digit limit; nesting deeper than the stack
        raise fail(json_off, f"graph description cannot be parsed: {type(exc).__name__}: {exc}") from exc
    try:
        if isinstance(description, dict) and description.get("kind") == "dynamic":
            return _dynamic_from_description(description, data, w_off, w_len, fail)
        return _graph_from_description(description, data, w_off, w_len, fail)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(Infinity), huge dims
        raise fail(json_off, f"graph description is malformed: {type(exc).__name__}: {exc}") from exc


def _graph_from_description(d: dict[str, Any], data: bytes | mmap.mmap, w_off: int, w_len: int, fail: Fail) -> Graph:
    constants: dict[str, np.ndarray] = {}
    for entry in d["constants"]:
        name, dtype, shape = str(entry["name"]), str(entry["dtype"]), tuple(int(x) for x in entry["shape"])
        offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        if dtype not in ALLOWED_DTYPES:
            raise fail(None, f"constant {name!r} has unsupported dtype {dtype!r}")
        if any(x < 0 for x in shape) or nbytes != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize:
            raise fail(w_off + offset, f"constant {name!r}: {nbytes} bytes do not match shape {shape} {dtype}")
        if offset % ALIGNMENT or offset < 0 or offset + nbytes > w_len:
            raise fail(w_off + offset, f"constant {name!r} range [{offset}, {offset + nbytes}) is outside the weights")
        array = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"), count=int(np.prod(shape, dtype=np.int64)),
                              offset=w_off + offset).reshape(shape)
        constants[name] = array
    tensors = {info.name: info for info in map(TensorInfo.from_json, d["tensors"])}
    graph = Graph(
        name=str(d["name"]),
        inputs=[TensorInfo.from_json(t) for t in d["inputs"]],
        outputs=[TensorInfo.from_json(t) for t in d["outputs"]],
        nodes=[Node.from_json(n) for n in d["nodes"]],
        constants=constants,
        tensors=tensors,
        data_type=str(d.get("data_type", "fp32_fp32")),
        metadata=dict(d.get("metadata", {})),
    )
    _check_references(graph, fail)
    problems = graph_problems(graph)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise fail(None, problems[0] + more)
    return graph


def _dynamic_from_description(d: dict[str, Any], data: bytes | mmap.mmap, w_off: int, w_len: int,
                              fail: Fail) -> DynamicModel:
    source = d["source"]
    offset, nbytes = int(source["offset"]), int(source["nbytes"])
    if source.get("format") != "onnx":
        raise fail(None, f"dynamic model source format {source.get('format')!r} is not 'onnx'")
    if offset < 0 or nbytes < 0 or offset + nbytes > w_len:
        raise fail(w_off + max(offset, 0), f"source range [{offset}, {offset + nbytes}) is outside the weights")
    specs, dtypes = [], {}
    for entry in d["inputs"]:
        name, dtype = str(entry["name"]), str(entry["dtype"])
        if dtype not in ALLOWED_DTYPES:
            raise fail(None, f"input {name!r} has unsupported dtype {dtype!r}")
        specs.append(ShapeSpec.from_json(name, entry["shape"]))
        dtypes[name] = dtype
    output_names = d.get("output_names")
    return DynamicModel(
        name=str(d["name"]),
        data_type=str(d.get("data_type", "fp32_fp32")),
        specs=specs,
        dtypes=dtypes,
        outputs=[str(o) for o in d["outputs"]],
        source=bytes(data[w_off + offset:w_off + offset + nbytes]),
        output_names=[str(o) for o in output_names] if output_names is not None else None,
        metadata=dict(d.get("metadata", {})),
    )


def _check_references(graph: Graph, fail: Fail) -> None:
    """Every node input must be defined before use, so a runtime never meets an unknown tensor."""
    defined = {t.name for t in graph.inputs} | set(graph.constants)
    for node in graph.nodes:
        if not all(isinstance(name, str) for name in [*node.inputs, *node.outputs]):
            raise fail(None, f"node {node.name!r} ({node.op}) has a tensor name that is not a string")
        for name in node.inputs:
            if name and name not in defined:
                raise fail(None, f"node {node.name!r} ({node.op}) reads tensor {name!r}, which is never defined")
        defined.update(o for o in node.outputs if o)
        for out in node.outputs:
            if out and out not in graph.tensors:
                raise fail(None, f"node {node.name!r} output {out!r} has no shape/dtype entry")
    for output in graph.outputs:
        if output.name not in defined:
            raise fail(None, f"graph output {output.name!r} is never produced")
