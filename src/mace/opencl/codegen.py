"""Lowers a mace IR graph to ONE OpenCL program for the whole model plus a launch plan.

Every node becomes one or more launches of a kernel template from ``kernels/*.cl``, specialized with compile-time
constants (shapes, strides, storage types, fused activation and residual): each distinct specialization is emitted
once as ``#define KERNEL_NAME conv_3`` + its constants, the template text, then ``#undef``s. The source depends only on
the graph, never on the device, so it can be compiled ahead of time and cached.

    >>> plan = plan_graph(graph)                     # doctest: +SKIP
    >>> program = cl.Program(ctx, plan.source).build(options=plan.build_options)  # doctest: +SKIP

Ops that move no data (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout, same-type Cast) become aliases: the
output shares its input's buffer. Weights that a kernel wants in another layout (conv weights blocked by output
channel, folded BatchNorm, resize tap tables) are prepared here on the host and listed in ``constants``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import DeviceError
from ..ir import Graph, Node

KERNEL_DIR = Path(__file__).with_name("kernels")

# Deterministic, and valid for every OpenCL 1.2+ device: the cached binary is keyed on these.
BUILD_OPTIONS = "-cl-std=CL1.2 -cl-mad-enable"

Arg = str | np.int32 | np.float32  # a buffer name (key of ProgramPlan.buffers) or a scalar


@dataclass(frozen=True)
class Launch:
    """One kernel enqueue. ``local_size`` None lets the driver choose (the tuner may set it later)."""

    kernel: str
    node: str
    op: str
    global_size: tuple[int, ...]
    args: tuple[Arg, ...]
    local_size: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Buffer:
    """A device buffer: a graph value (input, weight, intermediate, output) or a host-prepared constant."""

    name: str
    dtype: np.dtype  # storage dtype on the device
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass
class ProgramPlan:
    source: str
    build_options: str
    launches: list[Launch]
    buffers: dict[str, Buffer]  # every buffer the launches and the graph's inputs/outputs touch
    constants: dict[str, np.ndarray]  # buffer name -> data to upload once, in storage dtype and kernel layout
    aliases: dict[str, str]  # value -> buffer it shares with the value it was computed from

    def buffer_of(self, value: str) -> str:
        return self.aliases.get(value, value)


# --- storage types -------------------------------------------------------------------------------------------------

_TAG_OF_DTYPE = {
    "float32": "F32",
    "float64": "F32",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}
TAG_DTYPES = {
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
FLOAT_TAGS = ("F32", "F16")


def storage_tag(dtype: str, data_type: str) -> str:
    """The storage tag (common.h) of a tensor: float tensors are half on the device under fp16_fp32."""
    tag = _TAG_OF_DTYPE.get(dtype)
    if tag is None:
        raise DeviceError(f"OpenCL runtime cannot store tensors of dtype {dtype}")
    return "F16" if tag == "F32" and data_type == "fp16_fp32" else tag


# --- C literals and shape helpers ------------------------------------------------------------------------------------


def c_float(value: float) -> str:
    """A float literal that denotes exactly the float32 nearest to ``value``."""
    with np.errstate(over="ignore"):
        v = float(np.float32(value))
    if math.isnan(v):
        return "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "(-INFINITY)"
    text = f"{v!r}f"
    return f"({text})" if v < 0 else text


def _c_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return c_float(float(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(_c_value(v) for v in value)
    return str(value)


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides, acc = [], 1
    for dim in reversed(shape):
        strides.append(acc)
        acc *= int(dim)
    return strides[::-1]


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """Element strides of a tensor of ``shape`` read at the indices of ``out_shape`` (numpy broadcasting)."""
    pad = len(out_shape) - len(shape)
    if pad < 0:
        raise DeviceError(f"cannot broadcast shape {tuple(shape)} to {tuple(out_shape)}")
    own = contiguous_strides(shape)
    strides = [0] * pad
    for d, (dim, stride) in enumerate(zip(shape, own)):
        if dim != out_shape[pad + d] and dim != 1:
            raise DeviceError(f"cannot broadcast shape {tuple(shape)} to {tuple(out_shape)}")
        strides.append(0 if dim == 1 else stride)
    return strides


def collapse(shape: Sequence[int], *strides: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """Drops size-1 dims and merges adjacent dims that every stride list walks contiguously; keeps rank >= 1."""
    dims = [(int(n), [int(s[d]) for s in strides]) for d, n in enumerate(shape) if n != 1]
    merged: list[tuple[int, list[int]]] = []
    for n, ss in dims:
        if merged:
            pn, ps = merged[-1]
            if all(p == s * n for p, s in zip(ps, ss)):
                merged[-1] = (pn * n, ss)
                continue
        merged.append((n, ss))
    if not merged:
        merged = [(1, [0] * len(strides))]
    return [n for n, _ in merged], [[ss[i] for _, ss in merged] for i in range(len(strides))]


def _prod(values: Sequence[int]) -> int:
    return int(np.prod(values, dtype=np.int64))


@cache
def _template(filename: str) -> str:
    return (KERNEL_DIR / filename).read_text()


# family -> (template file, selector macro for files holding several kernels)
FAMILIES: dict[str, tuple[str, str | None]] = {
    "eltwise": ("elementwise.cl", None),
    "conv": ("conv.cl", None),
    "depthwise": ("depthwise.cl", None),
    "gemm": ("gemm.cl", None),
    "deconv": ("conv_transpose.cl", None),
    "pool": ("pooling.cl", None),
    "reduce": ("reduce.cl", "REDUCE"),
    "argreduce": ("reduce.cl", "ARG_REDUCE"),
    "softmax": ("softmax.cl", None),
    "rownorm": ("norm.cl", "ROW_NORM"),
    "lrn": ("norm.cl", "LRN"),
    "resize": ("resize.cl", None),
    "copy": ("indexing.cl", "STRIDED_COPY"),
    "gather": ("indexing.cl", "GATHER"),
    "pad": ("indexing.cl", "PAD"),
    "gather_elements": ("indexing.cl", "GATHER_ELEMENTS"),
}


# --- activations and elementwise expressions -------------------------------------------------------------------------


def activation_macro(attrs: dict[str, Any]) -> str:
    """The ACTIVATE(v) body for a node's fused activation (ir.ACTIVATIONS)."""
    name = attrs.get("activation")
    p = [float(v) for v in attrs.get("activation_params", [])]
    if name is None:
        return "ACT_NONE(v)"
    simple = {"Relu": "RELU", "Sigmoid": "SIGMOID", "HardSwish": "HARD_SWISH", "Tanh": "TANH", "SiLU": "SILU"}
    if name in simple:
        return f"ACT_{simple[name]}(v)"
    if name == "Clip":
        lo = p[0] if p else -math.inf
        hi = p[1] if len(p) > 1 else math.inf
        return f"ACT_CLIP(v, {c_float(lo)}, {c_float(hi)})"
    if name == "LeakyRelu":
        return f"ACT_LEAKY_RELU(v, {c_float(p[0] if p else 0.01)})"
    if name == "HardSigmoid":
        alpha = p[0] if p else 0.2
        beta = p[1] if len(p) > 1 else 0.5
        return f"ACT_HARD_SIGMOID(v, {c_float(alpha)}, {c_float(beta)})"
    raise DeviceError(f"OpenCL runtime has no fused activation {name!r}")


def _f(attrs: dict[str, Any], key: str, default: float) -> str:
    return c_float(float(attrs.get(key, default)))


_SOFTPLUS = "(fmax($0, 0.0f) + log1p(exp(-fabs($0))))"

# Unary ops in float: expressions over $0, given the node's attributes.
UNARY: dict[str, Callable[[dict[str, Any]], str]] = {
    "Relu": lambda a: "fmax($0, 0.0f)",
    "LeakyRelu": lambda a: f"($0 >= 0.0f ? $0 : $0 * {_f(a, 'alpha', 0.01)})",
    "Sigmoid": lambda a: "ACT_SIGMOID($0)",
    "HardSigmoid": lambda a: f"ACT_HARD_SIGMOID($0, {_f(a, 'alpha', 0.2)}, {_f(a, 'beta', 0.5)})",
    "HardSwish": lambda a: "ACT_HARD_SWISH($0)",
    "Tanh": lambda a: "tanh($0)",
    "Elu": lambda a: f"($0 > 0.0f ? $0 : {_f(a, 'alpha', 1.0)} * expm1($0))",
    "Selu": lambda a: (
        f"({_f(a, 'gamma', 1.05070102214813232421875)} * "
        f"($0 > 0.0f ? $0 : {_f(a, 'alpha', 1.67326319217681884765625)} * expm1($0)))"
    ),
    "Celu": lambda a: f"(fmax($0, 0.0f) + fmin(0.0f, {_f(a, 'alpha', 1.0)} * expm1($0 / {_f(a, 'alpha', 1.0)})))",
    "ThresholdedRelu": lambda a: f"($0 > {_f(a, 'alpha', 1.0)} ? $0 : 0.0f)",
    "Softplus": lambda a: _SOFTPLUS,
    "Softsign": lambda a: "($0 / (1.0f + fabs($0)))",
    "Mish": lambda a: f"($0 * tanh{_SOFTPLUS})",
    "Erf": lambda a: "erf($0)",
    "Gelu": lambda a: (
        "(0.5f * $0 * (1.0f + tanh(0.7978845608028654f * ($0 + 0.044715f * $0 * $0 * $0))))"
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
    "Sign": lambda a: "sign($0)",
    "Sin": lambda a: "sin($0)",
    "Cos": lambda a: "cos($0)",
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
    "Max": ("fmax($0, $1)", "max($0, $1)"),
    "Min": ("fmin($0, $1)", "min($0, $1)"),
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

REDUCE: dict[str, tuple[str, str, str]] = {  # op -> INIT, ACC(a, v), FINAL(a) (the mean divides by RED_SIZE)
    "ReduceSum": ("0.0f", "((a) + (v))", "(a)"),
    "ReduceMean": ("0.0f", "((a) + (v))", "((a) * (1.0f / RED_SIZE))"),
    "ReduceMax": ("(-INFINITY)", "fmax((a), (v))", "(a)"),
    "ReduceMin": ("INFINITY", "fmin((a), (v))", "(a)"),
    "ReduceProd": ("1.0f", "((a) * (v))", "(a)"),
    "ReduceSumSquare": ("0.0f", "mad((v), (v), (a))", "(a)"),
    "ReduceL1": ("0.0f", "((a) + fabs(v))", "(a)"),
    "ReduceL2": ("0.0f", "mad((v), (v), (a))", "sqrt(a)"),
    "ReduceLogSum": ("0.0f", "((a) + (v))", "log(a)"),
    "ReduceLogSumExp": ("0.0f", "((a) + exp(v))", "log(a)"),
}

ALIAS_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")


@dataclass(frozen=True)
class _Operand:
    """An elementwise input: a buffer read through broadcast strides, or a literal folded into the expression."""

    buffer: str | None
    shape: tuple[int, ...]
    tag: str
    literal: str | None = None


@dataclass(frozen=True)
class GemmShape:
    """How gemm.cl addresses its operands: element strides of A over (m, k), B over (k, n), the bias over (m, n), and
    of each operand over the batch dims."""

    m: int
    n: int
    k: int
    a_strides: tuple[int, int]
    b_strides: tuple[int, int]
    c_strides: tuple[int, int] = (0, 0)
    batch: tuple[int, ...] = ()
    a_batch: tuple[int, ...] = ()
    b_batch: tuple[int, ...] = ()
    c_batch: tuple[int, ...] = ()
    alpha: float = 1.0
    beta: float = 1.0


# --- work per work item ---------------------------------------------------------------------------------------------
# One place for the blocking choices, so a tuner can replace them. They must depend on the graph only (never on the
# device): the program source, and so the cached binary, follow from them. Big blocks let CPU drivers (pocl) use SIMD
# and reuse loads; GPUs want many work items. So each op takes the biggest block that still leaves MIN_WORK_ITEMS work
# items: big layers get big blocks (good everywhere), small layers (7x7 maps at batch 1) small ones, which keeps a GPU
# busy. On an H200 this is within 5% of the best fixed blocking per model, where the biggest blocks everywhere are up
# to 1.9x slower; pocl on 16 cores is indifferent, but pocl on 2 cores runs 2x faster with the biggest blocks
# everywhere (MIN_WORK_ITEMS = 0): a per-device value is the tuner's to pick.
MIN_WORK_ITEMS = 8192

_Block = TypeVar("_Block")


def _biggest(candidates: Sequence[_Block], work_items: Callable[[_Block], int]) -> _Block:
    return next((c for c in candidates if work_items(c) >= MIN_WORK_ITEMS), candidates[-1])


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def gemm_tiling(g: GemmShape, floats: bool) -> tuple[int, int, int, int]:
    """(TM, TN, VEC_N, VEC_K) for gemm.cl: vectors along whichever of n or k is contiguous in memory."""
    batch = _prod(g.batch)

    def items(tile: tuple[int, int, int, int]) -> int:
        return _ceil_div(g.m, tile[0]) * _ceil_div(g.n, tile[1]) * batch

    if floats and g.b_strides[1] == 1 and g.n >= 4:
        tiles = [(4, 8, 8, 1), (4, 4, 4, 1), (2, 4, 4, 1), (1, 4, 4, 1)] if g.n >= 8 else [(4, 4, 4, 1), (1, 4, 4, 1)]
        tm, tn, vec_n, vec_k = _biggest(tiles, items)
        return min(tm, g.m), tn, vec_n, vec_k
    if floats and g.a_strides[1] == 1 and g.b_strides[0] == 1 and g.k >= 8:
        return min(4, g.m), min(4, g.n), 1, 8
    return min(4, g.m), min(4, g.n), 1, 1


def conv_tiling(n: int, oc_per_group: int, groups: int, out_spatial: Sequence[int]) -> tuple[int, int]:
    """(OCB, PB) for conv.cl: output channels per work item (a vector width dividing the group) and columns."""
    ow, rows = out_spatial[-1], _prod(out_spatial[:-1])
    blocks = [(b, min(p, ow)) for b, p in ((8, 4), (4, 4), (4, 2), (2, 2), (1, 1)) if oc_per_group % b == 0]
    return _biggest(blocks, lambda c: n * groups * (oc_per_group // c[0]) * rows * _ceil_div(ow, c[1]))


def depthwise_tiling(n: int, oc: int, oh: int, ow: int) -> int:
    """PB for depthwise.cl: output columns per work item, a vector width."""
    widths = [v for v in (8, 4, 2, 1) if v <= ow]
    return _biggest(widths, lambda v: n * oc * oh * _ceil_div(ow, v))


# --- the planner ----------------------------------------------------------------------------------------------------

Lowering = Callable[["_Planner", Node], None]
_LOWERINGS: dict[str, Lowering] = {}


def _lowers(*ops: str) -> Callable[[Lowering], Lowering]:
    def register(fn: Lowering) -> Lowering:
        for op in ops:
            _LOWERINGS[op] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    return sorted(_LOWERINGS)


class _Planner:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.specializations: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self.family_counts: dict[str, int] = {}
        self.chunks: list[str] = []
        self.launches: list[Launch] = []
        self.buffers: dict[str, Buffer] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.aliases: dict[str, str] = {}
        self.consumers = graph.consumers()
        self.graph_outputs = {t.name for t in graph.outputs}

    # values and buffers

    def shape(self, value: str) -> tuple[int, ...]:
        if value in self.graph.tensors:
            return tuple(self.graph.tensors[value].shape)
        if value in self.graph.constants:
            return tuple(self.graph.constants[value].shape)
        raise DeviceError(f"tensor {value!r} has no TensorInfo")

    def tag(self, value: str) -> str:
        if value in self.graph.tensors:
            dtype = self.graph.tensors[value].dtype
        elif value in self.graph.constants:
            dtype = str(self.graph.constants[value].dtype)
        else:
            raise DeviceError(f"tensor {value!r} has no TensorInfo")
        return storage_tag(dtype, self.graph.data_type)

    def is_const(self, value: str) -> bool:
        return value in self.graph.constants

    def const(self, value: str, what: str, node: Node) -> np.ndarray:
        """A constant input read at plan time (Clip bounds, Slice starts, Resize scales, ...)."""
        if value not in self.graph.constants:
            raise DeviceError(f"OpenCL runtime needs {what} of node {node.name} ({node.op}) to be a constant")
        return self.graph.float_constant(value)

    def is_used(self, value: str) -> bool:
        return bool(value) and (value in self.consumers or value in self.graph_outputs)

    def use(self, value: str) -> str:
        """The buffer to read ``value`` from, uploading it first if it is a weight."""
        root = self.aliases.get(value, value)
        if root not in self.buffers:
            if root not in self.graph.constants:
                raise DeviceError(f"tensor {value!r} is read before it is computed")
            tag = self.tag(root)
            data = np.ascontiguousarray(self.graph.constants[root].astype(TAG_DTYPES[tag], copy=False))
            self.constants[root] = data
            self.buffers[root] = Buffer(root, TAG_DTYPES[tag], tuple(data.shape))
        return root

    def define(self, value: str) -> str:
        """The buffer a node writes ``value`` into."""
        tag = self.tag(value)
        self.buffers[value] = Buffer(value, TAG_DTYPES[tag], self.shape(value))
        return value

    def derived(self, name: str, data: np.ndarray, tag: str) -> str:
        """A host-prepared constant (weights in kernel layout, folded parameters, tap tables)."""
        if name not in self.buffers:
            data = np.ascontiguousarray(data.astype(TAG_DTYPES[tag], copy=False))
            self.constants[name] = data
            self.buffers[name] = Buffer(name, TAG_DTYPES[tag], tuple(data.shape))
        return name

    def scratch(self, name: str, shape: Sequence[int], tag: str) -> str:
        """A device buffer that no graph value names (an output the graph does not use, written anyway)."""
        self.buffers[name] = Buffer(name, TAG_DTYPES[tag], tuple(shape))
        return name

    def alias(self, out: str, src: str) -> None:
        self.aliases[out] = self.use(src)

    # kernels and launches

    def kernel(self, family: str, defines: dict[str, Any]) -> str:
        filename, selector = FAMILIES[family]
        if selector:
            defines = {selector: 1, **defines}
        items = tuple((k, _c_value(v)) for k, v in defines.items())
        key = (family, items)
        if key in self.specializations:
            return self.specializations[key]
        index = self.family_counts.get(family, 0)
        self.family_counts[family] = index + 1
        name = f"{family}_{index}"
        lines = [f"// ---- {name} ----", f"#define KERNEL_NAME {name}"]
        lines += [f"#define {k} {v}" for k, v in items]
        lines.append(_template(filename))
        lines += ["#undef KERNEL_NAME"] + [f"#undef {k.split('(')[0]}" for k, _ in items]
        self.chunks.append("\n".join(lines))
        self.specializations[key] = name
        return name

    def launch(self, node: Node, kernel: str, global_size: Sequence[int], args: Sequence[Arg]) -> None:
        if all(int(g) > 0 for g in global_size):
            self.launches.append(Launch(kernel, node.name, node.op, tuple(int(g) for g in global_size), tuple(args)))

    # shared lowerings

    def operand(self, value: str, allow_literal: bool = True) -> _Operand:
        tag, shape = self.tag(value), self.shape(value)
        if allow_literal and self.is_const(value) and _prod(shape) == 1 and tag in FLOAT_TAGS:
            return _Operand(None, shape, tag, c_float(float(self.graph.float_constant(value).reshape(-1)[0])))
        return _Operand(self.use(value), shape, tag)

    def elementwise(
        self, node: Node, operands: list[_Operand], out: str, expr: str, int_expr: str | None = None, dst: str = ""
    ) -> None:
        """out = expr($0, $1, ...) with numpy broadcasting; size-1 float constants become literals in the expression."""
        out_shape, out_tag = self.shape(out), self.tag(out)
        integer = int_expr is not None and out_tag not in FLOAT_TAGS and all(o.tag not in FLOAT_TAGS for o in operands)
        if integer:
            expr = int_expr  # type: ignore[assignment]
        if all(o.literal is not None for o in operands):  # keep one input so the kernel has an operand to read
            first = operands[0]
            operands = [_Operand(self.use(node.inputs[0]), first.shape, first.tag), *operands[1:]]
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
        defines.update({"SIZE": _prod(out_shape), "FLAT": int(flat)})
        if not flat:
            defines.update({"RANK": len(shape), "SHAPE": shape})
            defines.update({f"S{i}": s for i, s in enumerate(strides)})
        name = self.kernel("eltwise", defines)
        target = dst or self.define(out)
        self.launch(node, name, [_prod(out_shape)], [*(o.buffer for o in read if o.buffer), target])

    def strided_copy(
        self,
        node: Node,
        src: str,
        dst: str,
        tag: str,
        shape: Sequence[int],
        src_strides: Sequence[int],
        dst_strides: Sequence[int],
        src_base: int = 0,
        dst_base: int = 0,
    ) -> None:
        view, (ss, ds) = collapse(shape, src_strides, dst_strides)
        size = _prod(shape)
        defines = {"T": tag, "SIZE": size, "RANK": len(view), "SHAPE": view}
        defines.update({"SRC_BASE": src_base, "SRC_STRIDES": ss, "DST_BASE": dst_base, "DST_STRIDES": ds})
        self.launch(node, self.kernel("copy", defines), [size], [src, dst])

    def copy_view(self, node: Node, shape: Sequence[int], src_strides: Sequence[int], src_base: int = 0) -> None:
        """Writes node.outputs[0] (contiguous, viewed as ``shape``) from node.inputs[0] read through strides."""
        x, y = node.inputs[0], node.outputs[0]
        src = self.use(x)
        self.strided_copy(
            node, src, self.define(y), self.tag(y), shape, src_strides, contiguous_strides(shape), src_base
        )

    def reduce(self, node: Node, x: str, y: str, axes: Sequence[int], op: str) -> None:
        shape = self.shape(x)
        strides = contiguous_strides(shape)
        keep = [d for d in range(len(shape)) if d not in axes]
        keep_shape, (keep_strides,) = collapse([shape[d] for d in keep], [strides[d] for d in keep])
        red_shape, (red_strides,) = collapse([shape[d] for d in axes], [strides[d] for d in axes])
        out_size = _prod([shape[d] for d in keep])
        init, acc, final = REDUCE[op]
        defines: dict[str, Any] = {"X_T": self.tag(x), "Y_T": self.tag(y), "OUT_SIZE": out_size}
        if out_size > 1:
            defines.update({"KEEP_RANK": len(keep_shape), "KEEP_SHAPE": keep_shape, "KEEP_STRIDES": keep_strides})
        else:
            defines["KEEP_RANK"] = 0
        defines.update({"RED_RANK": len(red_shape), "RED_SHAPE": red_shape, "RED_STRIDES": red_strides})
        defines.update({"RED_SIZE": _prod([shape[d] for d in axes]), "INIT": init, "ACC(a, v)": acc})
        defines["FINAL(a)"] = final
        src = self.use(x)
        self.launch(node, self.kernel("reduce", defines), [out_size], [src, self.define(y)])

    def gemm(self, node: Node, a: str, b: str, bias: str | None, residual: str | None, out: str, g: GemmShape) -> None:
        """out[b][m][n] = act(alpha * A.B + beta * bias + residual), the operands addressed as ``g`` says."""
        bshape, (a_bs, b_bs, c_bs) = collapse(g.batch, g.a_batch, g.b_batch, g.c_batch)
        nbatch = _prod(bshape)
        tm, tn, vec_n, vec_k = gemm_tiling(g, self.tag(a) in FLOAT_TAGS and self.tag(b) in FLOAT_TAGS)
        defines: dict[str, Any] = {"A_T": self.tag(a), "B_T": self.tag(b), "Y_T": self.tag(out)}
        defines.update({"M": g.m, "N": g.n, "K": g.k, "TM": tm, "TN": tn, "VEC_N": vec_n, "VEC_K": vec_k})
        defines.update({"AS_M": g.a_strides[0], "AS_K": g.a_strides[1], "BS_K": g.b_strides[0]})
        defines.update({"BS_N": g.b_strides[1], "BATCH": nbatch, "BATCH_RANK": len(bshape) if nbatch > 1 else 0})
        if nbatch > 1:
            defines.update({"BATCH_SHAPE": bshape, "A_BSTRIDES": a_bs, "B_BSTRIDES": b_bs, "C_BSTRIDES": c_bs})
        defines.update({"ALPHA": g.alpha, "BETA": g.beta, "HAS_BIAS": bias is not None})
        args: list[Arg] = [self.use(a), self.use(b)]
        if bias is not None:
            defines.update({"C_T": self.tag(bias), "CS_M": g.c_strides[0], "CS_N": g.c_strides[1]})
            args.append(self.use(bias))
        self.epilogue(node, defines, args, residual)
        args.append(self.define(out))
        grid = [-(-g.n // tn), -(-g.m // tm), nbatch]
        self.launch(node, self.kernel("gemm", defines), grid, args)

    def epilogue(self, node: Node, defines: dict[str, Any], args: list[Arg], residual: str | None) -> None:
        defines["HAS_RESIDUAL"] = residual is not None
        if residual is not None:
            defines["R_T"] = self.tag(residual)
            args.append(self.use(residual))
        defines["ACTIVATE(v)"] = activation_macro(node.attrs)

    def lower(self, node: Node) -> None:
        lowering = _LOWERINGS.get(node.op)
        if lowering is None:
            raise DeviceError(f"OpenCL runtime has no kernel for {node.op} (node {node.name})")
        lowering(self, node)

    def finish(self) -> ProgramPlan:
        for out in self.graph.outputs:
            self.use(out.name)
        source = "\n\n".join([_template("common.h"), *self.chunks]) + "\n"
        return ProgramPlan(source, BUILD_OPTIONS, self.launches, self.buffers, self.constants, self.aliases)


def plan_graph(graph: Graph) -> ProgramPlan:
    """Lowers ``graph`` to one program source and the launches that run it, in node order."""
    planner = _Planner(graph)
    for info in graph.inputs:
        planner.define(info.name)
    for node in graph.nodes:
        try:
            planner.lower(node)
        except DeviceError as exc:
            if node.name in str(exc):
                raise
            raise DeviceError(f"node {node.name} ({node.op}): {exc}") from exc
    return planner.finish()


# --- op lowerings, by kernel family ---------------------------------------------------------------------------------


def _epilogue_split(node: Node) -> tuple[list[str], str | None]:
    """(core inputs, residual): a fused residual is the node's last input."""
    if node.attrs.get("residual"):
        return node.inputs[:-1], node.inputs[-1]
    return list(node.inputs), None


def _opt(inputs: Sequence[str], index: int) -> str | None:
    return inputs[index] if len(inputs) > index and inputs[index] else None


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


@_lowers(*ALIAS_OPS)
def _lower_alias(p: _Planner, node: Node) -> None:
    p.alias(node.outputs[0], node.inputs[0])
    for extra in node.outputs[1:]:
        if node.op == "Dropout" and p.is_used(extra):  # inference keeps everything: the mask is all true
            p.derived(extra, np.ones(p.shape(extra), np.bool_), p.tag(extra))
        elif p.is_used(extra):
            raise DeviceError(f"OpenCL runtime has no kernel for {node.op} output {extra!r} (node {node.name})")


@_lowers("Shape", "Size")
def _lower_shape(p: _Planner, node: Node) -> None:
    """Static shapes make these constants: the output is uploaded, not computed."""
    shape = p.shape(node.inputs[0])
    if node.op == "Size":
        value = np.array(_prod(shape), np.int64)
    else:
        rank = len(shape)
        start, end = int(node.attrs.get("start", 0)), int(node.attrs.get("end", rank))
        value = np.array(shape[slice(start, end)], np.int64)
    out = node.outputs[0]
    p.derived(out, value, p.tag(out))


@_lowers("Cast", "CastLike")
def _lower_cast(p: _Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if p.tag(x) == p.tag(y):
        p.alias(y, x)
        return
    p.elementwise(node, [p.operand(x, allow_literal=False)], y, "$0", "$0")


@_lowers(*UNARY)
def _lower_unary(p: _Planner, node: Node) -> None:
    p.elementwise(node, [p.operand(node.inputs[0], allow_literal=False)], node.outputs[0], UNARY[node.op](node.attrs))


@_lowers("Clip")
def _lower_clip(p: _Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    tag = p.tag(x)
    ops = [p.operand(x, allow_literal=False)]
    for index, key, unbounded in ((1, "min", -math.inf), (2, "max", math.inf)):
        name = _opt(node.inputs, index)
        if name:  # a constant (folded into the expression) or a run-time tensor
            ops.append(p.operand(name))
        elif tag in FLOAT_TAGS:
            ops.append(_Operand(None, (), tag, c_float(float(node.attrs.get(key, unbounded)))))
        else:
            ops.append(_Operand(None, (), tag, "LONG_MIN" if index == 1 else "LONG_MAX"))
    p.elementwise(node, ops, y, "fmin(fmax($0, $1), $2)", "min(max($0, $1), $2)")


@_lowers(*BINARY, "Mod")
def _lower_binary(p: _Planner, node: Node) -> None:
    if node.op in VARIADIC and len(node.inputs) != 2:
        _lower_variadic(p, node)
        return
    a, b = p.operand(node.inputs[0]), p.operand(node.inputs[1])
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
    p.elementwise(node, [a, b], node.outputs[0], expr, int_expr)


@_lowers("Sum", "Mean")
def _lower_variadic(p: _Planner, node: Node) -> None:
    inputs = [i for i in node.inputs if i]
    y = node.outputs[0]
    if len(inputs) == 1:
        p.alias(y, inputs[0])
        return

    def fold(terms: list[str], integer: bool) -> str:
        if node.op in ("Sum", "Mean"):
            return "(" + " + ".join(terms) + ")"
        fn = {"Max": ("fmax", "max"), "Min": ("fmin", "min")}[node.op][integer]
        out = terms[0]
        for term in terms[1:]:
            out = f"{fn}({out}, {term})"
        return out

    scale = c_float(1.0 / len(inputs)) if node.op == "Mean" else None
    # Chunks of up to 4 tensors per launch; later chunks accumulate into the output buffer in place.
    ops = [p.operand(i) for i in inputs[:4]]
    terms = [f"${i}" for i in range(len(ops))]
    if scale:
        p.elementwise(node, ops, y, f"({fold(terms, False)} * {scale})")
    else:
        p.elementwise(node, ops, y, fold(terms, False), fold(terms, True))
    rest = inputs[4:]
    while rest:
        chunk, rest = rest[:3], rest[3:]
        ops = [_Operand(y, p.shape(y), p.tag(y)), *(p.operand(i) for i in chunk)]
        terms = [f"${i}" for i in range(1, len(ops))]
        if scale:
            p.elementwise(node, ops, y, f"($0 + {fold(terms, False)} * {scale})", dst=y)
        else:
            p.elementwise(node, ops, y, fold(["$0", *terms], False), fold(["$0", *terms], True), dst=y)


@_lowers("Where")
def _lower_where(p: _Planner, node: Node) -> None:
    ops = [p.operand(node.inputs[0], allow_literal=False), p.operand(node.inputs[1]), p.operand(node.inputs[2])]
    p.elementwise(node, ops, node.outputs[0], "($0 != 0 ? $1 : $2)", "($0 != 0 ? $1 : $2)")


@_lowers("BatchNormalization")
def _lower_batchnorm(p: _Planner, node: Node) -> None:
    if node.attrs.get("training_mode", 0):
        raise DeviceError(f"OpenCL runtime has no kernel for BatchNormalization in training mode (node {node.name})")
    x, y = node.inputs[0], node.outputs[0]
    scale, bias, mean, var = (p.const(v, "scale/B/mean/var", node).astype(np.float64) for v in node.inputs[1:5])
    eps = float(node.attrs.get("epsilon", 1e-5))
    # Inference BatchNorm is a per-channel multiply-add: fold its four parameters into two.
    mul = scale / np.sqrt(var + eps)
    add = bias - mean * mul
    rank = len(p.shape(x))
    channel_shape = (1, -1) + (1,) * (rank - 2) if rank > 1 else (-1,)
    ftag = p.tag(x)
    mul_buf = p.derived(f"{node.name}@mul", mul.reshape(channel_shape), ftag)
    add_buf = p.derived(f"{node.name}@add", add.reshape(channel_shape), ftag)
    ops = [p.operand(x, allow_literal=False)]
    ops += [_Operand(mul_buf, p.buffers[mul_buf].shape, ftag), _Operand(add_buf, p.buffers[add_buf].shape, ftag)]
    p.elementwise(node, ops, y, "mad($0, $1, $2)")


# convolutions


def _spatial_attrs(node: Node, kernel: Sequence[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(kernel_shape, strides, leading pads, dilations) with ONNX defaults."""
    nsp = len(kernel)
    kshape = _ints(node.attrs.get("kernel_shape", kernel))
    strides = _ints(node.attrs.get("strides", [1] * nsp))
    pads = _ints(node.attrs.get("pads", [0] * (2 * nsp)))
    dilations = _ints(node.attrs.get("dilations", [1] * nsp))
    return kshape, strides, pads, dilations


def _same_pads(
    node: Node, in_sp: Sequence[int], out_sp: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int]
) -> list[int] | None:
    """Leading pads for auto_pad SAME_*; None when the node's explicit pads apply."""
    mode = node.attrs.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", "VALID"):
        return None if mode == "NOTSET" else [0] * len(k)
    begins = []
    for i, o, kk, ss, dd in zip(in_sp, out_sp, k, s, d):
        total = max((o - 1) * ss + (kk - 1) * dd + 1 - i, 0)
        begins.append(total // 2 if mode == "SAME_UPPER" else total - total // 2)
    return begins


def _to3d(values: Sequence[int], fill: int) -> list[int]:
    return [fill] * (3 - len(values)) + list(values)


@_lowers("Conv")
def _lower_conv(p: _Planner, node: Node) -> None:
    core, residual = _epilogue_split(node)
    x, w, bias, y = core[0], core[1], _opt(core, 2), node.outputs[0]
    xs, ws, ys = p.shape(x), p.shape(w), p.shape(y)
    n, c, in_sp = xs[0], xs[1], list(xs[2:])
    oc, cg, out_sp = ws[0], ws[1], list(ys[2:])
    nsp = len(in_sp)
    if not 1 <= nsp <= 3:
        raise DeviceError(f"OpenCL runtime has no kernel for {nsp}D Conv (node {node.name})")
    k, s, pads, d = _spatial_attrs(node, ws[2:])
    lead = _same_pads(node, in_sp, out_sp, k, s, d) or pads[:nsp]
    group = int(node.attrs.get("group", 1))
    spatial = _prod(in_sp)

    if group == 1 and all(v == 1 for v in k) and all(v == 1 for v in s) and not any(lead) and in_sp == out_sp:
        # 1x1 conv = per-image GEMM: [OC x C] . [C x HW].
        shape = GemmShape(oc, spatial, c, (c, 1), (spatial, 1), (1, 0), (n,), (0,), (c * spatial,), (0,))
        p.gemm(node, w, x, bias, residual, y, shape)
        return

    defines: dict[str, Any] = {"X_T": p.tag(x), "W_T": p.tag(w), "Y_T": p.tag(y)}
    if bias:
        defines["B_T"] = p.tag(bias)
    if p.tag(w) not in FLOAT_TAGS:
        raise DeviceError(f"OpenCL runtime has no kernel for Conv with {p.tag(w)} weights (node {node.name})")
    ow = out_sp[-1]
    if nsp <= 2 and group == c and cg == 1 and oc % c == 0:
        ih, iw = _to3d(in_sp, 1)[1:]
        oh = _to3d(out_sp, 1)[1]
        pb = depthwise_tiling(n, oc, oh, ow)
        kh, kw = _to3d(k, 1)[1:]
        sh, sw = _to3d(s, 1)[1:]
        ph, pw = _to3d(lead, 0)[1:]
        dh, dw = _to3d(d, 1)[1:]
        defines.update({"N": n, "C": c, "MULT": oc // c, "IH": ih, "IW": iw, "OH": oh, "OW": ow, "KH": kh, "KW": kw})
        defines.update({"SH": sh, "SW": sw, "PH": ph, "PW": pw, "DH": dh, "DW": dw, "PB": pb, "HAS_BIAS": bool(bias)})
        args: list[Arg] = [p.use(x), p.use(w)] + ([p.use(bias)] if bias else [])
        p.epilogue(node, defines, args, residual)
        args.append(p.define(y))
        p.launch(node, p.kernel("depthwise", defines), [-(-ow // pb), oh, n * oc], args)
        return

    ocg = oc // group
    ocb, pb = conv_tiling(n, ocg, group, out_sp)
    if not p.is_const(w):
        ocb = 1  # OIHW is already the [OC/1][C/G][K...][1] layout
        w_buf = p.use(w)
    else:
        wdata = p.graph.float_constant(w).reshape(oc // ocb, ocb, cg, -1).transpose(0, 2, 3, 1)
        w_buf = p.derived(f"{w}@oc{ocb}", wdata, p.tag(w))
    (id_, ih, iw), (od, oh, _) = _to3d(in_sp, 1), _to3d(out_sp, 1)
    (kd, kh, kw), (sd, sh, sw) = _to3d(k, 1), _to3d(s, 1)
    (pd, ph, pw), (dd, dh, dw) = _to3d(lead, 0), _to3d(d, 1)
    defines.update({"N": n, "C": c, "OC": oc, "G": group, "ID": id_, "IH": ih, "IW": iw, "OD": od, "OH": oh, "OW": ow})
    defines.update({"KD": kd, "KH": kh, "KW": kw, "SD": sd, "SH": sh, "SW": sw, "PD": pd, "PH": ph, "PW": pw})
    defines.update({"DD": dd, "DH": dh, "DW": dw, "OCB": ocb, "PB": pb, "HAS_BIAS": bool(bias)})
    args = [p.use(x), w_buf] + ([p.use(bias)] if bias else [])
    p.epilogue(node, defines, args, residual)
    args.append(p.define(y))
    p.launch(node, p.kernel("conv", defines), [-(-ow // pb), od * oh, n * oc // ocb], args)


@_lowers("ConvTranspose")
def _lower_conv_transpose(p: _Planner, node: Node) -> None:
    core, residual = _epilogue_split(node)
    x, w, bias, y = core[0], core[1], _opt(core, 2), node.outputs[0]
    xs, ws, ys = p.shape(x), p.shape(w), p.shape(y)
    n, c, in_sp, out_sp = xs[0], xs[1], list(xs[2:]), list(ys[2:])
    nsp = len(in_sp)
    if not 1 <= nsp <= 3:
        raise DeviceError(f"OpenCL runtime has no kernel for {nsp}D ConvTranspose (node {node.name})")
    group = int(node.attrs.get("group", 1))
    ocg = ws[1]
    oc = ocg * group
    k, s, pads, d = _spatial_attrs(node, ws[2:])
    lead = pads[:nsp]
    if "pads" not in node.attrs and ("output_shape" in node.attrs or node.attrs.get("auto_pad", "NOTSET") != "NOTSET"):
        out_pad = _ints(node.attrs.get("output_padding", [0] * nsp))
        lead = []
        for i in range(nsp):
            total = s[i] * (in_sp[i] - 1) + out_pad[i] + (k[i] - 1) * d[i] + 1 - out_sp[i]
            upper = node.attrs.get("auto_pad") == "SAME_UPPER"
            lead.append(total // 2 if upper else total - total // 2)
    ocb = next(b for b in (4, 2, 1) if ocg % b == 0)
    (id_, ih, iw), (od, oh, ow) = _to3d(in_sp, 1), _to3d(out_sp, 1)
    (kd, kh, kw), (sd, sh, sw) = _to3d(k, 1), _to3d(s, 1)
    (pd, ph, pw), (dd, dh, dw) = _to3d(lead, 0), _to3d(d, 1)
    defines: dict[str, Any] = {"X_T": p.tag(x), "W_T": p.tag(w), "Y_T": p.tag(y)}
    if bias:
        defines["B_T"] = p.tag(bias)
    defines.update({"N": n, "C": c, "OC": oc, "G": group, "ID": id_, "IH": ih, "IW": iw, "OD": od, "OH": oh, "OW": ow})
    defines.update({"KD": kd, "KH": kh, "KW": kw, "SD": sd, "SH": sh, "SW": sw, "PD": pd, "PH": ph, "PW": pw})
    defines.update({"DD": dd, "DH": dh, "DW": dw, "OCB": ocb, "HAS_BIAS": bool(bias)})
    args: list[Arg] = [p.use(x), p.use(w)] + ([p.use(bias)] if bias else [])
    p.epilogue(node, defines, args, residual)
    args.append(p.define(y))
    p.launch(node, p.kernel("deconv", defines), [ow, od * oh, n * oc // ocb], args)


@_lowers("Gemm")
def _lower_gemm(p: _Planner, node: Node) -> None:
    core, residual = _epilogue_split(node)
    a, b, bias, y = core[0], core[1], _opt(core, 2), node.outputs[0]
    (ra, ca), (rb, cb) = p.shape(a), p.shape(b)
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    m, k = (ca, ra) if trans_a else (ra, ca)
    n = rb if trans_b else cb
    a_strides = (1, m) if trans_a else (k, 1)
    b_strides = (1, k) if trans_b else (n, 1)
    c_strides = (0, 0)
    if bias:
        bs = broadcast_strides(p.shape(bias), (m, n))
        c_strides = (bs[0], bs[1])
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    shape = GemmShape(m, n, k, a_strides, b_strides, c_strides, alpha=alpha, beta=beta)
    p.gemm(node, a, b, bias, residual, y, shape)


@_lowers("MatMul")
def _lower_matmul(p: _Planner, node: Node) -> None:
    core, residual = _epilogue_split(node)
    a, b, bias, y = core[0], core[1], _opt(core, 2), node.outputs[0]
    a_shape, b_shape = list(p.shape(a)), list(p.shape(b))
    a_vec, b_vec = len(a_shape) == 1, len(b_shape) == 1
    a_full = [1, *a_shape] if a_vec else a_shape
    b_full = [*b_shape, 1] if b_vec else b_shape
    m, k = a_full[-2:]
    n = b_full[-1]
    batch = list(np.broadcast_shapes(tuple(a_full[:-2]), tuple(b_full[:-2])))
    a_bs = broadcast_strides(a_full, [*batch, m, k])[: len(batch)]
    b_bs = broadcast_strides(b_full, [*batch, k, n])[: len(batch)]
    c_bs, c_strides = [0] * len(batch), (0, 0)
    if bias:
        # Bias broadcasts against the IR output shape; re-insert the dims a 1-D operand removed.
        out_shape = list(p.shape(y))
        bstr = broadcast_strides(p.shape(bias), out_shape)
        if b_vec:
            bstr.append(0)
        if a_vec:
            bstr.insert(len(bstr) - 1, 0)
        c_bs, c_strides = bstr[: len(batch)], (bstr[-2], bstr[-1])
    shape = GemmShape(m, n, k, (k, 1), (n, 1), c_strides, tuple(batch), tuple(a_bs), tuple(b_bs), tuple(c_bs))
    p.gemm(node, a, b, bias, residual, y, shape)


# pooling, reductions, softmax, normalization


@_lowers("MaxPool", "AveragePool")
def _lower_pool(p: _Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if len(node.outputs) > 1 and p.is_used(node.outputs[1]):
        raise DeviceError(f"OpenCL runtime has no kernel for MaxPool indices (node {node.name})")
    xs, ys = p.shape(x), p.shape(y)
    in_sp, out_sp = list(xs[2:]), list(ys[2:])
    nsp = len(in_sp)
    if not 1 <= nsp <= 3:
        raise DeviceError(f"OpenCL runtime has no kernel for {nsp}D {node.op} (node {node.name})")
    k, s, pads, d = _spatial_attrs(node, [1] * nsp)
    lead = _same_pads(node, in_sp, out_sp, k, s, d)
    trail = pads[nsp:]
    if lead is not None:  # SAME: the trailing pad is whatever makes the windows fit
        trail = [
            max((o - 1) * ss + (kk - 1) * dd + 1 - i - b, 0)
            for i, o, kk, ss, dd, b in zip(in_sp, out_sp, k, s, d, lead)
        ]
    else:
        lead = pads[:nsp]
    (id_, ih, iw), (od, oh, ow) = _to3d(in_sp, 1), _to3d(out_sp, 1)
    (kd, kh, kw), (sd, sh, sw) = _to3d(k, 1), _to3d(s, 1)
    (pd, ph, pw), (pde, phe, pwe), (dd, dh, dw) = _to3d(lead, 0), _to3d(trail, 0), _to3d(d, 1)
    defines: dict[str, Any] = {"X_T": p.tag(x), "Y_T": p.tag(y), "NC": xs[0] * xs[1]}
    defines.update({"ID": id_, "IH": ih, "IW": iw, "OD": od, "OH": oh, "OW": ow, "KD": kd, "KH": kh, "KW": kw})
    defines.update({"SD": sd, "SH": sh, "SW": sw, "PD": pd, "PH": ph, "PW": pw, "PDE": pde, "PHE": phe, "PWE": pwe})
    defines.update({"DD": dd, "DH": dh, "DW": dw, "IS_MAX": node.op == "MaxPool"})
    defines["COUNT_INCLUDE_PAD"] = bool(node.attrs.get("count_include_pad", 0))
    src = p.use(x)
    p.launch(node, p.kernel("pool", defines), [ow, od * oh, xs[0] * xs[1]], [src, p.define(y)])


@_lowers("GlobalAveragePool", "GlobalMaxPool")
def _lower_global_pool(p: _Planner, node: Node) -> None:
    x = node.inputs[0]
    op = "ReduceMean" if node.op == "GlobalAveragePool" else "ReduceMax"
    p.reduce(node, x, node.outputs[0], list(range(2, len(p.shape(x)))), op)


@_lowers(*REDUCE)
def _lower_reduce(p: _Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(p.shape(x))
    axes_name = _opt(node.inputs, 1)
    if axes_name:
        axes = _ints(p.const(axes_name, "axes", node))
    else:
        axes = _ints(node.attrs.get("axes", []))
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            p.alias(y, x)
            return
        axes = list(range(rank))
    p.reduce(node, x, y, sorted({_axis(a, rank) for a in axes}), node.op)


@_lowers("ArgMax", "ArgMin")
def _lower_arg_reduce(p: _Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    shape = p.shape(x)
    axis = _axis(int(node.attrs.get("axis", 0)), len(shape))
    outer, dim, inner = _prod(shape[:axis]), shape[axis], _prod(shape[axis + 1 :])
    defines = {"X_T": p.tag(x), "Y_T": p.tag(y), "OUTER": outer, "D": dim, "INNER": inner}
    defines.update({"IS_MAX": node.op == "ArgMax", "SELECT_LAST": bool(node.attrs.get("select_last_index", 0))})
    src = p.use(x)
    p.launch(node, p.kernel("argreduce", defines), [inner, outer], [src, p.define(y)])


@_lowers("Softmax", "LogSoftmax")
def _lower_softmax(p: _Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    shape = p.shape(x)
    axis = _axis(int(node.attrs.get("axis", -1)), len(shape))
    outer, dim, inner = _prod(shape[:axis]), shape[axis], _prod(shape[axis + 1 :])
    defines = {"X_T": p.tag(x), "Y_T": p.tag(y), "OUTER": outer, "D": dim, "INNER": inner}
    defines["IS_LOG"] = node.op == "LogSoftmax"
    src = p.use(x)
    p.launch(node, p.kernel("softmax", defines), [inner, outer], [src, p.define(y)])


def _row_norm(
    p: _Planner,
    node: Node,
    rows: int,
    row_len: int,
    params: tuple[str | None, str | None],
    index: str,
    stats: tuple[str, str] | None = None,
) -> None:
    """norm.cl ROW_NORM: ``params`` are the scale and bias buffers, ``stats`` the mean and 1/std buffers."""
    x, y = node.inputs[0], node.outputs[0]
    defines: dict[str, Any] = {"X_T": p.tag(x), "Y_T": p.tag(y), "ROWS": rows, "ROW_LEN": row_len}
    defines.update({"EPS": float(node.attrs.get("epsilon", 1e-5)), "HAS_SCALE": params[0] is not None})
    defines.update({"HAS_BIAS": params[1] is not None, "HAS_STATS": stats is not None})
    defines["SCALE_INDEX(row, j)"] = index
    args: list[Arg] = [p.use(x)]
    for key, value in zip(("S_T", "B_T"), params):
        if value is not None:
            defines[key] = next(t for t, dt in TAG_DTYPES.items() if dt == p.buffers[value].dtype)
            args.append(value)
    args.append(p.define(y))
    if stats is not None:
        defines["M_T"] = next(t for t, dt in TAG_DTYPES.items() if dt == p.buffers[stats[0]].dtype)
        args += list(stats)
    p.launch(node, p.kernel("rownorm", defines), [rows], args)


@_lowers("LayerNormalization")
def _lower_layer_norm(p: _Planner, node: Node) -> None:
    x = node.inputs[0]
    shape = p.shape(x)
    axis = _axis(int(node.attrs.get("axis", -1)), len(shape))
    norm_shape = shape[axis:]
    params: list[str | None] = []
    for value in (node.inputs[1], _opt(node.inputs, 2)):
        if value is None:
            params.append(None)
        elif p.is_const(value):  # broadcast to the normalized shape so the kernel indexes it by position
            data = np.broadcast_to(p.graph.float_constant(value), norm_shape)
            params.append(p.derived(f"{value}@{node.name}", data, p.tag(value)))
        elif _prod(p.shape(value)) == _prod(norm_shape):
            params.append(p.use(value))
        else:
            raise DeviceError(f"node {node.name}: LayerNormalization parameter {value!r} must be a constant")
    stats = None
    outputs = [*node.outputs[1:3], "", ""][:2]
    if any(p.is_used(o) for o in outputs):  # Mean and InvStdDev: a scratch buffer stands in for an unused one
        rows_shape = (*shape[:axis], *([1] * len(norm_shape)))
        tag = p.tag(next(o for o in outputs if p.is_used(o)))
        mean, rstd = (
            p.define(o) if p.is_used(o) else p.scratch(f"{node.name}@stat{i}", rows_shape, tag)
            for i, o in enumerate(outputs)
        )
        stats = (mean, rstd)
    _row_norm(p, node, _prod(shape[:axis]), _prod(norm_shape), (params[0], params[1]), "(j)", stats)


@_lowers("InstanceNormalization")
def _lower_instance_norm(p: _Planner, node: Node) -> None:
    shape = p.shape(node.inputs[0])
    scale, bias = p.use(node.inputs[1]), p.use(node.inputs[2])
    _row_norm(p, node, shape[0] * shape[1], _prod(shape[2:]), (scale, bias), f"((row) % {shape[1]})")


@_lowers("LRN")
def _lower_lrn(p: _Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    shape = p.shape(x)
    spatial = _prod(shape[2:])
    defines: dict[str, Any] = {"X_T": p.tag(x), "Y_T": p.tag(y), "N": shape[0], "C": shape[1], "SPATIAL": spatial}
    defines.update({"SIZE": int(node.attrs["size"]), "ALPHA": float(node.attrs.get("alpha", 1e-4))})
    defines.update({"BETA": float(node.attrs.get("beta", 0.75)), "BIAS": float(node.attrs.get("bias", 1.0))})
    src = p.use(x)
    p.launch(node, p.kernel("lrn", defines), [spatial, shape[1], shape[0]], [src, p.define(y)])


# resize


def resize_taps(
    mode: str,
    transform: str,
    nearest_mode: str,
    cubic_a: float,
    exclude_outside: bool,
    in_len: int,
    out_len: int,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per output index along one axis: the input indices [out_len, taps] and weights of its taps (ONNX Resize)."""
    # float32 arithmetic, as onnxruntime computes coordinates: it decides ties in nearest rounding.
    o = np.arange(out_len, dtype=np.float32)
    f32 = np.float32
    sc = f32(scale)
    if transform == "half_pixel":
        x = (o + f32(0.5)) / sc - f32(0.5)
    elif transform == "pytorch_half_pixel":
        x = (o + f32(0.5)) / sc - f32(0.5) if out_len > 1 else np.zeros_like(o)
    elif transform == "align_corners":
        x = o * f32(in_len - 1) / f32(out_len - 1) if out_len > 1 else np.zeros_like(o)
    elif transform == "asymmetric":
        x = o / sc
    elif transform == "tf_half_pixel_for_nn":
        x = (o + f32(0.5)) / sc
    elif transform == "half_pixel_symmetric":
        adjustment = f32(out_len) / (sc * f32(in_len))
        offset = f32(in_len) / f32(2) * (f32(1) - adjustment)
        x = offset + (o + f32(0.5)) / sc - f32(0.5)
    else:
        raise DeviceError(f"OpenCL runtime has no Resize coordinate transformation {transform!r}")
    if mode == "nearest":
        rounding = {
            "round_prefer_floor": lambda v: np.ceil(v - f32(0.5)),
            "round_prefer_ceil": lambda v: np.floor(v + f32(0.5)),
            "floor": np.floor,
            "ceil": np.ceil,
        }
        if nearest_mode not in rounding:
            raise DeviceError(f"OpenCL runtime has no Resize nearest_mode {nearest_mode!r}")
        idx = np.clip(rounding[nearest_mode](x), 0, in_len - 1).astype(np.int32)[:, None]
        return idx, np.ones_like(idx, dtype=np.float32)
    base = np.floor(x)
    t = (x - base).astype(np.float64)
    if mode == "linear":
        offsets = np.array([0, 1])
        weights = np.stack([1 - t, t], axis=1)
    elif mode == "cubic":
        a = cubic_a
        offsets = np.array([-1, 0, 1, 2])
        d = np.stack([t + 1, t, 1 - t, 2 - t], axis=1)  # distances to the four taps
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        weights = np.where(d <= 1, near, far)
    else:
        raise DeviceError(f"OpenCL runtime has no Resize mode {mode!r}")
    idx = base.astype(np.int64)[:, None] + offsets[None, :]
    if exclude_outside:
        weights = np.where((idx >= 0) & (idx < in_len), weights, 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, in_len - 1).astype(np.int32), weights.astype(np.float32)


@_lowers("Upsample")
def _lower_upsample(p: _Planner, node: Node) -> None:
    """Legacy Upsample: Resize with asymmetric coordinates, nearest rounding down."""
    mode = {"bilinear": "linear"}.get(node.attrs.get("mode", "nearest"), node.attrs.get("mode", "nearest"))
    attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    scales = _opt(node.inputs, 1)
    resize = Node("Resize", node.name, [node.inputs[0], "", scales or "", ""], node.outputs, attrs)
    if scales is None:
        attrs["scales"] = node.attrs["scales"]
    _lower_resize(p, resize)


@_lowers("Resize")
def _lower_resize(p: _Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = p.shape(x), p.shape(y)
    rank = len(xs)
    attrs = node.attrs
    if attrs.get("antialias", 0):
        raise DeviceError(f"OpenCL runtime has no kernel for Resize with antialias (node {node.name})")
    axes = [_axis(a, rank) for a in _ints(attrs.get("axes", list(range(rank))))]
    scales = [ys[d] / xs[d] for d in range(rank)]
    scales_name, sizes_name = _opt(node.inputs, 2), _opt(node.inputs, 3)
    given = p.const(scales_name, "scales", node).reshape(-1) if scales_name else np.zeros(0)
    if "scales" in attrs:  # legacy Upsample's attribute
        given = np.asarray(attrs["scales"], np.float32)
    if given.size:
        for axis, value in zip(axes, given):
            scales[axis] = float(value)
    elif sizes_name:
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            ratios = [ys[a] / xs[a] for a in axes]
            common = min(ratios) if policy == "not_larger" else max(ratios)
            for axis in axes:
                scales[axis] = common
    if rank < 2 or any(xs[d] != ys[d] for d in range(rank - 2)):
        raise DeviceError(f"OpenCL runtime resizes only the two innermost dims (node {node.name})")
    mode = attrs.get("mode", "nearest")
    transform = attrs.get("coordinate_transformation_mode", "half_pixel")
    tables = []
    for d in (rank - 2, rank - 1):
        if xs[d] == ys[d] and scales[d] == 1.0:
            idx, wts = np.arange(xs[d], dtype=np.int32)[:, None], np.ones((xs[d], 1), np.float32)
        else:
            idx, wts = resize_taps(
                mode,
                transform,
                attrs.get("nearest_mode", "round_prefer_floor"),
                float(attrs.get("cubic_coeff_a", -0.75)),
                bool(attrs.get("exclude_outside", 0)),
                xs[d],
                ys[d],
                scales[d],
            )
        tables.append(
            (p.derived(f"{node.name}@idx{d}", idx, "I32"), p.derived(f"{node.name}@w{d}", wts, "F32"), idx.shape[1])
        )
    (hidx, hw, th), (widx, ww, tw) = tables
    outer = _prod(xs[:-2])
    defines = {"X_T": p.tag(x), "Y_T": p.tag(y), "OUTER": outer, "IH": xs[-2], "IW": xs[-1], "OH": ys[-2]}
    defines.update({"OW": ys[-1], "TH": th, "TW": tw})
    src = p.use(x)
    p.launch(node, p.kernel("resize", defines), [ys[-1], ys[-2], outer], [src, hidx, hw, widx, ww, p.define(y)])


# data movement


@_lowers("Transpose")
def _lower_transpose(p: _Planner, node: Node) -> None:
    shape = p.shape(node.inputs[0])
    perm = _ints(node.attrs.get("perm", list(range(len(shape)))[::-1]))
    strides = contiguous_strides(shape)
    p.copy_view(node, [shape[d] for d in perm], [strides[d] for d in perm])


def _slice_params(p: _Planner, node: Node) -> tuple[list[int], list[int]]:
    """(start, step) per input dim of a Slice."""
    shape = p.shape(node.inputs[0])
    rank = len(shape)
    if len(node.inputs) > 1:
        starts = _ints(p.const(node.inputs[1], "starts", node))
        ends = _ints(p.const(node.inputs[2], "ends", node))
        axes_name, steps_name = _opt(node.inputs, 3), _opt(node.inputs, 4)
        axes = _ints(p.const(axes_name, "axes", node)) if axes_name else list(range(len(starts)))
        steps = _ints(p.const(steps_name, "steps", node)) if steps_name else [1] * len(starts)
    else:  # opset 1: attributes
        starts, ends = _ints(node.attrs["starts"]), _ints(node.attrs["ends"])
        axes = _ints(node.attrs.get("axes", list(range(len(starts)))))
        steps = [1] * len(starts)
    begin, step = [0] * rank, [1] * rank
    for start, end, axis, st in zip(starts, ends, axes, steps):
        axis = _axis(axis, rank)
        dim = shape[axis]
        del end  # the output length comes from the IR
        if start < 0:
            start += dim
        begin[axis] = min(max(start, 0), dim) if st > 0 else min(max(start, 0), dim - 1)
        step[axis] = st
    return begin, step


@_lowers("Slice")
def _lower_slice(p: _Planner, node: Node) -> None:
    shape = p.shape(node.inputs[0])
    begin, step = _slice_params(p, node)
    strides = contiguous_strides(shape)
    base = sum(b * s for b, s in zip(begin, strides))
    p.copy_view(node, p.shape(node.outputs[0]), [s * st for s, st in zip(strides, step)], base)


@_lowers("Expand")
def _lower_expand(p: _Planner, node: Node) -> None:
    out_shape = p.shape(node.outputs[0])
    p.copy_view(node, out_shape, broadcast_strides(p.shape(node.inputs[0]), out_shape))


@_lowers("Tile")
def _lower_tile(p: _Planner, node: Node) -> None:
    shape = p.shape(node.inputs[0])
    repeats = _ints(p.const(node.inputs[1], "repeats", node))
    strides = contiguous_strides(shape)
    # Each dim d becomes (repeats[d], shape[d]) read with strides (0, stride[d]): row-major order of the output.
    view, src = [], []
    for dim, rep, stride in zip(shape, repeats, strides):
        view += [rep, dim]
        src += [0, stride]
    p.copy_view(node, view, src)


def _permuted_view(shape: Sequence[int], perm: Sequence[int]) -> tuple[list[int], list[int]]:
    strides = contiguous_strides(shape)
    return [shape[d] for d in perm], [strides[d] for d in perm]


@_lowers("DepthToSpace")
def _lower_depth_to_space(p: _Planner, node: Node) -> None:
    n, c, h, w = p.shape(node.inputs[0])
    b = int(node.attrs["blocksize"])
    if node.attrs.get("mode", "DCR") == "DCR":
        view, src = _permuted_view([n, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2])
    else:
        view, src = _permuted_view([n, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3])
    p.copy_view(node, view, src)


@_lowers("SpaceToDepth")
def _lower_space_to_depth(p: _Planner, node: Node) -> None:
    n, c, h, w = p.shape(node.inputs[0])
    b = int(node.attrs["blocksize"])
    if node.attrs.get("mode", "DCR") == "DCR":
        view, src = _permuted_view([n, c, h // b, b, w // b, b], [0, 3, 5, 1, 2, 4])
    else:
        view, src = _permuted_view([n, c, h // b, b, w // b, b], [0, 1, 3, 5, 2, 4])
    p.copy_view(node, view, src)


@_lowers("Concat")
def _lower_concat(p: _Planner, node: Node) -> None:
    y = node.outputs[0]
    out_shape = p.shape(y)
    axis = _axis(int(node.attrs["axis"]), len(out_shape))
    out_strides = contiguous_strides(out_shape)
    dst, tag, offset = p.define(y), p.tag(y), 0
    for x in node.inputs:
        if not x:
            continue
        shape = p.shape(x)
        p.strided_copy(
            node, p.use(x), dst, tag, shape, contiguous_strides(shape), out_strides, dst_base=offset * out_strides[axis]
        )
        offset += shape[axis]


@_lowers("Split")
def _lower_split(p: _Planner, node: Node) -> None:
    x = node.inputs[0]
    shape = p.shape(x)
    axis = _axis(int(node.attrs.get("axis", 0)), len(shape))
    strides = contiguous_strides(shape)
    src, offset = p.use(x), 0
    for y in node.outputs:
        out_shape = p.shape(y) if y else ()
        if y and p.is_used(y):
            p.strided_copy(
                node,
                src,
                p.define(y),
                p.tag(y),
                out_shape,
                strides,
                contiguous_strides(out_shape),
                src_base=offset * strides[axis],
            )
        offset += out_shape[axis] if y else 0


@_lowers("Gather")
def _lower_gather(p: _Planner, node: Node) -> None:
    x, indices, y = node.inputs[0], node.inputs[1], node.outputs[0]
    shape = p.shape(x)
    axis = _axis(int(node.attrs.get("axis", 0)), len(shape))
    defines = {"T": p.tag(x), "I_T": p.tag(indices), "OUTER": _prod(shape[:axis]), "NIDX": _prod(p.shape(indices))}
    defines.update({"AXIS_DIM": shape[axis], "INNER": _prod(shape[axis + 1 :])})
    args = [p.use(x), p.use(indices), p.define(y)]
    p.launch(node, p.kernel("gather", defines), [_prod(p.shape(y))], args)


def _bits_literal(value: float, tag: str) -> str:
    """A value as the raw bits BITS(tag) holds (indexing.cl moves bits, not numbers)."""
    if tag == "F32":
        return f"{int(np.array(value, np.float32).view(np.uint32))}u"
    if tag == "F16":
        return f"{int(np.array(value, np.float16).view(np.uint16))}u"
    return f"{int(value)}L" if tag == "I64" else str(int(value))


@_lowers("Pad")
def _lower_pad(p: _Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    shape, out_shape = p.shape(x), p.shape(y)
    rank = len(shape)
    mode = {"constant": 0, "reflect": 1, "edge": 2, "wrap": 3}.get(node.attrs.get("mode", "constant"))
    if mode is None:
        raise DeviceError(f"OpenCL runtime has no kernel for Pad mode {node.attrs['mode']!r} (node {node.name})")
    pads_name = _opt(node.inputs, 1)
    pads = _ints(p.const(pads_name, "pads", node)) if pads_name else _ints(node.attrs.get("pads", [0] * 2 * rank))
    axes_name = _opt(node.inputs, 3)
    axes = [_axis(a, rank) for a in _ints(p.const(axes_name, "axes", node))] if axes_name else list(range(rank))
    begin = [0] * rank
    for i, axis in enumerate(axes):
        begin[axis] = pads[i]
    value_name = _opt(node.inputs, 2)
    value = float(p.const(value_name, "constant_value", node).reshape(-1)[0]) if value_name else 0.0
    tag = p.tag(y)
    defines = {"T": tag, "SIZE": _prod(out_shape), "RANK": max(rank, 1), "OUT_SHAPE": list(out_shape) or [1]}
    defines.update({"IN_SHAPE": list(shape) or [1], "IN_STRIDES": contiguous_strides(shape) or [0]})
    defines.update({"PAD_BEGIN": begin or [0], "MODE": mode, "VALUE": _bits_literal(value, tag)})
    src = p.use(x)
    p.launch(node, p.kernel("pad", defines), [_prod(out_shape)], [src, p.define(y)])


@_lowers("GatherElements")
def _lower_gather_elements(p: _Planner, node: Node) -> None:
    x, indices, y = node.inputs[0], node.inputs[1], node.outputs[0]
    shape, out_shape = p.shape(x), p.shape(y)
    axis = _axis(int(node.attrs.get("axis", 0)), len(shape))
    defines = {"T": p.tag(x), "I_T": p.tag(indices), "SIZE": _prod(out_shape), "RANK": len(out_shape)}
    defines.update({"SHAPE": out_shape, "X_STRIDES": contiguous_strides(shape), "AXIS": axis, "AXIS_DIM": shape[axis]})
    args = [p.use(x), p.use(indices), p.define(y)]
    p.launch(node, p.kernel("gather_elements", defines), [_prod(out_shape)], args)
