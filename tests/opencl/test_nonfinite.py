"""NaN and +-inf in the input: the cpu runtime, the OpenCL runtime and onnxruntime agree, op family by op family.

IEEE semantics throughout: a NaN operand gives NaN (Relu, Clip, HardSigmoid, Max/Min, Sign, the fused activations of
Conv/Gemm: fmax/fmin, which return the other operand, are not used for them), infinities keep their sign. Both mace
runtimes must give the same NaN positions, the same infinities and close finite values as onnxruntime.

Max/min over a set (MaxPool, GlobalMaxPool, ReduceMax, ReduceMin) propagate a NaN anywhere in the set, as numpy and
ONNX's reference implementation do. onnxruntime's SIMD kernels are order dependent there (a NaN is kept or dropped by
where it falls in the window: max([0.2, nan, 1.2]) is nan, max([1.2, nan, 0.4]) is 1.2), so for these ops mace's
NaNs must include onnxruntime's and everything else must equal onnxruntime ("superset" below).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import helper

import mace
from mace.converter import convert_onnx
from support import REPO, onnx_model, onnxruntime_outputs, run_onnxruntime

SHAPE = (1, 2, 4, 4)


def mixed_input() -> np.ndarray:
    """Finite values with NaN, +inf and -inf at fixed places, one whole row (and 2x2 pooling window) of NaN, and a
    -inf in a corner (the clamped edge of a linear Resize)."""
    x = np.random.default_rng(0).uniform(-2, 2, SHAPE).astype(np.float32)
    flat = x.reshape(-1)
    flat[[1, 5, 9]] = np.nan
    flat[[2, 12]] = np.inf
    flat[[3, 20]] = -np.inf
    flat[16:20] = np.nan
    return x


INPUTS: dict[str, Callable[[], np.ndarray]] = {
    "mixed": mixed_input,
    "all_nan": lambda: np.full(SHAPE, np.nan, np.float32),
    "infs": lambda: np.where(np.arange(32).reshape(SHAPE) % 3 == 0, np.inf, -np.inf).astype(np.float32),
}

_rng = np.random.default_rng(1)
W = {
    "lo": np.array(-1.0, np.float32),
    "hi": np.array(1.0, np.float32),
    "half": np.array(0.5, np.float32),
    "other": _rng.uniform(-2, 2, SHAPE).astype(np.float32),
    "axes23": np.array([2, 3], np.int64),
    "axes3": np.array([3], np.int64),
    "gamma": _rng.uniform(0.5, 1.0, 4).astype(np.float32),
    "beta": _rng.uniform(-1.0, 1.0, 4).astype(np.float32),
    "scales": np.array([1, 1, 2, 2], np.float32),
    "slope": np.array([0.2, 0.3], np.float32).reshape(2, 1, 1),
    "w": _rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
    "wb": _rng.standard_normal(3).astype(np.float32),
    "wd": _rng.standard_normal((2, 1, 3, 3)).astype(np.float32),
    "wt": _rng.standard_normal((2, 2, 2, 2)).astype(np.float32),
    "shape2d": np.array([2, 16], np.int64),
    "shape1x32": np.array([1, 32], np.int64),
    "gw": _rng.standard_normal((5, 16)).astype(np.float32),
    "gb": _rng.standard_normal(5).astype(np.float32),
    "mw": _rng.standard_normal((4, 3)).astype(np.float32),
    "vw": _rng.standard_normal((32, 8)).astype(np.float32),
}

N = helper.make_node


def _one(op: str, inputs: list[str], **attrs: Any) -> list[Any]:
    return [N(op, inputs, ["y"], **attrs)]


# name -> (nodes writing "y" from "x" and the initializers of W, the comparison with onnxruntime)
CASES: dict[str, tuple[list[Any], str]] = {
    "Relu": (_one("Relu", ["x"]), "exact"),
    "LeakyRelu": (_one("LeakyRelu", ["x"], alpha=0.1), "exact"),
    "PRelu": (_one("PRelu", ["x", "slope"]), "exact"),
    "Clip": (_one("Clip", ["x", "lo", "hi"]), "exact"),
    "Clip_min_only": (_one("Clip", ["x", "lo"]), "exact"),
    "Sigmoid": (_one("Sigmoid", ["x"]), "exact"),
    "Tanh": (_one("Tanh", ["x"]), "exact"),
    "HardSigmoid": (_one("HardSigmoid", ["x"]), "exact"),
    "HardSwish": (_one("HardSwish", ["x"]), "exact"),
    "Elu": (_one("Elu", ["x"]), "exact"),
    "Celu": (_one("Celu", ["x"]), "exact"),
    "Softplus": (_one("Softplus", ["x"]), "exact"),
    "Sign": (_one("Sign", ["x"]), "exact"),
    "Abs": (_one("Abs", ["x"]), "exact"),
    "Max": (_one("Max", ["x", "other"]), "exact"),
    "Min": (_one("Min", ["x", "other"]), "exact"),
    "Max_constant": (_one("Max", ["x", "half"]), "exact"),
    "Min_constant": (_one("Min", ["other", "x"]), "exact"),
    "Max3": (_one("Max", ["other", "x", "other"]), "exact"),
    "Min3": (_one("Min", ["other", "x", "other"]), "exact"),
    "Sum": (_one("Sum", ["x", "other"]), "exact"),
    "Sum3": (_one("Sum", ["x", "other", "x"]), "exact"),
    "MaxPool": (_one("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2]), "superset"),
    "MaxPool_padded": (_one("MaxPool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "superset"),
    "AveragePool": (_one("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2]), "exact"),
    "GlobalMaxPool": (_one("GlobalMaxPool", ["x"]), "superset"),
    "GlobalAveragePool": (_one("GlobalAveragePool", ["x"]), "exact"),
    "ReduceMax": (_one("ReduceMax", ["x"], axes=[3], keepdims=1), "superset"),
    "ReduceMin": (_one("ReduceMin", ["x"], axes=[3], keepdims=1), "superset"),
    "ReduceMax_spatial": (_one("ReduceMax", ["x"], axes=[2, 3], keepdims=0), "superset"),
    "ReduceSum": (_one("ReduceSum", ["x", "axes23"], keepdims=1), "exact"),
    "ReduceMean": (_one("ReduceMean", ["x"], axes=[3], keepdims=1), "exact"),
    "ArgMax": (_one("ArgMax", ["x"], axis=3), "exact"),
    "ArgMin": (_one("ArgMin", ["x"], axis=3, select_last_index=1), "exact"),
    "Softmax": (_one("Softmax", ["x"], axis=-1), "exact"),
    "LayerNormalization": (_one("LayerNormalization", ["x", "gamma", "beta"], axis=-1, epsilon=1e-5), "exact"),
    "Conv_Relu": ([N("Conv", ["x", "w", "wb"], ["c"], pads=[1, 1, 1, 1]), N("Relu", ["c"], ["y"])], "exact"),
    "DepthwiseConv_Clip": (
        [N("Conv", ["x", "wd"], ["c"], pads=[1, 1, 1, 1], group=2), N("Clip", ["c", "lo", "hi"], ["y"])],
        "exact",
    ),
    "ConvTranspose_Relu": ([N("ConvTranspose", ["x", "wt"], ["c"]), N("Relu", ["c"], ["y"])], "exact"),
    "Gemm_Relu": (
        [N("Reshape", ["x", "shape2d"], ["r"]), N("Gemm", ["r", "gw", "gb"], ["g"], transB=1), N("Relu", ["g"], ["y"])],
        "exact",
    ),
    "MatMul": (_one("MatMul", ["x", "mw"]), "exact"),
    "MatMul_vector_Relu": (
        [N("Reshape", ["x", "shape1x32"], ["r"]), N("MatMul", ["r", "vw"], ["m"]), N("Relu", ["m"], ["y"])],
        "exact",
    ),
    "Resize_linear": (_one("Resize", ["x", "", "scales"], mode="linear"), "exact"),
    "Resize_nearest": (_one("Resize", ["x", "", "scales"], mode="nearest"), "exact"),
    "Transpose": (_one("Transpose", ["x"], perm=[0, 2, 3, 1]), "exact"),
    "Concat": (_one("Concat", ["x", "other"], axis=1), "exact"),
}

INT_OUTPUT = {"ArgMax", "ArgMin"}


@functools.lru_cache(maxsize=1)
def _context() -> Any:
    return mace.GPUContextBuilder().disable_storage().finalize()


def _model(name: str) -> Any:
    nodes, _ = CASES[name]
    used = {i for node in nodes for i in node.input}
    out: Any = (None, np.int64) if name in INT_OUTPUT else None
    return onnx_model(nodes, {"x": SHAPE}, {"y": out}, {k: v for k, v in W.items() if k in used})


def _describe(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a).reshape(-1)[:24], precision=4)


def assert_same(actual: np.ndarray, expected: np.ndarray, what: str, only: np.ndarray | None = None) -> None:
    """Same shape, same NaN positions, same infinities (with sign), finite values close; ``only`` restricts the
    comparison to those positions."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    if only is not None:
        a, e = a[only], e[only]
    detail = f"{what}:\n  got      {_describe(a)}\n  expected {_describe(e)}"
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"NaN positions differ, {detail}")
    inf_a, inf_e = np.where(np.isinf(a), np.sign(a), 0), np.where(np.isinf(e), np.sign(e), 0)
    np.testing.assert_array_equal(inf_a, inf_e, err_msg=f"infinities differ, {detail}")
    finite = np.isfinite(a)
    np.testing.assert_allclose(a[finite], e[finite], rtol=1e-4, atol=1e-5, err_msg=detail)


@pytest.mark.parametrize("feed", list(INPUTS))
@pytest.mark.parametrize("name", list(CASES))
def test_nonfinite_cpu_opencl_onnxruntime(name: str, feed: str) -> None:
    model = _model(name)
    feeds = {"x": INPUTS[feed]()}
    graph = convert_onnx(model)
    with np.errstate(all="ignore"):
        cpu = mace.Engine(graph, device="cpu").run(feeds)["y"]
    opencl = mace.Engine(graph, device="opencl", gpu_context=_context()).run(feeds)["y"]
    expected = run_onnxruntime(model, feeds)["y"]
    what = f"{name} on {feed}"
    assert_same(opencl, cpu, f"{what}: opencl vs cpu")
    if CASES[name][1] == "exact":
        assert_same(cpu, expected, f"{what}: cpu vs onnxruntime")
    else:  # onnxruntime drops some NaNs: every NaN of its is one of ours, the rest is equal
        assert_same(cpu, expected, f"{what}: cpu vs onnxruntime", only=~np.isnan(cpu))
        assert np.isnan(cpu[np.isnan(expected)]).all(), f"{what}: onnxruntime's NaN not kept\n  {_describe(cpu)}"


def test_fp16_storage_keeps_nan_and_inf() -> None:
    """fp16_fp32 (activations stored in half): NaN and infinities survive vstore_half / vload_half, fused Relu and
    MaxPool included."""
    nodes = [
        N("Conv", ["x", "w", "wb"], ["c"], pads=[1, 1, 1, 1]),
        N("Relu", ["c"], ["r"]),
        N("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    model = onnx_model(nodes, {"x": SHAPE}, {"y": None}, {"w": W["w"], "wb": W["wb"]})
    graph = convert_onnx(model, data_type="fp16_fp32")
    for feed in ("mixed", "all_nan"):
        feeds = {"x": INPUTS[feed]()}
        with np.errstate(all="ignore"):
            cpu = mace.Engine(graph, device="cpu").run(feeds)["y"]
        opencl = mace.Engine(graph, device="opencl", gpu_context=_context()).run(feeds)["y"]
        assert_same(opencl, cpu, f"fp16 conv-relu-maxpool on {feed}: opencl vs cpu")
        assert np.isnan(cpu).any()


def squeezenet() -> Path:
    path = REPO / "examples" / "models" / "squeezenet1_1.onnx"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def test_squeezenet_one_nan_pixel() -> None:
    """One NaN pixel in the middle of the image reaches every class score on onnxruntime (through conv, relu,
    maxpool, concat, global average pool): both runtimes give all-NaN outputs too."""
    path = squeezenet()
    x = np.random.default_rng(5).standard_normal((1, 3, 224, 224)).astype(np.float32)
    x[0, 0, 100, 100] = np.nan
    expected = onnxruntime_outputs(path, {"input": x})["output"]
    assert np.isnan(expected).all()
    graph = convert_onnx(path)
    with np.errstate(all="ignore"):
        cpu = mace.Engine(graph, device="cpu").run({"input": x})["output"]
    opencl = mace.Engine(graph, device="opencl", gpu_context=_context()).run({"input": x})["output"]
    assert np.isnan(cpu).all(), _describe(cpu)
    assert np.isnan(opencl).all(), _describe(opencl)
