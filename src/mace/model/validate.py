"""Structural checks of a graph read from a .mace file, so that a file with a valid sha256 but a bad description
fails on load with a message naming the node and the field, not deep in a runtime (ZeroDivisionError for group 0,
IndexError for a node without inputs, a negative shape handed to numpy or to an OpenCL buffer).

Pure and without the ops: whether an op is *known* is the runtime's question (it raises UnsupportedOpError when the
engine is created); here: names defined, shapes non-negative integers, attributes of the right type, length and
range, the Conv/pool window arithmetic consistent with the recorded shapes, fused activations in ir.ACTIVATIONS.

>>> from mace.model.ir import Graph, Node, TensorInfo
>>> x, y = TensorInfo("x", (1, 2), "float32"), TensorInfo("y", (1, 2), "float32")
>>> g = Graph("g", [x], [y], [Node("Relu", "r", [], ["y"])], {}, {"x": x, "y": y})
>>> graph_problems(g)[0]
"node 'r' (Relu): inputs: needs at least 1 input, has 0"
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from mace.model import rules
from mace.model.ir import ACTIVATIONS, DATA_TYPES, Graph, Node, TensorInfo

TENSOR_DTYPES = {"float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"}
# ops that legitimately take no input; every other node needs at least one
NO_INPUT_OPS = {"Constant", "RandomNormal", "RandomUniform"}
# op -> inputs that must be present (non-empty names), counted from the first; unknown ops need one
REQUIRED_INPUTS = {
    "Conv": 2, "ConvTranspose": 2, "Gemm": 2, "MatMul": 2, "Add": 2, "Sub": 2, "Mul": 2, "Div": 2, "Pow": 2,
    "Max": 1, "Min": 1, "Sum": 1, "Mean": 1, "PRelu": 2, "Where": 3, "Equal": 2, "Greater": 2, "Less": 2,
    "GreaterOrEqual": 2, "LessOrEqual": 2, "And": 2, "Or": 2, "Xor": 2, "Mod": 2, "Reshape": 2, "Expand": 2,
    "Tile": 2, "Gather": 2, "GatherElements": 2, "GatherND": 2, "ScatterND": 3, "Range": 3, "Slice": 3,
    "BatchNormalization": 5, "InstanceNormalization": 3, "LayerNormalization": 2, "ScaledDotProductAttention": 3,
}
WINDOW_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}
INT_ATTRS = {"group", "axis", "ceil_mode", "count_include_pad", "keepdims", "residual", "transA", "transB",
             "storage_order", "select_last_index", "noop_with_empty_axes", "exclusive", "reverse", "largest",
             "sorted", "p", "blocksize", "exclude_outside", "nan_to_zero"}
FLOAT_ATTRS = {"alpha", "beta", "gamma", "epsilon", "momentum", "bias", "lambd", "cubic_coeff_a",
               "extrapolation_value", "scale"}
# unary ops whose output has the input's shape
SAME_SHAPE_OPS = {"Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Celu", "Selu",
                  "Softplus", "Softsign", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round",
                  "Erf", "Gelu", "Mish", "Identity", "Softmax", "LogSoftmax", "Sin", "Cos", "Tan", "Asin", "Acos",
                  "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Sign", "Not",
                  "ThresholdedRelu", "Shrink", "Dropout", "LRN", "BatchNormalization", "InstanceNormalization",
                  "LayerNormalization"}
AXIS_OPS = {"Concat", "Softmax", "LogSoftmax", "Hardmax", "Flatten", "Gather", "Split", "ArgMax", "ArgMin",
            "CumSum", "LayerNormalization"}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(v) for v in value)


def _shape_problem(info: TensorInfo) -> str | None:
    if not all(_is_int(d) for d in info.shape):
        return f"shape {list(info.shape)} is not a list of integers"
    if any(d < 0 for d in info.shape):
        return f"shape {list(info.shape)} has a negative dimension"
    if info.dtype not in TENSOR_DTYPES:
        return f"dtype {info.dtype!r} is not one of {', '.join(sorted(TENSOR_DTYPES))}"
    return None


def graph_problems(graph: Graph) -> list[str]:
    """Every problem found, each naming the tensor or the node and its field; [] for a sound graph."""
    problems: list[str] = []
    if graph.data_type not in DATA_TYPES:
        problems.append(f"data_type {graph.data_type!r} is not one of {', '.join(DATA_TYPES)}")
    for kind, infos in (("input", graph.inputs), ("output", graph.outputs), ("tensor", list(graph.tensors.values()))):
        for info in infos:
            problem = _shape_problem(info)
            if problem:
                problems.append(f"{kind} {info.name!r}: {problem}")
    for kind, infos in (("input", graph.inputs), ("output", graph.outputs)):
        seen: set[str] = set()
        for info in infos:
            if info.name in seen:
                problems.append(f"{kind} {info.name!r} is listed twice")
            seen.add(info.name)
            entry = graph.tensors.get(info.name)
            if entry is not None and (entry.shape, entry.dtype) != (info.shape, info.dtype):
                problems.append(f"{kind} {info.name!r} is {info.dtype}{list(info.shape)} but its tensors entry "
                                f"says {entry.dtype}{list(entry.shape)}")
    for name in {t.name for t in graph.inputs} & set(graph.constants):
        problems.append(f"input {name!r} is also a constant")
    names: set[str] = set()
    produced = {t.name for t in graph.inputs} | set(graph.constants)
    for node in graph.nodes:
        where = f"node {node.name!r} ({node.op})"
        if not node.op or not node.name:
            problems.append(f"{where}: the op and the name must be non-empty")
        if node.name in names:
            problems.append(f"{where}: the node name is used twice")
        names.add(node.name)
        for out in node.outputs:
            if out and out in produced:
                problems.append(f"{where}: outputs: tensor {out!r} is already defined before this node")
        produced.update(o for o in node.outputs if o)
        problems.extend(f"{where}: {p}" for p in node_problems(node, graph))
    return problems


def _info(graph: Graph, name: str) -> TensorInfo | None:
    if not name:
        return None
    if name in graph.constants:
        value = graph.constants[name]
        return TensorInfo(name, tuple(int(d) for d in value.shape), value.dtype.name)
    return graph.tensors.get(name)


def node_problems(node: Node, graph: Graph) -> list[str]:
    """The problems of one node (without the "node 'x' (Op): " prefix)."""
    problems: list[str] = []
    if not isinstance(node.attrs, dict):
        return [f"attrs: expected a mapping, got {type(node.attrs).__name__}"]
    if not node.outputs or not node.outputs[0]:
        problems.append("outputs: the node produces no tensor")
    residual = 1 if node.attrs.get("residual") else 0
    need = 0 if node.op in NO_INPUT_OPS else REQUIRED_INPUTS.get(node.op, 1)
    if len(node.inputs) < need + residual:
        what = f"{need} input{'s' if need != 1 else ''}" + (" and the residual" if residual else "")
        problems.append(f"inputs: needs at least {what}, has {len(node.inputs)}")
        return problems
    for i in range(need):
        if not node.inputs[i]:
            problems.append(f"inputs[{i}]: a required input is absent (empty name)")
    if residual and not node.inputs[-1]:
        problems.append("inputs: the residual input (the last) is absent (empty name)")
    for key, value in node.attrs.items():
        if key in INT_ATTRS and not _is_int(value):
            problems.append(f"attribute {key} is {value!r}, expected an integer")
        elif key in FLOAT_ATTRS and not _is_number(value):
            problems.append(f"attribute {key} is {value!r}, expected a number")
    if "residual" in node.attrs and node.attrs["residual"] not in (0, 1):
        problems.append(f"attribute residual is {node.attrs['residual']!r}, expected 0 or 1")
    problems += _activation_problems(node)
    if problems:
        return problems
    x = _info(graph, node.inputs[0]) if node.inputs else None
    y = _info(graph, node.outputs[0])
    if residual and y is not None:
        r = _info(graph, node.inputs[-1])
        if r is not None and r.shape != y.shape:
            problems.append(f"inputs: the residual {r.name!r} has shape {list(r.shape)}, the output "
                            f"{list(y.shape)}")
    if node.op in AXIS_OPS and x is not None and "axis" in node.attrs:
        rank = len(x.shape) + (1 if node.op == "Flatten" else 0)
        if not -rank <= int(node.attrs["axis"]) < max(rank, 1):
            problems.append(f"attribute axis is {node.attrs['axis']}, outside [-{rank}, {rank}) for input "
                            f"{x.name!r} of rank {len(x.shape)}")
    if node.op in WINDOW_OPS and x is not None:
        problems += _window_problems(node, graph, x, y)
    elif node.op in SAME_SHAPE_OPS and x is not None and y is not None and x.shape != y.shape:
        problems.append(f"outputs[0]: {y.name!r} has shape {list(y.shape)}, but {node.op} keeps the shape "
                        f"{list(x.shape)} of {x.name!r}")
    elif node.op == "Concat" and y is not None and not problems:
        problems += _concat_problems(node, graph, y)
    return problems


def _concat_problems(node: Node, graph: Graph, y: TensorInfo) -> list[str]:
    parts = [_info(graph, name) for name in node.inputs if name]
    shapes = [p.shape for p in parts if p is not None]
    if len(shapes) != len(parts) or not shapes:
        return []
    rank = len(y.shape)
    axis = int(node.attrs.get("axis", 0))
    axis = axis + rank if axis < 0 else axis
    if any(len(s) != rank for s in shapes) or not 0 <= axis < rank:
        return [f"inputs: the ranks {[len(s) for s in shapes]} do not match the output {y.name!r} {list(y.shape)}"]
    expected = list(shapes[0])
    expected[axis] = sum(s[axis] for s in shapes)
    others_agree = all(s[:axis] + s[axis + 1:] == shapes[0][:axis] + shapes[0][axis + 1:] for s in shapes)
    if not others_agree or list(y.shape) != expected:
        return [f"outputs[0]: {y.name!r} has shape {list(y.shape)}, but concatenating {[list(s) for s in shapes]} "
                f"along axis {axis} does not give it"]
    return []


def _activation_problems(node: Node) -> list[str]:
    if "activation" not in node.attrs:
        return ["attribute activation_params without an activation"] if "activation_params" in node.attrs else []
    name = node.attrs["activation"]
    if not isinstance(name, str) or name not in ACTIVATIONS:
        return [f"attribute activation is {name!r}, not one of {', '.join(ACTIVATIONS)}"]
    params = node.attrs.get("activation_params", [])
    if not isinstance(params, list) or not all(_is_number(p) for p in params):
        return [f"attribute activation_params is {params!r}, expected a list of numbers"]
    if len(params) > len(ACTIVATIONS[name]):
        return [f"attribute activation_params has {len(params)} values, {name} takes at most "
                f"{len(ACTIVATIONS[name])} ({', '.join(ACTIVATIONS[name]) or 'none'})"]
    return []


def _window_problems(node: Node, graph: Graph, x: TensorInfo, y: TensorInfo | None) -> list[str]:
    """Conv / ConvTranspose / pools: kernel_shape, strides, dilations, pads, group; the output size they give."""
    attrs = node.attrs
    n = len(x.shape) - 2
    if n < 1:
        return [f"inputs[0]: {x.name!r} has shape {list(x.shape)}, expected N, C and at least one spatial dim"]
    w = _info(graph, node.inputs[1]) if node.op in ("Conv", "ConvTranspose") else None
    if node.op in ("Conv", "ConvTranspose") and w is not None and len(w.shape) != n + 2:
        return [f"inputs[1]: weight {w.name!r} has shape {list(w.shape)}, expected rank {n + 2}"]
    problems: list[str] = []
    spec: Sequence[tuple[str, int, int]] = (("kernel_shape", n, 1), ("strides", n, 1), ("dilations", n, 1),
                                            ("pads", 2 * n, 0), ("output_padding", n, 0))
    for key, length, low in spec:
        if key not in attrs:
            continue
        value = attrs[key]
        if not _int_list(value) or (value and len(value) != length) or any(v < low for v in value):
            kind = "positive" if low else "non-negative"
            problems.append(f"attribute {key} is {value!r}, expected {length} {kind} integers for a "
                            f"{n}-d input")
    if "kernel_shape" not in attrs and w is None:
        problems.append("attribute kernel_shape is missing")
    elif w is not None and not problems and attrs.get("kernel_shape") and list(attrs["kernel_shape"]) != list(
            w.shape[2:]):
        problems.append(f"attribute kernel_shape is {attrs['kernel_shape']}, but weight {w.name!r} has spatial "
                        f"dims {list(w.shape[2:])}")
    mode = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if mode not in rules.AUTO_PADS:
        problems.append(f"attribute auto_pad is {mode!r}, not one of {', '.join(rules.AUTO_PADS)}")
    if w is not None:
        group = attrs.get("group", 1)
        if not _is_int(group) or group < 1:
            return [*problems, f"attribute group is {group!r}, expected a positive integer"]
        channels = x.shape[1]
        per_group = w.shape[1] if node.op == "Conv" else w.shape[0] // group
        if channels % group:
            problems.append(f"attribute group is {group}, which does not divide the {channels} input channels")
        elif node.op == "Conv" and (w.shape[1] * group != channels or w.shape[0] % group):
            problems.append(f"inputs[1]: weight {w.name!r} has shape {list(w.shape)}: with group {group} it "
                            f"needs {channels // group} input channels per group and output channels divisible "
                            f"by {group}")
        elif node.op == "ConvTranspose" and w.shape[0] != channels:
            problems.append(f"inputs[1]: weight {w.name!r} has shape {list(w.shape)}, expected {channels} input "
                            f"channels (per group {per_group})")
        if len(node.inputs) > 2 + (1 if attrs.get("residual") else 0) and node.inputs[2]:
            b = _info(graph, node.inputs[2])
            out_channels = w.shape[0] if node.op == "Conv" else w.shape[1] * group
            if b is not None and b.shape != (out_channels,):
                problems.append(f"inputs[2]: bias {b.name!r} has shape {list(b.shape)}, expected "
                                f"[{out_channels}]")
    if problems or y is None:
        return problems
    channels_out = x.shape[1] if w is None else w.shape[0] if node.op == "Conv" else w.shape[1] * attrs.get("group", 1)
    if len(y.shape) != n + 2 or y.shape[:2] != (x.shape[0], channels_out):
        return [f"outputs[0]: {y.name!r} has shape {list(y.shape)}, expected batch {x.shape[0]} and "
                f"{channels_out} channels with {n} spatial dims"]
    if mode != "NOTSET" or node.op == "ConvTranspose":
        return problems
    kernel = list(attrs["kernel_shape"]) if attrs.get("kernel_shape") else list(w.shape[2:]) if w else []
    strides = list(attrs.get("strides") or [1] * n)
    dilations = list(attrs.get("dilations") or [1] * n)
    pads = list(attrs.get("pads") or [0] * (2 * n))
    ceil_mode = bool(attrs.get("ceil_mode", 0)) and node.op != "Conv"
    sizes = [rules.pool_output_size(s, k, st, d, b, e, ceil_mode)
             for s, k, st, d, b, e in zip(x.shape[2:], kernel, strides, dilations, pads[:n], pads[n:])]
    if any(s < 1 for s in sizes):
        return [f"the window (kernel_shape {kernel}, dilations {dilations}, pads {pads}) is larger than the "
                f"padded input {list(x.shape)}"]
    if list(y.shape[2:]) != sizes or len(y.shape) != n + 2:
        problems.append(f"outputs[0]: {y.name!r} has shape {list(y.shape)}, but kernel_shape {kernel}, strides "
                        f"{strides}, dilations {dilations} and pads {pads} give spatial size {sizes}")
    return problems
