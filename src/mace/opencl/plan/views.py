"""Chains of data-movement ops read as one strided view (planner.View) instead of copied: Reshape-likes, Transpose,
Gather of one constant index, Slice. Attention's operands come out of such chains (ViT splits its fused qkv product
with a Transpose and three Gathers, then moves heads with Reshape and Transpose): a kernel that takes strides reads
them where the producer wrote them.

``compose`` gives the view of a node's output from the view of its input, or None where no strides can say it (a
Gather of several indices, a Reshape whose dims do not nest). On the way a value may be a ``Refined`` view, finer than
its shape: a Reshape that merges dims lying apart (the heads of a [tokens, batch, features] slice merged with the
batch, at batch > 1) keeps them as separate dims, grouped, until a Transpose and a Reshape part them again; only the
values kernels read must have one stride per dim (``Refined.exact``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Refined:
    """A view over finer dims than its value's: fine dim j has size ``dims[j]`` and stride ``strides[j]`` in
    ``source``'s buffer, and the value's dim d spans the next ``groups[d]`` fine dims (row-major within it)."""

    source: str
    dims: tuple[int, ...]
    strides: tuple[int, ...]
    groups: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def of(view: View, shape: Sequence[int]) -> Refined:
        return Refined(view.source, tuple(int(n) for n in shape), view.strides, (1,) * len(shape), view.offset)

    def spans(self) -> list[tuple[int, int]]:
        """(first fine dim, end) of each dim of the value."""
        out, at = [], 0
        for g in self.groups:
            out.append((at, at + g))
            at += g
        return out

    def permuted(self, perm: Sequence[int]) -> Refined:
        """The value's dims reordered as a Transpose with ``perm`` does (each moving its fine dims with it)."""
        spans = self.spans()
        order = [j for d in perm for j in range(*spans[d])]
        return Refined(self.source, tuple(self.dims[j] for j in order), tuple(self.strides[j] for j in order),
                       tuple(self.groups[d] for d in perm), self.offset)

    def exact(self) -> View | None:
        """The plain view, where each dim's fine dims lie as one (else None: no single stride reads it)."""
        strides = []
        for a, b in self.spans():
            kept = [(n, s) for n, s in zip(self.dims[a:b], self.strides[a:b]) if n != 1]
            if any(s != s2 * n2 for (_, s), (n2, s2) in itertools.pairwise(kept)):
                return None
            strides.append(kept[-1][1] if kept else 0)
        return View(self.source, tuple(strides), self.offset)


def _boundaries(sizes: Sequence[int]) -> list[int]:
    """The products of each suffix of ``sizes`` (the element counts that row-major dims end on), 1 first."""
    out, acc = [1], 1
    for n in reversed(sizes):
        acc *= int(n)
        out.append(acc)
    return out


def refine_reshape(view: Refined, new_shape: Sequence[int]) -> Refined | None:
    """``view`` read as ``new_shape``: the fine dims split where a new dim ends inside one, and grouped by the new
    dims; None where the two shapes' dims do not nest (a boundary of one that the other's cannot be cut at).

    >>> r = refine_reshape(Refined("x", (197, 32, 768), (73728, 2304, 1), (1, 1, 1)), [197, 384, 64])
    >>> r.dims, r.strides, r.groups, r.exact() is None
    ((197, 32, 12, 64), (73728, 2304, 64, 1), (1, 2, 1), True)
    >>> refine_reshape(Refined("x", (6, 4), (4, 1), (1, 1)), [4, 6]) is None
    True
    """
    if 0 in view.dims or 0 in new_shape:
        return None
    cuts = sorted(set(_boundaries(view.dims)) | set(_boundaries(new_shape)))
    if any(b % a for a, b in itertools.pairwise(cuts)):
        return None
    dims: list[int] = []
    strides: list[int] = []
    inner = 1  # elements in the fine dims after this one
    for n, st in zip(reversed(view.dims), reversed(view.strides)):
        if n == 1:
            continue
        at = inner
        for b in cuts:  # the cuts inside this dim split it (innermost part first)
            if inner < b < inner * n:
                dims.append(b // at)
                strides.append(st * (at // inner))
                at = b
        dims.append(inner * n // at)
        strides.append(st * (at // inner))
        inner *= n
    dims.reverse()
    strides.reverse()
    groups = []
    sizes = [int(n) for n in new_shape]
    j = 0
    for n in sizes:  # each new dim takes fine dims until their product is its size (size-1 dims take none)
        count, size = 0, 1
        while size < n:
            size *= dims[j + count]
            count += 1
        if n == 1:
            dims.insert(j, 1)
            strides.insert(j, 0)
            count = 1
        groups.append(count)
        j += count
    return Refined(view.source, tuple(dims), tuple(strides), tuple(groups), view.offset)


def compose(p: Planner, node: Node, source: Refined) -> Refined | None:
    """The view of ``node``'s output when its input is read through ``source``; None where strides cannot say it."""
    shape = p.shape(node.inputs[0])
    if node.op in ALIAS_OPS:
        if node.op == "Dropout" and any(p.is_used(extra) for extra in node.outputs[1:]):
            return None
        return refine_reshape(source, p.shape(node.outputs[0]))
    if node.op == "Transpose":
        return source.permuted(ints(node.attrs.get("perm", list(range(len(shape)))[::-1])))
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
        a, b = source.spans()[axis]
        offset = source.offset
        for j in reversed(range(a, b)):  # the index's place in the dim's fine dims (row-major)
            offset += (index % source.dims[j]) * source.strides[j]
            index //= source.dims[j]
        if indices.ndim == 0:
            dims, strides = source.dims[:a] + source.dims[b:], source.strides[:a] + source.strides[b:]
            groups = source.groups[:axis] + source.groups[axis + 1:]
        else:  # a dim of one element remains
            dims, strides = (*source.dims[:a], 1, *source.dims[b:]), (*source.strides[:a], 0, *source.strides[b:])
            groups = (*source.groups[:axis], 1, *source.groups[axis + 1:])
        return Refined(source.source, dims, strides, groups, offset)
    if node.op == "Slice":
        plain = source.exact()
        if plain is None:
            return None
        begin, step = slice_params(p, node)
        offset = plain.offset + sum(b * s for b, s in zip(begin, plain.strides))
        view = View(plain.source, tuple(s * st for s, st in zip(plain.strides, step)), offset)
        return Refined.of(view, p.shape(node.outputs[0]))
    return None
