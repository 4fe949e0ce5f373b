"""Helpers the tests share: where the ../shared models are, onnxruntime as the oracle, the error measure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"
SHARED_MODEL_NAMES = ["mobilenet_v2", "squeezenet1_1", "shufflenet_v2_x1_0"]


def shared_model(name: str) -> Path:
    path = SHARED_MODELS / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared models live in ../shared/models beside the checkout")
    return path


def onnxruntime_outputs(model: Path | bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    scale = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) / scale




# -- tiny ONNX models built by hand ---------------------------------------------------------------------------------
# A value is declared as a shape (float32), a (shape, numpy dtype) pair, or a ready onnx.ValueInfoProto; a shape may
# hold None or a string for a dynamic dimension, and an output declared as None has an unknown shape.
ValueSpec = Any


def _value_info(name: str, spec: ValueSpec) -> Any:
    import onnx
    from onnx import helper

    if isinstance(spec, onnx.ValueInfoProto):
        return spec
    dtype: Any = np.float32
    if isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[1], (int, str, type(None))):
        spec, dtype = spec
    shape = None if spec is None else list(spec)
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)


def onnx_model(
    nodes: Sequence[Any],
    inputs: Mapping[str, ValueSpec],
    outputs: Mapping[str, ValueSpec] | Sequence[str],
    initializers: Mapping[str, np.ndarray] | None = None,
    opset: int = 17,
    name: str = "tiny",
) -> Any:
    """An ONNX model of `nodes` (onnx.helper.make_node), inputs/outputs by name, weights as numpy arrays."""
    from onnx import helper, numpy_helper

    if not isinstance(outputs, Mapping):
        outputs = dict.fromkeys(outputs)
    graph = helper.make_graph(
        list(nodes), name, [_value_info(k, v) for k, v in inputs.items()],
        [_value_info(k, v) for k, v in outputs.items()],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 8  # what onnxruntime of every supported version reads
    return model


def tiny_model(
    op: str,
    inputs: Mapping[str, ValueSpec],
    outputs: Mapping[str, ValueSpec] | Sequence[str],
    attrs: Mapping[str, Any] | None = None,
    initializers: Mapping[str, np.ndarray] | None = None,
    opset: int = 17,
) -> Any:
    """One node `op` reading the inputs then the initializers (in that order), writing `outputs`."""
    from onnx import helper

    names = [*inputs, *(initializers or {})]
    out_names = list(outputs) if not isinstance(outputs, Mapping) else list(outputs.keys())
    node = helper.make_node(op, names, out_names, name=f"{op.lower()}_0", **dict(attrs or {}))
    return onnx_model([node], inputs, outputs, initializers, opset)


def run_onnxruntime(model: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's outputs (by name) of an in-memory ONNX model: the oracle of the converter tests."""
    return onnxruntime_outputs(model.SerializeToString(), dict(feeds))


def random_array(*shape: int, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def opencl_devices() -> list[Any]:
    """Every OpenCL device of every platform ([] without an ICD loader or a platform); the test is skipped where
    pyopencl is not installed."""
    cl = pytest.importorskip("pyopencl")
    try:
        return [d for platform in cl.get_platforms() for d in platform.get_devices()]
    except cl.Error:
        return []
