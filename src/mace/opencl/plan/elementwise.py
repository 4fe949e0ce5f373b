"""Elementwise ops on elementwise.cl: unary and binary math, Clip, Where, and the variadic Sum/Mean/Max/Min.

Each node is one expression over up to 4 tensor operands read with numpy broadcasting; size-1 float constants are
folded into the expression as literals instead of being read. ``elementwise`` is also the lowering that Cast
(shape.py) and BatchNormalization (norm.py) reduce to.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mace.errors import DeviceError
from mace.model.ir import Node
from mace.model.rules import GELU_TANH_COEFF, GELU_TANH_SCALE, activation_attr
from mace.opencl.plan.planner import Planner, lowers, optional
from mace.opencl.plan.templates import FLOAT_TAGS, broadcast_strides, c_float, collapse, contiguous_strides, prod


def _f(attrs: dict[str, Any], op: str, key: str) -> str:
    """Float attribute ``key`` of activation ``op`` (its ONNX default when absent) as a C literal."""
    return c_float(activation_attr(op, attrs, key))


_SOFTPLUS = "(AT_LEAST($0, 0.0f) + log1p(exp(-fabs($0))))"

# Unary ops in float: expressions over $0, given the node's attributes. A NaN operand gives NaN, as onnxruntime: no
# fmax/fmin (they return the other operand), MAXNAN/MINNAN/AT_LEAST/AT_MOST of common.h instead.
UNARY: dict[str, Callable[[dict[str, Any]], str]] = {
    "Relu": lambda a: "ACT_RELU($0)",
    "LeakyRelu": lambda a: f"($0 >= 0.0f ? $0 : $0 * {_f(a, 'LeakyRelu', 'alpha')})",
    "Sigmoid": lambda a: "ACT_SIGMOID($0)",
    "HardSigmoid": lambda a: f"ACT_HARD_SIGMOID($0, {_f(a, 'HardSigmoid', 'alpha')}, {_f(a, 'HardSigmoid', 'beta')})",
    "HardSwish": lambda a: "ACT_HARD_SWISH($0)",
    "Tanh": lambda a: "tanh($0)",
    "Elu": lambda a: f"($0 > 0.0f ? $0 : {_f(a, 'Elu', 'alpha')} * expm1($0))",
    "Selu": lambda a: f"({_f(a, 'Selu', 'gamma')} * ($0 > 0.0f ? $0 : {_f(a, 'Selu', 'alpha')} * expm1($0)))",
    "Celu": lambda a: (
        f"(AT_LEAST($0, 0.0f) + AT_MOST({_f(a, 'Celu', 'alpha')} * expm1($0 / {_f(a, 'Celu', 'alpha')}), 0.0f))"
    ),
    "ThresholdedRelu": lambda a: f"($0 > {_f(a, 'ThresholdedRelu', 'alpha')} ? $0 : 0.0f)",
    "Shrink": lambda a: (
        f"($0 > {_f(a, 'Shrink', 'lambd')} ? $0 - {_f(a, 'Shrink', 'bias')} : "
        f"($0 < -({_f(a, 'Shrink', 'lambd')}) ? $0 + {_f(a, 'Shrink', 'bias')} : 0.0f))"
    ),
    "Softplus": lambda a: _SOFTPLUS,
    "Softsign": lambda a: "($0 / (1.0f + fabs($0)))",
    "Mish": lambda a: f"($0 * tanh{_SOFTPLUS})",
    "Erf": lambda a: "erf($0)",
    "Gelu": lambda a: (
        f"(0.5f * $0 * (1.0f + tanh({c_float(GELU_TANH_SCALE)} * ($0 + {c_float(GELU_TANH_COEFF)} * $0 * $0 * $0))))"
        if a.get("approximate", "none") == "tanh"
        else "(0.5f * $0 * (1.0f + erf($0 * 0.7071067811865476f)))"
    ),
    "Sqrt": lambda a: "sqrt($0)",
    "Exp": lambda a: "exp($0)",
    "Log": lambda a: "log($0)",
    "Abs": lambda a: "fabs($0)",
    "Neg": lambda a: "(-$0)",
    "Reciprocal": lambda a: "(1.0f / $0)",
    "Floor": lambda a: "floor($0)",
    "Ceil": lambda a: "ceil($0)",
    "Round": lambda a: "rint($0)",  # ONNX Round is round-half-to-even, as rint
    "Sign": lambda a: "(isnan($0) ? $0 : sign($0))",  # OpenCL's sign(NaN) is 0
    "Sin": lambda a: "sin($0)",
    "Cos": lambda a: "cos($0)",
    "Tan": lambda a: "tan($0)",
    "Asin": lambda a: "asin($0)",
    "Acos": lambda a: "acos($0)",
    "Atan": lambda a: "atan($0)",
    "Sinh": lambda a: "sinh($0)",
    "Cosh": lambda a: "cosh($0)",
    "Asinh": lambda a: "asinh($0)",
    "Acosh": lambda a: "acosh($0)",
    "Atanh": lambda a: "atanh($0)",
    "Not": lambda a: "($0 == 0)",
    "IsNaN": lambda a: "isnan($0)",
    "IsInf": lambda a: (
        "isinf($0)"
        if a.get("detect_negative", 1) and a.get("detect_positive", 1)
        else ("($0 == INFINITY)" if a.get("detect_positive", 1) else "($0 == -INFINITY)")
    ),
}

# Binary ops: (float expression, integer expression or None when it computes in float anyway).
BINARY: dict[str, tuple[str, str | None]] = {
    "Add": ("($0 + $1)", "($0 + $1)"),
    "Sub": ("($0 - $1)", "($0 - $1)"),
    "Mul": ("($0 * $1)", "($0 * $1)"),
    "Div": ("($0 / $1)", "($0 / $1)"),
    "Pow": ("pow($0, $1)", None),
    "Max": ("MAXNAN($0, $1)", "max($0, $1)"),
    "Min": ("MINNAN($0, $1)", "min($0, $1)"),
    "PRelu": ("($0 >= 0.0f ? $0 : $0 * $1)", None),
    "Equal": ("($0 == $1)", "($0 == $1)"),
    "Less": ("($0 < $1)", "($0 < $1)"),
    "LessOrEqual": ("($0 <= $1)", "($0 <= $1)"),
    "Greater": ("($0 > $1)", "($0 > $1)"),
    "GreaterOrEqual": ("($0 >= $1)", "($0 >= $1)"),
    "And": ("($0 != 0 && $1 != 0)", "($0 != 0 && $1 != 0)"),
    "Or": ("($0 != 0 || $1 != 0)", "($0 != 0 || $1 != 0)"),
    "Xor": ("(($0 != 0) != ($1 != 0))", "(($0 != 0) != ($1 != 0))"),
}

VARIADIC = ("Sum", "Mean", "Max", "Min")


# --- the shared lowering -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operand:
    """An elementwise input: a buffer read through broadcast strides, or a literal folded into the expression."""

    buffer: str | None
    shape: tuple[int, ...]
    tag: str
    literal: str | None = None


def operand(p: Planner, value: str, allow_literal: bool = True) -> Operand:
    tag, shape = p.tag(value), p.shape(value)
    if allow_literal and p.is_const(value) and prod(shape) == 1 and tag in FLOAT_TAGS:
        return Operand(None, shape, tag, c_float(float(p.graph.float_constant(value).reshape(-1)[0])))
    return Operand(p.use(value), shape, tag)


def elementwise(
    p: Planner, node: Node, operands: list[Operand], out: str, expr: str, int_expr: str | None = None, dst: str = ""
) -> None:
    """out = expr($0, $1, ...) with numpy broadcasting; size-1 float constants become literals in the expression."""
    out_shape, out_tag = p.shape(out), p.tag(out)
    integer = int_expr is not None and out_tag not in FLOAT_TAGS and all(o.tag not in FLOAT_TAGS for o in operands)
    if integer:
        expr = int_expr  # type: ignore[assignment]
    if all(o.literal is not None for o in operands):  # keep one input so the kernel has an operand to read
        first = operands[0]
        operands = [Operand(p.use(node.inputs[0]), first.shape, first.tag), *operands[1:]]
    read = [o for o in operands if o.literal is None]
    if len(read) > 4:
        raise DeviceError(f"node {node.name} ({node.op}): more than 4 tensor operands in one elementwise kernel")
    names, count = [], 0
    for o in operands:
        if o.literal is None:
            names.append(f"v{count}")
            count += 1
        else:
            names.append(o.literal)
    body = re.sub(r"\$(\d)", lambda m: names[int(m.group(1))], expr)
    shape, strides = collapse(out_shape, *[broadcast_strides(o.shape, out_shape) for o in read])
    flat = all(s == contiguous_strides(shape) for s in strides)
    defines: dict[str, Any] = {"NUM_IN": len(read)}
    defines.update({f"T{i}": o.tag for i, o in enumerate(read)})
    defines.update({"TY": out_tag, "ACC_T": "long" if integer else "float", "EXPR(v0, v1, v2, v3)": body})
    defines.update({"SIZE": prod(out_shape), "FLAT": int(flat)})
    if not flat:
        defines.update({"RANK": len(shape), "SHAPE": shape})
        defines.update({f"S{i}": s for i, s in enumerate(strides)})
    name = p.kernel("eltwise", defines)
    target = dst or p.define(out)
    p.launch(node, name, [prod(out_shape)], [*(o.buffer for o in read if o.buffer), target])


# --- ops -----------------------------------------------------------------------------------------------------------


@lowers(*UNARY)
def _lower_unary(p: Planner, node: Node) -> None:
    elementwise(p, node, [operand(p, node.inputs[0], allow_literal=False)], node.outputs[0], UNARY[node.op](node.attrs))


@lowers("Clip")
def _lower_clip(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    tag = p.tag(x)
    ops = [operand(p, x, allow_literal=False)]
    for index, key in ((1, "min"), (2, "max")):
        name = optional(node.inputs, index)
        if name:  # a constant (folded into the expression) or a run-time tensor
            ops.append(operand(p, name))
        elif tag in FLOAT_TAGS:
            ops.append(Operand(None, (), tag, _f(node.attrs, "Clip", key)))  # absent: +-FLT_MAX, as ONNX
        else:
            ops.append(Operand(None, (), tag, "LONG_MIN" if index == 1 else "LONG_MAX"))
    elementwise(p, node, ops, y, "ACT_CLIP($0, $1, $2)", "min(max($0, $1), $2)")


@lowers(*BINARY, "Mod")
def _lower_binary(p: Planner, node: Node) -> None:
    if node.op in VARIADIC and len(node.inputs) != 2:
        _lower_variadic(p, node)
        return
    a, b = operand(p, node.inputs[0]), operand(p, node.inputs[1])
    if node.op == "Mod":
        fmod = bool(node.attrs.get("fmod", 0))
        if fmod:
            expr, int_expr = "fmod($0, $1)", "($0 % $1)"
        else:  # the result takes the divisor's sign, as in Python
            expr, int_expr = "MOD_FLOOR($0, $1)", "((($0 % $1) + $1) % $1)"
    elif node.op == "Pow" and b.literal is not None:
        exponent = float(p.graph.float_constant(node.inputs[1]).reshape(-1)[0])
        special = {1.0: "$0", 2.0: "($0 * $0)", 3.0: "($0 * $0 * $0)", 0.5: "sqrt($0)", -1.0: "(1.0f / $0)"}
        expr, int_expr = special.get(exponent, f"pow($0, {b.literal})"), None
    else:
        expr, int_expr = BINARY[node.op]
    elementwise(p, node, [a, b], node.outputs[0], expr, int_expr)


@lowers("Sum", "Mean")
def _lower_variadic(p: Planner, node: Node) -> None:
    inputs = [i for i in node.inputs if i]
    y = node.outputs[0]
    if len(inputs) == 1:
        p.alias(y, inputs[0])
        return

    def fold(terms: list[str], integer: bool) -> str:
        if node.op in ("Sum", "Mean"):
            return "(" + " + ".join(terms) + ")"
        fn = {"Max": ("MAXNAN", "max"), "Min": ("MINNAN", "min")}[node.op][integer]
        out = terms[0]
        for term in terms[1:]:
            out = f"{fn}({out}, {term})"
        return out

    scale = c_float(1.0 / len(inputs)) if node.op == "Mean" else None
    # Chunks of up to 4 tensors per launch; later chunks accumulate into the output buffer in place.
    ops = [operand(p, i) for i in inputs[:4]]
    terms = [f"${i}" for i in range(len(ops))]
    if scale:
        elementwise(p, node, ops, y, f"({fold(terms, False)} * {scale})")
    else:
        elementwise(p, node, ops, y, fold(terms, False), fold(terms, True))
    rest = inputs[4:]
    while rest:
        chunk, rest = rest[:3], rest[3:]
        ops = [Operand(y, p.shape(y), p.tag(y)), *(operand(p, i) for i in chunk)]
        terms = [f"${i}" for i in range(1, len(ops))]
        if scale:
            elementwise(p, node, ops, y, f"($0 + {fold(terms, False)} * {scale})", dst=y)
        else:
            elementwise(p, node, ops, y, fold(["$0", *terms], False), fold(["$0", *terms], True), dst=y)


@lowers("Where")
def _lower_where(p: Planner, node: Node) -> None:
    ops = [operand(p, node.inputs[0], allow_literal=False), operand(p, node.inputs[1]), operand(p, node.inputs[2])]
    elementwise(p, node, ops, node.outputs[0], "($0 != 0 ? $1 : $2)", "($0 != 0 ? $1 : $2)")
