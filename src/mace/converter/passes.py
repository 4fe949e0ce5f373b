"""Graph passes on the IR, run in order by `optimize`. Each pass is a function Graph -> None that edits in place
and returns how many rewrites it made, so `mace info` can show what changed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mace.model.ir import FUSABLE_PRODUCERS, Graph, Node, TensorInfo
from mace.model.rules import SAME, activation_params, auto_pad_mode, same_pads


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


def _single_consumer(graph: Graph, name: str) -> Node | None:
    users = graph.consumers().get(name, [])
    outputs = {t.name for t in graph.outputs}
    return users[0] if len(users) == 1 and name not in outputs else None


def _replace(graph: Graph, producer: Node, consumer: Node) -> None:
    """The producer takes over the consumer's output (and position), the consumer disappears."""
    old = producer.outputs[0]
    producer.outputs = [consumer.outputs[0]]
    graph.nodes.remove(producer)
    graph.nodes[graph.nodes.index(consumer)] = producer
    graph.tensors.pop(old, None)


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
                or _single_consumer(graph, producer.outputs[0]) is not bn):
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
        w_name, b_name = f"{producer.name}__bn_weight", f"{producer.name}__bn_bias"
        graph.constants[w_name] = weight.astype(np.float32)
        graph.constants[b_name] = np.broadcast_to(new_bias, factor.shape).astype(np.float32)
        graph.tensors[w_name] = TensorInfo(w_name, weight.shape, "float32")
        graph.tensors[b_name] = TensorInfo(b_name, factor.shape, "float32")
        producer.inputs = [producer.inputs[0], w_name, b_name]
        _replace(graph, producer, bn)
        count += 1
    return count


def _constant_scalar(graph: Graph, name: str, default: float) -> float | None:
    if not name:
        return default
    if name not in graph.constants or graph.constants[name].size != 1:
        return None
    return float(graph.constants[name].reshape(()))


def _activation_of(graph: Graph, node: Node) -> tuple[str, list[float]] | None:
    if node.op in ("Relu", "Sigmoid", "HardSwish", "Tanh"):
        return node.op, []
    if node.op in ("LeakyRelu", "HardSigmoid"):
        return node.op, activation_params(node.op, node.attrs)
    if node.op == "Clip":
        inputs = [*node.inputs, "", ""]
        lo = _constant_scalar(graph, inputs[1], -np.inf)
        hi = _constant_scalar(graph, inputs[2], np.inf)
        if lo is None or hi is None:
            return None
        return "Clip", [lo, hi]
    return None


def fuse_activations(graph: Graph) -> int:
    """An activation whose input comes from Conv/ConvTranspose/Gemm/MatMul (sole consumer) joins its epilogue;
    x * Sigmoid(x) after such a producer becomes the SiLU epilogue."""
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
        if activation is not None and _single_consumer(graph, producer.outputs[0]) is node:
            producer.attrs["activation"], producer.attrs["activation_params"] = activation[0], activation[1]
            _replace(graph, producer, node)
            count += 1
            continue
        if node.op == "Sigmoid":
            mul = _single_consumer(graph, node.outputs[0])
            users = graph.consumers().get(producer.outputs[0], [])
            if (mul is not None and mul.op == "Mul" and sorted(mul.inputs) == sorted([producer.outputs[0],
                                                                                     node.outputs[0]])
                    and len(users) == 2 and node in users and mul in users
                    and producer.outputs[0] not in {t.name for t in graph.outputs}):
                producer.attrs["activation"], producer.attrs["activation_params"] = "SiLU", []
                graph.nodes.remove(node)
                graph.tensors.pop(node.outputs[0], None)
                _replace(graph, producer, mul)
                count += 1
    return count


def fuse_residual_add(graph: Graph) -> int:
    """Add(conv_out, other) of equal shapes joins the conv's epilogue; the conv moves to the Add's place so that
    `other` is computed before it."""
    count = 0
    for add in [n for n in graph.nodes if n.op == "Add"]:
        producers = graph.producers()
        out_shape = graph.tensors[add.outputs[0]].shape
        for i, name in enumerate(add.inputs):
            conv = producers.get(name)
            other = add.inputs[1 - i]
            if (conv is None or conv.op != "Conv" or "activation" in conv.attrs or conv.attrs.get("residual")
                    or graph.tensors[other].shape != out_shape or graph.tensors[name].shape != out_shape
                    or other == name or graph.tensors[other].dtype != "float32"
                    or _single_consumer(graph, name) is not add):
                continue
            while len(conv.inputs) < 3:
                conv.inputs.append("")
            conv.inputs.append(other)
            conv.attrs["residual"] = 1
            _replace(graph, conv, add)
            count += 1
            break
    return count


# (op, input index) slots that hold float parameters: stored as half with data_type fp16_fp32
_PARAMETER_SLOTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1), "PRelu": (1,),
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
            graph.constants[name] = graph.constants[name].astype(np.float16)
            graph.tensors[name] = TensorInfo(name, graph.tensors[name].shape, "float16")
            count += 1
    return count


PASSES: list[tuple[str, Callable[[Graph], int]]] = [
    ("remove_identities", remove_identities),
    ("eliminate_dead_code", eliminate_dead_code),
    ("explicit_attributes", explicit_attributes),
    ("fold_batchnorm", fold_batchnorm),
    ("fuse_residual_add", fuse_residual_add),
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
