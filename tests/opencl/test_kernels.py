"""The OpenCL kernels against the numpy reference (mace.ops.reference.run_node), op by op, fused epilogues included.

pocl compiles slowly, so each test builds one graph holding many independent nodes (one program, one run) and then
checks every node's output: fp32 to max|diff|/max|ref| <= 1e-4, fp16 storage (fp16_fp32) to 1e-2.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from mace.errors import DeviceError
from mace.model.ir import Graph, Node, TensorInfo
from mace.opencl import plan as planning
from mace.opencl.plan import DEFAULT_POLICY, DeviceTarget, GemmTile, TilingPolicy
from mace.opencl.tuning.variants import variant_key
from mace.ops.reference import run_node
from support import onnxruntime_outputs, relative_error, shared_model

FP32_TOL = 1e-4
FP16_TOL = 1e-2


class GraphBuilder:
    """Builds an IR graph node by node, evaluating each node with the numpy reference as it goes (which also gives
    the output shapes). Every node output is a graph output unless ``output=False``."""

    def __init__(self, name: str, data_type: str = "fp32_fp32", seed: int = 0) -> None:
        self.name = name
        self.data_type = data_type
        self.rng = np.random.default_rng(seed)
        self.values: dict[str, np.ndarray] = {}
        self.inputs: list[TensorInfo] = []
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self.outputs: list[str] = []

    def input(
        self, name: str, shape: Sequence[int], low: float = -2.0, high: float = 2.0, dtype: Any = np.float32
    ) -> str:
        if np.issubdtype(dtype, np.integer):
            value = self.rng.integers(int(low), int(high), shape).astype(dtype)
        elif dtype == np.bool_:
            value = self.rng.random(shape) < 0.5
        else:
            value = self.rng.uniform(low, high, shape).astype(dtype)
            if self.data_type == "fp16_fp32":  # the host converts inputs to half: the reference sees the same values
                value = value.astype(np.float16).astype(np.float32)
        self.values[name] = value
        info = TensorInfo(name, tuple(value.shape), str(value.dtype))
        self.inputs.append(info)
        self.tensors[name] = info
        return name

    def const(self, value: Any, dtype: Any = None, name: str | None = None) -> str:
        name = name or f"c{len(self.constants)}"
        value = np.asarray(value, dtype=dtype if dtype is not None else None)
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        if self.data_type == "fp16_fp32" and value.dtype == np.float32:
            value = value.astype(np.float16)
        self.constants[name] = value
        self.values[name] = value.astype(np.float32) if value.dtype == np.float16 else value
        self.tensors[name] = TensorInfo(name, tuple(value.shape), str(value.dtype))
        return name

    def weight(self, shape: Sequence[int], scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        return self.const(self.rng.standard_normal(shape) * (scale or 1.0 / np.sqrt(fan_in)))

    def node(
        self, op: str, inputs: Sequence[str], attrs: dict[str, Any] | None = None, outputs: int = 1, output: bool = True
    ) -> str:
        name = f"{op.lower()}_{len(self.nodes)}"
        attrs = dict(attrs or {})
        results = run_node(op, [self.values[i] if i else None for i in inputs], attrs)
        names = [f"{name}_out{i}" for i in range(outputs)]
        for out, value in zip(names, results):
            value = np.asarray(value)
            self.values[out] = value
            self.tensors[out] = TensorInfo(out, tuple(value.shape), str(value.dtype))
            if output:
                self.outputs.append(out)
        self.nodes.append(Node(op, name, list(inputs), names, attrs))
        return names[0]

    def outputs_of(self, first: str, count: int) -> list[str]:
        stem = first.rsplit("_out", 1)[0]
        return [f"{stem}_out{i}" for i in range(count)]

    def graph(self) -> Graph:
        outputs = [self.tensors[o] for o in self.outputs]
        return Graph(self.name, self.inputs, outputs, self.nodes, self.constants, self.tensors, self.data_type)

    def feeds(self) -> dict[str, np.ndarray]:
        return {t.name: self.values[t.name] for t in self.inputs}


def check(builder: GraphBuilder, make_executor: Callable[[Graph], Any], tol: float | None = None) -> None:
    """Runs the builder's graph on the device and compares every output with the reference."""
    tol = tol if tol is not None else (FP16_TOL if builder.data_type == "fp16_fp32" else FP32_TOL)
    executor = make_executor(builder.graph())
    got = executor.run(builder.feeds())
    producer = {o: n for n in builder.nodes for o in n.outputs}
    failures = []
    for name in builder.outputs:
        ref, out = builder.values[name], got[name]
        node = producer[name]
        label = f"{node.name} {node.attrs}"
        if out.shape != ref.shape:
            failures.append(f"{label}: shape {out.shape} != {ref.shape}")
        elif ref.dtype.kind == "f":
            scale = max(float(np.abs(ref).max(initial=0.0)), 1e-6)
            err = float(np.abs(out.astype(np.float64) - ref).max(initial=0.0)) / scale
            if not err <= tol:
                failures.append(f"{label}: relative error {err:.2e} > {tol:.0e}")
        elif out.dtype != ref.dtype or not np.array_equal(out, ref):
            failures.append(f"{label}: {out.dtype} {out.ravel()[:8]} != {ref.dtype} {ref.ravel()[:8]}")
    assert not failures, "\n".join(failures)


# --- elementwise -----------------------------------------------------------------------------------------------------


def test_unary(make_executor) -> None:
    b = GraphBuilder("unary")
    x = b.input("x", (2, 3, 4, 5), -3, 3)
    for op, attrs in [
        ("Relu", {}),
        ("LeakyRelu", {"alpha": 0.1}),
        ("Sigmoid", {}),
        ("HardSigmoid", {"alpha": 0.25, "beta": 0.4}),
        ("HardSwish", {}),
        ("Tanh", {}),
        ("Elu", {"alpha": 0.7}),
        ("Selu", {}),
        ("Celu", {"alpha": 1.5}),
        ("ThresholdedRelu", {"alpha": 0.5}),
        ("Shrink", {}),
        ("Shrink", {"lambd": 1.5, "bias": -0.25}),
        ("Shrink", {"lambd": -0.5, "bias": 0.75}),
        ("Softplus", {}),
        ("Softsign", {}),
        ("Mish", {}),
        ("Erf", {}),
        ("Gelu", {}),
        ("Gelu", {"approximate": "tanh"}),
        ("Exp", {}),
        ("Abs", {}),
        ("Neg", {}),
        ("Floor", {}),
        ("Ceil", {}),
        ("Round", {}),
        ("Sign", {}),
        ("Sin", {}),
        ("Cos", {}),
        ("Atan", {}),
        ("Sinh", {}),
        ("Cosh", {}),
        ("Asinh", {}),
    ]:
        b.node(op, [x], attrs)
    unit = b.input("unit", (2, 3, 4, 5), -0.99, 0.99)  # (the inverse functions' domains)
    for op in ("Asin", "Acos", "Atanh", "Tan"):
        b.node(op, [unit])
    b.node("Acosh", [b.input("above_one", (2, 3, 4, 5), 1.01, 5.0)])
    b.node("Clip", [x, b.const(-1.0), b.const(2.0)])
    b.node("Clip", [x, "", b.const(0.5)])
    b.node("Clip", [x, b.input("lo", (), -1.0, 0.0), b.input("hi", (), 0.0, 1.0)])  # run-time bounds
    positive = b.node("Add", [b.node("Abs", [x], output=False), b.const(0.1)])
    for op in ("Sqrt", "Log", "Reciprocal"):
        b.node(op, [positive])
    as_int = b.node("Cast", [b.node("Mul", [x, b.const(10.0)], output=False)], {"to": 7})
    b.node("Cast", [as_int], {"to": 1})
    as_bool = b.node("Cast", [b.node("Relu", [x], output=False)], {"to": 9})
    b.node("Not", [as_bool])
    b.node("Cast", [x], {"to": 1})  # same type: an alias that is a graph output
    check(b, make_executor)


def test_binary_broadcasting(make_executor) -> None:
    b = GraphBuilder("binary")
    a = b.input("a", (2, 3, 4, 5))
    per_channel = b.input("per_channel", (3, 1, 1))
    last = b.input("last", (5,))
    mixed = b.input("mixed", (2, 1, 4, 1))
    same = b.input("same", (2, 3, 4, 5))
    positive = b.input("positive", (2, 3, 4, 5), 0.5, 2.0)
    b.node("Add", [a, per_channel])
    b.node("Sub", [last, a])
    b.node("Mul", [a, mixed])
    b.node("Div", [a, positive])
    b.node("Mul", [a, b.const(0.5)])  # a scalar constant becomes a literal
    b.node("Add", [b.const(np.arange(5, dtype=np.float32)), a])  # a constant tensor operand
    b.node("Pow", [positive, b.const(2.0)])
    b.node("Pow", [positive, b.const(1.7)])
    b.node("Pow", [positive, mixed])
    b.node("Max", [a, same])
    b.node("Min", [a, mixed])
    b.node("PRelu", [a, b.const(np.array([0.1, 0.2, 0.3], np.float32).reshape(3, 1, 1))])
    b.node("Mod", [a, positive], {"fmod": 1})
    b.node("Equal", [b.node("Floor", [a], output=False), b.node("Floor", [same], output=False)])
    less = b.node("Less", [a, same])
    b.node("Greater", [a, per_channel])
    b.node("LessOrEqual", [a, mixed])
    b.node("GreaterOrEqual", [a, last])
    b.node("Where", [less, a, per_channel])
    b.node("And", [less, b.node("Greater", [a, b.const(0.0)], output=False)])
    b.node("Or", [less, b.node("Greater", [same, b.const(0.0)], output=False)])
    b.node("Xor", [less, b.node("Greater", [same, b.const(0.0)], output=False)])
    b.node("Sum", [a, per_channel, last, mixed, same, positive])  # 6 operands: two chunks, the second in place
    b.node("Mean", [a, same, per_channel])
    b.node("Max", [a, same, mixed, last, per_channel])
    b.node("Min", [a, same, positive])
    b.node("Sum", [a])  # one operand: an alias
    check(b, make_executor)


def test_integer_elementwise(make_executor) -> None:
    b = GraphBuilder("integers")
    i = b.input("i", (2, 3), -50, 50, np.int64)
    j = b.input("j", (3,), 1, 9, np.int64)
    for op, attrs in [
        ("Add", {}),
        ("Sub", {}),
        ("Mul", {}),
        ("Div", {}),
        ("Max", {}),
        ("Min", {}),
        ("Equal", {}),
        ("Less", {}),
        ("Mod", {}),
        ("Mod", {"fmod": 1}),
    ]:
        b.node(op, [i, j], attrs)
    b.node("Where", [b.node("Greater", [i, j], output=False), i, j])
    b.node("Cast", [i], {"to": 1})
    b.node("Cast", [i], {"to": 6})  # int64 -> int32
    b.node("Transpose", [i], {"perm": [1, 0]})
    b.node("Clip", [i, b.const(np.int64(-5)), b.const(np.int64(7))])
    b.node("Clip", [i, "", b.const(np.int64(7))])
    b.node("Add", [b.input("i16", (4,), -100, 100, np.int16), b.input("j16", (4,), -100, 100, np.int16)])
    b.node("Mul", [b.input("u32", (4,), 0, 1000, np.uint32), b.input("v32", (4,), 0, 1000, np.uint32)])
    check(b, make_executor)


# --- convolutions and matrix products --------------------------------------------------------------------------------


def _conv_attrs(
    k: Sequence[int],
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    group: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    n = len(k)
    attrs = {
        "kernel_shape": list(k),
        "strides": list(strides or [1] * n),
        "pads": list(pads or [0] * 2 * n),
        "dilations": list(dilations or [1] * n),
        "group": group,
    }
    attrs.update(extra)
    return attrs


def conv_graph(data_type: str) -> GraphBuilder:
    b = GraphBuilder("conv", data_type)
    x = b.input("x", (1, 8, 12, 11))
    relu = {"activation": "Relu"}
    # general direct conv: OC blocks of 4, 2 and 1; strides, dilations, asymmetric pads, groups
    b.node("Conv", [x, b.weight((16, 8, 3, 3)), b.weight((16,), 0.5)], _conv_attrs([3, 3], pads=[1, 1, 1, 1], **relu))
    b.node(
        "Conv",
        [x, b.weight((6, 8, 3, 3))],
        _conv_attrs([3, 3], [2, 2], [0, 1, 1, 0], activation="LeakyRelu", activation_params=[0.2]),
    )
    b.node(
        "Conv",
        [x, b.weight((5, 8, 3, 3)), b.weight((5,))],
        _conv_attrs([3, 3], pads=[2, 2, 2, 2], dilations=[2, 2], activation="HardSwish"),
    )
    b.node("Conv", [x, b.weight((8, 4, 3, 3)), b.weight((8,))], _conv_attrs([3, 3], group=2, activation="Sigmoid"))
    b.node("Conv", [x, b.weight((4, 8, 1, 1))], _conv_attrs([1, 1], [2, 2]))  # strided 1x1: not a GEMM
    # depthwise, with a channel multiplier too
    b.node(
        "Conv",
        [x, b.weight((8, 1, 3, 3)), b.weight((8,))],
        _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1], group=8, activation="Clip", activation_params=[0.0, 0.5]),
    )
    b.node("Conv", [x, b.weight((16, 1, 5, 5))], _conv_attrs([5, 5], pads=[2, 2, 2, 2], group=8))
    # 1x1 convs as GEMMs, with bias + residual + activation; batch 2
    res = b.node("Conv", [x, b.weight((12, 8, 3, 3))], _conv_attrs([3, 3], pads=[1, 1, 1, 1]))
    b.node(
        "Conv", [x, b.weight((12, 8, 1, 1)), b.weight((12,)), res], _conv_attrs([1, 1], residual=1, activation="SiLU")
    )
    b.node(
        "Conv",
        [x, b.weight((12, 8, 3, 3)), b.weight((12,)), res],
        _conv_attrs([3, 3], pads=[1, 1, 1, 1], residual=1, activation="Tanh"),
    )
    x2 = b.input("x2", (2, 8, 5, 5))
    b.node(
        "Conv",
        [x2, b.weight((6, 8, 1, 1)), b.weight((6,))],
        _conv_attrs([1, 1], activation="HardSigmoid", activation_params=[0.3, 0.4]),
    )
    b.node("Conv", [x2, b.weight((8, 1, 3, 3))], _conv_attrs([3, 3], pads=[0, 1, 2, 1], group=8, **relu))
    # 1D and 3D
    x1 = b.input("x1", (2, 4, 20))
    b.node("Conv", [x1, b.weight((6, 4, 3)), b.weight((6,))], _conv_attrs([3], [2], [1, 1], activation="Tanh"))
    b.node("Conv", [x1, b.weight((4, 1, 5))], _conv_attrs([5], pads=[2, 2], group=4))
    x3 = b.input("x3", (1, 2, 5, 6, 7))
    b.node("Conv", [x3, b.weight((4, 2, 3, 3, 3)), b.weight((4,))], _conv_attrs([3, 3, 3], pads=[1] * 6, **relu))
    # transposed
    b.node(
        "ConvTranspose",
        [x2, b.weight((8, 4, 3, 3)), b.weight((4,))],
        _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1], output_padding=[1, 1], **relu),
    )
    b.node("ConvTranspose", [x2, b.weight((8, 3, 3, 3))], _conv_attrs([3, 3], dilations=[2, 2], group=2))
    b.node("ConvTranspose", [x1, b.weight((4, 2, 4)), b.weight((2,))], _conv_attrs([4], [3], [1, 0]))
    b.node("ConvTranspose", [x2, b.input("w_runtime", (8, 2, 2, 2))], _conv_attrs([2, 2], [2, 2]))
    return b


# Blocking follows layer size (TilingPolicy.min_work_items); these small layers would all get the smallest blocks, so
# the conv and gemm tests plan with a policy forcing each end.
BLOCKS = {"biggest_blocks": TilingPolicy(min_work_items=0), "smallest_blocks": TilingPolicy(min_work_items=1 << 40)}


@pytest.mark.parametrize("blocks", BLOCKS)
def test_conv(make_executor, blocks: str) -> None:
    check(conv_graph("fp32_fp32"), lambda graph: make_executor(graph, BLOCKS[blocks]))


def test_conv_fp16(make_executor) -> None:
    check(conv_graph("fp16_fp32"), lambda graph: make_executor(graph, BLOCKS["biggest_blocks"]))


@pytest.mark.parametrize("blocks", BLOCKS)
def test_gemm_matmul(make_executor, blocks: str) -> None:
    check(gemm_graph("fp32_fp32"), lambda graph: make_executor(graph, BLOCKS[blocks]))


def test_the_policy_is_data() -> None:
    """The tiling policy is what a plan reads, not module state: the default one plans as no policy, another one
    changes the source (and so the program's cache key), for no target and for a target carrying it alike."""
    graph = conv_graph("fp32_fp32").graph()
    default = planning.plan_graph(graph).source
    assert planning.plan_graph(graph, policy=DEFAULT_POLICY).source == default
    biggest = planning.plan_graph(graph, policy=BLOCKS["biggest_blocks"]).source
    assert biggest != default
    cpu = DeviceTarget(False, 16, 1 << 20, 4096)
    cpu_rows = replace(cpu, policy=replace(DEFAULT_POLICY, cpu_gemm_rows=4))
    assert planning.plan_graph(graph, cpu_rows).source != planning.plan_graph(graph, cpu).source
    assert planning.plan_graph(graph, cpu_rows, policy=DEFAULT_POLICY).source == planning.plan_graph(graph, cpu).source
    gpu = planning.plan_graph(graph, gpu_target(132)).source
    assert planning.plan_graph(graph, gpu_target(132, replace(DEFAULT_POLICY, gpu_split_min_ktiles=1))).source != gpu


def gemm_graph(data_type: str) -> GraphBuilder:
    b = GraphBuilder("gemm", data_type)
    a = b.input("a", (5, 7))
    b.node("Gemm", [a, b.weight((7, 9)), b.weight((9,))])
    b.node(
        "Gemm",
        [b.input("at", (7, 5)), b.weight((9, 7)), b.weight((5, 9))],
        {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0},
    )
    b.node("Gemm", [a, b.weight((7, 9)), b.weight((5, 1))], {"beta": 0.5})
    b.node("Gemm", [a, b.weight((7, 9)), b.const([0.25])])
    b.node("Gemm", [a, b.weight((7, 3))], {"alpha": 2.0})
    fc = b.input("fc", (1, 64))
    res = b.input("res", (1, 10))
    b.node("Gemm", [fc, b.weight((10, 64)), b.weight((10,)), res], {"transB": 1, "residual": 1, "activation": "Relu"})
    b.node("Gemm", [b.input("dots", (3, 13)), b.weight((6, 13))], {"transB": 1})  # vector dot products + a tail
    b.node("MatMul", [b.input("m3", (3, 4, 5)), b.weight((5, 6))])
    b.node("MatMul", [b.input("m4", (2, 1, 4, 5)), b.input("n3", (3, 5, 6))])
    b.node("MatMul", [b.input("v", (5,)), b.weight((5, 6))])
    b.node("MatMul", [b.input("m2", (2, 3, 5)), b.input("w", (5,))])
    b.node(
        "MatMul",
        [b.input("mm", (2, 4, 5)), b.weight((5, 6)), b.input("r", (2, 4, 6))],
        {"residual": 1, "activation": "Clip", "activation_params": [-0.5, 0.5]},
    )
    return b


# --- GPU targets: the tiled kernels (gemm_tiled.cl, gemv.cl), run on whatever device the tests have -----------------


def gpu_target(compute_units: int, policy: TilingPolicy = DEFAULT_POLICY) -> DeviceTarget:
    return DeviceTarget(
        is_gpu=True, compute_units=compute_units, local_mem_bytes=48 << 10, max_work_group_size=1024, policy=policy
    )


@pytest.fixture
def make_gpu_executor(make_executor: Callable[..., Any]) -> Callable[..., Any]:
    """Like make_executor, but planned for a GPU target (OpenCL is portable: the GPU kernels must be right here too),
    with the target's policy."""

    def make(graph: Graph, target: DeviceTarget) -> Any:
        executor = make_executor(graph, target=target)
        assert any(launch.kernel.startswith(("tgemm", "gemv")) for launch in executor.plan.launches)
        return executor

    return make


def gpu_gemm_graph(data_type: str) -> GraphBuilder:
    """gemm_graph plus the shapes of the GPU paths: classifier GEMVs (vector loads, k tails), a matrix times a
    vector (transposed into a GEMV), a 1x1 conv at one position, a conv whose k splits."""
    b = gemm_graph(data_type)
    b.node("Gemm", [b.input("fc2", (1, 301)), b.weight((37, 301)), b.weight((37,))], {"transB": 1})
    b.node("Gemm", [b.input("fc3", (1, 70)), b.weight((70, 33)), b.weight((1, 33))], {"alpha": 0.5})
    b.node("MatMul", [b.weight((9, 70)), b.input("col", (70, 1))])
    b.node(
        "Conv",
        [b.input("pix", (1, 40, 1, 1)), b.weight((24, 40, 1, 1)), b.weight((24,))],
        _conv_attrs([1, 1], activation="Relu"),
    )
    x = b.input("xk", (1, 48, 6, 7))
    res = b.input("rk", (1, 20, 6, 7))
    b.node(
        "Conv",
        [x, b.weight((20, 48, 3, 3)), b.weight((20,)), res],
        _conv_attrs([3, 3], pads=[1, 1, 1, 1], residual=1, activation="Relu"),
    )
    b.node("Conv", [x, b.weight((6, 48, 1, 3))], _conv_attrs([1, 3], pads=[0, 1, 0, 1]))
    b.node("Conv", [x, b.input("wk", (5, 48, 3, 1))], _conv_attrs([3, 1], strides=[2, 1]))  # run-time weights
    b.node("Gemm", [b.input("tall", (40, 300)), b.weight((300, 50)), b.weight((50,))])
    rows = b.input("rows", (7, 1, 20))  # a batch of rows times one matrix: one product, the batch as m
    b.node("MatMul", [rows, b.weight((20, 12)), b.input("rr", (7, 1, 12))], {"residual": 1, "activation": "Relu"})
    b.node("MatMul", [rows, b.weight((20, 12))])
    return b


# The 8x8 register blocks (gpu_tiles' biggest, and the tuner's other shapes of them), by BK
BIG_TILES = (
    GemmTile(16, 16, 8, 8, bk=8, max_splits=4),
    GemmTile(16, 16, 8, 8, bk=16, max_splits=4),
    GemmTile(16, 16, 8, 4, bk=16),
    GemmTile(16, 16, 4, 8, bk=8),
    GemmTile(8, 16, 8, 8, bk=8, max_splits=4),  # work-groups of other shapes: 64x128, 128x64, 64x64 blocks
    GemmTile(16, 8, 8, 8, bk=8, max_splits=4),
    GemmTile(8, 8, 8, 8, bk=8, max_splits=4),
)
TILES = (*DEFAULT_POLICY.gpu_tiles, *(t for t in BIG_TILES if t not in DEFAULT_POLICY.gpu_tiles))
TILE_CASES = [
    *((t, i != 1) for i, t in enumerate(TILES[:3])),
    *((t, True) for t in TILES[3:]),
    (BIG_TILES[0], False),
]


TILE_IDS = [f"{t.bm}x{t.bn}-{t.tm}x{t.tn}-bk{t.bk}-{'v' if v else 's'}" for t, v in TILE_CASES]


@pytest.mark.parametrize(("tile", "vlds"), TILE_CASES, ids=TILE_IDS)
def test_gpu_tiles(make_gpu_executor, tile: GemmTile, vlds: bool) -> None:
    """The default policy's tiles (TilingPolicy.gpu_tiles) and the big register blocks, each alone, with vector or
    scalar local reads, on convs (edges, strides, dilations, 1D/3D, batch 2) and products."""
    policy = replace(DEFAULT_POLICY, gpu_tiles=(replace(tile, vlds=vlds),))
    check(conv_graph("fp32_fp32"), lambda graph: make_gpu_executor(graph, gpu_target(1, policy)))
    check(gpu_gemm_graph("fp32_fp32"), lambda graph: make_gpu_executor(graph, gpu_target(1, policy)))


SPLIT_ANY_K = replace(DEFAULT_POLICY, gpu_split_min_ktiles=1)  # a k split of a single BK step is worth it


@pytest.mark.parametrize("data_type", ["fp32_fp32", "fp16_fp32"])
def test_gpu_split_k(make_gpu_executor, data_type: str) -> None:
    """Many compute units: the smallest tiles, k split between work-groups and summed by a second kernel."""
    executors = []

    def make(graph: Graph) -> Any:
        executors.append(make_gpu_executor(graph, gpu_target(100_000, SPLIT_ANY_K)))
        return executors[0]

    check(gpu_gemm_graph(data_type), make)
    assert any(launch.kernel.startswith("ksum") for launch in executors[0].plan.launches)


def concat_graph() -> GraphBuilder:
    """Channel Concats of convs (1x1, 3x3, 1x3, 3x1 with a residual), nested, with a pool, and of a conv that is also
    a graph output."""
    b = GraphBuilder("concat")
    x = b.input("x", (2, 24, 5, 6))
    pads = {"pads": [1, 1, 1, 1]}
    c1 = b.node(
        "Conv", [x, b.weight((8, 24, 1, 1)), b.weight((8,))], _conv_attrs([1, 1], activation="Relu"), output=False
    )
    c2 = b.node("Conv", [x, b.weight((6, 24, 3, 3))], _conv_attrs([3, 3], **pads), output=False)
    c3 = b.node("Conv", [x, b.weight((5, 24, 1, 3))], _conv_attrs([1, 3], pads=[0, 1, 0, 1]), output=False)
    c4 = b.node(
        "Conv",
        [x, b.weight((4, 24, 3, 1)), b.weight((4,)), b.input("r", (2, 4, 5, 6))],
        _conv_attrs([3, 1], pads=[1, 0, 1, 0], residual=1),
        output=False,
    )
    inner = b.node("Concat", [c3, c4], {"axis": 1}, output=False)
    pool = b.node("MaxPool", [x], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}, output=False)
    b.node("Concat", [c1, inner, pool, c2], {"axis": 1})
    used = b.node("Conv", [x, b.weight((3, 24, 1, 1))], _conv_attrs([1, 1]))  # also a graph output: copied
    b.node("Concat", [used, b.node("Relu", [x], output=False)], {"axis": 1})
    return b


@pytest.mark.parametrize("splits", [False, True])
def test_gpu_concat_in_place(make_gpu_executor, splits: bool) -> None:
    """Convs (k split or not) write their slices of a channel Concat's output themselves, nested Concats too; other
    operands are still copied."""
    executors = []

    def make(graph: Graph) -> Any:
        executors.append(make_gpu_executor(graph, gpu_target(100_000 if splits else 1, SPLIT_ANY_K)))
        return executors[0]

    check(concat_graph(), make)
    copies = [launch for launch in executors[0].plan.launches if launch.kernel.startswith("copy")]
    assert len(copies) == 3  # the pool into the outer Concat; both operands of the last one
    assert splits == any(launch.kernel.startswith("ksum") for launch in executors[0].plan.launches)


def images_graph() -> GraphBuilder:
    """Convs of 3 images on small maps (7x7, 5x5: 49 and 25 positions, no multiple of a block): 3x3 with a bias, a
    residual and an activation, strided, into a Concat's slice, with weights given at run time (3x3 and 1x1), and a
    1x1 reading a depthwise conv (CONV 2)."""
    b = GraphBuilder("images")
    x = b.input("x", (3, 16, 7, 7))
    c1 = b.node("Conv", [x, b.weight((24, 16, 3, 3)), b.weight((24,)), b.input("r", (3, 24, 7, 7))],
                _conv_attrs([3, 3], pads=[1, 1, 1, 1], residual=1, activation="Relu"), output=False)
    c2 = b.node("Conv", [x, b.weight((8, 16, 1, 1))], _conv_attrs([1, 1]), output=False)
    b.node("Concat", [c1, c2], {"axis": 1})
    b.node("Conv", [x, b.weight((12, 16, 3, 3))], _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1]))
    b.node("Conv", [x, b.input("w3", (4, 16, 3, 3))], _conv_attrs([3, 3], pads=[0, 1, 1, 0]))
    b.node("Conv", [x, b.input("w1", (4, 16, 1, 1))], _conv_attrs([1, 1]))
    d = b.node("Conv", [x, b.weight((16, 1, 3, 3))], _conv_attrs([3, 3], [1, 1], [0, 0, 0, 0], group=16),
               output=False)
    b.node("Conv", [d, b.weight((20, 16, 1, 1)), b.weight((20,))], _conv_attrs([1, 1], activation="Relu"))
    return b


@pytest.mark.parametrize("units", [1, 100_000])
def test_gpu_conv_images_side_by_side(make_gpu_executor, units: int) -> None:
    """On GPU targets a conv of several images is one product with the images along n (gemm_tiled.cl FOLD): fewer
    work-groups than a product per image, the same outputs, k split (summed by a second launch) or not. Those whose
    weights are constant or 1x1 take k with the channels inner (C_INNER; by default only on tensor-core tiles, which
    pocl cannot build, so here on the SIMT tiles too), and are as right without it."""
    folded, apart, window_inner = [], [], []
    inner = replace(SPLIT_ANY_K, gpu_channels_inner_simt=True)
    for policy, plans in ((inner, folded), (replace(inner, gpu_fold_images=False), apart),
                          (SPLIT_ANY_K, window_inner)):
        def make(graph: Graph, policy: TilingPolicy = policy, plans: list = plans) -> Any:
            executor = make_gpu_executor(graph, gpu_target(units, policy))
            plans.append(executor.plan)
            return executor

        check(images_graph(), make)

    def tgemms(plan: Any) -> list[Any]:
        return [launch for launch in plan.launches if launch.kernel.startswith("tgemm")]

    def groups(plan: Any) -> int:
        return sum(int(np.prod(launch.global_size)) // int(np.prod(launch.local_size)) for launch in tgemms(plan))

    assert len(tgemms(folded[0])) == len(tgemms(apart[0])) == 6
    inner = []
    for launch in tgemms(folded[0]):
        d = _defines(folded[0].source, launch.kernel)
        assert d["BATCH"] == "1" and int(d["N"]) == 3 * int(d["FOLD"]), (launch.kernel, d)
        inner.append(d.get("C_INNER") == "1")
    assert sum(inner) == 4 and "#define C_INNER 1" not in window_inner[0].source
    assert "#define FOLD" not in apart[0].source
    assert groups(folded[0]) < groups(apart[0])
    assert (units > 1) == any(launch.kernel.startswith("ksum") for launch in folded[0].launches)


def shared_b_graph() -> GraphBuilder:
    """Batches of products of one matrix (transformer projections): contiguous rows of 5 per item with a full bias
    and a residual; a [tokens, batch, features] view of a Transpose (rows 3 x 20 apart within an item, 20 between
    items: A_ROWS); a bias whose rows do not follow the batch (stays a batched product)."""
    b = GraphBuilder("shared_b", "fp32_fp32")
    x = b.input("x", (3, 5, 20))
    w = b.weight((20, 12))
    b.node("MatMul", [x, w, b.weight((3, 5, 12)), b.input("r", (3, 5, 12))], {"residual": 1, "activation": "Relu"})
    seq = b.node("Transpose", [b.input("s", (5, 3, 20))], {"perm": [1, 0, 2]}, output=False)
    b.node("MatMul", [seq, w, b.weight((12,))])
    b.node("MatMul", [x, w, b.weight((3, 1, 12))])
    return b


def test_gpu_products_of_one_matrix_fold_into_m(make_gpu_executor) -> None:
    """On GPU targets a batch of products of one B is one product with the batch as m (whole tiles), the rows of a
    transposed view addressed through A_ROWS; where the bias's rows do not follow the batch it stays batched."""
    plans: list[Any] = []

    def make(graph: Graph) -> Any:
        executor = make_gpu_executor(graph, gpu_target(1))
        plans.append(executor.plan)
        return executor

    check(shared_b_graph(), make)
    found = [_defines(plans[0].source, launch.kernel) for launch in plans[0].launches
             if launch.kernel.startswith("tgemm")]
    assert [(d["M"], d["BATCH"], d.get("A_ROWS"), d.get("AS_B")) for d in found] == [
        ("15", "1", None, None), ("15", "1", "5", "20"), ("5", "3", None, None)
    ]


def test_plans_build_without_warnings(opencl_queue: Any) -> None:
    """A plan's source repeats a kernel file once per specialization: a macro the file leaves defined is redefined by
    the next chunk, which the compiler only warns about. GPU-target (one CU: no k splits; many: k split) and portable
    plans of the test graphs build with -Werror. (CPU-target plans are left out: pocl warns about its own float16
    ABI on CPUs without AVX-512.)"""
    import pyopencl as cl

    builders = [conv_graph("fp32_fp32"), gpu_gemm_graph("fp16_fp32"), images_graph(), concat_graph(),
                depthwise_pointwise_graph("fp32_fp32"), shared_b_graph()]
    for builder in builders:
        for target in (gpu_target(1), gpu_target(100_000), None):
            plan = planning.plan_graph(builder.graph(), target, None, None)
            cl.Program(opencl_queue.context, plan.source).build(options=f"{plan.build_options} -Werror")


def depthwise_pointwise_graph(data_type: str) -> GraphBuilder:
    """Depthwise convs read only by a 1x1 conv (inverted-residual blocks: fused into its loader on GPU targets):
    strides, asymmetric pads, dilation, with and without biases and activations, the 1x1's residual and activation,
    1D, batch 2; and ones that stay launches (also a graph output, a channel multiplier, a residual of their own)."""
    b = GraphBuilder("depthwise_pointwise", data_type)
    x = b.input("x", (2, 24, 13, 11))
    clip = {"activation": "Clip", "activation_params": [0.0, 1.5]}
    d1 = b.node("Conv", [x, b.weight((24, 1, 3, 3)), b.weight((24,))],
                _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1], group=24, **clip), output=False)
    b.node("Conv", [d1, b.weight((40, 24, 1, 1)), b.weight((40,))], _conv_attrs([1, 1]))
    d2 = b.node("Conv", [x, b.weight((24, 1, 5, 3))],
                _conv_attrs([5, 3], pads=[2, 0, 3, 1], dilations=[1, 2], group=24), output=False)
    res = b.input("res", (2, 7, 14, 8))
    b.node("Conv", [d2, b.weight((7, 24, 1, 1)), b.weight((7,)), res],
           _conv_attrs([1, 1], residual=1, activation="HardSwish"))
    x1 = b.input("x1", (2, 16, 30))
    d3 = b.node("Conv", [x1, b.weight((16, 1, 3)), b.weight((16,))],
                _conv_attrs([3], pads=[1, 1], group=16, activation="Relu"), output=False)
    b.node("Conv", [d3, b.weight((70, 16, 1))], _conv_attrs([1], activation="Relu"))
    kept = b.node("Conv", [x, b.weight((24, 1, 3, 3))], _conv_attrs([3, 3], pads=[1, 1, 1, 1], group=24))
    b.node("Conv", [kept, b.weight((8, 24, 1, 1))], _conv_attrs([1, 1]))  # its input is an output too
    mult = b.node("Conv", [x, b.weight((48, 1, 3, 3))], _conv_attrs([3, 3], group=24), output=False)
    b.node("Conv", [mult, b.weight((8, 48, 1, 1))], _conv_attrs([1, 1]))
    return b




@pytest.mark.parametrize(("splits", "data_type"), [(False, "fp32_fp32"), (True, "fp32_fp32"), (True, "fp16_fp32")])
def test_gpu_depthwise_in_pointwise_loader(make_gpu_executor, splits: bool, data_type: str) -> None:
    """On GPU targets a depthwise conv that only a 1x1 conv reads is computed by that GEMM's loader (gemm_tiled.cl
    CONV 2), k split or not, float or half storage: three of the five depthwise convs here are no launch of their
    own."""
    executors = []
    units = 100_000 if splits else 1

    def make(graph: Graph) -> Any:
        executors.append(make_gpu_executor(graph, gpu_target(units, SPLIT_ANY_K)))
        return executors[0]

    check(depthwise_pointwise_graph(data_type), make)
    plan, graph = executors[0].plan, executors[0].graph
    assert ("#define DWW_T F16" in plan.source) == (data_type == "fp16_fp32")  # half weights in the loader
    assert sum(launch.kernel.startswith("depthwise") for launch in plan.launches) == 2
    assert plan.source.count("#define CONV 2") == 3
    assert splits == any(launch.kernel.startswith("ksum") for launch in plan.launches)
    plain = planning.plan_graph(graph, gpu_target(units, replace(SPLIT_ANY_K, gpu_fuse_depthwise=False)))
    assert sum(launch.kernel.startswith("depthwise") for launch in plain.launches) == 5
    assert "#define CONV 2" not in plain.source


def _defines(source: str, kernel: str) -> dict[str, str]:
    chunk = source.split(f"#define KERNEL_NAME {kernel}\n", 1)[1].split("// ---- ", 1)[0]
    return dict(re.findall(r"^#define (\w+) (.*)$", chunk, re.M))


SUM_ANY = replace(SPLIT_ANY_K, gpu_split_sum_most=1 << 30)  # however many partial sums a work item adds


def nvidia_target(policy: TilingPolicy) -> DeviceTarget:
    return replace(gpu_target(100_000, policy), nvidia_ptx=True)


def test_split_sum_in_kernel_on_nvidia_targets() -> None:
    """On NVIDIA targets (inline PTX: a device-scope fence) the last work-group of a block sums the k splits: one
    launch per product, counting in a shared zeroed buffer that the executor uploads writable; a second launch
    (SPLIT_K_SUM) elsewhere, and where a work item would add more than policy.gpu_split_sum_most partial sums."""
    graph = gpu_gemm_graph("fp32_fp32").graph()
    elsewhere = planning.plan_graph(graph, gpu_target(100_000, SUM_ANY))
    nvidia = planning.plan_graph(graph, nvidia_target(SUM_ANY))
    sums = sum(launch.kernel.startswith("ksum") for launch in elsewhere.launches)
    assert sums > 0 and not any(launch.kernel.startswith("ksum") for launch in nvidia.launches)
    assert len(nvidia.launches) == len(elsewhere.launches) - sums
    assert "#define SPLIT_SUM" not in elsewhere.source and nvidia.source.count("#define SPLIT_SUM 1") > 0
    assert nvidia.writable == {"@counters"} and not elsewhere.writable
    counted = [launch for launch in nvidia.launches if "@counters" in launch.args]
    assert len(counted) == sums
    # the counters cover the blocks of each of those launches: its work-groups over its k splits
    for launch in counted:
        splits = int(_defines(nvidia.source, launch.kernel)["SPLITS"])
        assert launch.local_size is not None and splits > 1
        groups = [g // v for g, v in zip(launch.global_size, launch.local_size)]
        assert nvidia.buffers["@counters"].shape[0] >= groups[0] * groups[1] * groups[2] // splits
    assert nvidia.constants["@counters"].dtype == np.uint32 and not nvidia.constants["@counters"].any()
    # the default bound: the products whose work items would add more partial sums keep the second launch
    bounded = planning.plan_graph(graph, nvidia_target(SPLIT_ANY_K))
    most = SPLIT_ANY_K.gpu_split_sum_most
    for launch in bounded.launches:
        d = _defines(bounded.source, launch.kernel)
        if launch.kernel.startswith("tgemm") and int(d["SPLITS"]) > 1:
            summed = int(d["SPLITS"]) * int(d["TM"]) * int(d["TN"])
            assert ("SPLIT_SUM" in d) == (summed <= most), (launch.kernel, summed)
    kept = sum(launch.kernel.startswith("ksum") for launch in bounded.launches)
    assert 0 < kept < sums
    off = planning.plan_graph(graph, nvidia_target(replace(SPLIT_ANY_K, gpu_split_sum_most=0)))
    assert sum(launch.kernel.startswith("ksum") for launch in off.launches) == sums
    # tuned variants are kept apart (NVIDIA plans differ), and the keys elsewhere spell the target as before the flag
    from mace.opencl.tuning.variants import _target_identity, variant_key

    plain = gpu_target(100_000, SPLIT_ANY_K)
    for node in graph.nodes:
        assert variant_key(graph, node, plain) != variant_key(graph, node, nvidia_target(SPLIT_ANY_K))
    assert "nvidia_ptx" not in _target_identity(plain)
    assert _target_identity(nvidia_target(SPLIT_ANY_K)) == {**_target_identity(plain), "nvidia_ptx": True}


@pytest.mark.parametrize("make_graph", [gpu_gemm_graph, depthwise_pointwise_graph])
def test_split_sum_in_kernel_runs(opencl_queue: Any, fence_free_build: Any,
                                  make_graph: Callable[[str], GraphBuilder]) -> None:
    """The in-kernel split sum computed, on whatever device the tests have: pocl's CPU memory is coherent, so its
    fence (membar.gl, PTX that only NVIDIA compiles) is replaced by mem_fence here (fence_free_build). Three runs:
    every launch must leave its counters zero for the next."""
    import pyopencl as cl

    from mace.opencl.executor import Executor

    builder = make_graph("fp32_fp32")
    target = nvidia_target(SUM_ANY)
    executor = Executor(builder.graph(), opencl_queue.context, opencl_queue, fence_free_build, target=target)
    assert executor.plan.source.count("#define SPLIT_SUM 1") > 0
    assert not any(launch.kernel.startswith("ksum") for launch in executor.plan.launches)
    for _ in range(3):
        check(builder, lambda graph: executor)
    # a run that fails on the device after a launch left counts behind: the executor sets them back to zero
    counters = executor.buffers["@counters"]
    real = executor._enqueue_kernels

    def interrupted(start: int = 0) -> None:
        cl.enqueue_copy(opencl_queue, counters, np.ones(executor.plan.buffers["@counters"].shape, np.uint32))
        raise DeviceError("OpenCL error while launching: simulated")

    executor._enqueue_kernels = interrupted
    with pytest.raises(DeviceError, match="simulated"):
        executor.run(builder.feeds())
    executor._enqueue_kernels = real
    check(builder, lambda graph: executor)


def tail_split_graph(data_type: str) -> GraphBuilder:
    """Products and a convolution of 15 blocks of 128 x 128, more than two compute units hold (GemmTile.per_cu): a
    product with a bias and a residual in the epilogue, a batch of 3 folded into m (the edges partial), and a 3 x 3
    convolution of 5 images side by side (FOLD)."""
    b = GraphBuilder("tail_split", data_type)
    y = b.node("MatMul", [b.input("x", (384, 1024)), b.weight((1024, 640))], output=False)
    b.node("Add", [b.node("Add", [y, b.weight((640,))], output=False), b.input("r", (384, 640))])
    b.node("MatMul", [b.input("xb", (3, 200, 1024)), b.weight((1024, 380))])
    b.node("Conv", [b.input("img", (5, 128, 11, 11)), b.weight((384, 128, 3, 3)), b.weight((384,))],
           _conv_attrs([3, 3], pads=[1, 1, 1, 1], activation="Relu"))
    return b


def test_tail_split_whole_waves_then_pieces(opencl_queue: Any, fence_free_build: Any) -> None:
    """Where a product's blocks alone make more than one wave, on an NVIDIA target the whole waves come first and the
    blocks left over run as k-split pieces (SPLIT_FROM) summed by the last of them: one launch a product, its
    work-groups in a row, counters for the split blocks only, and every output right (the whole blocks' and the
    split ones'), three runs over the same counters."""
    from mace.opencl.executor import Executor
    from mace.opencl.plan.tiling_gpu import _tail_split

    builder = tail_split_graph("fp32_fp32")
    target = nvidia_target(DEFAULT_POLICY)
    target = replace(target, compute_units=2)
    executor = Executor(builder.graph(), opencl_queue.context, opencl_queue, fence_free_build, target=target)
    plan = executor.plan
    assert not any(launch.kernel.startswith("ksum") for launch in plan.launches)
    tails = 0
    for launch in plan.launches:
        d = _defines(plan.source, launch.kernel)
        if not launch.kernel.startswith("tgemm"):
            continue
        bm, bn = int(d["LM"]) * int(d["TM"]), int(d["LN"]) * int(d["TN"])
        assert (bm, bn) == (128, 128) and d["UNROLL_STEP"] == "1", launch.kernel  # (its inner blocks unchecked)
        blocks = -(-int(d["M"]) // bm) * -(-int(d["N"]) // bn) * int(d["BATCH"])
        split_from, splits = _tail_split(blocks, int(d["K"]) // int(d["BK"]), 8, 2, 2, DEFAULT_POLICY)
        assert 0 < split_from < blocks and splits > 1, (launch.kernel, blocks)
        assert (int(d["SPLIT_FROM"]), int(d["SPLITS"]), d["SPLIT_SUM"]) == (split_from, splits, "1")
        groups = [g // v for g, v in zip(launch.global_size, launch.local_size or ())]
        assert groups == [split_from + (blocks - split_from) * splits, 1, 1]
        assert plan.buffers["@counters"].shape[0] >= blocks - split_from
        tails += 1
    assert tails == 3
    for _ in range(3):
        check(builder, lambda graph: executor)
    # elsewhere (no in-kernel sum) and with the policy off, the blocks stay whole
    for other in (gpu_target(2), replace(target, policy=replace(DEFAULT_POLICY, gpu_tail_split=False))):
        assert "#define SPLIT_FROM" not in planning.plan_graph(builder.graph(), other).source


def test_gpu_target_plans() -> None:
    """A GPU target's plan is deterministic and fixes its work-groups."""
    graph = conv_graph("fp32_fp32").graph()
    plan, again = planning.plan_graph(graph, gpu_target(132)), planning.plan_graph(graph, gpu_target(132))
    assert plan.source == again.source and plan.source != planning.plan_graph(graph).source
    for launch in plan.launches:
        if launch.kernel.startswith(("tgemm", "gemv")):
            assert launch.local_size is not None
            assert all(g % v == 0 for g, v in zip(launch.global_size, launch.local_size))


def test_product_k_splits_fill_their_last_wave() -> None:
    """A matrix product's k split (H200-shaped target: 132 CUs, 4 work-groups each wanted, two 256-item blocks
    resident) rounds up where that leaves fewer slots idle in the last wave: ViT-B/16's MLP output product at batch
    32 (300 blocks of 128 x 128) in 2, where rounded down it was 1; BERT-base's (192 blocks) stays at 2 (3 leaves as
    many idle); one wave (a classifier) rounds down; convolutions are not touched; 0 turns it off."""
    from mace.opencl.plan.tiling_gpu import gpu_gemm_tile

    h200 = gpu_target(132)
    off = replace(DEFAULT_POLICY, gpu_product_resident_items_per_cu=0)
    assert gpu_gemm_tile(6304, 768, 3072, 1, h200, DEFAULT_POLICY).splits == 2
    assert gpu_gemm_tile(6304, 768, 3072, 1, h200, off).splits == 1
    assert gpu_gemm_tile(6304, 768, 3072, 1, h200, DEFAULT_POLICY, conv=True).splits == 1
    assert gpu_gemm_tile(4096, 768, 3072, 1, h200, DEFAULT_POLICY).splits == 2
    assert gpu_gemm_tile(32, 1000, 768, 1, h200, DEFAULT_POLICY) == gpu_gemm_tile(32, 1000, 768, 1, h200, off)


def test_half_storage_follows_the_target() -> None:
    """fp16_fp32 stores float tensors half only on a target where that pays (a GPU with cl_khr_fp16); elsewhere its
    plan is the fp32 plan: the same source, so the same cached program, the file's half weights widened on upload."""
    half, full = conv_graph("fp16_fp32").graph(), conv_graph("fp32_fp32").graph()
    cpu = DeviceTarget(is_gpu=False, compute_units=2, local_mem_bytes=1 << 20, max_work_group_size=4096)
    for target in (replace(gpu_target(132), half_storage=False), replace(cpu, half_storage=False)):
        plan = planning.plan_graph(half, target)
        assert plan.source == planning.plan_graph(full, target).source
        assert not any(b.dtype == np.float16 for b in plan.buffers.values())
    plan = planning.plan_graph(half, gpu_target(132))
    assert plan.source != planning.plan_graph(full, gpu_target(132)).source
    assert any(b.dtype == np.float16 for b in plan.buffers.values())


# --- CPU targets: the *_cpu.cl kernels and a work-group for every launch, run on whatever device the tests have -------

CPU = DeviceTarget(is_gpu=False, compute_units=2, local_mem_bytes=1 << 20, max_work_group_size=4096)


def test_cpu_concat_in_place(make_executor) -> None:
    """On CPU targets the convs on gemm_cpu.cl and conv_cpu.cl write their slices of a channel Concat's output, as on
    GPU targets: the same three copies remain, and without the policy every operand is copied."""
    executors = []

    def make(graph: Graph) -> Any:
        executors.append(make_executor(graph, target=CPU))
        return executors[0]

    check(concat_graph(), make)
    plan = executors[0].plan
    kernels = {launch.kernel.split("_")[0] for launch in plan.launches}
    assert {"gemm", "conv"} <= kernels and "conv_cpu" in plan.source and "gemm_cpu" in plan.source
    copies = [launch for launch in plan.launches if launch.kernel.startswith("copy")]
    assert len(copies) == 3
    apart = planning.plan_graph(executors[0].graph, replace(CPU, policy=replace(DEFAULT_POLICY,
                                                                                 cpu_concat_in_place=False)))
    assert len([launch for launch in apart.launches if launch.kernel.startswith("copy")]) == 8


def cpu_graph() -> GraphBuilder:
    """What the CPU kernels special-case: column and row tails (shifted last blocks), stride-2 vector loads, padding
    gathers, M not a multiple of TM, packed and strided operands, batches, bias along m and along n."""
    b = GraphBuilder("cpu")
    x = b.input("x", (2, 6, 23, 37))
    relu6 = {"activation": "Clip", "activation_params": [0.0, 6.0]}
    b.node("Conv", [x, b.weight((6, 1, 3, 3)), b.weight((6,))], _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1], group=6))
    b.node("Conv", [x, b.weight((12, 1, 3, 3))], _conv_attrs([3, 3], pads=[1, 0, 2, 1], group=6, **relu6))
    b.node("Conv", [x, b.weight((6, 1, 3, 3))], _conv_attrs([3, 3], [3, 1], dilations=[1, 2], group=6))
    b.node("Conv", [x, b.weight((10, 6, 3, 3)), b.weight((10,))], _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1], **relu6))
    b.node("Conv", [x, b.weight((9, 6, 3, 5))], _conv_attrs([3, 5], [1, 3], [2, 1, 0, 2]))
    res = b.node("Conv", [x, b.weight((13, 6, 1, 1))], _conv_attrs([1, 1]))
    b.node("Conv", [x, b.weight((13, 6, 1, 1)), b.weight((13,)), res], _conv_attrs([1, 1], residual=1, **relu6))
    b.node("Conv", [b.input("small", (1, 4, 3, 5)), b.weight((4, 1, 3, 3))], _conv_attrs([3, 3], group=4))
    b.node("Conv", [b.input("x1", (1, 3, 50)), b.weight((8, 3, 7))], _conv_attrs([7], [2], [3, 3]))
    b.node("Conv", [x, b.input("w_runtime", (4, 6, 3, 3))], _conv_attrs([3, 3], pads=[1, 1, 1, 1]))
    a = b.input("a", (7, 40))
    b.node("Gemm", [a, b.weight((40, 49)), b.weight((49,))])
    b.node("Gemm", [a, b.weight((21, 40)), b.weight((7, 1))], {"transB": 1, "alpha": 0.5, "beta": 2.0})
    b.node("Gemm", [b.input("at", (40, 7)), b.weight((40, 19))], {"transA": 1})
    b.node("MatMul", [b.input("m", (2, 3, 9, 40)), b.weight((40, 20)), b.input("r", (2, 3, 9, 20))], {"residual": 1})
    b.node("MatMul", [b.input("p", (3, 5, 12)), b.input("q", (3, 12, 33))])
    return b


def cpu_rows_graph() -> GraphBuilder:
    """What pool_cpu.cl, copy_cpu.cl and softmax_cpu.cl special-case: windows across the padding and the tensor's
    first and last rows (masked vector loads), ceil-mode windows past the input, strides 1, 2 and 3, dilation, both
    average divisors, column and row tails; copies contiguous or strided on either side, rows shorter than a vector,
    integer elements; softmax rows with and without a tail; a run-time B made n-contiguous by a copy (Q.K^T)."""
    b = GraphBuilder("cpu_rows")
    x = b.input("x", (2, 3, 29, 37))
    b.node("MaxPool", [x], _conv_attrs([3, 3], [2, 2], [0, 0, 0, 0], ceil_mode=1))
    b.node("MaxPool", [x], _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1]))
    b.node("MaxPool", [x], _conv_attrs([3, 3], [1, 1], [2, 1, 0, 2], dilations=[2, 2]))
    b.node("MaxPool", [x], _conv_attrs([2, 3], [3, 3], [1, 1, 1, 1], ceil_mode=1))
    b.node("AveragePool", [x], _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1], ceil_mode=1, count_include_pad=1))
    b.node("AveragePool", [x], _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1], ceil_mode=1, count_include_pad=0))
    b.node("AveragePool", [x], _conv_attrs([5, 4], [1, 1], [2, 0, 1, 3], count_include_pad=1))
    b.node("AveragePool", [b.input("x1", (2, 3, 41))], _conv_attrs([3], [2], [1, 1]))
    b.node("Transpose", [x], {"perm": [0, 2, 3, 1]})  # strided source, rows of 3
    shuffled = b.node("Reshape", [x, b.const([2, 3, 1, 29, 37], np.int64)], output=False)
    b.node("Transpose", [shuffled], {"perm": [0, 2, 1, 3, 4]})
    b.node("Transpose", [b.input("xi", (3, 5, 17), -100, 100, np.int32)], {"perm": [2, 0, 1]})
    b.node("Concat", [b.input("c1", (2, 3, 1)), b.input("c2", (2, 3, 20))], {"axis": 2})  # strided destination
    b.node("Concat", [x, b.input("y", (2, 2, 29, 37))], {"axis": 1})
    b.node("Split", [x], {"axis": 3, "num_outputs": 2}, outputs=2)
    b.node("Softmax", [b.input("s", (2, 3, 197), -8.0, 8.0)], {"axis": -1})
    b.node("Softmax", [b.input("s16", (5, 16))], {"axis": -1})
    b.node("LogSoftmax", [b.input("s7", (3, 7))], {"axis": -1})
    q, k = b.input("q", (1, 3, 21, 8)), b.input("k", (1, 21, 3, 8))
    b.node("MatMul", [q, b.node("Transpose", [k], {"perm": [0, 2, 3, 1]}, output=False)])
    return b


AVX2 = replace(CPU, cpu_simd_floats=8)  # a CPU whose SIMD registers hold 8 floats: vectors of at most 8


@pytest.mark.parametrize("graph", ["cpu", "cpu_rows", "conv", "conv_fp16", "gemm", "cpu@avx2", "cpu_rows@avx2"])
def test_cpu_target(make_executor, graph: str) -> None:
    name, _, simd = graph.partition("@")
    builder = {"cpu": cpu_graph, "cpu_rows": cpu_rows_graph, "conv": lambda: conv_graph("fp32_fp32"),
               "conv_fp16": lambda: conv_graph("fp16_fp32"), "gemm": lambda: gemm_graph("fp32_fp32")}[name]()
    check(builder, lambda g: make_executor(g, target=AVX2 if simd else CPU))


def test_cpu_target_plans() -> None:
    """A CPU target plans the CPU kernels where they apply, and a work-group for every launch, a divisor of its
    global size; the portable plan (no target) is unchanged."""
    plan = planning.plan_graph(cpu_graph().graph(), CPU)
    kernels = {launch.kernel.rsplit("_", 1)[0] for launch in plan.launches}
    assert {"conv_cpu", "depthwise_cpu", "gemm_cpu"} <= kernels
    rows = planning.plan_graph(cpu_rows_graph().graph(), CPU)
    kernels = {launch.kernel.rsplit("_", 1)[0] for launch in rows.launches}
    assert {"pool_cpu", "copy_cpu", "softmax_cpu", "gemm_cpu"} <= kernels and "gemm" not in kernels
    assert "cpu_floatu16" in plan.source
    for launch in plan.launches:
        assert launch.local_size is not None
        assert all(g % v == 0 for g, v in zip(launch.global_size, launch.local_size))
    portable = planning.plan_graph(cpu_graph().graph())
    assert "cpu_floatu16" not in portable.source and all(launch.local_size is None for launch in portable.launches)
    # vectors at most a SIMD register wide; the tuned variants' keys of 16-float CPUs are those they always were
    widths = {int(w) for w in re.findall(r"#define VW (\d+)", plan.source)}
    narrow = {int(w) for w in re.findall(r"#define VW (\d+)", planning.plan_graph(cpu_graph().graph(), AVX2).source)}
    assert 16 in widths and max(narrow) == 8 and narrow - {4, 8} == set()
    graph = cpu_graph().graph()
    node = graph.nodes[0]
    assert variant_key(graph, node, CPU) == variant_key(graph, node, replace(CPU, cpu_simd_floats=16))
    assert variant_key(graph, node, CPU) != variant_key(graph, node, AVX2)


# --- pooling, reductions, normalization -------------------------------------------------------------------------------


def pool_graph(data_type: str) -> GraphBuilder:
    b = GraphBuilder("pool", data_type)
    x = b.input("x", (2, 3, 9, 10))
    b.node("MaxPool", [x], _conv_attrs([3, 3], [2, 2], [0, 0, 0, 0], ceil_mode=1))
    b.node("MaxPool", [x], _conv_attrs([3, 3], [1, 1], [1, 1, 1, 1], dilations=[2, 2]))
    b.node("AveragePool", [x], _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1], ceil_mode=1, count_include_pad=1))
    b.node("AveragePool", [x], _conv_attrs([3, 3], [2, 2], [1, 1, 1, 1], ceil_mode=1, count_include_pad=0))
    b.node("AveragePool", [x], _conv_attrs([2, 3], [2, 3], [0, 1, 1, 0]))
    b.node("AveragePool", [b.input("x1", (2, 3, 10))], _conv_attrs([3], [2], [1, 1]))
    b.node("GlobalAveragePool", [x])
    b.node("GlobalMaxPool", [x])
    return b


@pytest.mark.parametrize("target", [None, CPU], ids=["portable", "cpu"])
def test_pooling(make_executor, target: DeviceTarget | None) -> None:
    check(pool_graph("fp32_fp32"), lambda g: make_executor(g, target=target))


@pytest.mark.parametrize("target", [None, CPU], ids=["portable", "cpu"])
def test_reduce_softmax(make_executor, target: DeviceTarget | None) -> None:
    b = GraphBuilder("reduce")
    x = b.input("x", (2, 3, 4, 5))
    axes = b.const
    b.node("ReduceMean", [x, axes([2, 3], np.int64)], {"keepdims": 1})
    b.node("ReduceSum", [x, axes([1], np.int64)], {"keepdims": 0})
    b.node("ReduceMax", [x, axes([-1], np.int64)])
    b.node("ReduceMin", [x, axes([0, 2], np.int64)])
    b.node("ReduceMean", [x])  # all axes
    b.node("ReduceL1", [x, axes([1, 3], np.int64)])
    b.node("ReduceL2", [x, axes([3], np.int64)])
    b.node("ReduceSumSquare", [x, axes([0], np.int64)])
    b.node("ReduceLogSumExp", [x, axes([1], np.int64)])
    near_one = b.input("near_one", (2, 3, 4), 0.8, 1.2)
    b.node("ReduceProd", [near_one, axes([2], np.int64)])
    b.node("ReduceLogSum", [near_one, axes([0, 1], np.int64)])
    b.node("ArgMax", [x], {"axis": 1})
    b.node("ArgMin", [x], {"axis": -1, "keepdims": 0})
    b.node("Softmax", [x], {"axis": 1})
    b.node("Softmax", [x], {"axis": -1})
    b.node("LogSoftmax", [x], {"axis": 2})
    b.node("CumSum", [x, axes(1, np.int64)])
    b.node("CumSum", [x, axes(-1, np.int64)], {"exclusive": 1, "reverse": 1})
    b.node("CumSum", [x, axes([0], np.int32)], {"reverse": 1})
    b.node("TopK", [x, axes([3], np.int64)], outputs=2)
    b.node("TopK", [x, axes([2], np.int64)], {"axis": 1, "largest": 0}, outputs=2)
    ties = b.node("Floor", [b.node("Mul", [x, b.const(2.0)], output=False)], output=False)  # equal values
    b.node("TopK", [ties, axes([4], np.int64)], {"axis": 2}, outputs=2)
    check(b, lambda g: make_executor(g, target=target))


def norm_graph(data_type: str) -> GraphBuilder:
    b = GraphBuilder("norm", data_type)
    x = b.input("x", (2, 6, 5, 7))
    c = 6
    b.node(
        "BatchNormalization",
        [x, b.weight((c,), 1.0), b.weight((c,), 1.0), b.weight((c,), 1.0), b.const(b.rng.uniform(0.5, 2.0, c))],
        {"epsilon": 1e-3},
    )
    b.node("LRN", [x], {"size": 3, "alpha": 1e-3, "beta": 0.75, "bias": 1.0})
    b.node("LRN", [x], {"size": 4, "alpha": 0.1, "beta": 0.5, "bias": 2.0})
    b.node("LayerNormalization", [x, b.weight((7,), 1.0), b.weight((7,), 1.0)], {"axis": -1, "epsilon": 1e-5})
    b.node("LayerNormalization", [x, b.weight((5, 7), 1.0)], {"axis": 2})
    b.node("LayerNormalization", [x, b.weight((7,), 1.0)], {"axis": -1}, outputs=3)  # + mean and 1/std
    b.node("InstanceNormalization", [x, b.weight((c,), 1.0), b.weight((c,), 1.0)], {"epsilon": 1e-5})
    return b


def test_normalization(make_executor) -> None:
    check(norm_graph("fp32_fp32"), make_executor)


# --- data movement ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [None, CPU], ids=["portable", "cpu"])
def test_indexing(make_executor, target: DeviceTarget | None) -> None:
    b = GraphBuilder("indexing")
    x = b.input("x", (2, 6, 4, 5))
    i64 = np.int64
    b.node("Transpose", [x], {"perm": [0, 2, 3, 1]})
    b.node("Concat", [x, b.input("y", (2, 2, 4, 5)), b.weight((2, 1, 4, 5))], {"axis": 1})
    b.node("Concat", [x, x], {"axis": -1})
    first = b.node("Split", [x, b.const([2, 4], i64)], {"axis": 1}, outputs=2)
    b.node("Split", [x], {"axis": 3, "num_outputs": 2}, outputs=2)
    b.node("Slice", [x, b.const([1], i64), b.const([5], i64), b.const([1], i64), b.const([2], i64)])
    b.node("Slice", [x, b.const([-1, 1], i64), b.const([-100, 3], i64), b.const([3, 2], i64), b.const([-2, 1], i64)])
    b.node("Gather", [x, b.const([0, 5, -1], i64)], {"axis": 1})
    b.node("Gather", [x, b.const(1, i64)], {"axis": 0})
    b.node("Gather", [x, b.const([[0, 1], [3, 2]], i64)], {"axis": 2})
    b.node("GatherElements", [x, b.const(b.rng.integers(-4, 4, (2, 6, 3, 5)), i64)], {"axis": 2})
    b.node("Trilu", [x])
    labels = b.input("labels", (2, 3), low=-5, high=5, dtype=i64)  # (some outside depth 4: no class)
    b.node("OneHot", [labels, b.const(4, i64), b.const([0.0, 1.0])])
    b.node("OneHot", [labels, b.const(4, i64), b.const([-2.0, 3.0])], {"axis": 0})
    perm = np.argsort(b.rng.random((2, 6, 4, 5)), axis=2).astype(i64)  # a permutation along axis 2
    b.node("ScatterElements", [x, b.const(perm, i64), b.input("su", (2, 6, 4, 5))], {"axis": 2})
    repeats = b.const(b.rng.integers(-6, 6, (2, 3, 4, 5)), i64)
    b.node("ScatterElements", [x, repeats, b.input("sa", (2, 3, 4, 5))], {"axis": 1, "reduction": "add"})
    b.node("ScatterElements", [x, repeats, b.input("sm", (2, 3, 4, 5))], {"axis": 1, "reduction": "max"})
    b.node("Trilu", [x, b.const(-1, i64)], {"upper": 0})
    b.node("Trilu", [b.input("ti", (3, 7), low=-9, high=9, dtype=i64), b.const(2, i64)])
    b.node("Pad", [x, b.const([0, 1, 2, 0, 0, 2, 1, 3], i64), b.const(1.5)])
    b.node("Pad", [x, b.const([0, 0, 2, 3, 0, 0, 1, 2], i64)], {"mode": "reflect"})
    b.node("Pad", [x, b.const([0, 0, 2, 3, 0, 0, 1, 2], i64)], {"mode": "edge"})
    b.node("Pad", [x, b.const([0, 0, 3, 1, 0, 0, 1, 2], i64)], {"mode": "wrap"})
    b.node("Pad", [x, b.const([0, -1, 1, 0, 0, 0, -1, 2], i64)])
    b.node("DepthToSpace", [x], {"blocksize": 1})
    x8 = b.input("x8", (1, 8, 3, 2))
    b.node("DepthToSpace", [x8], {"blocksize": 2, "mode": "DCR"})
    b.node("DepthToSpace", [x8], {"blocksize": 2, "mode": "CRD"})
    b.node("SpaceToDepth", [b.input("s", (2, 3, 4, 6))], {"blocksize": 2})
    b.node("Expand", [b.input("e", (6, 1, 5)), b.const([2, 6, 4, 5], i64)])
    b.node("Tile", [x, b.const([1, 2, 1, 3], i64)])
    flat = b.node("Flatten", [x], {"axis": 2})
    b.node("Relu", [flat])
    squeezed = b.node("Squeeze", [b.node("Reshape", [x, b.const([2, 1, 120], i64)]), b.const([1], i64)])
    b.node("Unsqueeze", [squeezed, b.const([0], i64)])
    b.node("Identity", [first])
    b.node("GatherND", [x, b.const([[1, 3], [0, -1], [1, 0]], i64)])  # slices of (4, 5)
    b.node("GatherND", [x, b.const([[[2, 1, 4]], [[-1, 0, 0]]], i64)], {"batch_dims": 1})
    b.node("GatherND", [x, b.input("nd", (2, 6, 2), low=-4, high=4, dtype=i64)], {"batch_dims": 2})
    # ScatterND: slices, single elements with a reduction at repeated positions, run-time indices, integers
    b.node("ScatterND", [x, b.const([[1, 2], [0, -1]], i64), b.input("u", (2, 4, 5))])
    rows = b.const([[1, 0, 2, 3], [1, 0, 2, 3], [0, 5, -1, 4]], i64)
    b.node("ScatterND", [x, rows, b.input("u3", (3,))], {"reduction": "add"})
    b.node("ScatterND", [x, b.input("rows", (3, 1), low=-2, high=2, dtype=i64), b.input("u6", (3, 6, 4, 5))],
           {"reduction": "max"})
    b.node("ScatterND", [x, b.const([[[1, 3]], [[1, 3]]], i64), b.input("u7", (2, 1, 4, 5))], {"reduction": "min"})
    counts = b.input("counts", (4, 6), low=-9, high=9, dtype=i64)
    b.node("ScatterND", [counts, b.const([[3], [1], [3]], i64), b.input("f", (3, 6), low=-3, high=3, dtype=i64)],
           {"reduction": "mul"})
    check(b, lambda g: make_executor(g, target=target))


def test_scatter_and_gather_nd_edges(make_executor) -> None:
    """Where the reference op raises, the device is still safe: a ScatterND row outside data is skipped, a GatherND
    into a dim of size 0 is refused when planned; nothing to scatter is the copy alone."""
    b = GraphBuilder("nd_edges")
    x = b.input("x", (4, 3))
    rows = b.input("rows", (2, 1), dtype=np.int64)
    b.node("ScatterND", [x, b.const([[1]], np.int64), b.input("u", (1, 3))])
    scattered = b.graph()
    scattered.nodes.append(Node("ScatterND", "outside", [x, rows, "u"], ["s"], {"reduction": "add"}))
    scattered.tensors["s"] = TensorInfo("s", (4, 3), "float32")
    scattered.outputs.append(scattered.tensors["s"])
    feeds = {**b.feeds(), "rows": np.asarray([[2], [7]], np.int64)}
    got = make_executor(scattered).run(feeds)["s"]
    expected = feeds["x"].copy()
    expected[2] += feeds["u"][0]  # row [7] is outside (4, 3): skipped
    np.testing.assert_allclose(got, expected, rtol=1e-6)

    empty = GraphBuilder("nd_empty")
    z = empty.input("z", (0, 3))
    empty.node("GatherND", [z, empty.const(np.zeros((0, 1)), np.int64)])
    nothing = empty.const(np.zeros((0, 1)), np.int64)
    empty.node("ScatterND", [empty.input("w", (2, 3)), nothing, empty.input("v", (0, 3))])
    check(empty, make_executor)
    graph = empty.graph()
    graph.nodes.append(Node("GatherND", "into_nothing", [z, "rows2"], ["g"], {}))
    graph.inputs.append(TensorInfo("rows2", (2, 1), "int64"))
    graph.tensors["rows2"] = graph.inputs[-1]
    graph.tensors["g"] = TensorInfo("g", (2, 3), "float32")
    graph.outputs.append(graph.tensors["g"])
    with pytest.raises(DeviceError, match=r"GatherND into_nothing: its indices point into a dim of size 0 of \(0, 3\)"):
        planning.plan_graph(graph)


def resize_graph(data_type: str) -> GraphBuilder:
    b = GraphBuilder("resize", data_type)
    x = b.input("x", (1, 3, 6, 7))
    f32, i64 = np.float32, np.int64
    up2 = b.const([1, 1, 2, 2], f32)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("scales", {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
        ("scales", {"mode": "nearest"}),
        ("sizes", {"mode": "nearest", "nearest_mode": "round_prefer_ceil"}),
        (
            "sizes",
            {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn", "nearest_mode": "ceil"},
        ),
        ("scales", {"mode": "linear"}),
        ("sizes", {"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
        ("down", {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}),
        ("sizes", {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}),
        ("scales", {"mode": "cubic"}),
        (
            "sizes",
            {
                "mode": "cubic",
                "exclude_outside": 1,
                "cubic_coeff_a": -0.5,
                "coordinate_transformation_mode": "asymmetric",
            },
        ),
    ]
    for how, attrs in cases:
        if how == "scales":
            b.node("Resize", [x, "", up2], attrs)
        elif how == "sizes":
            b.node("Resize", [x, "", "", b.const([1, 3, 11, 16], i64)], attrs)
        else:
            b.node("Resize", [x, "", b.const([1, 1, 0.5, 0.6], f32)], attrs)
    b.node("Upsample", [x, up2], {"mode": "nearest"})
    return b


def test_resize(make_executor) -> None:
    check(resize_graph("fp32_fp32"), make_executor)


def test_fp16_storage_mix(make_executor) -> None:
    """fp16_fp32 across the families that the conv test does not cover: half buffers, float math."""
    b = GraphBuilder("fp16 mix", "fp16_fp32")
    x = b.input("x", (2, 4, 6, 5))
    b.node("Sigmoid", [x])
    b.node("Add", [x, b.weight((4, 1, 1))])
    b.node("Mul", [x, b.const(0.5)])
    b.node("MaxPool", [x], _conv_attrs([2, 2], [2, 2], ceil_mode=1))
    b.node("GlobalAveragePool", [x])
    b.node("ReduceMean", [x, b.const([1], np.int64)])
    b.node("Softmax", [x], {"axis": 1})
    b.node("LayerNormalization", [x, b.weight((5,), 1.0), b.weight((5,), 1.0)], {"axis": -1})
    b.node(
        "BatchNormalization",
        [x, b.weight((4,), 1.0), b.weight((4,), 1.0), b.weight((4,), 1.0), b.const([1.0, 0.5, 2.0, 1.5])],
    )
    b.node("Transpose", [x], {"perm": [0, 2, 3, 1]})
    b.node("Concat", [x, x], {"axis": 1})
    b.node("Slice", [x, b.const([1], np.int64), b.const([5], np.int64), b.const([2], np.int64)])
    b.node("Pad", [x, b.const([0, 0, 1, 1, 0, 0, 1, 1], np.int64), b.const(-1.0)])
    b.node("Gather", [x, b.const([3, 0], np.int64)], {"axis": 1})
    b.node("Resize", [x, "", b.const([1, 1, 2, 2], np.float32)], {"mode": "linear"})
    b.node("Gemm", [b.input("a", (3, 8)), b.weight((5, 8)), b.weight((5,))], {"transB": 1, "activation": "Relu"})
    b.node("MatMul", [x, b.weight((5, 3))])
    b.node("Cast", [b.node("Greater", [x, b.const(0.0)], output=False)], {"to": 1})
    check(b, make_executor)


# --- plan properties and errors ---------------------------------------------------------------------------------------


def test_plan_is_deterministic_and_deduplicated() -> None:
    b = GraphBuilder("dedup")
    x = b.input("x", (1, 4, 8, 8))
    for _ in range(3):  # identical specializations share one kernel; different weights are different buffers
        b.node("Conv", [x, b.weight((4, 4, 3, 3))], _conv_attrs([3, 3], pads=[1, 1, 1, 1], activation="Relu"))
    plan, again = planning.plan_graph(b.graph()), planning.plan_graph(b.graph())
    assert plan.source == again.source and plan.build_options == again.build_options
    assert plan.source.count("#define KERNEL_NAME") == 1
    assert len({launch.kernel for launch in plan.launches}) == 1 and len(plan.launches) == 3


def test_unsupported_op_names_the_node(make_executor) -> None:
    b = GraphBuilder("unsupported")
    x = b.input("x", (2, 3))
    b.nodes.append(Node("NonMaxSuppression", "nms_0", [x], ["boxes"]))
    b.tensors["boxes"] = TensorInfo("boxes", (1, 3), "int64")
    with pytest.raises(DeviceError, match=r"no kernel for NonMaxSuppression \(node nms_0\)"):
        make_executor(b.graph())


def test_wrong_feed_is_an_input_error(make_executor) -> None:
    from mace.errors import InputError

    b = GraphBuilder("feeds")
    b.node("Relu", [b.input("x", (2, 3))])
    executor = make_executor(b.graph())
    with pytest.raises(InputError):
        executor.run({"x": np.zeros((3, 2), np.float32)})
    with pytest.raises(InputError):
        executor.run({"y": np.zeros((2, 3), np.float32)})
    executor.warm_up()


# --- whole models -----------------------------------------------------------------------------------------------------


def _convert_onnx() -> Callable[..., Graph]:
    try:
        from mace.convert import convert_onnx  # type: ignore[import-not-found]
    except ImportError:
        try:
            from mace.converter import convert_onnx
        except ImportError:
            pytest.skip("the ONNX converter is not importable")
    return convert_onnx


@pytest.mark.parametrize(
    ("model", "data_type", "tol"),
    [
        ("squeezenet1_1", "fp32_fp32", FP32_TOL),
        ("mobilenet_v2", "fp32_fp32", FP32_TOL),
        # fp16 storage: each layer rounds to half (~5e-4, checked per op above); 50 layers of random weights add up.
        ("mobilenet_v2", "fp16_fp32", 3e-2),
    ],
)
def test_model_matches_onnxruntime(make_executor, model: str, data_type: str, tol: float) -> None:
    path = shared_model(model)
    graph = _convert_onnx()(path, data_type=data_type)
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    expected = onnxruntime_outputs(path, {"input": image})["output"]
    got = make_executor(graph).run({"input": image})["output"]
    assert got.shape == expected.shape and got.dtype == np.float32
    assert relative_error(got, expected) <= tol
