"""The work-group-per-row kernels of GPU targets (norm.cl ROW_NORM and softmax.cl with LX; plan/reduce.py
row_blocking) against numpy in float64 and the reference runtime, on the test device (pocl here: the kernels are
portable OpenCL C). Row lengths 1 to 16384 (registers-cached and re-reading forms, vectors of 1, 2 and 4, several rows
per work-group), means far from zero (x = 1000 + randn: fp32 to 1e-5 of the largest output), fp16 storage, NaN and
+-inf as onnxruntime gives them. The portable plan (one work item per row) meets the same accuracy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mace.converter import convert_onnx
from mace.model.ir import Graph, Node, TensorInfo
from mace.opencl import plan as planning
from mace.opencl.plan import DeviceTarget
from mace.opencl.plan.reduce import row_blocking
from mace.ops.reference import run_node
from support import onnxruntime_outputs

GPU = DeviceTarget(is_gpu=True, compute_units=132, local_mem_bytes=49152, max_work_group_size=1024)
CPU = DeviceTarget(is_gpu=False, compute_units=16, local_mem_bytes=1 << 20, max_work_group_size=4096)
ROW_LENGTHS = (1, 2, 7, 64, 197, 768, 1000, 3072)
LONG = 16384  # more than the registers hold: the row is read again for the output


def _ln64(x: np.ndarray, axis: int, scale: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5) -> Any:
    x = x.astype(np.float64)
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if scale is not None:
        y = y * scale.astype(np.float64)
    if bias is not None:
        y = y + bias.astype(np.float64)
    return y, mean, 1.0 / np.sqrt(var + eps)


def _softmax64(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted - log_sum if log else np.exp(shifted - log_sum)


class Rows:
    """A graph of independent row nodes (one program for all: pocl compiles slowly), each output with its float64
    reference and the reference runtime's output."""

    def __init__(self, data_type: str) -> None:
        self.data_type = data_type
        self.rng = np.random.default_rng(0)
        self.inputs: list[TensorInfo] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.feeds: dict[str, np.ndarray] = {}
        self.exact: dict[str, np.ndarray] = {}  # output -> float64 reference
        self.reference: dict[str, np.ndarray] = {}  # output -> the reference runtime's

    def _fp(self, value: np.ndarray) -> np.ndarray:
        half = self.data_type == "fp16_fp32"
        return value.astype(np.float16).astype(np.float32) if half else value.astype(np.float32)

    def input(self, shape: tuple[int, ...], mean: float = 0.0) -> str:
        name = f"x{len(self.inputs)}"
        self.feeds[name] = self._fp(mean + self.rng.standard_normal(shape))
        self.inputs.append(TensorInfo(name, shape, "float32"))
        self.tensors[name] = self.inputs[-1]
        return name

    def const(self, value: np.ndarray) -> str:
        name = f"c{len(self.constants)}"
        stored = value.astype(np.float16 if self.data_type == "fp16_fp32" else np.float32)
        self.constants[name] = stored
        self.tensors[name] = TensorInfo(name, stored.shape, str(stored.dtype))
        return name

    def node(self, op: str, inputs: list[str], attrs: dict[str, Any], exact: list[np.ndarray]) -> list[str]:
        name = f"{op.lower()}_{len(self.nodes)}"
        outputs = [f"{name}_out{i}" for i in range(len(exact))]
        values = [self.feeds[i] if i in self.feeds else self.constants[i].astype(np.float32) for i in inputs]
        for out, ref, got in zip(outputs, exact, run_node(op, values, attrs)):
            self.tensors[out] = TensorInfo(out, tuple(ref.shape), "float32")
            self.exact[out] = ref
            self.reference[out] = np.asarray(got)
        self.nodes.append(Node(op, name, inputs, outputs, attrs))
        return outputs

    def layer_norm(
        self, shape: tuple[int, ...], axis: int = -1, mean: float = 1000.0, params: int = 2, stats: bool = False
    ) -> None:
        x = self.input(shape, mean)
        axis = axis % len(shape)
        norm_shape = shape[axis:]
        scale = self._fp(self.rng.uniform(0.5, 1.5, norm_shape)) if params >= 1 else None
        bias = self._fp(self.rng.uniform(-0.5, 0.5, norm_shape)) if params >= 2 else None
        y, m, rstd = _ln64(self.feeds[x], axis, scale, bias)
        inputs = [x] + [self.const(v) for v in (scale, bias) if v is not None]
        if scale is None:  # ONNX requires a scale: ones stand in, the reference is unchanged
            inputs.append(self.const(np.ones(norm_shape)))
        self.node("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-5}, [y, m, rstd] if stats else [y])

    def softmax(self, shape: tuple[int, ...], axis: int = -1, log: bool = False, mean: float = 0.0) -> None:
        x = self.input(shape, mean)
        op = "LogSoftmax" if log else "Softmax"
        self.node(op, [x], {"axis": axis}, [_softmax64(self.feeds[x], axis, log)])

    def instance_norm(self, shape: tuple[int, ...]) -> None:
        x = self.input(shape, 1000.0)
        c = shape[1]
        scale, bias = self._fp(self.rng.uniform(0.5, 1.5, c)), self._fp(self.rng.uniform(-0.5, 0.5, c))
        y, _, _ = _ln64(self.feeds[x], 2, None, None)
        y = y * scale.reshape(1, c, *[1] * (len(shape) - 2)) + bias.reshape(1, c, *[1] * (len(shape) - 2))
        self.node("InstanceNormalization", [x, self.const(scale), self.const(bias)], {"epsilon": 1e-5}, [y])

    def graph(self) -> Graph:
        outputs = [self.tensors[o] for o in self.exact]
        return Graph("rows", self.inputs, outputs, self.nodes, self.constants, self.tensors, self.data_type)


def row_graph(data_type: str) -> Rows:
    b = Rows(data_type)
    for n in ROW_LENGTHS:
        rows = 197 if n == 768 else 5  # 5 rows of a short row: the last work-group holds surplus rows
        b.layer_norm((rows, n))
        b.softmax((rows, n))
        b.softmax((rows, n), log=True)
    b.layer_norm((3, LONG))
    b.softmax((2, LONG), mean=1000.0)
    b.softmax((2, LONG), log=True)
    b.layer_norm((2, 4, 6, 32), axis=2, params=1, stats=True)  # over the last two dims, + mean and 1/std
    b.layer_norm((3, 5, 7), axis=1, params=0)
    b.layer_norm((12, 1000), stats=True)
    b.softmax((3, 12, 20, 20), axis=-1, mean=1000.0)
    b.softmax((4, 10, 1, 1), axis=1)  # trailing dims of 1: still rows
    b.softmax((2, 6, 5, 7), axis=1, log=True)  # not the last axis: the portable kernel
    b.instance_norm((2, 3, 7, 9))
    b.instance_norm((1, 4, 32, 32))
    return b


def _errors(b: Rows, got: dict[str, np.ndarray], against: dict[str, np.ndarray]) -> dict[str, float]:
    errors = {}
    for name, ref in against.items():
        out = got[name].astype(np.float64)
        assert out.shape == ref.shape, name
        errors[name] = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))
    return errors


@pytest.mark.parametrize("data_type", ["fp32_fp32", "fp16_fp32"])
@pytest.mark.parametrize("target", [GPU, None], ids=["gpu", "portable"])
def test_rows(make_executor: Callable[..., Any], data_type: str, target: DeviceTarget | None) -> None:
    """fp32: 1e-5 of the largest output against float64 (means of 1000 included); fp16 storage: 2e-3 (the output's
    rounding to half); both within 1e-3 / 1e-2 of the reference runtime (which computes in float32: on a row of 2
    values around 1000 it is 1e-4 off itself)."""
    b = row_graph(data_type)
    executor = make_executor(b.graph(), target=target)
    grouped = [launch for launch in executor.plan.launches if "LX" in _defines(executor.plan.source, launch.kernel)]
    assert bool(grouped) == (target is not None)
    got = executor.run(b.feeds)
    fp16 = data_type == "fp16_fp32"
    exact, reference = _errors(b, got, b.exact), _errors(b, got, b.reference)
    bad = [f"{k}: {v:.1e} vs float64" for k, v in exact.items() if not v <= (2e-3 if fp16 else 1e-5)]
    bad += [f"{k}: {v:.1e} vs reference" for k, v in reference.items() if not v <= (1e-2 if fp16 else 1e-3)]
    assert not bad, bad


def _defines(source: str, kernel: str) -> dict[str, str]:
    """A specialization's #defines (of plain names)."""
    chunk = source.split(f"// ---- {kernel} ----")[1].split("// ---- ")[0]
    return dict(re.findall(r"^#define (\w+) (.*)$", chunk, re.M))


def test_row_launches() -> None:
    """GPU targets fix the work-group of every row kernel (so the tuner leaves it), a multiple of the global size;
    a CPU target plans the portable kernels (softmax_cpu.cl for a last-axis Softmax), one work item per row."""
    graph = row_graph("fp32_fp32").graph()
    plan = planning.plan_graph(graph, GPU)
    for launch in plan.launches:
        defines = _defines(plan.source, launch.kernel)
        if "LX" not in defines:
            assert launch.op == "LogSoftmax" and defines["INNER"] != "1"
            continue
        assert launch.local_size == (int(defines["LX"]), int(defines["LY"]))
        assert all(g % v == 0 for g, v in zip(launch.global_size, launch.local_size))
        assert int(defines["LX"]) * int(defines["LY"]) <= 256
        assert "reqd_work_group_size(LX, LY, 1)" in plan.source
    portable = planning.plan_graph(graph)
    assert all(launch.local_size is None for launch in portable.launches)
    # a CPU target: the row norms as no target; a last-axis fp32 Softmax on softmax_cpu.cl, still a row per work item
    cpu = planning.plan_graph(graph, CPU)
    families = [(c.kernel.rsplit("_", 1)[0], q.kernel.rsplit("_", 1)[0])
                for c, q in zip(cpu.launches, portable.launches)]
    assert ("softmax_cpu", "softmax") in families
    assert all(c == q or (c, q) == ("softmax_cpu", "softmax") for c, q in families)


def test_row_launches_not_tunable(make_executor: Callable[..., Any]) -> None:
    b = Rows("fp32_fp32")
    b.layer_norm((4, 768))
    b.softmax((4, 197))
    executor = make_executor(b.graph(), target=GPU)
    assert [executor.tunable(i) for i in range(len(executor.plan.launches))] == [False, False]
    with pytest.raises(ValueError):
        executor.set_local_size(0, (32, 1))


@pytest.mark.parametrize(
    ("rows", "row_len", "lx", "ly", "vec", "cached"),
    [
        (197, 768, 64, 1, 4, True),  # 192 vectors: 3 per lane, every lane busy
        (1, 3072, 256, 1, 4, True),
        (2364, 197, 128, 1, 1, True),
        (1536, 128, 32, 2, 4, True),  # short rows: 2 per work-group of 64
        (10, 7, 4, 16, 1, True),
        (3, 1, 1, 4, 1, True),  # no more row slots than rows (rounded up to a power of two)
        (2, 50176, 256, 1, 4, False),  # too long for the registers
    ],
)
def test_row_blocking(rows: int, row_len: int, lx: int, ly: int, vec: int, cached: bool) -> None:
    blocking = row_blocking(rows, row_len, 1024)
    assert (blocking.lx, blocking.ly, blocking.vec, blocking.cached) == (lx, ly, vec, cached)
    assert blocking.lx * blocking.vec <= row_len and row_len % blocking.vec == 0
    assert blocking.per * blocking.lx * blocking.vec >= row_len
    assert row_blocking(rows, row_len, 16).lx * row_blocking(rows, row_len, 16).ly <= 16


def _special_model(n: int) -> onnx.ModelProto:
    nodes = [
        helper.make_node("LayerNormalization", ["x", "s", "b"], ["ln"], axis=-1),
        helper.make_node("Softmax", ["x"], ["sm"], axis=-1),
        helper.make_node("LogSoftmax", ["x"], ["lsm"], axis=-1),
    ]
    ones, zeros = np.ones(n, np.float32), np.zeros(n, np.float32)
    graph = helper.make_graph(
        nodes,
        "special",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7, n])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [7, n]) for o in ("ln", "sm", "lsm")],
        [helper.make_tensor("s", TensorProto.FLOAT, [n], ones), helper.make_tensor("b", TensorProto.FLOAT, [n], zeros)],
    )
    # IR 8: what any onnxruntime that runs opset 17 reads
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("n", [5, 197, 768, LONG])
@pytest.mark.parametrize("target", [GPU, None], ids=["gpu", "portable"])
def test_nan_inf_rows(make_executor: Callable[..., Any], n: int, target: DeviceTarget | None) -> None:
    """A NaN anywhere in a row makes the whole row NaN; +inf too; -inf is a 0 of Softmax (and -inf of LogSoftmax)
    but a NaN row of LayerNormalization; a row of -inf is NaN: as onnxruntime gives them. Other rows are unharmed."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, n)).astype(np.float32)
    last = n - 1
    x[1, last // 2] = np.nan
    x[2, last] = np.inf
    x[3, 0] = -np.inf  # first: the shift of LayerNormalization, the first value of the online max
    x[4, :] = -np.inf
    x[5, last] = np.nan
    model = _special_model(n)
    expected = onnxruntime_outputs(model.SerializeToString(), {"x": x})
    executor = make_executor(convert_onnx(model), target=target)
    got = executor.run({"x": x})
    for name, ref in expected.items():
        assert np.array_equal(np.isnan(got[name]), np.isnan(ref)), (name, np.isnan(got[name]).sum(1))
        assert np.array_equal(np.isinf(got[name]), np.isinf(ref)), name
        finite = np.isfinite(ref)
        np.testing.assert_allclose(got[name][finite], ref[finite], rtol=1e-4, atol=1e-5, err_msg=name)
