"""Chains of data-movement ops read as one strided view (planner.View) instead of copied: Reshape-likes, Transpose,
Gather of one constant index, Slice. Attention's operands come out of such chains (ViT splits its fused qkv product
with a Transpose and three Gathers, then moves heads with Reshape and Transpose): a kernel that takes strides reads
them where the producer wrote them.

``compose`` gives the view of a node's output from the view of its input, or None where no strides can say it (a
Reshape that merges dimensions a Transpose has separated, a Gather of several indices).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mace.model.ir import Node
from mace.opencl.plan.indexing import slice_params
from mace.opencl.plan.planner import Planner, View, ints, positive_axis
from mace.opencl.plan.shape import ALIAS_OPS
from mace.opencl.plan.templates import contiguous_strides

VIEW_OPS = (*ALIAS_OPS, "Transpose", "Gather", "Slice")


def view_of(p: Planner, value: str) -> View:
    """How ``value`` is read: its view, else its own buffer in its contiguous layout."""
    return p.views.get(value) or View(value, tuple(contiguous_strides(p.shape(value))))


def reshaped_strides(shape: Sequence[int], strides: Sequence[int], new_shape: Sequence[int]) -> tuple[int, ...] | None:
    """The strides that read a strided tensor of ``shape`` as ``new_shape`` (same elements, row-major order), or None
    where the dims a reshape merges are not contiguous with each other (numpy's no-copy reshape rule).

    >>> reshaped_strides([4, 6], [6, 1], [2, 2, 3, 2])
    (12, 6, 2, 1)
    >>> reshaped_strides([6, 4], [1, 6], [24]) is None  # a transposed matrix does not flatten
    True
    >>> reshaped_strides([3, 1, 4], [4, 99, 1], [1, 12, 1])
    (0, 1, 0)
    """
    if 0 in shape or 0 in new_shape:
        return None
    old = [(int(n), int(s)) for n, s in zip(shape, strides) if n != 1]
    new = [i for i, n in enumerate(new_shape) if n != 1]
    out = [0] * len(new_shape)
    oi = ni = 0
    while oi < len(old) and ni < len(new):
        oj, nj = oi + 1, ni + 1
        osize, nsize = old[oi][0], int(new_shape[new[ni]])
        while osize != nsize:
            if osize < nsize:
                osize *= old[oj][0]
                oj += 1
            else:
                nsize *= int(new_shape[new[nj]])
                nj += 1
        if any(old[k][1] != old[k + 1][1] * old[k + 1][0] for k in range(oi, oj - 1)):
            return None
        stride = old[oj - 1][1]
        for k in range(nj - 1, ni - 1, -1):
            out[new[k]] = stride
            stride *= int(new_shape[new[k]])
        oi, ni = oj, nj
    return tuple(out)


def compose(p: Planner, node: Node, source: View) -> View | None:
    """The view of ``node``'s output when its input is read through ``source``; None where strides cannot say it."""
    shape, out_shape = p.shape(node.inputs[0]), p.shape(node.outputs[0])
    strides = list(source.strides)
    if node.op in ALIAS_OPS:
        if node.op == "Dropout" and any(p.is_used(extra) for extra in node.outputs[1:]):
            return None
        new = reshaped_strides(shape, strides, out_shape)
        return None if new is None else View(source.source, new, source.offset)
    if node.op == "Transpose":
        perm = ints(node.attrs.get("perm", list(range(len(shape)))[::-1]))
        return View(source.source, tuple(strides[d] for d in perm), source.offset)
    if node.op == "Gather":
        index_name = node.inputs[1]
        indices = p.graph.constants.get(index_name)
        if indices is None or indices.size != 1 or indices.ndim > 1:
            return None
        axis = positive_axis(int(node.attrs.get("axis", 0)), len(shape))
        index = int(np.asarray(indices).reshape(()))
        index += shape[axis] if index < 0 else 0
        if not 0 <= index < shape[axis]:
            return None
        offset = source.offset + index * strides[axis]
        kept = strides[:axis] + strides[axis + 1:] if indices.ndim == 0 else strides
        return View(source.source, tuple(kept), offset)
    if node.op == "Slice":
        begin, step = slice_params(p, node)
        offset = source.offset + sum(b * s for b, s in zip(begin, strides))
        return View(source.source, tuple(s * st for s, st in zip(strides, step)), offset)
    return None
