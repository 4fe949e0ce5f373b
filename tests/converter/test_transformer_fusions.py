"""The transformer fusions of mace.converter.passes: nn.Linear's bias into MatMul (fuse_matmul_bias), the exported GELU
formulas into one Gelu (fuse_gelu) and into the MatMul epilogue (fuse_activations), the residual Add after a MatMul or
Gemm (fuse_residual_add). Each pattern (several operand orders) fuses to the structure asserted here and matches
onnxruntime on the CPU reference and on OpenCL (portable and GPU-target plans); the near misses stay unfused."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from onnx import helper
from targets import GPU
from transformer_layer import launch_counts, transformer_layer

import mace
from mace.converter import convert_onnx
from mace.model.ir import Graph
from mace.opencl.plan import plan_graph
from support import onnx_model, random_array, run_onnxruntime

S, K, N = 7, 24, 20  # tokens, features in, features out


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def check_cpu(model: Any, graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    expected = run_onnxruntime(model, feeds)
    got = mace.Engine(graph, device="cpu").run(feeds)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=2e-5, err_msg=name)
    return expected


# -- model pieces ---------------------------------------------------------------------------------------------------


class Builder:
    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[Any] = []
        self.inits: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)

    def const(self, value: Any) -> str:
        name = f"c{len(self.inits)}"
        self.inits[name] = np.asarray(value, np.float32)
        return name

    def weight(self, *shape: int) -> str:
        return self.const(self.rng.uniform(-1, 1, shape) / math.sqrt(shape[0] if shape else 1))

    def node(self, op: str, *inputs: str, **attrs: Any) -> str:
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=f"{op}_{len(self.nodes)}", **attrs))
        return out

    def model(self, inputs: dict[str, Any], outputs: dict[str, Any], opset: int = 17) -> Any:
        return onnx_model(self.nodes, inputs, outputs, self.inits, opset=opset)

    def rename_last(self, name: str) -> None:
        self.nodes[-1].output[0] = name


def erf_gelu(b: Builder, x: str, form: str) -> str:
    """The erf GELU as torch / HF / hand-written code exports it."""
    if form == "torch":  # nn.GELU: Mul(Mul(x, Add(Erf(Div(x, sqrt2)), 1)), 0.5)
        one_plus = b.node("Add", b.node("Erf", b.node("Div", x, b.const(math.sqrt(2)))), b.const(1.0))
        return b.node("Mul", b.node("Mul", x, one_plus), b.const(0.5))
    if form == "hf":  # x * 0.5 * (1.0 + erf(x / sqrt 2))
        half = b.node("Mul", x, b.const(0.5))
        return b.node("Mul", half, b.node("Add", b.const(1.0), b.node("Erf", b.node("Div", x, b.const(1.4142135)))))
    if form == "half_first":  # 0.5 * (1 + erf(0.7071 * x)) * x
        one_plus = b.node("Add", b.node("Erf", b.node("Mul", b.const(0.70710678), x)), b.const(1.0))
        return b.node("Mul", b.node("Mul", b.const(0.5), one_plus), x)
    if form == "div2":  # (1 + erf(x * 0.7071)) * x / 2
        one_plus = b.node("Add", b.const(1.0), b.node("Erf", b.node("Mul", x, b.const(0.70710678))))
        return b.node("Div", b.node("Mul", one_plus, x), b.const(2.0))
    if form == "x_over_2":  # (x / 2) * (1 + erf(x / sqrt 2))
        one_plus = b.node("Add", b.node("Erf", b.node("Div", x, b.const(math.sqrt(2)))), b.const(1.0))
        return b.node("Mul", one_plus, b.node("Div", x, b.const(2.0)))
    raise AssertionError(form)


def tanh_gelu(b: Builder, x: str, form: str) -> str:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): torch's approximate="tanh", HF's gelu_new, and a Mul cube."""
    if form == "torch":  # torch's symbolic: x * (x * x), 0.5 * (x * (1 + tanh(...)))
        cube = b.node("Mul", x, b.node("Mul", x, x))
        inner = b.node("Mul", b.const(math.sqrt(2 / math.pi)), b.node("Add", x, b.node("Mul", b.const(0.044715), cube)))
        return b.node("Mul", b.const(0.5), b.node("Mul", x, b.node("Add", b.const(1.0), b.node("Tanh", inner))))
    if form == "pow":  # HF gelu_new: 0.5 * x * (1.0 + tanh(sqrt(2/pi) * (x + 0.044715 * pow(x, 3))))
        cube = b.node("Pow", x, b.const(3.0))
        inner = b.node("Mul", b.node("Add", b.node("Mul", cube, b.const(0.044715)), x), b.const(0.7978845608))
        half = b.node("Mul", b.const(0.5), x)
        return b.node("Mul", half, b.node("Add", b.node("Tanh", inner), b.const(1.0)))
    if form == "square_first":  # (x * x) * x
        cube = b.node("Mul", b.node("Mul", x, x), x)
        inner = b.node("Mul", b.node("Add", x, b.node("Mul", cube, b.const(0.044715))), b.const(0.7978845608))
        return b.node("Mul", b.node("Mul", x, b.node("Add", b.node("Tanh", inner), b.const(1.0))), b.const(0.5))
    raise AssertionError(form)


def linear(b: Builder, x: str, k: int, n: int, bias_first: bool = False,
           bias_shape: tuple[int, ...] | None = None) -> str:
    mm = b.node("MatMul", x, b.weight(k, n))
    bias = b.const(np.random.default_rng(len(b.nodes)).uniform(-1, 1, bias_shape or (n,)))
    return b.node("Add", bias, mm) if bias_first else b.node("Add", mm, bias)


def feeds(**shapes: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {name: random_array(*shape, seed=i, low=-3, high=3) for i, (name, shape) in enumerate(shapes.items())}


# -- GELU -----------------------------------------------------------------------------------------------------------

GELU_FORMS = [("Gelu", erf_gelu, f) for f in ("torch", "hf", "half_first", "div2", "x_over_2")]
GELU_FORMS += [("GeluTanh", tanh_gelu, f) for f in ("torch", "pow", "square_first")]


@pytest.mark.parametrize(("activation", "gelu", "form"), GELU_FORMS, ids=[f"{a}-{f}" for a, _, f in GELU_FORMS])
def test_gelu_after_linear_joins_the_matmul_epilogue(activation: str, gelu: Any, form: str,
                                                     opencl_check: Any) -> None:
    b = Builder()
    gelu(b, linear(b, "x", K, N, bias_first=form == "hf"), form)
    b.rename_last("y")
    model = b.model({"x": [1, S, K]}, {"y": [1, S, N]})
    graph = convert_onnx(model)
    assert ops(graph) == ["MatMul"]
    mm = graph.nodes[0]
    assert mm.attrs == {"activation": activation, "activation_params": []}
    assert len(mm.inputs) == 3 and graph.constants[mm.inputs[2]].shape == (N,)
    f = feeds(x=(1, S, K))
    opencl_check(graph, f, check_cpu(model, graph, f))


@pytest.mark.parametrize(("activation", "gelu", "form"), GELU_FORMS, ids=[f"{a}-{f}" for a, _, f in GELU_FORMS])
def test_gelu_of_an_input_becomes_one_gelu_node(activation: str, gelu: Any, form: str) -> None:
    b = Builder()
    gelu(b, "x", form)
    b.rename_last("y")
    model = b.model({"x": [3, N]}, {"y": [3, N]})
    graph = convert_onnx(model)
    assert ops(graph) == ["Gelu"]
    assert graph.nodes[0].attrs == {"approximate": "none" if activation == "Gelu" else "tanh"}
    assert graph.nodes[0].inputs == ["x"] and not graph.constants
    check_cpu(model, graph, feeds(x=(3, N)))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_opset20_gelu_joins_the_matmul_epilogue(approximate: str, opencl_check: Any) -> None:
    b = Builder()
    b.node("Gelu", linear(b, "x", K, N), approximate=approximate)
    b.rename_last("y")
    model = b.model({"x": [1, S, K]}, {"y": [1, S, N]}, opset=20)
    graph = convert_onnx(model)
    assert ops(graph) == ["MatMul"]
    assert graph.nodes[0].attrs["activation"] == {"none": "Gelu", "tanh": "GeluTanh"}[approximate]
    f = feeds(x=(1, S, K))
    opencl_check(graph, f, check_cpu(model, graph, f))


def test_gelu_with_a_second_consumer_of_its_input_stays_standalone(opencl_check: Any) -> None:
    b = Builder()
    h = linear(b, "x", K, N)
    erf_gelu(b, h, "torch")
    b.rename_last("y")
    model = b.model({"x": [1, S, K]}, {"y": [1, S, N], h: [1, S, N]})
    graph = convert_onnx(model)
    assert ops(graph) == ["MatMul", "Gelu"]
    assert "activation" not in graph.nodes[0].attrs and len(graph.nodes[0].inputs) == 3
    f = feeds(x=(1, S, K))
    opencl_check(graph, f, check_cpu(model, graph, f))


@pytest.mark.parametrize("broken", ["divisor", "one", "half", "coeff", "erf output used twice"])
def test_near_gelus_stay_unfused(broken: str) -> None:
    b = Builder()
    x = "x"
    divisor = 1.5 if broken == "divisor" else math.sqrt(2)
    if broken == "coeff":
        cube = b.node("Pow", x, b.const(3.0))
        inner = b.node("Mul", b.node("Add", x, b.node("Mul", cube, b.const(0.05))), b.const(0.7978845608))
        b.node("Mul", b.node("Mul", x, b.node("Add", b.node("Tanh", inner), b.const(1.0))), b.const(0.5))
        outputs = {"y": [3, N]}
    else:
        erf = b.node("Erf", b.node("Div", x, b.const(divisor)))
        one_plus = b.node("Add", erf, b.const(2.0 if broken == "one" else 1.0))
        b.node("Mul", b.node("Mul", x, one_plus), b.const(0.25 if broken == "half" else 0.5))
        outputs = {"y": [3, N], erf: [3, N]} if broken == "erf output used twice" else {"y": [3, N]}
    b.rename_last("y")
    model = b.model({"x": [3, N]}, outputs)
    graph = convert_onnx(model)
    assert "Gelu" not in ops(graph)
    check_cpu(model, graph, feeds(x=(3, N)))


# -- MatMul bias ----------------------------------------------------------------------------------------------------

BIASES = [((N,), False), ((N,), True), ((1, N), False), ((1, 1, N), True)]


@pytest.mark.parametrize(("bias_shape", "bias_first"), BIASES, ids=[f"{s}-{f}" for s, f in BIASES])
def test_linear_bias_joins_the_matmul(bias_shape: tuple[int, ...], bias_first: bool, opencl_check: Any) -> None:
    b = Builder()
    b.node("Relu", linear(b, "x", K, N, bias_first, bias_shape))
    b.rename_last("y")
    model = b.model({"x": [2, S, K]}, {"y": [2, S, N]})
    graph = convert_onnx(model)
    assert ops(graph) == ["MatMul"]
    mm = graph.nodes[0]
    assert mm.attrs["activation"] == "Relu" and len(mm.inputs) == 3 and graph.constants[mm.inputs[2]].shape == (N,)
    f = feeds(x=(2, S, K))
    opencl_check(graph, f, check_cpu(model, graph, f))


def test_2d_linear_bias_joins_the_matmul(opencl_check: Any) -> None:
    b = Builder()
    linear(b, "x", K, N)
    b.rename_last("y")
    model = b.model({"x": [S, K]}, {"y": [S, N]})
    graph = convert_onnx(model)
    assert ops(graph) == ["MatMul"] and len(graph.nodes[0].inputs) == 3
    f = feeds(x=(S, K))
    opencl_check(graph, f, check_cpu(model, graph, f))


@pytest.mark.parametrize("case", ["bias over the rows", "full-shape constant", "second consumer", "bias an input"])
def test_near_linear_biases_stay_unfused(case: str) -> None:
    b = Builder()
    mm = b.node("MatMul", "x", b.weight(K, N))
    inputs: dict[str, Any] = {"x": [1, S, K]}
    outputs: dict[str, Any] = {"y": [1, S, N]}
    if case == "bias over the rows":
        bias = b.const(np.arange(S, dtype=np.float32).reshape(S, 1))
    elif case == "full-shape constant":
        bias = b.const(np.arange(S * N, dtype=np.float32).reshape(S, N) / 10)
    elif case == "bias an input":
        bias, inputs["bias"] = "bias", [N]
    else:
        bias, outputs[mm] = b.const(np.ones(N)), [1, S, N]
    b.node("Add", mm, bias)
    b.rename_last("y")
    model = b.model(inputs, outputs)
    graph = convert_onnx(model)
    assert ops(graph) == ["MatMul", "Add"]
    assert len(graph.nodes[0].inputs) == 2 and not graph.nodes[0].attrs
    f = feeds(**{name: tuple(shape) for name, shape in inputs.items()})
    check_cpu(model, graph, f)


# -- residual -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip_first", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_residual_add_joins_the_matmul(skip_first: bool, with_bias: bool, opencl_check: Any) -> None:
    b = Builder()
    y = linear(b, "x", K, N) if with_bias else b.node("MatMul", "x", b.weight(K, N))
    b.node("Add", *(("skip", y) if skip_first else (y, "skip")))
    b.rename_last("y")
    model = b.model({"x": [1, S, K], "skip": [1, S, N]}, {"y": [1, S, N]})
    graph = convert_onnx(model)
    assert ops(graph) == ["MatMul"]
    mm = graph.nodes[0]
    assert mm.attrs == {"residual": 1}
    assert mm.inputs[2] != "" if with_bias else mm.inputs[2] == ""
    assert mm.inputs[3] == "skip"
    f = feeds(x=(1, S, K), skip=(1, S, N))
    opencl_check(graph, f, check_cpu(model, graph, f))


def test_residual_add_joins_the_gemm(opencl_check: Any) -> None:
    b = Builder()
    b.node("Relu", b.node("Add", b.node("Gemm", "x", b.weight(N, K), b.const(np.ones(N)), transB=1), "skip"))
    b.rename_last("y")
    model = b.model({"x": [S, K], "skip": [S, N]}, {"y": [S, N]})
    graph = convert_onnx(model)
    assert ops(graph) == ["Gemm"]
    assert graph.nodes[0].attrs["residual"] == 1 and graph.nodes[0].attrs["activation"] == "Relu"
    assert graph.nodes[0].inputs[3] == "skip"
    f = feeds(x=(S, K), skip=(S, N))
    opencl_check(graph, f, check_cpu(model, graph, f))


def test_broadcast_residual_stays_unfused() -> None:
    b = Builder()
    b.node("Add", linear(b, "x", K, N), "skip")
    b.rename_last("y")
    model = b.model({"x": [1, S, K], "skip": [1, 1, N]}, {"y": [1, S, N]})
    graph = convert_onnx(model)
    assert ops(graph) == ["MatMul", "Add"]
    assert "residual" not in graph.nodes[0].attrs and len(graph.nodes[0].inputs) == 3
    check_cpu(model, graph, feeds(x=(1, S, K), skip=(1, 1, N)))


# -- the encoder layer ----------------------------------------------------------------------------------------------


def test_encoder_layer_fuses_and_matches(opencl_check: Any) -> None:
    model = transformer_layer(seq=9, dim=32, heads=4)
    graph = convert_onnx(model)
    # Q, K and V from one product (fuse_qkv_projections) and three Slices of it
    assert graph.op_histogram() == {"MatMul": 1, "Slice": 3, "Reshape": 4, "Transpose": 4, "LayerNormalization": 2,
                                    "MatMul+Add": 2, "MatMul+Gelu": 1, "ScaledDotProductAttention": 1}
    assert sum(len(n.inputs) == 3 + n.attrs.get("residual", 0) for n in graph.nodes if n.op == "MatMul") == 4
    f = feeds(x=(1, 9, 32))
    opencl_check(graph, f, check_cpu(model, graph, f))


def test_encoder_layer_at_vit_size_has_fewer_launches() -> None:
    counts = launch_counts(transformer_layer())
    before, after = counts["before"], counts["after"]
    # 6 bias Adds, 2 residual Adds, 5 GELU nodes, Q.K^T, Div, Softmax, .V into one attention, and the Q, K, V
    # products into one (and three Slices, views)
    assert before["nodes"] - after["nodes"] == 15
    assert before["portable"] - after["portable"] == 19
    assert before["gpu"] - after["gpu"] == 21
    # no Transpose is a launch: the attention reads Q, K^T and V through strides and writes ctx's layout
    for target in (None, GPU):
        launches = plan_graph(convert_onnx(transformer_layer()), target).launches
        assert [launch.op for launch in launches].count("Transpose") == 0
        assert [launch.op for launch in launches].count("ScaledDotProductAttention") == 1


# -- Transposes read through strides (opencl/plan/gemm.py fold_transposes) ------------------------------------------

TRANSPOSED = [  # (A's input shape, A's perm, B's input shape, B's perm)
    ((3, 6, 5), [0, 2, 1], (6, 4), None),  # A^T, B a broadcast weight
    ((2, 3, 4, 5), [1, 0, 2, 3], (2, 3, 4, 5), [1, 0, 3, 2]),  # batch dims swapped, B^T
    ((6, 5), [1, 0], (2, 6, 4), [0, 1, 2]),  # a 2-D A^T against a batched B, an identity perm
    ((1, 7, 3, 4), [0, 2, 1, 3], (1, 7, 3, 4), [0, 2, 3, 1]),  # attention's Q . K^T
]


@pytest.mark.parametrize(("a_shape", "a_perm", "b_shape", "b_perm"), TRANSPOSED)
def test_transposes_read_by_matmuls_cost_no_launch(a_shape: tuple[int, ...], a_perm: list[int],
                                                   b_shape: tuple[int, ...], b_perm: list[int] | None,
                                                   opencl_check: Any) -> None:
    b = Builder()
    a_t = b.node("Transpose", "a", perm=a_perm)
    b_t = b.node("Transpose", "b", perm=b_perm) if b_perm is not None else "b"
    b.node("MatMul", a_t, b_t)
    b.rename_last("y")
    model = b.model({"a": list(a_shape), "b": list(b_shape)}, {"y": None})
    graph = convert_onnx(model)
    for target in (None, GPU):
        assert [launch.op for launch in plan_graph(graph, target).launches] == ["MatMul"]
    f = feeds(a=a_shape, b=b_shape)
    opencl_check(graph, f, check_cpu(model, graph, f))


def test_a_transpose_with_another_reader_is_computed(opencl_check: Any) -> None:
    b = Builder()
    a_t = b.node("Transpose", "a", perm=[0, 2, 1])
    b.node("MatMul", a_t, b.weight(6, 4))
    b.rename_last("y")
    b.node("Relu", a_t)
    b.rename_last("z")
    model = b.model({"a": [3, 6, 5]}, {"y": None, "z": None})
    graph = convert_onnx(model)
    assert [launch.op for launch in plan_graph(graph).launches] == ["Transpose", "MatMul", "Relu"]
    f = feeds(a=(3, 6, 5))
    opencl_check(graph, f, check_cpu(model, graph, f))
