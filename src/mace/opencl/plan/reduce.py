"""Reductions on reduce.cl (Reduce*, ArgMax/ArgMin, CumSum, TopK) and Softmax/LogSoftmax on softmax.cl.

A Reduce* is one work item per output element; both the kept and the reduced dims are collapsed first, so any set of
axes becomes at most a few strided loops. ``reduce`` also lowers the global pools (pooling.py).

Softmax over the last axis on GPU targets, and the row normalizations of norm.py, run one work-group per row
(``row_blocking``): the portable kernels give each row one work item, so a [197, 768] LayerNorm is 197 work items
each looping over 768 values three times, 11.7 ms of a 17.4 ms ViT-B/16 on an H200; as a work-group per row it
takes 7 us (472 -> 7.2 us; Softmax [12, 197, 197] 27 -> 7.9 us; benchmarks/norm_kernels.py). The portable plan keeps
the one-item-per-row kernels: on pocl (2 cores) the work-group form is no clear win (LayerNorm 1.1-1.3x faster, 5-6x
with fp16 storage; Softmax 0.6-1.6x). A CPU target runs a last-axis fp32 Softmax on softmax_cpu.cl: still a row per
work item, but in vectors, one exp builtin per vector instead of two per element.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mace.errors import DeviceError
from mace.model.ir import Node
from mace.opencl.plan.planner import Planner, ints, lowers, optional, positive_axis
from mace.opencl.plan.templates import FLOAT_TAGS, collapse, contiguous_strides, prod
from mace.opencl.plan.tiling_cpu import cpu_vector_width

ROW_LANES_MAX = 256  # work items sharing one row, at most
ROW_LANES_MIN = 64  # a shorter row is not split below this many lanes just to fill them evenly
ROW_GROUP_MIN = 64  # work items per work-group at least: short rows pack several rows into one
ROW_CACHED_FLOATS = 32  # values per work item kept in registers between the statistics and the output


def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


@dataclass(frozen=True)
class RowBlocking:
    """The work-group form of softmax.cl and norm.cl's ROW_NORM: LX work items per row, LY rows per work-group,
    vectors of VEC elements (NV per row), at most PER vectors per work item, kept in registers when ``cached``."""

    rows: int
    lx: int
    ly: int
    vec: int
    nv: int
    per: int
    cached: bool

    def defines(self) -> dict[str, Any]:
        return {"LX": self.lx, "LY": self.ly, "VEC": self.vec, "NV": self.nv, "PER": self.per, "CACHED": self.cached}

    @property
    def global_size(self) -> list[int]:
        return [self.lx, -(-self.rows // self.ly) * self.ly]

    @property
    def local_size(self) -> list[int]:
        return [self.lx, self.ly]


def row_blocking(rows: int, row_len: int, max_group: int) -> RowBlocking:
    """How ``rows`` rows of ``row_len`` elements spread over work-groups of at most ``max_group`` work items: vectors
    of 4 (2) elements where they divide the row and leave 32 lanes, then the most lanes (a power of two, at most
    ROW_LANES_MAX and the vectors of a row) that share the vectors evenly (7/8 of the lanes' slots used), else the
    most even split of at least ROW_LANES_MIN lanes.

        >>> row_blocking(197, 768, 1024)
        RowBlocking(rows=197, lx=64, ly=1, vec=4, nv=192, per=3, cached=True)
        >>> row_blocking(2364, 197, 1024).lx, row_blocking(10, 7, 1024).local_size
        (128, [4, 16])
    """
    vec = next(v for v in (4, 2, 1) if row_len % v == 0 and (v == 1 or row_len >= 32 * v))
    nv = row_len // vec
    top = min(ROW_LANES_MAX, max_group, _pow2_floor(nv))
    lanes = [top >> i for i in range(top.bit_length()) if (top >> i) >= min(ROW_LANES_MIN, top)]

    def used(lx: int) -> float:
        return nv / (lx * -(-nv // lx))

    lx = next((n for n in lanes if used(n) >= 0.875), max(lanes, key=used))  # the first of equals: the most lanes
    ly = min(max(1, ROW_GROUP_MIN // lx), 1 << max(rows - 1, 0).bit_length(), max(1, max_group // lx))
    per = -(-nv // lx)
    return RowBlocking(rows, lx, ly, vec, nv, per, per * vec <= ROW_CACHED_FLOATS)


REDUCE: dict[str, tuple[str, str, str]] = {  # op -> INIT, ACC(a, v), FINAL(a) (the mean divides by RED_SIZE)
    "ReduceSum": ("0.0f", "((a) + (v))", "(a)"),
    "ReduceMean": ("0.0f", "((a) + (v))", "((a) * (1.0f / RED_SIZE))"),
    "ReduceMax": ("(-INFINITY)", "MAXNAN((a), (v))", "(a)"),  # a NaN anywhere gives NaN
    "ReduceMin": ("INFINITY", "MINNAN((a), (v))", "(a)"),
    "ReduceProd": ("1.0f", "((a) * (v))", "(a)"),
    "ReduceSumSquare": ("0.0f", "mad((v), (v), (a))", "(a)"),
    "ReduceL1": ("0.0f", "((a) + fabs(v))", "(a)"),
    "ReduceL2": ("0.0f", "mad((v), (v), (a))", "sqrt(a)"),
    "ReduceLogSum": ("0.0f", "((a) + (v))", "log(a)"),
    "ReduceLogSumExp": ("0.0f", "((a) + exp(v))", "log(a)"),
}


def reduce(p: Planner, node: Node, x: str, y: str, axes: Sequence[int], op: str) -> None:
    """y = op over ``axes`` (sorted, non-negative) of x; ``op`` is a key of REDUCE."""
    shape = p.shape(x)
    strides = contiguous_strides(shape)
    keep = [d for d in range(len(shape)) if d not in axes]
    keep_shape, (keep_strides,) = collapse([shape[d] for d in keep], [strides[d] for d in keep])
    red_shape, (red_strides,) = collapse([shape[d] for d in axes], [strides[d] for d in axes])
    out_size = prod([shape[d] for d in keep])
    init, acc, final = REDUCE[op]
    defines: dict[str, Any] = {"X_T": p.tag(x), "Y_T": p.tag(y), "OUT_SIZE": out_size}
    if out_size > 1:
        defines.update({"KEEP_RANK": len(keep_shape), "KEEP_SHAPE": keep_shape, "KEEP_STRIDES": keep_strides})
    else:
        defines["KEEP_RANK"] = 0
    defines.update({"RED_RANK": len(red_shape), "RED_SHAPE": red_shape, "RED_STRIDES": red_strides})
    defines.update({"RED_SIZE": prod([shape[d] for d in axes]), "INIT": init, "ACC(a, v)": acc})
    defines["FINAL(a)"] = final
    src = p.use(x)
    p.launch(node, p.kernel("reduce", defines), [out_size], [src, p.define(y)])


@lowers(*REDUCE)
def _lower_reduce(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(p.shape(x))
    axes_name = optional(node.inputs, 1)
    if axes_name:
        axes = ints(p.const(axes_name, "axes", node))
    else:
        axes = ints(node.attrs.get("axes", []))
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            p.alias(y, x)
            return
        axes = list(range(rank))
    reduce(p, node, x, y, sorted({positive_axis(a, rank) for a in axes}), node.op)


def _along(p: Planner, x: str, y: str, axis: int) -> dict[str, Any]:
    """The defines of a kernel along one axis of x viewed as [OUTER][D][INNER] (reduce.cl's ArgMax, CumSum, TopK;
    softmax.cl): X_T Y_T OUTER D INNER."""
    shape = p.shape(x)
    return {"X_T": p.tag(x), "Y_T": p.tag(y), "OUTER": prod(shape[:axis]), "D": shape[axis],
            "INNER": prod(shape[axis + 1 :])}


@lowers("ArgMax", "ArgMin")
def _lower_arg_reduce(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    shape = p.shape(x)
    axis = positive_axis(int(node.attrs.get("axis", 0)), len(shape))
    defines = _along(p, x, y, axis)
    defines.update({"IS_MAX": node.op == "ArgMax", "SELECT_LAST": bool(node.attrs.get("select_last_index", 0))})
    src = p.use(x)
    p.launch(node, p.kernel("argreduce", defines), [defines["INNER"], defines["OUTER"]], [src, p.define(y)])


@lowers("CumSum")
def _lower_cumsum(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if p.tag(x) not in FLOAT_TAGS:
        raise DeviceError(f"OpenCL runtime has no kernel for CumSum of {p.tag(x)} values (node {node.name})")
    shape = p.shape(x)
    axis_values = p.const(node.inputs[1], "axis", node)
    if axis_values.size != 1:
        raise DeviceError(f"CumSum axis must have one element (node {node.name})")
    axis = positive_axis(int(axis_values.reshape(())), len(shape))
    defines = _along(p, x, y, axis)
    defines.update({"EXCLUSIVE": bool(node.attrs.get("exclusive", 0)), "REVERSE": bool(node.attrs.get("reverse", 0))})
    src = p.use(x)
    p.launch(node, p.kernel("cumsum", defines), [defines["INNER"], defines["OUTER"]], [src, p.define(y)])


@lowers("TopK")
def _lower_top_k(p: Planner, node: Node) -> None:
    x, values, indices = node.inputs[0], node.outputs[0], node.outputs[1]
    if p.tag(x) not in FLOAT_TAGS:
        raise DeviceError(f"OpenCL runtime has no kernel for TopK of {p.tag(x)} values (node {node.name})")
    shape = p.shape(x)
    axis = positive_axis(int(node.attrs.get("axis", -1)), len(shape))
    k = int(p.const(node.inputs[1], "K", node).reshape(-1)[0])
    defines = _along(p, x, values, axis)
    defines.update({"I_T": p.tag(indices), "K": k, "LARGEST": bool(node.attrs.get("largest", 1))})
    src = p.use(x)
    args = [src, p.define(values), p.define(indices)]
    p.launch(node, p.kernel("topk", defines), [defines["D"], defines["OUTER"] * defines["INNER"]], args)


@lowers("Softmax", "LogSoftmax")
def _lower_softmax(p: Planner, node: Node) -> None:
    x = node.inputs[0]
    axis = positive_axis(int(node.attrs.get("axis", -1)), len(p.shape(x)))
    softmax(p, node, x, node.outputs[0], axis, node.op == "LogSoftmax")


def softmax(p: Planner, node: Node, x: str, y: str, axis: int, log: bool, nan_to_zero: bool = False) -> None:
    """y = Softmax (LogSoftmax where ``log``) of x along ``axis``; ``nan_to_zero`` as softmax.cl says."""
    defines = _along(p, x, y, axis)
    outer, dim, inner = defines["OUTER"], defines["D"], defines["INNER"]
    defines["IS_LOG"] = log
    guard = {"NAN_TO_ZERO": 1} if nan_to_zero else {}  # only where asked: other sources stay byte for byte
    defines.update(guard)
    args = [p.use(x), p.define(y)]
    if p.gpu and p.target is not None and inner == 1:  # a work-group per row (softmax.cl, LX)
        blocking = row_blocking(outer, dim, p.target.max_work_group_size)
        kernel = p.kernel("softmax", {**defines, **blocking.defines()})
        p.launch(node, kernel, blocking.global_size, args, blocking.local_size)
        return
    vw = cpu_vector_width(dim, p.cpu_vector) if p.cpu and inner == 1 else 0
    if vw and p.tag(x) == p.tag(y) == "F32":  # a CPU target: a row per work item, in vectors (softmax_cpu.cl)
        cpu = {"OUTER": outer, "D": dim, "VW": vw, "IS_LOG": log, **guard}
        p.launch(node, p.kernel("softmax_cpu", cpu), [outer], args)
        return
    p.launch(node, p.kernel("softmax", defines), [inner, outer], args)
