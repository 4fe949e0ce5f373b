"""Graph passes on the IR, run in order by `optimize`. Each pass is a function Graph -> None that edits in place
and returns how many rewrites it made, so `mace info` can show what changed."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from mace.converter.attention import fuse_attention, fuse_qkv_projections, transposes_as_reshapes
from mace.converter.einsum import lower_einsum
from mace.converter.matching import Match, constant_scalar, other_operand, replace, single_consumer
from mace.model.ir import FUSABLE_PRODUCERS, Graph, Node, TensorInfo
from mace.model.rules import (
    ACTIVATION_DEFAULTS,
    GELU_ERF_SCALE,
    GELU_TANH_COEFF,
    GELU_TANH_SCALE,
    SAME,
    activation_params,
    auto_pad_mode,
    same_pads,
)


def remove_identities(graph: Graph) -> int:
    """Identity and Dropout (inference) forward their input: rewire the consumers, keep graph outputs' names."""
    outputs = {t.name for t in graph.outputs}
    count = 0
    for node in list(graph.nodes):
        if node.op not in ("Identity", "Dropout") or node.outputs[0] in outputs:
            continue
        source, alias = node.inputs[0], node.outputs[0]
        for other in graph.nodes:
            other.inputs = [source if i == alias else i for i in other.inputs]
        graph.nodes.remove(node)
        count += 1
    return count


def eliminate_dead_code(graph: Graph) -> int:
    live = {t.name for t in graph.outputs}
    kept: list[Node] = []
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs if o):
            kept.append(node)
            live.update(i for i in node.inputs if i)
    removed = len(graph.nodes) - len(kept)
    graph.nodes = kept[::-1]
    for name in [c for c in graph.constants if c not in live]:
        del graph.constants[name]
    defined = live | {t.name for t in graph.inputs}
    graph.tensors = {k: v for k, v in graph.tensors.items() if k in defined}
    return removed


def _spatial_defaults(graph: Graph, node: Node, kernel: list[int]) -> None:
    """Fill kernel_shape/strides/dilations/pads explicitly, resolving auto_pad against the static input shape."""
    n = len(kernel)
    attrs = node.attrs
    attrs["kernel_shape"] = [int(k) for k in kernel]
    attrs.setdefault("strides", [1] * n)
    attrs.setdefault("dilations", [1] * n)
    auto_pad = auto_pad_mode(attrs, node.op)
    attrs.pop("auto_pad", None)
    if auto_pad in SAME and node.op != "ConvTranspose":
        in_shape = graph.tensors[node.inputs[0]].shape[2:]
        pads_begin, pads_end = same_pads(in_shape, kernel, attrs["strides"], attrs["dilations"], auto_pad)
        attrs["pads"] = pads_begin + pads_end
    elif auto_pad == "VALID":
        attrs["pads"] = [0] * (2 * n)
    elif auto_pad in SAME:
        attrs["auto_pad"] = auto_pad  # ConvTranspose: resolved by the op itself from output shape
    attrs.setdefault("pads", [0] * (2 * n))


def explicit_attributes(graph: Graph) -> int:
    count = 0
    for node in graph.nodes:
        if node.op in ("Conv", "ConvTranspose"):
            kernel = node.attrs.get("kernel_shape") or list(graph.tensors[node.inputs[1]].shape[2:])
            _spatial_defaults(graph, node, kernel)
            node.attrs.setdefault("group", 1)
            count += 1
        elif node.op in ("MaxPool", "AveragePool"):
            _spatial_defaults(graph, node, node.attrs["kernel_shape"])
            node.attrs.setdefault("ceil_mode", 0)
            if node.op == "AveragePool":
                node.attrs.setdefault("count_include_pad", 0)
            count += 1
    return count


def fold_batchnorm(graph: Graph) -> int:
    """Conv/Gemm followed by BatchNormalization with constant statistics: scale the weights, shift the bias."""
    count = 0
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        producers = graph.producers()
        producer = producers.get(bn.inputs[0])
        params = bn.inputs[1:5]
        if (producer is None or producer.op not in ("Conv", "Gemm") or producer.attrs.get("activation")
                or producer.attrs.get("residual") or not all(p in graph.constants for p in params)
                or producer.inputs[1] not in graph.constants
                or single_consumer(graph, producer.outputs[0]) is not bn):
            continue
        scale, bias, mean, var = (graph.float_constant(p).astype(np.float64) for p in params)
        factor = scale / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
        weight = graph.float_constant(producer.inputs[1]).astype(np.float64)
        if producer.op == "Conv":
            weight = weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))
        elif producer.attrs.get("transB", 0):
            weight = weight * factor[:, None]
        else:
            weight = weight * factor[None, :]
        old_bias = producer.inputs[2] if len(producer.inputs) > 2 and producer.inputs[2] else None
        b = graph.float_constant(old_bias).astype(np.float64) if old_bias else np.zeros_like(factor)
        if b.size not in (1, factor.size):
            continue
        b = b.reshape(-1)
        if producer.op == "Gemm":  # alpha stays on A@B; beta*C moves into the new bias, so beta becomes 1
            b = b * producer.attrs.get("beta", 1.0)
            producer.attrs["beta"] = 1.0
        new_bias = (b - mean) * factor + bias
        w_name = graph.add_constant(graph.fresh_name(f"{producer.name}__bn_weight"), weight.astype(np.float32))
        b_name = graph.add_constant(graph.fresh_name(f"{producer.name}__bn_bias"),
                                    np.broadcast_to(new_bias, factor.shape).astype(np.float32))
        producer.inputs = [producer.inputs[0], w_name, b_name]
        replace(graph, producer, bn)
        count += 1
    return count


def _activation_of(graph: Graph, node: Node) -> tuple[str, list[float]] | None:
    if node.op in ("Relu", "Sigmoid", "HardSwish", "Tanh"):
        return node.op, []
    if node.op in ("LeakyRelu", "HardSigmoid"):
        return node.op, activation_params(node.op, node.attrs)
    if node.op == "Clip":
        inputs = [*node.inputs, "", ""]
        lo = constant_scalar(graph, inputs[1], ACTIVATION_DEFAULTS["Clip"]["min"])
        hi = constant_scalar(graph, inputs[2], ACTIVATION_DEFAULTS["Clip"]["max"])
        if lo is None or hi is None:
            return None
        return "Clip", [lo, hi]
    if node.op == "Gelu":
        approximate = node.attrs.get("approximate", "none")
        return {"none": ("Gelu", []), "tanh": ("GeluTanh", [])}.get(approximate)
    return None


def fuse_activations(graph: Graph) -> int:
    """An activation whose input comes from Conv/ConvTranspose/Gemm/MatMul (sole consumer) joins its epilogue (a Gelu
    node, fuse_gelu's, as Gelu / GeluTanh); x * Sigmoid(x) after such a producer becomes the SiLU epilogue."""
    count = 0
    for node in list(graph.nodes):
        if node not in graph.nodes:
            continue
        producer = graph.producers().get(node.inputs[0]) if node.inputs else None
        if producer is None or producer.op not in FUSABLE_PRODUCERS or "activation" in producer.attrs:
            continue
        if graph.tensors[producer.outputs[0]].dtype != "float32":
            continue
        activation = _activation_of(graph, node)
        if activation is not None and single_consumer(graph, producer.outputs[0]) is node:
            producer.attrs["activation"], producer.attrs["activation_params"] = activation[0], activation[1]
            replace(graph, producer, node)
            count += 1
            continue
        if node.op == "Sigmoid":
            mul = single_consumer(graph, node.outputs[0])
            users = graph.consumers().get(producer.outputs[0], [])
            if (mul is not None and mul.op == "Mul" and sorted(mul.inputs) == sorted([producer.outputs[0],
                                                                                     node.outputs[0]])
                    and len(users) == 2 and node in users and mul in users
                    and producer.outputs[0] not in {t.name for t in graph.outputs}):
                producer.attrs["activation"], producer.attrs["activation_params"] = "SiLU", []
                graph.nodes.remove(node)
                graph.tensors.pop(node.outputs[0], None)
                replace(graph, producer, mul)
                count += 1
    return count


# --- transformer patterns: GELU, nn.Linear's bias --------------------------------------------------------------------


def _halves(m: Match, node: Node, name: str) -> bool:
    """``node`` computes name * 0.5, 0.5 * name or name / 2."""
    if node.op == "Mul":
        return m.scalar_other(node, 0.5) == name
    return node.op == "Div" and len(node.inputs) == 2 and node.inputs[0] == name and m.near(node.inputs[1], 2.0)


def _gelu_product(m: Match, one_plus: Node, x: str) -> tuple[Node, list[Node]] | None:
    """The node that computes x * 0.5 * one_plus (any association and operand order, or x * one_plus / 2), and the
    other nodes of that product."""
    name = one_plus.outputs[0]
    m1 = m.sole(name)
    if m1 is None or m1.op != "Mul":
        return None
    other = other_operand(m1, name)
    if other is None:
        return None
    m2 = m.sole(m1.outputs[0])
    if other == x:  # (x * (1 + f)) * 0.5, or / 2
        return (m2, [m1]) if m2 is not None and _halves(m, m2, m1.outputs[0]) else None
    if m.near(other, 0.5):  # (0.5 * (1 + f)) * x
        return (m2, [m1]) if m2 is not None and m2.op == "Mul" and other_operand(m2, m1.outputs[0]) == x else None
    half = m.producers.get(other)  # (x * 0.5) * (1 + f), or (x / 2) * (1 + f)
    if half is not None and m.sole(other) is m1 and _halves(m, half, x):
        return m1, [half]
    return None


def _one_plus(m: Match, f: Node) -> Node | None:
    """The Add(f, 1) (either order) that is the only consumer of ``f``."""
    add = m.sole(f.outputs[0])
    return add if add is not None and add.op == "Add" and m.scalar_other(add, 1.0) == f.outputs[0] else None


def _erf_gelu(m: Match, erf: Node) -> tuple[str, list[Node]] | None:
    """x/2 (1 + erf(x / sqrt 2)), the argument as Div(x, sqrt 2) or Mul(x, 1/sqrt 2): x and the nodes it spans."""
    scaled = m.producers.get(erf.inputs[0])
    if scaled is None or m.sole(erf.inputs[0]) is not erf or len(scaled.inputs) != 2:
        return None
    if scaled.op == "Div" and m.near(scaled.inputs[1], math.sqrt(2.0)):
        x: str | None = scaled.inputs[0]
    elif scaled.op == "Mul":
        x = m.scalar_other(scaled, GELU_ERF_SCALE)
    else:
        return None
    add = _one_plus(m, erf)
    product = _gelu_product(m, add, x) if x is not None and add is not None else None
    if x is None or add is None or product is None:
        return None
    return x, [scaled, erf, add, *product[1], product[0]]


def _cube_of(m: Match, name: str, user: Node) -> tuple[str, list[Node]] | None:
    """x^3 as Pow(x, 3), Mul(x, Mul(x, x)) or Mul(Mul(x, x), x): x and its nodes."""
    node = m.producers.get(name)
    if node is None or m.sole(name) is not user or len(node.inputs) != 2:
        return None
    if node.op == "Pow":
        return (node.inputs[0], [node]) if m.near(node.inputs[1], 3.0) else None
    if node.op != "Mul":
        return None
    for x, sq_name in (node.inputs, node.inputs[::-1]):
        sq = m.made_by(sq_name, "Mul", node)
        if sq is not None and sq.inputs == [x, x]:
            return x, [sq, node]
    return None


def _tanh_gelu(m: Match, tanh: Node) -> tuple[str, list[Node]] | None:
    """x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): x and the nodes it spans."""
    inner = m.made_by(tanh.inputs[0], "Mul", tanh)
    s = m.scalar_other(inner, GELU_TANH_SCALE) if inner is not None else None
    total = m.made_by(s, "Add", inner) if s is not None and inner is not None else None
    if total is None or inner is None or len(total.inputs) != 2:
        return None
    for x, q_name in (total.inputs, total.inputs[::-1]):
        q = m.made_by(q_name, "Mul", total)
        cube_name = m.scalar_other(q, GELU_TANH_COEFF) if q is not None else None
        cube = _cube_of(m, cube_name, q) if cube_name is not None and q is not None else None
        if cube is None or cube[0] != x or q is None:
            continue
        add = _one_plus(m, tanh)
        product = _gelu_product(m, add, x) if add is not None else None
        if add is None or product is None:
            return None
        return x, [*cube[1], q, total, inner, tanh, add, *product[1], product[0]]
    return None


def fuse_gelu(graph: Graph) -> int:
    """The GELU formulas as exported (torch's nn.GELU, HF's gelu / gelu_new; operands in any order) become one ONNX
    Gelu node: x/2 (1 + erf(x / sqrt 2)) approximate="none", x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    approximate="tanh". fuse_activations then moves it into its producer's epilogue where it can."""
    count = 0
    for node in [n for n in graph.nodes if n.op in ("Erf", "Tanh")]:
        if node not in graph.nodes:
            continue
        m = Match(graph)
        found = _erf_gelu(m, node) if node.op == "Erf" else _tanh_gelu(m, node)
        if found is None:
            continue
        x, nodes = found
        final = nodes[-1]
        info = graph.tensors.get(x)
        if info is None or info.dtype != "float32" or graph.tensors[final.outputs[0]].shape != info.shape:
            continue
        approximate = "none" if node.op == "Erf" else "tanh"
        gelu = Node("Gelu", final.name, [x], [final.outputs[0]], {"approximate": approximate})
        graph.nodes[graph.nodes.index(final)] = gelu
        for gone in nodes[:-1]:
            graph.nodes.remove(gone)
            graph.tensors.pop(gone.outputs[0], None)
        count += 1
    return count


def _last_axis_bias(graph: Graph, name: str, out_shape: tuple[int, ...]) -> np.ndarray | None:
    """The constant ``name`` as a bias b[N] over the last axis of ``out_shape`` (its shape [N], [1, N], ...)."""
    if name not in graph.constants:
        return None
    value = graph.constants[name]
    if (value.dtype != np.float32 or not 1 <= value.ndim <= len(out_shape) or value.shape[-1] != out_shape[-1]
            or any(d != 1 for d in value.shape[:-1])):
        return None
    return value.reshape(-1)


def fuse_matmul_bias(graph: Graph) -> int:
    """MatMul(x, W) then Add(., b) with a constant b[N] broadcast over the last axis (nn.Linear as torch exports it)
    becomes MatMul(x, W, b): the bias of the matrix product's epilogue (ir.py)."""
    count = 0
    for add in [n for n in graph.nodes if n.op == "Add" and len(n.inputs) == 2]:
        producers = graph.producers()
        for i, name in enumerate(add.inputs):
            mm, bias_name = producers.get(name), add.inputs[1 - i]
            if mm is None or mm.op != "MatMul" or len(mm.inputs) != 2 or mm.attrs:
                continue
            out_shape = graph.tensors[name].shape
            bias = _last_axis_bias(graph, bias_name, out_shape)
            matrices = all(len(graph.tensors[v].shape) >= 2 for v in mm.inputs)  # no 1-D operand (its axis goes)
            if (bias is None or not matrices or graph.tensors[name].dtype != "float32"
                    or graph.tensors[add.outputs[0]].shape != out_shape or single_consumer(graph, name) is not add):
                continue
            if graph.constants[bias_name].ndim != 1:
                bias_name = graph.add_constant(graph.fresh_name(f"{mm.name}__bias"), bias)
            mm.inputs.append(bias_name)
            replace(graph, mm, add)
            count += 1
            break
    return count


_RESIDUAL_PRODUCERS = ("Conv", "Gemm", "MatMul")
_RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _before_reshapes(graph: Graph, name: str, user: Node) -> tuple[str, list[Node]]:
    """(the value a chain of reshapes that only ``user`` reads starts from, the chain in order); (name, [])."""
    producers = graph.producers()
    chain: list[Node] = []
    while (node := producers.get(name)) is not None and node.op in _RESHAPES and single_consumer(graph, name) is user:
        chain.insert(0, node)
        name, user = node.inputs[0], node
    return name, chain


def fuse_residual_add(graph: Graph) -> int:
    """Add(out, other) of equal shapes, ``out`` of a Conv, Gemm or MatMul (sole consumer), joins the producer's
    epilogue (after its bias); the producer moves to the Add's place so that `other` is computed before it. Reshapes
    between the product and the Add (ViT's [S*B, D] -> [S, B, D] -> [B, S, D]) stay after it, and the residual is
    reshaped to the product's shape (the same elements in the same order)."""
    count = 0
    for add in [n for n in graph.nodes if n.op == "Add" and len(n.inputs) == 2]:
        producers = graph.producers()
        out_shape = graph.tensors[add.outputs[0]].shape
        for i, name in enumerate(add.inputs):
            value, chain = _before_reshapes(graph, name, add)
            conv, other = producers.get(value), add.inputs[1 - i]
            if (conv is None or conv.op not in _RESIDUAL_PRODUCERS or "activation" in conv.attrs
                    or conv.attrs.get("residual")
                    or graph.tensors[other].shape != out_shape or graph.tensors[name].shape != out_shape
                    or other in (name, value) or graph.tensors[other].dtype != "float32"
                    or single_consumer(graph, value) is not (chain[0] if chain else add)):
                continue
            while len(conv.inputs) < 3:
                conv.inputs.append("")
            if not chain:
                conv.inputs.append(other)
                conv.attrs["residual"] = 1
                replace(graph, conv, add)
                count += 1
                break
            shape = graph.tensors[value].shape
            target = graph.add_constant(graph.fresh_name(f"{add.name}__residual_shape"), np.asarray(shape, np.int64))
            shaped = graph.fresh_name(f"{add.name}__residual")
            graph.tensors[shaped] = TensorInfo(shaped, shape, "float32")
            conv.inputs.append(shaped)
            conv.attrs["residual"] = 1
            for node in (conv, *chain):
                graph.nodes.remove(node)
            graph.tensors.pop(chain[-1].outputs[0], None)
            chain[-1].outputs = [add.outputs[0]]
            at = graph.nodes.index(add)
            graph.nodes[at:at + 1] = [Node("Reshape", f"{add.name}__reshape", [other, target], [shaped]), conv, *chain]
            count += 1
            break
    return count


# (op, input index) slots that hold float parameters: stored as half with data_type fp16_fp32
_PARAMETER_SLOTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1, 2), "PRelu": (1,),
    "BatchNormalization": (1, 2, 3, 4), "LayerNormalization": (1, 2), "InstanceNormalization": (1, 2),
    "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1), "Div": (0, 1), "Concat": tuple(range(64)),
}


def store_half_weights(graph: Graph) -> int:
    """fp16_fp32: float parameters are stored as half (compute stays float32)."""
    if graph.data_type != "fp16_fp32":
        return 0
    slots: dict[str, set[bool]] = {}
    for node in graph.nodes:
        wanted = _PARAMETER_SLOTS.get(node.op, ())
        for index, name in enumerate(node.inputs):
            if name in graph.constants:
                slots.setdefault(name, set()).add(index in wanted)
    count = 0
    for name, uses in slots.items():
        if uses == {True} and graph.constants[name].dtype == np.float32:
            graph.add_constant(name, graph.constants[name].astype(np.float16))
            count += 1
    return count


PASSES: list[tuple[str, Callable[[Graph], int]]] = [
    ("remove_identities", remove_identities),
    ("eliminate_dead_code", eliminate_dead_code),
    ("explicit_attributes", explicit_attributes),
    ("lower_einsum", lower_einsum),
    ("fold_batchnorm", fold_batchnorm),
    ("transposes_as_reshapes", transposes_as_reshapes),
    ("fuse_attention", fuse_attention),
    ("fuse_gelu", fuse_gelu),
    ("fuse_matmul_bias", fuse_matmul_bias),
    ("fuse_residual_add", fuse_residual_add),
    ("fuse_qkv_projections", fuse_qkv_projections),
    ("fuse_activations", fuse_activations),
    ("eliminate_dead_code", eliminate_dead_code),
    ("store_half_weights", store_half_weights),
]


def optimize(graph: Graph) -> dict[str, int]:
    """Run every pass in order; returns rewrites per pass."""
    report: dict[str, int] = {}
    for name, fn in PASSES:
        report[name] = report.get(name, 0) + fn(graph)
    return report
