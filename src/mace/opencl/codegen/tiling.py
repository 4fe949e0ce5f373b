"""Work per work item: the blocking each tiled kernel gets (gemm.cl, conv.cl, depthwise.cl).

One place for these choices, so a tuner can replace them. They must depend on the graph only (never on the device):
the program source, and so the cached binary, follow from them. Big blocks let CPU drivers (pocl) use SIMD and reuse
loads; GPUs want many work items. So each op takes the biggest block that still leaves MIN_WORK_ITEMS work items: big
layers get big blocks (good everywhere), small layers (7x7 maps at batch 1) small ones, which keeps a GPU busy. On an
H200 this is within 5% of the best fixed blocking per model, where the biggest blocks everywhere are up to 1.9x slower;
pocl on 16 cores is indifferent, but pocl on 2 cores runs 2x faster with the biggest blocks everywhere
(MIN_WORK_ITEMS = 0): a per-device value is the tuner's to pick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from .templates import prod

if TYPE_CHECKING:
    from .gemm import GemmShape

MIN_WORK_ITEMS = 8192  # read at each call: tests (and a tuner) may set it on this module

_Block = TypeVar("_Block")


def _biggest(candidates: Sequence[_Block], work_items: Callable[[_Block], int]) -> _Block:
    return next((c for c in candidates if work_items(c) >= MIN_WORK_ITEMS), candidates[-1])


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def gemm_tiling(g: GemmShape, floats: bool) -> tuple[int, int, int, int]:
    """(TM, TN, VEC_N, VEC_K) for gemm.cl: vectors along whichever of n or k is contiguous in memory."""
    batch = prod(g.batch)

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
    ow, rows = out_spatial[-1], prod(out_spatial[:-1])
    blocks = [(b, min(p, ow)) for b, p in ((8, 4), (4, 4), (4, 2), (2, 2), (1, 1)) if oc_per_group % b == 0]
    return _biggest(blocks, lambda c: n * groups * (oc_per_group // c[0]) * rows * _ceil_div(ow, c[1]))


def depthwise_tiling(n: int, oc: int, oh: int, ow: int) -> int:
    """PB for depthwise.cl: output columns per work item, a vector width."""
    widths = [v for v in (8, 4, 2, 1) if v <= ow]
    return _biggest(widths, lambda v: n * oc * oh * _ceil_div(ow, v))
