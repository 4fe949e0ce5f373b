"""Data movement on indexing.cl: Transpose, Slice, Expand, Tile, DepthToSpace/SpaceToDepth, Concat and Split are
all one strided copy (STRIDED_COPY) each (Concat and Split one per operand; on a CPU target, 4-byte elements:
copy_cpu.cl, a vector of a row per work item); Gather, GatherElements, GatherND, ScatterND and Pad have kernels of
their own.

These kernels move raw bits (BITS(T) in common.h), never numbers, so Pad's fill value is a bit pattern.
Rearrangements are expressed as a view: the output's index space in row-major order, read from the input through
permuted (or zero, for broadcasts and repeats) strides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mace.errors import DeviceError
from mace.model import rules
from mace.model.ir import Node
from mace.opencl.plan.planner import Planner, ints, lowers, optional, positive_axis
from mace.opencl.plan.templates import FLOAT_TAGS, broadcast_strides, collapse, contiguous_strides, prod, row_offset
from mace.opencl.plan.tiling_cpu import cpu_vector_width

# --- the shared lowerings ------------------------------------------------------------------------------------------


def strided_copy(
    p: Planner,
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
    size = prod(shape)
    if p.cpu and tag in ("F32", "I32", "U32"):
        inner, rows = view[-1], prod(view[:-1])
        vw = cpu_vector_width(inner, p.cpu_vector) or 1
        cpu: dict[str, Any] = {"ROWS": rows, "INNER": inner, "VW": vw}
        cpu.update({"SRC_BASE": src_base, "SRC_IS": ss[-1], "SRC_ROW(r)": row_offset(view[:-1], ss[:-1])})
        cpu.update({"DST_BASE": dst_base, "DST_IS": ds[-1], "DST_ROW(r)": row_offset(view[:-1], ds[:-1])})
        p.launch(node, p.kernel("copy_cpu", cpu), [-(-inner // vw), rows], [src, dst])
        return
    defines = {"T": tag, "SIZE": size, "RANK": len(view), "SHAPE": view}
    defines.update({"SRC_BASE": src_base, "SRC_STRIDES": ss, "DST_BASE": dst_base, "DST_STRIDES": ds})
    p.launch(node, p.kernel("copy", defines), [size], [src, dst])


def copy_view(p: Planner, node: Node, shape: Sequence[int], src_strides: Sequence[int], src_base: int = 0) -> None:
    """Writes node.outputs[0] (contiguous, viewed as ``shape``) from node.inputs[0] read through strides."""
    x, y = node.inputs[0], node.outputs[0]
    src = p.use(x)
    strided_copy(p, node, src, p.define(y), p.tag(y), shape, src_strides, contiguous_strides(shape), src_base)


def _permuted_view(shape: Sequence[int], perm: Sequence[int]) -> tuple[list[int], list[int]]:
    strides = contiguous_strides(shape)
    return [shape[d] for d in perm], [strides[d] for d in perm]


# --- views ---------------------------------------------------------------------------------------------------------


@lowers("Transpose")
def _lower_transpose(p: Planner, node: Node) -> None:
    shape = p.shape(node.inputs[0])
    perm = ints(node.attrs.get("perm", list(range(len(shape)))[::-1]))
    strides = contiguous_strides(shape)
    copy_view(p, node, [shape[d] for d in perm], [strides[d] for d in perm])


def slice_params(p: Planner, node: Node) -> tuple[list[int], list[int]]:
    """(start, step) per input dim of a Slice."""
    shape = p.shape(node.inputs[0])
    rank = len(shape)
    if len(node.inputs) > 1:
        starts = ints(p.const(node.inputs[1], "starts", node))
        ends = ints(p.const(node.inputs[2], "ends", node))
        axes_name, steps_name = optional(node.inputs, 3), optional(node.inputs, 4)
        axes = ints(p.const(axes_name, "axes", node)) if axes_name else list(range(len(starts)))
        steps = ints(p.const(steps_name, "steps", node)) if steps_name else [1] * len(starts)
    else:  # opset 1: attributes
        starts, ends = ints(node.attrs["starts"]), ints(node.attrs["ends"])
        axes = ints(node.attrs.get("axes", list(range(len(starts)))))
        steps = [1] * len(starts)
    begin, step = [0] * rank, [1] * rank
    for start, end, axis, st in zip(starts, ends, axes, steps):
        axis = positive_axis(axis, rank)
        dim = shape[axis]
        del end  # the output length comes from the IR
        if start < 0:
            start += dim
        begin[axis] = min(max(start, 0), dim) if st > 0 else min(max(start, 0), dim - 1)
        step[axis] = st
    return begin, step


@lowers("Slice")
def _lower_slice(p: Planner, node: Node) -> None:
    shape = p.shape(node.inputs[0])
    begin, step = slice_params(p, node)
    strides = contiguous_strides(shape)
    base = sum(b * s for b, s in zip(begin, strides))
    copy_view(p, node, p.shape(node.outputs[0]), [s * st for s, st in zip(strides, step)], base)


@lowers("Expand")
def _lower_expand(p: Planner, node: Node) -> None:
    out_shape = p.shape(node.outputs[0])
    copy_view(p, node, out_shape, broadcast_strides(p.shape(node.inputs[0]), out_shape))


@lowers("Tile")
def _lower_tile(p: Planner, node: Node) -> None:
    shape = p.shape(node.inputs[0])
    repeats = ints(p.const(node.inputs[1], "repeats", node))
    strides = contiguous_strides(shape)
    # Each dim d becomes (repeats[d], shape[d]) read with strides (0, stride[d]): row-major order of the output.
    view, src = [], []
    for dim, rep, stride in zip(shape, repeats, strides):
        view += [rep, dim]
        src += [0, stride]
    copy_view(p, node, view, src)


@lowers("DepthToSpace")
def _lower_depth_to_space(p: Planner, node: Node) -> None:
    n, c, h, w = p.shape(node.inputs[0])
    b = int(node.attrs["blocksize"])
    if node.attrs.get("mode", "DCR") == "DCR":
        view, src = _permuted_view([n, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2])
    else:
        view, src = _permuted_view([n, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3])
    copy_view(p, node, view, src)


@lowers("SpaceToDepth")
def _lower_space_to_depth(p: Planner, node: Node) -> None:
    n, c, h, w = p.shape(node.inputs[0])
    b = int(node.attrs["blocksize"])
    if node.attrs.get("mode", "DCR") == "DCR":
        view, src = _permuted_view([n, c, h // b, b, w // b, b], [0, 3, 5, 1, 2, 4])
    else:
        view, src = _permuted_view([n, c, h // b, b, w // b, b], [0, 1, 3, 5, 2, 4])
    copy_view(p, node, view, src)


# --- several operands ----------------------------------------------------------------------------------------------


@lowers("Concat")
def _lower_concat(p: Planner, node: Node) -> None:
    """One copy per operand, into its slice of the output; operands placed there by their producer need none, and
    an output placed in an outer Concat's is written there (placement.place_concat_operands)."""
    y = node.outputs[0]
    out_shape = p.shape(y)
    axis = positive_axis(int(node.attrs["axis"]), len(out_shape))
    out_strides = contiguous_strides(out_shape)
    root, base, bstride = p.placement.get(y, (y, 0, out_strides[0] * out_shape[0]))
    if root != y:
        out_strides[0] = bstride
    dst, tag, offset = p.define(root), p.tag(y), 0
    for x in node.inputs:
        if not x:
            continue
        shape = p.shape(x)
        at = base + offset * out_strides[axis]
        if p.placement.get(x, ("", 0, 0))[:2] != (root, at):
            strided_copy(p, node, p.use(x), dst, tag, shape, contiguous_strides(shape), out_strides, dst_base=at)
        offset += shape[axis]


@lowers("Split")
def _lower_split(p: Planner, node: Node) -> None:
    x = node.inputs[0]
    shape = p.shape(x)
    axis = positive_axis(int(node.attrs.get("axis", 0)), len(shape))
    strides = contiguous_strides(shape)
    src, offset = p.use(x), 0
    for y in node.outputs:
        out_shape = p.shape(y) if y else ()
        if y and p.is_used(y):
            strided_copy(
                p,
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


# --- gathers and padding -------------------------------------------------------------------------------------------


@lowers("Gather")
def _lower_gather(p: Planner, node: Node) -> None:
    x, indices, y = node.inputs[0], node.inputs[1], node.outputs[0]
    shape = p.shape(x)
    axis = positive_axis(int(node.attrs.get("axis", 0)), len(shape))
    defines = {"T": p.tag(x), "I_T": p.tag(indices), "OUTER": prod(shape[:axis]), "NIDX": prod(p.shape(indices))}
    defines.update({"AXIS_DIM": shape[axis], "INNER": prod(shape[axis + 1 :])})
    args = [p.use(x), p.use(indices), p.define(y)]
    p.launch(node, p.kernel("gather", defines), [prod(p.shape(y))], args)


@lowers("GatherElements")
def _lower_gather_elements(p: Planner, node: Node) -> None:
    x, indices, y = node.inputs[0], node.inputs[1], node.outputs[0]
    shape, out_shape = p.shape(x), p.shape(y)
    axis = positive_axis(int(node.attrs.get("axis", 0)), len(shape))
    defines = {"T": p.tag(x), "I_T": p.tag(indices), "SIZE": prod(out_shape), "RANK": len(out_shape)}
    defines.update({"SHAPE": out_shape, "X_STRIDES": contiguous_strides(shape), "AXIS": axis, "AXIS_DIM": shape[axis]})
    args = [p.use(x), p.use(indices), p.define(y)]
    p.launch(node, p.kernel("gather_elements", defines), [prod(out_shape)], args)


@lowers("Trilu")
def _lower_trilu(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    shape = p.shape(x)
    if len(shape) < 2:
        raise DeviceError(f"Trilu {node.name}: needs at least 2 dimensions, got {list(shape)}")
    k_name = optional(node.inputs, 1)
    k = int(p.const(k_name, "k", node).reshape(())) if k_name else 0
    src = p.use(x)
    out = p.define(y)
    if not prod(shape):
        return
    defines = {"T": p.tag(x), "SIZE": prod(shape), "ROWS": shape[-2], "COLS": shape[-1], "K": k,
               "UPPER": bool(node.attrs.get("upper", 1))}
    p.launch(node, p.kernel("trilu", defines), [prod(shape)], [src, out])


@lowers("OneHot")
def _lower_one_hot(p: Planner, node: Node) -> None:
    indices, values, y = node.inputs[0], node.inputs[2], node.outputs[0]
    ys = p.shape(y)
    axis = positive_axis(int(node.attrs.get("axis", -1)), len(ys))
    if p.tag(values) != p.tag(y):
        raise DeviceError(f"OneHot {node.name}: values stored as {p.tag(values)}, the output as {p.tag(y)}")
    args = [p.use(indices), p.use(values), p.define(y)]
    if not prod(ys):
        return
    defines = {"T": p.tag(y), "I_T": p.tag(indices), "SIZE": prod(ys), "DEPTH": ys[axis], "INNER": prod(ys[axis + 1 :])}
    p.launch(node, p.kernel("one_hot", defines), [prod(ys)], args)


@lowers("GatherND")
def _lower_gather_nd(p: Planner, node: Node) -> None:
    x, indices, y = node.inputs[0], node.inputs[1], node.outputs[0]
    shape, ishape = p.shape(x), p.shape(indices)
    b, k = int(node.attrs.get("batch_dims", 0)), ishape[-1]
    out = p.define(y)
    if not prod(p.shape(y)):
        return
    if not all(shape[b:b + k]):
        raise DeviceError(f"GatherND {node.name}: its indices point into a dim of size 0 of {tuple(shape)}")
    batches = prod(shape[:b])
    defines: dict[str, Any] = {"T": p.tag(x), "I_T": p.tag(indices), "BATCHES": batches}
    defines.update({"ROWS": prod(ishape[:-1]) // max(batches, 1), "INNER": prod(shape[b + k:])})
    defines.update({"BATCH_STRIDE": prod(shape[b:]), "K": k, "DIMS": list(shape[b:b + k]) or [1]})
    defines["STRIDES"] = contiguous_strides(shape)[b:b + k] or [0]
    p.launch(node, p.kernel("gather_nd", defines), [prod(p.shape(y))], [p.use(x), p.use(indices), out])


@lowers("ScatterND")
def _lower_scatter_nd(p: Planner, node: Node) -> None:
    """y = data copied, then the updates scattered into it (indexing.cl SCATTER_ND; exported masks usually fold)."""
    indices, updates = node.inputs[1], node.inputs[2]
    shape, ishape = p.shape(node.inputs[0]), p.shape(indices)
    defines, out = _scatter_into_copy(p, node)
    k = ishape[-1]
    nupd, slice_size = prod(ishape[:-1]), prod(shape[k:])
    if not nupd * slice_size:
        return
    defines.update({"NUPD": nupd, "K": k, "SLICE": slice_size, "DIMS": list(shape[:k]) or [1]})
    grid = [nupd * slice_size] if defines["REDUCTION"] == 0 else [slice_size]
    p.launch(node, p.kernel("scatter_nd", defines), grid, [p.use(indices), p.use(updates), out])


def _scatter_into_copy(p: Planner, node: Node) -> tuple[dict[str, Any], str]:
    """What ScatterND and ScatterElements share: the reduction and the updates' storage checked, y defined and
    written with a copy of data; (the defines T I_T REDUCTION ACC, y's buffer)."""
    data, indices, updates, y = node.inputs[0], node.inputs[1], node.inputs[2], node.outputs[0]
    reduction = str(node.attrs.get("reduction", "none"))
    if reduction not in rules.SCATTER_REDUCTIONS:
        raise DeviceError(f"OpenCL runtime has no kernel for {node.op} reduction {reduction!r} (node {node.name})")
    tag = p.tag(y)
    if p.tag(updates) != tag:
        raise DeviceError(f"{node.op} {node.name}: updates stored as {p.tag(updates)}, data as {tag}")
    out = p.define(y)
    shape = p.shape(data)
    if prod(shape):
        copy_view(p, node, shape, contiguous_strides(shape))
    defines: dict[str, Any] = {"T": tag, "I_T": p.tag(indices), "REDUCTION": rules.SCATTER_REDUCTIONS.index(reduction),
                               "ACC": "float" if tag in FLOAT_TAGS else "long"}
    return defines, out


@lowers("ScatterElements")
def _lower_scatter_elements(p: Planner, node: Node) -> None:
    """y = data copied, then each update written (or combined) at its position (indexing.cl SCATTER_ELEMENTS)."""
    indices, updates = node.inputs[1], node.inputs[2]
    shape, ishape = p.shape(node.inputs[0]), p.shape(indices)
    axis = positive_axis(int(node.attrs.get("axis", 0)), len(shape))
    if len(ishape) != len(shape) or any(i > d for k, (i, d) in enumerate(zip(ishape, shape)) if k != axis):
        raise DeviceError(f"ScatterElements {node.name}: indices {list(ishape)} reach past data {list(shape)} off "
                          f"axis {axis}")
    defines, out = _scatter_into_copy(p, node)
    if not prod(ishape):
        return
    defines.update({"SIZE": prod(ishape), "RANK": len(ishape), "SHAPE": list(ishape),
                    "Y_STRIDES": contiguous_strides(shape), "AXIS": axis, "AXIS_DIM": shape[axis]})
    grid = [prod(ishape)] if defines["REDUCTION"] == 0 else [1]
    p.launch(node, p.kernel("scatter_elements", defines), grid, [p.use(indices), p.use(updates), out])


def _bits_literal(value: float, tag: str) -> str:
    """A value as the raw bits BITS(tag) holds (indexing.cl moves bits, not numbers)."""
    if tag == "F32":
        return f"{int(np.array(value, np.float32).view(np.uint32))}u"
    if tag == "F16":
        return f"{int(np.array(value, np.float16).view(np.uint16))}u"
    return f"{int(value)}L" if tag == "I64" else str(int(value))


@lowers("Pad")
def _lower_pad(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    shape, out_shape = p.shape(x), p.shape(y)
    rank = len(shape)
    mode = {"constant": 0, "reflect": 1, "edge": 2, "wrap": 3}.get(node.attrs.get("mode", "constant"))
    if mode is None:
        raise DeviceError(f"OpenCL runtime has no kernel for Pad mode {node.attrs['mode']!r} (node {node.name})")
    pads_name = optional(node.inputs, 1)
    pads = ints(p.const(pads_name, "pads", node)) if pads_name else ints(node.attrs.get("pads", [0] * 2 * rank))
    axes_name = optional(node.inputs, 3)
    axes = [positive_axis(a, rank) for a in ints(p.const(axes_name, "axes", node))] if axes_name else list(range(rank))
    begin = [0] * rank
    for i, axis in enumerate(axes):
        begin[axis] = pads[i]
    value_name = optional(node.inputs, 2)
    value = float(p.const(value_name, "constant_value", node).reshape(-1)[0]) if value_name else 0.0
    tag = p.tag(y)
    defines = {"T": tag, "SIZE": prod(out_shape), "RANK": max(rank, 1), "OUT_SHAPE": list(out_shape) or [1]}
    defines.update({"IN_SHAPE": list(shape) or [1], "IN_STRIDES": contiguous_strides(shape) or [0]})
    defines.update({"PAD_BEGIN": begin or [0], "MODE": mode, "VALUE": _bits_literal(value, tag)})
    src = p.use(x)
    p.launch(node, p.kernel("pad", defines), [prod(out_shape)], [src, p.define(y)])
