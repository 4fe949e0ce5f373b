"""Normalizations: LayerNormalization and InstanceNormalization on norm.cl's ROW_NORM (one work item per row; on GPU
targets a work-group per row, reduce.row_blocking), LRN on norm.cl's LRN, and BatchNormalization, which needs no
kernel of its own: at inference it is a per-channel multiply-add, folded on the host into two parameters and run on
elementwise.cl.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mace.errors import DeviceError
from mace.model.ir import Node
from mace.opencl.plan.elementwise import Operand, elementwise, operand
from mace.opencl.plan.planner import Arg, Planner, lowers, optional, positive_axis
from mace.opencl.plan.reduce import row_blocking
from mace.opencl.plan.templates import TAG_DTYPES, prod


@lowers("BatchNormalization")
def _lower_batchnorm(p: Planner, node: Node) -> None:
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
    ops = [operand(p, x, allow_literal=False)]
    ops += [Operand(mul_buf, p.buffers[mul_buf].shape, ftag), Operand(add_buf, p.buffers[add_buf].shape, ftag)]
    elementwise(p, node, ops, y, "mad($0, $1, $2)")


def _row_norm(
    p: Planner,
    node: Node,
    rows: int,
    row_len: int,
    params: tuple[str | None, str | None],
    index: str,
    stats: tuple[str, str] | None = None,
    by_row: bool = False,
) -> None:
    """norm.cl ROW_NORM: ``params`` are the scale and bias buffers, indexed by ``index`` (of row and j; only of row
    where ``by_row``), ``stats`` the mean and 1/std buffers."""
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
    if p.gpu and p.target is not None:  # a work-group per row (norm.cl, LX)
        blocking = row_blocking(rows, row_len, p.target.max_work_group_size)
        defines.update(blocking.defines(), PARAM_BY_ROW=by_row)
        p.launch(node, p.kernel("rownorm", defines), blocking.global_size, args, blocking.local_size)
        return
    p.launch(node, p.kernel("rownorm", defines), [rows], args)


@lowers("LayerNormalization")
def _lower_layer_norm(p: Planner, node: Node) -> None:
    x = node.inputs[0]
    shape = p.shape(x)
    axis = positive_axis(int(node.attrs.get("axis", -1)), len(shape))
    norm_shape = shape[axis:]
    params: list[str | None] = []
    for value in (node.inputs[1], optional(node.inputs, 2)):
        if value is None:
            params.append(None)
        elif p.is_const(value):  # broadcast to the normalized shape so the kernel indexes it by position
            data = np.broadcast_to(p.graph.float_constant(value), norm_shape)
            params.append(p.derived(f"{value}@{node.name}", data, p.tag(value)))
        elif prod(p.shape(value)) == prod(norm_shape):
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
    _row_norm(p, node, prod(shape[:axis]), prod(norm_shape), (params[0], params[1]), "(j)", stats)


@lowers("InstanceNormalization")
def _lower_instance_norm(p: Planner, node: Node) -> None:
    shape = p.shape(node.inputs[0])
    scale, bias = p.use(node.inputs[1]), p.use(node.inputs[2])
    _row_norm(p, node, shape[0] * shape[1], prod(shape[2:]), (scale, bias), f"((row) % {shape[1]})", by_row=True)


@lowers("LRN")
def _lower_lrn(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    shape = p.shape(x)
    spatial = prod(shape[2:])
    defines: dict[str, Any] = {"X_T": p.tag(x), "Y_T": p.tag(y), "N": shape[0], "C": shape[1], "SPATIAL": spatial}
    defines.update({"SIZE": int(node.attrs["size"]), "ALPHA": float(node.attrs.get("alpha", 1e-4))})
    defines.update({"BETA": float(node.attrs.get("beta", 0.75)), "BIAS": float(node.attrs.get("bias", 1.0))})
    src = p.use(x)
    p.launch(node, p.kernel("lrn", defines), [spatial, shape[1], shape[0]], [src, p.define(y)])
