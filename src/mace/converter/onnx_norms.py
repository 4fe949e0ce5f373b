"""ONNX's GroupNormalization (opset 18 and 21), RMSNormalization (opset 23), LpNormalization and
MeanVarianceNormalization as IR nodes every runtime has.

GroupNormalization of X [N, C, ...] in G groups is an InstanceNormalization of X viewed as [N, G, C / G * ...]
(each group's mean and variance over its channels and positions), viewed back. Opset 18 scales and shifts per group:
its scale and bias are the instance norm's; opset 21 per channel: a Mul and an Add after it (scale and bias as
[C, 1, ...]). RMSNormalization over the axes from ``axis`` on is X / sqrt(mean(X * X) + epsilon) * scale.
Both compute in float32 whatever stash_type asks (it only lets a runtime compute in more). LpNormalization is
X / ||X||_p along ``axis`` (p 1 or 2), a zero norm leaving X as it is (zero), as onnxruntime; MeanVarianceNormalization
(X - mean) / sqrt(variance + 1e-9) over ``axes`` (default 0, 2, 3), ONNX's function body.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mace.model.ir import Node

AddConstant = Callable[[str, np.ndarray], None]


class NormUnsupported(ValueError):
    """What of a normalization node mace does not take (the message), raised before any node is made."""


class _Nodes:
    """The nodes replacing one ONNX node, each value named fresh(node's name + suffix)."""

    def __init__(self, node: Node, add_constant: AddConstant, fresh: Callable[[str], str]) -> None:
        self.node, self.add_constant, self.fresh = node, add_constant, fresh
        self.nodes: list[Node] = []

    def const(self, suffix: str, value: Any, dtype: Any = np.int64) -> str:
        name = self.fresh(f"{self.node.name}__{suffix}")
        self.add_constant(name, np.asarray(value, dtype))
        return name

    def add(self, op: str, inputs: list[str], suffix: str, out: str = "", **attrs: Any) -> str:
        out = out or self.fresh(f"{self.node.name}__{suffix}")
        self.nodes.append(Node(op, f"{self.node.name}__{suffix}", inputs, [out], dict(attrs)))
        return out


def expand_group_norm(node: Node, shapes: Mapping[str, tuple[int, ...]], opset: int, add_constant: AddConstant,
                      fresh: Callable[[str], str]) -> list[Node]:
    """The IR nodes computing ``node`` (an ONNX GroupNormalization of the model's ``opset``), in order."""
    x, scale, bias = node.inputs[:3]
    xs = shapes[x]
    groups = int(node.attrs.get("num_groups", 0))
    if len(xs) < 3:
        raise NormUnsupported(f"input of rank {len(xs)}: GroupNormalization needs [N, C, D1, ...]")
    n, c = xs[0], xs[1]
    if groups < 1 or c % groups:
        raise NormUnsupported(f"num_groups={groups} does not divide the {c} channels")
    per_channel = opset >= 21
    want = c if per_channel else groups
    for name, what in ((scale, "scale"), (bias, "bias")):
        if math.prod(shapes[name]) != want:
            raise NormUnsupported(f"{what} has shape {list(shapes[name])}; opset {opset} wants {want} values "
                                  f"({'one per channel' if per_channel else 'one per group'})")
    eps = float(node.attrs.get("epsilon", 1e-5))
    b = _Nodes(node, add_constant, fresh)
    grouped = b.add("Reshape", [x, b.const("groups_shape", [n, groups, -1])], "grouped")
    if per_channel:
        ones, zeros = b.const("ones", np.ones(groups), np.float32), b.const("zeros", np.zeros(groups), np.float32)
        normed = b.add("InstanceNormalization", [grouped, ones, zeros], "normalized", epsilon=eps)
        back = b.add("Reshape", [normed, b.const("shape", list(xs))], "ungrouped")
        column = b.const("column_shape", [c] + [1] * (len(xs) - 2))
        scaled = b.add("Mul", [back, b.add("Reshape", [scale, column], "scale_column")], "scaled")
        b.add("Add", [scaled, b.add("Reshape", [bias, column], "bias_column")], "shifted", out=node.outputs[0])
    else:
        flat = b.const("flat_shape", [groups])
        g_scale = b.add("Reshape", [scale, flat], "group_scale")
        g_bias = b.add("Reshape", [bias, flat], "group_bias")
        normed = b.add("InstanceNormalization", [grouped, g_scale, g_bias], "normalized", epsilon=eps)
        b.add("Reshape", [normed, b.const("shape", list(xs))], "ungrouped", out=node.outputs[0])
    return b.nodes


def expand_rms_norm(node: Node, shapes: Mapping[str, tuple[int, ...]], add_constant: AddConstant,
                    fresh: Callable[[str], str]) -> list[Node]:
    """The IR nodes computing ``node`` (an ONNX RMSNormalization), in order."""
    x, scale = node.inputs[:2]
    rank = len(shapes[x])
    axis = int(node.attrs.get("axis", -1))
    if not -rank <= axis < rank:
        raise NormUnsupported(f"axis {axis} is outside the input's {rank} dimensions")
    axis %= rank
    eps = float(node.attrs.get("epsilon", 1e-5))
    b = _Nodes(node, add_constant, fresh)
    square = b.add("Mul", [x, x], "square")
    mean = b.add("ReduceMean", [square, b.const("axes", list(range(axis, rank)))], "mean_square", keepdims=1)
    rms = b.add("Sqrt", [b.add("Add", [mean, b.const("epsilon", eps, np.float32)], "plus_epsilon")], "rms")
    normed = b.add("Div", [x, rms], "normalized")
    b.add("Mul", [normed, scale], "scaled", out=node.outputs[0])
    return b.nodes


def expand_lp_norm(node: Node, shapes: Mapping[str, tuple[int, ...]], add_constant: AddConstant,
                   fresh: Callable[[str], str]) -> list[Node]:
    """The IR nodes computing ``node`` (an ONNX LpNormalization), in order."""
    x = node.inputs[0]
    rank, p_norm = len(shapes[x]), int(node.attrs.get("p", 2))
    if p_norm not in (1, 2):
        raise NormUnsupported(f"p={p_norm}: LpNormalization takes p 1 or 2")
    axis = int(node.attrs.get("axis", -1))
    if not -rank <= axis < rank:
        raise NormUnsupported(f"axis {axis} is outside the input's {rank} dimensions")
    b = _Nodes(node, add_constant, fresh)
    norm = b.add("ReduceL2" if p_norm == 2 else "ReduceL1", [x, b.const("axes", [axis % rank])], "norm", keepdims=1)
    zero = b.add("Equal", [norm, b.const("zero", 0.0, np.float32)], "zero_norm")
    safe = b.add("Where", [zero, b.const("one", 1.0, np.float32), norm], "divisor")
    b.add("Div", [x, safe], "normalized", out=node.outputs[0])
    return b.nodes


def expand_mvn(node: Node, shapes: Mapping[str, tuple[int, ...]], add_constant: AddConstant,
               fresh: Callable[[str], str]) -> list[Node]:
    """The IR nodes computing ``node`` (an ONNX MeanVarianceNormalization), in order."""
    x = node.inputs[0]
    rank = len(shapes[x])
    axes = [int(a) for a in node.attrs.get("axes", [0, 2, 3])]
    if any(not -rank <= a < rank for a in axes):
        raise NormUnsupported(f"axes {axes} are outside the input's {rank} dimensions")
    b = _Nodes(node, add_constant, fresh)
    axes_c = b.const("axes", sorted({a % rank for a in axes}))
    mean = b.add("ReduceMean", [x, axes_c], "mean", keepdims=1)
    centered = b.add("Sub", [x, mean], "centered")
    variance = b.add("ReduceMean", [b.add("Mul", [centered, centered], "square"), axes_c], "variance", keepdims=1)
    std = b.add("Sqrt", [b.add("Add", [variance, b.const("epsilon", 1e-9, np.float32)], "plus_epsilon")], "std")
    b.add("Div", [centered, std], "normalized", out=node.outputs[0])
    return b.nodes
