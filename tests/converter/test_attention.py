"""Attention fused into one ScaledDotProductAttention (converter/attention.py) and run as one launch that reads its
operands through strides (opencl/plan/attention.py, views.py): real exports of torchvision's VisionTransformer and
transformers' BertModel at a test's size (benchmarks/torch_models.py vit_tiny, bert_tiny; tests/converter/data), and
the variants of the pattern built here (scale before or after the product, masks with fully masked rows, the NaN
guard, rank 3), each against onnxruntime on the CPU reference and on OpenCL (portable and GPU-target plans, every
kernel variant). The near misses stay unfused."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from targets import GPU, OpenCLCheck

import mace
from mace.converter import convert_onnx
from mace.model.ir import Graph
from mace.opencl.plan import DeviceTarget, plan_graph
from mace.opencl.plan.tiling import ATTENTION_VARIANTS
from support import onnx_model, opencl_devices, random_array, run_onnxruntime

DATA = Path(__file__).parent / "data"
SDPA = "ScaledDotProductAttention"


def every_variant(graph: Graph) -> tuple[dict[str, int], ...]:
    """One variant choice per attention variant, for all attention nodes at once."""
    names = [n.name for n in graph.nodes if n.op == SDPA]
    return tuple({name: v for name in names} for v in range(ATTENTION_VARIANTS))


def check_cpu(model: Any, graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    expected = run_onnxruntime(model, feeds)
    got = mace.Engine(graph, device="cpu").run(feeds)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=2e-5, equal_nan=True, err_msg=name)
    return expected


def load_export(name: str) -> Any:
    """An export with its all-zero weight matrices made random (torchvision zero-inits ViT's head: the output would
    be 0 whatever the encoder computed)."""
    model = onnx.load(DATA / f"{name}.onnx")
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype == np.float32 and value.ndim >= 2 and not value.any():
            init.CopyFrom(numpy_helper.from_array(rng.standard_normal(value.shape).astype(np.float32) * 0.1,
                                                  init.name))
    return model


def launch_ops(graph: Graph, target: Any = GPU) -> Counter[str]:
    return Counter(launch.op for launch in plan_graph(graph, target).launches)


# -- real exports -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vit_tiny_b1", "bert_tiny_b1"])
def test_exports_fuse_one_attention_per_layer_and_match(name: str, opencl_check: OpenCLCheck) -> None:
    model = load_export(name)
    graph = convert_onnx(model)
    ops = Counter(n.op for n in graph.nodes)
    assert ops[SDPA] == 2 and not ops["Softmax"] and not ops["IsNaN"] and not ops["Where"]
    launches = launch_ops(graph)
    assert launches[SDPA] == 2
    if name.startswith("vit"):
        # per layer: ln_1, the qkv product, the attention, out_proj (+ the residual), ln_2, fc1 (+ GELU), fc2 (+ the
        # residual, a k split's sum); the qkv split (a Transpose, 3 Gathers) and 8 head moves are no launches
        assert launches["Gather"] == 1 and launches["Transpose"] == 1  # the class token, the patch embedding
        assert sum(launches.values()) == 25 and launches["Add"] == 1
    else:
        # per layer: one product for Q, K and V (fuse_qkv_projections: its three Slices are views), the attention,
        # the output dense (+ the residual), LayerNorm, the intermediate (+ GELU), the output (+ the residual, a k
        # split's sum), LayerNorm
        assert launches["Transpose"] == 0 and launches["Slice"] == 0 and sum(launches.values()) == 20
        assert Counter(n.op for n in graph.nodes)["Slice"] == 6
    first = graph.inputs[0]
    rng = np.random.default_rng(1)
    if first.dtype == "float32":
        x = rng.standard_normal(first.shape).astype(np.float32)
    else:
        x = rng.integers(0, 512, first.shape).astype(np.int64)
    feeds = {first.name: x}
    expected = check_cpu(model, graph, feeds)
    assert np.abs(expected[graph.outputs[0].name]).max() > 1e-2  # the check compares something
    opencl_check(graph, feeds, expected, every_variant(graph))


# -- the pattern's forms ----------------------------------------------------------------------------------------------


class Attention:
    """softmax(scale Q.K^T + mask) . V built from graph inputs q [.., S, D], k [.., T, D], v [.., T, E]."""

    def __init__(self, lead: tuple[int, ...] = (2, 3), s: int = 9, t: int = 11, d: int = 16, e: int = 32) -> None:
        self.lead, self.s, self.t, self.d, self.e = lead, s, t, d, e
        self.nodes: list[Any] = []
        self.inits: dict[str, np.ndarray] = {}
        self.inputs: dict[str, Any] = {"q": [*lead, s, d], "k": [*lead, t, d], "v": [*lead, t, e]}
        rank = len(lead) + 2
        self.kt = self.node("Transpose", "k", perm=[*range(rank - 2), rank - 1, rank - 2])

    def const(self, value: Any) -> str:
        name = f"c{len(self.inits)}"
        self.inits[name] = np.asarray(value, np.float32)
        return name

    def node(self, op: str, *inputs: str, **attrs: Any) -> str:
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=f"{op}_{len(self.nodes)}", **attrs))
        return out

    def model(self, probs: str) -> Any:
        """The model whose output y is ``probs`` . V."""
        self.node("MatMul", probs, "v")
        self.nodes[-1].output[0] = "y"
        return onnx_model(self.nodes, self.inputs, {"y": None}, self.inits, opset=17)

    def feeds(self, mask: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        f = {name: random_array(*shape, seed=seed + i) for i, (name, shape) in enumerate(self.inputs.items())
             if name != "mask"}
        if mask is not None:
            f["mask"] = mask
        return f


def _fused(model: Any) -> Graph:
    graph = convert_onnx(model)
    assert [n.op for n in graph.nodes].count(SDPA) == 1, [n.op for n in graph.nodes]
    return graph


@pytest.mark.parametrize("form", ["div_after", "mul_after", "mul_both", "mul_q_first"])
def test_scale_forms_fold_into_one_scale(form: str, opencl_check: OpenCLCheck) -> None:
    a = Attention()
    c = 1 / math.sqrt(a.d)
    if form == "div_after":  # BERT, the synthetic encoder layer
        scores = a.node("Div", a.node("MatMul", "q", a.kt), a.const(math.sqrt(a.d)))
    elif form == "mul_after":  # scaled_dot_product_attention's decomposition
        scores = a.node("Mul", a.const(c), a.node("MatMul", "q", a.kt))
    elif form == "mul_both":  # nn.MultiheadAttention: Q and K^T by sqrt(scale) each
        s = a.const(math.sqrt(c))
        scores = a.node("MatMul", a.node("Mul", "q", s), a.node("Mul", s, a.kt))
    else:  # one of them scaled, then the product scaled again
        scores = a.node("Mul", a.node("MatMul", a.node("Mul", "q", a.const(2.0)), a.kt), a.const(c / 2))
    model = a.model(a.node("Softmax", scores, axis=-1))
    graph = _fused(model)
    node = next(n for n in graph.nodes if n.op == SDPA)
    assert node.attrs["scale"] == pytest.approx(c, rel=1e-6) and len(node.inputs) == 3
    f = a.feeds()
    opencl_check(graph, f, check_cpu(model, graph, f), every_variant(graph))


@pytest.mark.parametrize("guard", [False, True])
@pytest.mark.parametrize("mask_shape", [(1, 1, 9, 11), (9, 11), (2, 1, 1, 11)])
def test_masks_with_fully_masked_rows(guard: bool, mask_shape: tuple[int, ...], opencl_check: OpenCLCheck) -> None:
    """An additive run-time mask of -inf and finite entries, broadcast; rows with every key masked are NaN as in
    onnxruntime, or 0 under transformers' Where(IsNaN(p), 0, p)."""
    a = Attention()
    a.inputs["mask"] = list(mask_shape)
    scores = a.node("Add", a.node("Div", a.node("MatMul", "q", a.kt), a.const(math.sqrt(a.d))), "mask")
    probs = a.node("Softmax", scores, axis=-1)
    if guard:
        probs = a.node("Where", a.node("IsNaN", probs), a.const(0.0), probs)
    model = a.model(probs)
    graph = _fused(model)
    node = next(n for n in graph.nodes if n.op == SDPA)
    assert node.attrs.get("nan_to_zero", 0) == int(guard) and node.inputs[3] == "mask"
    mask = np.where(np.random.default_rng(3).random(mask_shape) < 0.3, -np.inf, 0.5).astype(np.float32)
    mask[..., 0, :] = -np.inf if len(mask_shape) == 2 or mask_shape[-2] > 1 else mask[..., 0, :]
    mask.reshape(-1, mask_shape[-1])[-1, :] = -np.inf  # at least one row of every shape fully masked
    f = a.feeds(mask)
    expected = check_cpu(model, graph, f)
    assert np.isnan(expected["y"]).any() != guard
    opencl_check(graph, f, expected, every_variant(graph))


CAUSAL = np.tril(np.ones((9, 11), bool), 2)  # query i keeps keys j <= i + 2


def test_a_scatternd_built_mask_folds_into_the_attention(opencl_check: OpenCLCheck) -> None:
    """Windowed-attention exports build their masks with ScatterND from constants (Swin's shifted windows): the
    converter folds the mask and the attention takes it as a constant."""
    a = Attention()
    zeros = a.node("ConstantOfShape", a.node("Shape", a.node("MatMul", "q", a.kt)))
    a.inits["rows"] = np.asarray([[0, 1, 3], [1, 2, 4], [1, -1, 5]], np.int64)  # (lead, query): a row of keys
    a.inits["blocked"] = np.where(np.random.default_rng(3).random((3, 11)) < 0.5, -100.0, 0.0).astype(np.float32)
    mask = a.node("ScatterND", zeros, "rows", "blocked")
    scores = a.node("Add", a.node("Div", a.node("MatMul", "q", a.kt), a.const(math.sqrt(a.d))), mask)
    model = a.model(a.node("Softmax", scores, axis=-1))
    graph = _fused(model)
    assert "ScatterND" not in [n.op for n in graph.nodes]
    node = next(n for n in graph.nodes if n.op == SDPA)
    assert len(node.inputs) == 4 and node.inputs[3] in graph.constants
    f = a.feeds()
    opencl_check(graph, f, check_cpu(model, graph, f), every_variant(graph))


@pytest.mark.parametrize("form", ["where", "where_then_add", "masked_first_inf"])
def test_where_masks_become_additive(form: str, opencl_check: OpenCLCheck) -> None:
    """GPT-2's Where(causal, scores, finfo.min), alone or inside an additive run-time mask, and the Where(masked,
    -inf, scores) form: one attention whose mask is the sum (a constant, or an Add of the two)."""
    a = Attention()
    scores = a.node("Div", a.node("MatMul", "q", a.kt), a.const(math.sqrt(a.d)))
    fill = a.const(-np.inf if form == "masked_first_inf" else np.finfo(np.float32).min)
    a.inits["causal"] = CAUSAL
    if form == "masked_first_inf":
        a.inits["masked"] = ~CAUSAL
        scores = a.node("Where", "masked", fill, scores)
    else:
        scores = a.node("Where", "causal", scores, fill)
        if form == "where_then_add":
            a.inputs["mask"] = [2, 1, 1, 11]
            scores = a.node("Add", "mask", scores)
    model = a.model(a.node("Softmax", scores, axis=-1))
    graph = _fused(model)
    node = next(n for n in graph.nodes if n.op == SDPA)
    assert len(node.inputs) == 4 and not any(n.op == "Where" for n in graph.nodes)
    assert [n.op for n in graph.nodes].count("Add") == (1 if "mask" in a.inputs else 0)
    mask = np.where(np.random.default_rng(4).random((2, 1, 1, 11)) < 0.2, -1e4, 0.0).astype(np.float32)
    f = a.feeds(mask if "mask" in a.inputs else None)
    opencl_check(graph, f, check_cpu(model, graph, f), every_variant(graph))


def test_a_where_around_the_mask_add_stays_unfused_and_right(opencl_check: OpenCLCheck) -> None:
    """Where(causal, scores + mask, finfo.min) is not scores + mask + (0 | finfo.min): where the mask is -inf at a
    causally masked place (a fully padded sequence) the sum is -inf and the Where's is finfo.min."""
    a = Attention()
    a.inputs["mask"] = [2, 1, 1, 11]
    a.inits["causal"] = CAUSAL
    scores = a.node("Add", a.node("MatMul", "q", a.kt), "mask")
    model = a.model(a.node("Softmax", a.node("Where", "causal", scores, a.const(np.finfo(np.float32).min)), axis=-1))
    graph = convert_onnx(model)
    assert SDPA not in [n.op for n in graph.nodes]
    mask = np.zeros((2, 1, 1, 11), np.float32)
    mask[1] = -np.inf  # the second sequence all padding
    f = a.feeds(mask)
    expected = check_cpu(model, graph, f)
    opencl_check(graph, f, expected)


def test_a_scale_constant_of_higher_rank_is_not_a_scale(opencl_check: OpenCLCheck) -> None:
    """Mul(scores [2, 9, 11], c [1, 1, 1, 1]) broadcasts the scores up a rank: folding c into the attention's scale
    would drop that dim (and write past the output's buffer)."""
    a = Attention(lead=(2,))
    scaled = a.node("Mul", a.node("MatMul", "q", a.kt), a.const(np.full((1, 1, 1, 1), 0.25)))
    model = a.model(a.node("Softmax", scaled, axis=-1))
    graph = convert_onnx(model)
    assert SDPA not in [n.op for n in graph.nodes] and graph.outputs[0].shape == (1, 2, 9, 32)
    f = a.feeds()
    opencl_check(graph, f, check_cpu(model, graph, f))


def test_an_attention_whose_output_transpose_feeds_a_matmul(opencl_check: OpenCLCheck) -> None:
    """The Transpose after the attention read only by a MatMul: the MatMul reads it through strides, so the attention
    writes its own output (not the Transpose's)."""
    a = Attention(lead=(2,))
    probs = a.node("Softmax", a.node("MatMul", "q", a.kt), axis=-1)
    ctx = a.node("MatMul", probs, "v")
    moved = a.node("Transpose", ctx, perm=[1, 0, 2])
    a.node("MatMul", moved, a.const(random_array(32, 8, seed=4)))
    a.nodes[-1].output[0] = "y"
    model = onnx_model(a.nodes, a.inputs, {"y": None}, a.inits, opset=17)
    graph = _fused(model)
    f = a.feeds()
    opencl_check(graph, f, check_cpu(model, graph, f), every_variant(graph))


def test_where_near_misses_stay_unfused() -> None:
    for fill_value, runtime_condition in ((-1.0, False), (np.finfo(np.float32).min, True)):
        a = Attention()
        fill = a.const(fill_value)  # -1 is a value, not a mask
        if runtime_condition:
            a.inputs["keep"] = [9, 11]
            a.nodes.append(helper.make_node("Cast", ["keep"], ["keep_b"], to=onnx.TensorProto.BOOL))
            cond = "keep_b"
        else:
            a.inits["causal"] = CAUSAL
            cond = "causal"
        scores = a.node("Where", cond, a.node("MatMul", "q", a.kt), fill)
        model = a.model(a.node("Softmax", scores, axis=-1))
        assert SDPA not in [n.op for n in convert_onnx(model).nodes]


@pytest.mark.parametrize("d,e", [(8, 64), (40, 40), (12, 80), (6, 5)])
def test_rank3_long_sequences_and_head_sizes(d: int, e: int, opencl_check: OpenCLCheck) -> None:
    """No head dim, 70 queries over 100 keys (several row and key blocks of the tiled form); E 40 and 80 leave the
    tiled form's last group of 32 output columns part empty (Stable Diffusion's head sizes); D 6 and E 5 take the
    per-row form with scalar loads."""
    a = Attention(lead=(2,), s=70, t=100, d=d, e=e)
    model = a.model(a.node("Softmax", a.node("Mul", a.node("MatMul", "q", a.kt), a.const(0.4)), axis=-1))
    graph = _fused(model)
    f = a.feeds()
    opencl_check(graph, f, check_cpu(model, graph, f), every_variant(graph))


def test_near_misses_stay_unfused() -> None:
    a = Attention()
    other_axis = a.model(a.node("Softmax", a.node("MatMul", "q", a.kt), axis=-2))
    assert SDPA not in [n.op for n in convert_onnx(other_axis).nodes]

    b = Attention()
    vector_scale = b.node("Mul", b.node("MatMul", "q", b.kt), b.const(np.full(11, 0.3)))  # not one scalar
    model = b.model(b.node("Softmax", vector_scale, axis=-1))
    assert SDPA not in [n.op for n in convert_onnx(model).nodes]

    c = Attention()
    scores = c.node("MatMul", "q", c.kt)
    probs = c.node("Softmax", scores, axis=-1)
    c.node("MatMul", probs, "v")
    c.nodes[-1].output[0] = "y"
    c.nodes.append(helper.make_node("Identity", [scores], ["scores_out"]))  # the scores are also an output
    model = onnx_model(c.nodes, c.inputs, {"y": None, "scores_out": None}, c.inits, opset=17)
    graph = convert_onnx(model)
    assert SDPA not in [n.op for n in graph.nodes]


# -- operands through views -------------------------------------------------------------------------------------------


def _qkv_model(scrambled_v: bool) -> Any:
    """x [S, 12] . w -> Q, K, V of 2 heads by Slices of the product, moved to heads by Reshape and Transpose;
    ``scrambled_v`` reads a transposed V in another shape, which no strides can say (it must be copied, and still be
    right)."""
    s, h, d = 10, 2, 4
    nodes: list[Any] = []
    inits = {"w": random_array(12, 3 * h * d, seed=5), "heads": np.asarray([s, h, d], np.int64),
             "heads_first": np.asarray([h, s, d], np.int64)}
    nodes.append(helper.make_node("MatMul", ["x", "w"], ["qkv"]))
    for i, part in enumerate("qkv"):
        inits[f"{part}0"] = np.asarray([i * h * d], np.int64)
        inits[f"{part}1"] = np.asarray([(i + 1) * h * d], np.int64)
        inits["axis"] = np.asarray([1], np.int64)
        nodes.append(helper.make_node("Slice", ["qkv", f"{part}0", f"{part}1", "axis"], [f"{part}_flat"]))
        nodes.append(helper.make_node("Reshape", [f"{part}_flat", "heads"], [f"{part}_r"]))
    nodes.append(helper.make_node("Transpose", ["q_r"], ["q"], perm=[1, 0, 2]))
    if scrambled_v:  # [S, H, D] -> [D, S, H] read row-major as [H, S, D]: no strides say that (a copy)
        nodes.append(helper.make_node("Transpose", ["v_r"], ["v_t"], perm=[2, 0, 1]))
        nodes.append(helper.make_node("Reshape", ["v_t", "heads_first"], ["v"]))
    else:
        nodes.append(helper.make_node("Transpose", ["v_r"], ["v"], perm=[1, 0, 2]))
    nodes.append(helper.make_node("Transpose", ["k_r"], ["kt"], perm=[1, 2, 0]))
    nodes.append(helper.make_node("MatMul", ["q", "kt"], ["scores"]))
    nodes.append(helper.make_node("Softmax", ["scores"], ["probs"], axis=-1))
    nodes.append(helper.make_node("MatMul", ["probs", "v"], ["ctx"]))
    nodes.append(helper.make_node("Transpose", ["ctx"], ["y"], perm=[1, 0, 2]))
    return onnx_model(nodes, {"x": [s, 12]}, {"y": None}, inits, opset=17)


@pytest.mark.parametrize("scrambled_v", [False, True])
def test_sliced_operands_are_views_and_unviewable_chains_are_copied(scrambled_v: bool,
                                                                     opencl_check: OpenCLCheck) -> None:
    model = _qkv_model(scrambled_v)
    graph = _fused(model)
    launches = launch_ops(graph)
    # one product and one attention; the Slices, Reshapes and Transposes are views, the output Transpose is written
    # by the attention; the scrambled V is copied (its Slice and its Transpose), Q and K^T are still views
    assert launches == Counter({"MatMul": 1, SDPA: 1, **({"Slice": 1, "Transpose": 1} if scrambled_v else {})})
    f = {"x": random_array(10, 12, seed=2)}
    opencl_check(graph, f, check_cpu(model, graph, f), every_variant(graph))


def _sequence_first_model(batch: int, h: int = 2, d: int = 4, block: str = "") -> Any:
    """torch's MultiheadAttention as exported with its [tokens, batch, features] layout (torchvision's ViT): the
    packed qkv product split by Reshape, Unsqueeze, Transpose, Squeeze and a Gather each, the heads moved by Reshape
    [S, B * H, D] and Transpose, Reshape [B, H, S, D]; the output back by Transpose and Reshape [S * B, E]. At batch
    > 1 the Reshape to [S, B * H, D] merges dims that lie apart in the qkv product (B and H): no single stride says
    it, but the chain's end does. ``block`` ("residual", or "late" for a residual computed after the output
    projection): the encoder block around it, as torchvision's ViT has it: the input ``x`` [B, S, E] transposed to
    [S, B, E] first, then the output projection (Gemm), Reshape [S, B, E], Transpose back to [B, S, E] and the
    residual Add of ``x`` (late: of Relu(x), a node after the projection)."""
    s = 5
    e = h * d
    bound = 2.0 * min(1.0, 8 / e)  # (-2, 2) at the smallest size; smaller for wide layers (soft attention)
    inits = {"w": random_array(e, 3 * e, seed=7, low=-bound, high=bound),
             "split": np.asarray([s, batch, 3, e], np.int64), "zero": np.asarray([0], np.int64),
             "three": np.asarray([3], np.int64),
             "heads": np.asarray([s, batch * h, d], np.int64), "bhsd": np.asarray([batch, h, s, d], np.int64),
             "rows": np.asarray([s * batch, e], np.int64)}
    first = "xs" if block else "x"
    nodes = [helper.make_node("Transpose", ["x"], ["xs"], perm=[1, 0, 2])] if block else []
    nodes += [helper.make_node("MatMul", [first, "w"], ["qkv"]),
              helper.make_node("Reshape", ["qkv", "split"], ["qkv4"]),
              helper.make_node("Unsqueeze", ["qkv4", "zero"], ["qkv5"]),
              helper.make_node("Transpose", ["qkv5"], ["parts5"], perm=[3, 1, 2, 0, 4]),
              helper.make_node("Squeeze", ["parts5", "three"], ["parts"])]
    for i, part in enumerate("qkv"):
        inits[f"i{part}"] = np.asarray(i, np.int64)
        nodes += [helper.make_node("Gather", ["parts", f"i{part}"], [f"{part}_sbe"], axis=0),
                  helper.make_node("Reshape", [f"{part}_sbe", "heads"], [f"{part}_heads"]),
                  helper.make_node("Transpose", [f"{part}_heads"], [f"{part}_first"], perm=[1, 0, 2]),
                  helper.make_node("Reshape", [f"{part}_first", "bhsd"], [part if part != "k" else "k4"])]
    nodes += [helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["q", "kt"], ["scores"]),
              helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", "v"], ["ctx"]),
              helper.make_node("Transpose", ["ctx"], ["ctx_s"], perm=[2, 0, 1, 3]),
              helper.make_node("Reshape", ["ctx_s", "rows"], ["y"])]
    if not block:
        return onnx_model(nodes, {"x": [s, batch, e]}, {"y": None}, inits, opset=17)
    inits.update({"wo": random_array(e, e, seed=8, low=-bound, high=bound), "bo": random_array(e, seed=9),
                  "sbe": np.asarray([s, batch, e], np.int64)})
    nodes += [helper.make_node("Gemm", ["y", "wo", "bo"], ["o"], transB=1),
              *([helper.make_node("Relu", ["x"], ["res"])] if block == "late" else []),
              helper.make_node("Reshape", ["o", "sbe"], ["o3"]),
              helper.make_node("Transpose", ["o3"], ["ob"], perm=[1, 0, 2]),
              helper.make_node("Add", ["res" if block == "late" else "x", "ob"], ["out"])]
    return onnx_model(nodes, {"x": [batch, s, e]}, {"out": None}, inits, opset=17)


@pytest.mark.parametrize("batch", [1, 3])
def test_sequence_first_qkv_splits_are_views_at_any_batch(batch: int, opencl_check: OpenCLCheck) -> None:
    model = _sequence_first_model(batch)
    graph = _fused(model)
    # one product and one attention (writing through the output Transpose): the split and the head moves are views
    assert launch_ops(graph) == Counter({"MatMul": 1, SDPA: 1})
    f = {"x": random_array(5, batch, 8, seed=3)}
    opencl_check(graph, f, check_cpu(model, graph, f), every_variant(graph))


@pytest.mark.parametrize(("batch", "block"), [(1, "residual"), (3, "residual"), (3, "late"), (4, "big")])
def test_sequence_first_output_projection_writes_the_transposed_rows(batch: int, block: str,
                                                                     opencl_check: OpenCLCheck) -> None:
    # the projection of the [tokens, batch] rows stores them as [batch, tokens] (gemm.fold_output_transposes): no
    # launch for the Transpose back, nor for the residual Add after it where the residual is there before the
    # projection (late: only the Transpose); "big": K 256, split between work-groups and summed by a second launch
    # (ksum; the in-kernel sum of NVIDIA targets: the test below)
    model = _sequence_first_model(batch, h=4 if block == "big" else 2, d=64 if block == "big" else 4,
                                  block="late" if block == "late" else "residual")
    graph = _fused(model)
    launches = launch_ops(graph)
    assert not launches["Transpose"] and launches["Add"] == (block == "late"), launches
    assert launches["Gemm"] == (2 if block == "big" else 1)  # (a big one's k split, summed by ksum)
    plan = plan_graph(graph, GPU)
    assert ("#define Y_PERMUTE" in plan.source) == (batch > 1)
    off = dataclasses.replace(GPU, policy=dataclasses.replace(GPU.policy, gpu_fold_output_transposes=False))
    assert launch_ops(graph, off)["Transpose"] == (batch > 1)  # (the policy's switch: a copy kernel again)
    e = 256 if block == "big" else 8
    f = {"x": random_array(batch, 5, e, seed=3)}
    # every tile the product's lowering offers (the tuner's variants)
    gemm = next(n.name for n in graph.nodes if n.op == "Gemm")
    tiles = tuple({gemm: v} for v in range(plan.variant_counts.get(gemm, 1)))
    opencl_check(graph, f, check_cpu(model, graph, f), tiles)


def test_sequence_first_output_projection_sums_its_splits_in_the_kernel_on_nvidia() -> None:
    cl = pytest.importorskip("pyopencl")
    from mace.opencl.executor import Executor

    device = next((d for d in opencl_devices() if DeviceTarget.from_device(d).nvidia_ptx), None)
    if device is None:
        pytest.skip("no NVIDIA OpenCL device (the in-kernel split sum, SPLIT_SUM)")
    target = DeviceTarget.from_device(device)
    model = _sequence_first_model(4, h=4, d=64, block="residual")
    graph = _fused(model)
    chunks = plan_graph(graph, target).source.split("// ---- ")
    assert any("#define Y_PERMUTE 4" in c and "#define SPLIT_SUM 1" in c for c in chunks)
    ctx = cl.Context([device])
    f = {"x": random_array(4, 5, 256, seed=3)}
    got = Executor(graph, ctx, cl.CommandQueue(ctx), lambda s, o: cl.Program(ctx, s).build(options=o),
                   target=target).run(f)
    expected = run_onnxruntime(model, f)["out"]
    np.testing.assert_allclose(got["out"], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def _projections_model(reader: str) -> Any:
    """2-D products of [S * B, E] rows, each through Reshape [S, B, E] and Transpose [B, S, E], that fold_transposes
    or an attention's views already read through strides (``reader``: "matmul", a MatMul of the Transpose;
    "attention", per-head Q, K, V moved to [B, H, S, D] by Reshape and Transpose into one attention)."""
    s, b, h, d = 5, 3, 2, 4
    e = h * d
    inits = {"sbe": np.asarray([s, b, e], np.int64), "bshd": np.asarray([b, s, h, d], np.int64),
             "scale": np.asarray(math.sqrt(d), np.float32), "w2": random_array(e, 4, seed=3)}
    nodes = []
    for i, part in enumerate("qkv" if reader == "attention" else "q"):
        inits[f"w{part}"] = random_array(e, e, seed=10 + i, low=-0.5, high=0.5)
        nodes += [helper.make_node("Gemm", ["x", f"w{part}"], [f"{part}2"]),
                  helper.make_node("Reshape", [f"{part}2", "sbe"], [f"{part}3"]),
                  helper.make_node("Transpose", [f"{part}3"], [f"{part}b"], perm=[1, 0, 2])]
        if reader == "attention":
            nodes += [helper.make_node("Reshape", [f"{part}b", "bshd"], [f"{part}4"]),
                      helper.make_node("Transpose", [f"{part}4"], [f"{part}h"],
                                       perm=[0, 2, 3, 1] if part == "k" else [0, 2, 1, 3])]
    if reader == "attention":
        nodes += [helper.make_node("MatMul", ["qh", "kh"], ["scores"]),
                  helper.make_node("Div", ["scores", "scale"], ["scaled"]),
                  helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1),
                  helper.make_node("MatMul", ["probs", "vh"], ["out"])]
    else:
        nodes.append(helper.make_node("MatMul", ["qb", "w2"], ["out"]))
    return onnx_model(nodes, {"x": [s * b, e]}, {"out": None}, inits, opset=17)


def test_a_product_with_its_own_residual_keeps_its_rows(opencl_check: OpenCLCheck) -> None:
    # Gemm + Add (fused: its residual, in the product's rows), then Reshape and Transpose: the Transpose is a launch
    inits = {"w": random_array(8, 8, seed=1), "b": random_array(8, seed=2), "rqn": np.asarray([3, 2, 8], np.int64)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["o"]), helper.make_node("Add", ["o", "r"], ["o2"]),
             helper.make_node("Reshape", ["o2", "rqn"], ["o3"]),
             helper.make_node("Transpose", ["o3"], ["out"], perm=[1, 0, 2])]
    model = onnx_model(nodes, {"x": [6, 8], "r": [6, 8]}, {"out": None}, inits, opset=17)
    graph = convert_onnx(model)
    assert [n.op for n in graph.nodes if n.attrs.get("residual")] == ["Gemm"]
    assert launch_ops(graph)["Transpose"] == 1
    f = {"x": random_array(6, 8, seed=4), "r": random_array(6, 8, seed=5)}
    opencl_check(graph, f, check_cpu(model, graph, f))


@pytest.mark.parametrize("reader", ["matmul", "attention"])
def test_output_transposes_read_through_strides_stay_views(reader: str, opencl_check: OpenCLCheck) -> None:
    # the Transpose after the product is a view its reader takes through strides (fold_transposes, or the start of
    # an attention's chain of views): the product writes either its own rows (matmul) or the transposed ones that
    # the chain then reads (attention), and every plan matches
    model = _projections_model(reader)
    graph = convert_onnx(model)
    launches = launch_ops(graph)
    assert not launches["Transpose"] and not launches["Reshape"], launches
    f = {"x": random_array(15, 8, seed=4)}
    opencl_check(graph, f, check_cpu(model, graph, f))
