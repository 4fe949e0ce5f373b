"""Reductions on reduce.cl (Reduce*, ArgMax/ArgMin) and Softmax/LogSoftmax on softmax.cl.

A Reduce* is one work item per output element; both the kept and the reduced dims are collapsed first, so any set of
axes becomes at most a few strided loops. ``reduce`` also lowers the global pools (pooling.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mace.model.ir import Node
from mace.opencl.plan.planner import Planner, ints, lowers, optional, positive_axis
from mace.opencl.plan.templates import collapse, contiguous_strides, prod

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


@lowers("ArgMax", "ArgMin")
def _lower_arg_reduce(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    shape = p.shape(x)
    axis = positive_axis(int(node.attrs.get("axis", 0)), len(shape))
    outer, dim, inner = prod(shape[:axis]), shape[axis], prod(shape[axis + 1 :])
    defines = {"X_T": p.tag(x), "Y_T": p.tag(y), "OUTER": outer, "D": dim, "INNER": inner}
    defines.update({"IS_MAX": node.op == "ArgMax", "SELECT_LAST": bool(node.attrs.get("select_last_index", 0))})
    src = p.use(x)
    p.launch(node, p.kernel("argreduce", defines), [inner, outer], [src, p.define(y)])


@lowers("Softmax", "LogSoftmax")
def _lower_softmax(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    shape = p.shape(x)
    axis = positive_axis(int(node.attrs.get("axis", -1)), len(shape))
    outer, dim, inner = prod(shape[:axis]), shape[axis], prod(shape[axis + 1 :])
    defines = {"X_T": p.tag(x), "Y_T": p.tag(y), "OUTER": outer, "D": dim, "INNER": inner}
    defines["IS_LOG"] = node.op == "LogSoftmax"
    src = p.use(x)
    p.launch(node, p.kernel("softmax", defines), [inner, outer], [src, p.define(y)])
