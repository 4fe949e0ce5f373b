"""converter/einsum.py: Einsum lowered to ReduceSum/Transpose/Reshape/MatMul, checked against onnxruntime on the
numpy reference and on OpenCL (portable, CPU- and GPU-target plans); what it cannot lower stays an Einsum."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import helper
from targets import OpenCLCheck

import mace
from mace.converter import convert_onnx
from mace.converter.einsum import parse_equation
from mace.errors import ConversionError
from support import onnx_model, random_array, run_onnxruntime

CASES = [
    # (equation, operand shapes, the ops it becomes)
    ("ij,jk->ik", [(5, 7), (7, 3)], {"MatMul": 1}),
    ("ij,jk", [(5, 7), (7, 3)], {"MatMul": 1}),  # implicit output
    ("bij,bjk->bik", [(2, 5, 7), (2, 7, 3)], {"MatMul": 1}),
    # MaxViT's attention: the second operand transposed, then one product
    ("bghid,bghjd->bghij", [(1, 2, 3, 6, 4), (1, 2, 3, 5, 4)], {"Transpose": 1, "MatMul": 1}),
    ("bghij,bghjd->bghid", [(1, 2, 3, 6, 5), (1, 2, 3, 5, 4)], {"MatMul": 1}),
    ("ij->ji", [(3, 4)], {"Transpose": 1}),
    ("ij->i", [(3, 4)], {"ReduceSum": 1}),
    ("ijk->", [(3, 4, 2)], {"ReduceSum": 1}),
    ("ij->ij", [(3, 4)], {"Reshape": 1}),
    ("i,j->ij", [(3,), (4,)], None),  # an outer product: a MatMul of k 1
    ("i,i->", [(6,), (6,)], None),  # a dot product
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)], None),  # bilinear: three operands
    ("...ij,...jk->...ik", [(2, 3, 4, 5), (1, 3, 5, 2)], None),  # an ellipsis, its size-1 dimension broadcast
    ("b...d,bkd->b...k", [(2, 3, 4, 6), (2, 5, 6)], None),
    ("bhqd,bkd->bhqk", [(2, 3, 4, 6), (2, 5, 6)], None),  # a label only one operand batches over
    ("bij,jk->bki", [(2, 3, 4), (4, 5)], None),  # output in another order
    ("abc,cd,ab->ad", [(2, 3, 4), (4, 5), (2, 3)], None),  # a label summed after the first pair
    ("ijk,ikl->jl", [(3, 4, 5), (3, 5, 2)], None),  # two labels summed at once
]


def einsum_model(equation: str, shapes: list[tuple[int, ...]]) -> object:
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], name="einsum", equation=equation)
    return onnx_model([node], dict(zip(names, shapes)), {"y": None})


@pytest.mark.parametrize(("equation", "shapes", "ops"), CASES, ids=[c[0] for c in CASES])
def test_einsum_lowers_to_products_and_matches(equation: str, shapes: list, ops: dict | None,
                                               opencl_check: OpenCLCheck) -> None:
    model = einsum_model(equation, shapes)
    graph = convert_onnx(model)
    made = Counter(node.op for node in graph.nodes)
    assert "Einsum" not in made and graph.metadata["passes"]["lower_einsum"] == 1
    if ops is not None:
        assert dict(made) == ops
    feeds = {f"x{i}": random_array(*s, seed=i) for i, s in enumerate(shapes)}
    expected = run_onnxruntime(model, feeds)
    got = mace.Engine(graph, device="cpu").run(feeds)
    np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-5, atol=1e-5)
    opencl_check(graph, feeds, expected)


def test_einsum_it_cannot_lower_stays_and_the_gpu_names_it(opencl_check: OpenCLCheck) -> None:
    """A diagonal ("ii->i") stays an Einsum: the reference computes it, the OpenCL runtime names the op it lacks.
    So does a batch label broadcast from size 1 ("bij,bjk->bik" of b 1 and 3): ONNX's shape inference gives the
    output b 1, onnxruntime computes 3, and the reference computes what onnxruntime does."""
    model = einsum_model("ii->i", [(4, 4)])
    graph = convert_onnx(model)
    assert [n.op for n in graph.nodes] == ["Einsum"] and graph.metadata["passes"]["lower_einsum"] == 0
    x = random_array(4, 4)
    np.testing.assert_allclose(mace.Engine(graph, device="cpu").run({"x0": x})["y"], np.diag(x), rtol=1e-6)
    with pytest.raises(mace.MaceError, match="no kernel for Einsum"):
        opencl_check(graph, {"x0": x}, {"y": np.diag(x)})
    model = einsum_model("bij,bjk->bik", [(1, 5, 7), (3, 7, 2)])
    graph = convert_onnx(model)
    assert [n.op for n in graph.nodes] == ["Einsum"]
    feeds = {"x0": random_array(1, 5, 7), "x1": random_array(3, 7, 2, seed=1)}
    expected = np.einsum("bij,bjk->bik", feeds["x0"], feeds["x1"])
    np.testing.assert_allclose(mace.Engine(graph, device="cpu").run(feeds)["y"], expected, rtol=1e-5, atol=1e-6)


def test_equations_spell_out_ellipses_and_implicit_outputs() -> None:
    e = "\u2460"
    assert parse_equation("ij,jk", [2, 2]) == (["ij", "jk"], "ik")
    assert parse_equation("...ij,...jk->...ik", [4, 3]) == ([f"{chr(0x2461)}{e}ij", f"{e}jk"],
                                                            f"{chr(0x2461)}{e}ik")
    assert parse_equation("b i, b i -> b", [2, 2]) == (["bi", "bi"], "b")  # spaces
    assert parse_equation("...i,i", [3, 1]) == ([f"{chr(0x2461)}{e}i", "i"], f"{chr(0x2461)}{e}")
    for equation, ranks, message in [
        ("ij,jk->ik", [2], "has 2 operands, the node 1"),
        ("ij->ik", [2], "repeat or are in no operand"),
        ("ij->ii", [2], "repeat or are in no operand"),
        ("ijk->i", [2], "does not label a tensor of rank 2"),
        ("i1->i", [2], "labels are letters"),
        ("....i->i", [3], "not letters around one '...'"),
    ]:
        with pytest.raises(ConversionError, match=message):
            parse_equation(equation, ranks)


def test_maxvit_attention_einsums_become_one_attention(opencl_check: OpenCLCheck) -> None:
    """MaxViT's relative attention as torchvision writes it: q scaled, einsum("bghid,bghjd->bghij") with k, plus a
    position bias, softmax, einsum("bghij,bghjd->bghid") with v: lowered, then fused like any exported attention,
    K's Transpose read through strides on the GPU target."""
    shape = (1, 2, 3, 7, 8)  # batch, windows, heads, tokens, head size
    names = ["q", "k", "v"]
    nodes = [helper.make_node("Mul", ["q", "scale"], ["qs"]),
             helper.make_node("Einsum", ["qs", "k"], ["s"], equation="B G H I D, B G H J D -> B G H I J"),
             helper.make_node("Add", ["s", "bias"], ["sb"]),
             helper.make_node("Softmax", ["sb"], ["p"], axis=-1),
             helper.make_node("Einsum", ["p", "v"], ["y"], equation="bghij,bghjd->bghid")]
    init = {"scale": np.array(8 ** -0.5, np.float32), "bias": random_array(3, 7, 7, seed=9)}
    model = onnx_model(nodes, {name: list(shape) for name in names}, {"y": None}, init)
    graph = convert_onnx(model)
    assert Counter(n.op for n in graph.nodes) == {"ScaledDotProductAttention": 1, "Transpose": 1}  # (K^T: a view)
    feeds = {name: random_array(*shape, seed=i) for i, name in enumerate(names)}
    expected = run_onnxruntime(model, feeds)
    np.testing.assert_allclose(mace.Engine(graph, device="cpu").run(feeds)["y"], expected["y"], rtol=1e-5, atol=1e-5)
    opencl_check(graph, feeds, expected)


def test_a_malformed_equation_names_the_node() -> None:
    model = einsum_model("ij,jk->ik", [(2, 3)] * 1)
    with pytest.raises(ConversionError, match="einsum"):
        convert_onnx(model)
