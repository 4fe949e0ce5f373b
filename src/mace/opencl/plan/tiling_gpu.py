"""GPU targets' tiling (DeviceTarget.tiled): gemm_tiled.cl's work-group tile and k split for a product or a
convolution (gpu_gemm_tile, with NVIDIA's whole waves then pieces), block.cl's blocking of an inverted residual
block, gemv.cl's lanes, attention.cl's query rows and the direct kernels' work-item floor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from mace.opencl.plan.tiling import (  # noqa: F401 (DEFAULT_POLICY, MMA_TILES: the doctests')
    DEFAULT_POLICY,
    MMA_TILES,
    DeviceTarget,
    GemmTile,
    TilingPolicy,
    ceil_div,
)


def gpu_gemm_tile(
    m: int,
    n: int,
    k: int,
    batch: int,
    target: DeviceTarget,
    policy: TilingPolicy,
    can_split: bool = True,
    only: GemmTile | None = None,
    conv: bool = False,
) -> GemmTile:
    """The biggest of ``policy.gpu_tiles`` (not mostly padding; for a convolution, not ``products_only``) that fills
    ``policy.gpu_groups_per_cu`` work-groups per compute unit (a matrix product: ``gpu_product_groups_per_cu``),
    splitting k between work-groups where its blocks alone are too few; if none can, the one that comes closest.
    Where its blocks make a quarter of a wave or more on an NVIDIA target, k is split as _tail_split's model of the
    waves says instead (whole waves of blocks, then pieces: GemmTile.split_from). ``only``: that tile (a tuned
    variant), with k split as for any other."""
    want = (policy.gpu_groups_per_cu if conv else policy.gpu_product_groups_per_cu) * target.compute_units
    allowed = [t for t in policy.gpu_tiles if not (conv and t.products_only)] or list(policy.gpu_tiles)
    # (at TF32 accuracy a product's one pass beats the SIMT tiles too)
    if target.tensor_cores and k >= policy.gpu_mma_min_k and (conv or policy.gpu_mma_products or target.tf32):
        fewest = policy.gpu_mma_min_groups_per_cu * target.compute_units
        if m * n * k * batch >= policy.gpu_mma_min_macs:
            allowed = [*(t for t in policy.gpu_mma_tiles if t.groups(m, n, batch) >= fewest), *allowed]
    # tensor-core tiles first, then the biggest (a stable sort: equals keep the policy's order)
    by_size = sorted(allowed, key=lambda t: (t.mma, t.bm * t.bn, t.tm * t.tn), reverse=True)
    fitting = [t for t in by_size if t.fill(m, n) >= policy.gpu_min_fill and _fits(t, target)]
    fitting = _fullest_mma_first(fitting, m, n, policy.gpu_mma_fill_gain)
    tiles = [only] if only is not None else fitting or by_size[-1:]

    def most_splits(t: GemmTile) -> int:
        if not can_split:
            return 1
        most = max(1, ceil_div(k, t.bk) // policy.gpu_split_min_ktiles)
        return min(most, t.max_splits) if t.max_splits else most

    def parallel(t: GemmTile) -> int:
        return t.groups(m, n, batch) * most_splits(t)

    tile = next((t for t in tiles if parallel(t) >= want), None)
    if tile is None:
        tile = max(tiles, key=parallel)  # the first of equals: the biggest
    groups = tile.groups(m, n, batch)
    ksteps = ceil_div(k, tile.bk)
    split_from = 0
    if (can_split and target.nvidia_ptx and policy.gpu_tail_split and tile.per_cu
            and groups > policy.gpu_tail_min_waves * tile.per_cu * target.compute_units):
        most = min(ksteps // policy.gpu_split_min_ktiles, policy.gpu_tail_most_splits)
        split_from, splits = _tail_split(groups, ksteps, most, target.compute_units, tile.per_cu, policy)
    else:
        wanted = ceil_div(want, groups) if policy.gpu_split_round_up else want // groups
        if not conv and policy.gpu_product_resident_items_per_cu and wanted >= 1:
            wanted = _fullest_last_wave(groups, (want // groups, ceil_div(want, groups)), most_splits(tile),
                                        max(1, policy.gpu_product_resident_items_per_cu // (tile.lm * tile.ln))
                                        * target.compute_units)
        splits = min(max(1, wanted), most_splits(tile))
    if splits <= 1:
        return tile
    ks = ceil_div(ksteps, splits) * tile.bk
    return replace(tile, splits=ceil_div(k, ks), ks=ks, split_from=split_from)


def _fullest_mma_first(tiles: list[GemmTile], m: int, n: int, gain: float) -> list[GemmTile]:
    """``tiles`` with a later tensor-core tile of the first one's size moved before it where its blocks are more
    than ``gain`` times as full (TilingPolicy.gpu_mma_fill_gain).

        >>> big, narrow = MMA_TILES
        >>> [t.bm for t in _fullest_mma_first([big, narrow], 96, 1 << 16, 1.25)]
        [32, 64]
        >>> [t.bm for t in _fullest_mma_first([big, narrow], 160, 1 << 16, 1.25)]
        [64, 32]
    """
    if not tiles or not tiles[0].mma:
        return tiles
    first = tiles[0]
    same = [t for t in tiles[1:] if t.mma and t.bm * t.bn == first.bm * first.bn]
    best = max(same, key=lambda t: t.fill(m, n), default=first)
    if best.fill(m, n) <= gain * first.fill(m, n):
        return tiles
    return [best, *(t for t in tiles if t is not best)]


def _waves(groups: int, cus: int, per_cu: int, lone: float) -> float:
    """The time ``groups`` equal work-groups take on ``cus`` compute units that hold ``per_cu`` each, in waves: a full
    wave counts 1, the last one the time of its busiest compute unit, whose r work-groups take lone + (1 - lone) (r -
    1) / (per_cu - 1) of a full wave's time.

        >>> _waves(528, 132, 2, 0.6), _waves(300, 132, 2, 0.6), _waves(400, 132, 2, 0.6)
        (2, 1.6, 2.0)
    """
    full, rest = divmod(groups, cus * per_cu)
    if not rest:
        return full
    busiest = ceil_div(rest, cus)
    return full + (lone + (1 - lone) * (busiest - 1) / (per_cu - 1) if per_cu > 1 else 1.0)


def _tail_split(blocks: int, ksteps: int, most: int, cus: int, per_cu: int, policy: TilingPolicy) -> tuple[int, int]:
    """(split_from, splits): the first split_from of ``blocks`` whole (whole waves of them), each later one split
    into ``splits`` pieces of its ``ksteps`` BK steps (at most ``most``; 1: none split), for the least time by
    _waves, in units of a block's: a piece takes 1 / splits of it and ``policy.gpu_piece_steps`` steps more, and the
    last piece of the last block half a step a piece to sum them. Only where that saves ``policy.gpu_tail_min_gain``
    of the whole blocks' time; ties take fewer splits.

        >>> h200 = (132, 2, DEFAULT_POLICY)
        >>> _tail_split(300, 384, 8, *h200), _tail_split(576, 96, 8, *h200), _tail_split(900, 96, 8, *h200)
        ((264, 7), (528, 5), (0, 1))
    """
    whole = float(_waves(blocks, cus, per_cu, policy.gpu_lone_time))
    best = (whole * (1 - policy.gpu_tail_min_gain), 1, 0)
    slots = cus * per_cu
    for waves in range(blocks // slots + 1):
        rest = blocks - waves * slots
        for splits in range(2, most + 1) if rest else ():
            piece = 1 / splits + policy.gpu_piece_steps / ksteps
            t = waves + _waves(rest * splits, cus, per_cu, policy.gpu_lone_time) * piece + splits / (2 * ksteps)
            best = min(best, (t, splits, -waves * slots))
    return -best[2], best[1]


def _fullest_last_wave(groups: int, choices: tuple[int, ...], most: int, slots: int) -> int:
    """Of ``choices`` (k splits, at most ``most``; the first where that makes less than two waves of ``slots``:
    nothing then waits for a slot), the one whose ``groups`` x splits work-groups fill their waves best; ties take
    the fewer splits.

        >>> _fullest_last_wave(300, (1, 2), 4, 264), _fullest_last_wave(192, (2, 3), 4, 264)
        (2, 2)
        >>> _fullest_last_wave(126, (4, 5), 100, 1056)
        4
    """
    allowed = sorted({min(max(1, c), most) for c in choices})
    if groups * allowed[0] <= slots:
        return allowed[0]
    return max(allowed, key=lambda s: (Fraction(groups * s, ceil_div(groups * s, slots) * slots), -s))


def _fits(tile: GemmTile, target: DeviceTarget) -> bool:
    return tile.lm * tile.ln <= target.max_work_group_size and tile.local_bytes <= target.local_mem_bytes


@dataclass(frozen=True)
class BlockWindow:
    """An inverted residual block's shape (block.cl): channels in, expanded and out, the depthwise conv's input and
    output maps (H, W) and window (kernel, strides, dilations, leading pads; each (H, W)), and the images."""

    cin: int
    ce: int
    cout: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int]
    images: int

    def halo(self, th: int, tw: int) -> tuple[int, int]:
        """The input window (rows, columns) of a th x tw tile of outputs."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        return (th - 1) * sh + (kh - 1) * dh + 1, (tw - 1) * sw + (kw - 1) * dw + 1


@dataclass(frozen=True)
class BlockTile:
    """block.cl's blocking: a work-group of ``nt`` work items computes a th x tw tile of output positions and ``bco``
    output channels over ``ks`` expanded channels (``splits`` work-groups share a tile's), ``ck`` at a time, the
    expand staging ``bki`` input channels at a time. The work items' layouts: the expand's ck x halo outputs as lac x
    lap (tac x tap each), the projection's bco x th * tw as lco x lcp (tco x tcp each)."""

    th: int
    tw: int
    ck: int
    bki: int
    bco: int
    splits: int
    ks: int
    lac: int
    lap: int
    tac: int
    tap: int
    lco: int
    lcp: int
    tco: int
    tcp: int
    nt: int

    def groups(self, b: BlockWindow) -> int:
        """Work-groups per image and split."""
        (oh, ow) = b.out_hw
        return ceil_div(oh, self.th) * ceil_div(ow, self.tw) * ceil_div(b.cout, self.bco)


def block_local_floats(b: BlockWindow, th: int, tw: int, ck: int, bki: int, bco: int) -> int:
    """The local memory block.cl's work-groups take, in floats: x and we staged, e on the halo, d, the chunk's wp and
    dww."""
    hh, hw = b.halo(th, tw)
    return bki * hh * hw + bki * ck + ck * hh * hw + ck * th * tw + ck * bco + ck * b.kernel[0] * b.kernel[1]


def gpu_block_tile(b: BlockWindow, target: DeviceTarget, policy: TilingPolicy) -> BlockTile | None:
    """The blocking of an inverted residual block on block.cl, or None where no tile fits the local memory and
    register budgets or the policy's bounds on chunks and partial sums (then the block stays two launches,
    conv.fuse_depthwise's). The tile of output positions (at most ``policy.gpu_block_most_positions``) that costs the
    least expand work recomputed on the halos plus projection padded past the map, the biggest chunks of expanded
    channels that fit; output channels split into blocks where one work item would hold more than
    ``policy.gpu_block_most_accumulators`` sums; and the expanded channels split between work-groups until there are
    ``policy.gpu_block_groups_per_cu`` per compute unit.

        >>> h200 = DeviceTarget(is_gpu=True, compute_units=132, local_mem_bytes=49152, max_work_group_size=1024)
        >>> b = BlockWindow(32, 192, 32, (28, 28), (28, 28), (3, 3), (1, 1), (1, 1), (1, 1), 1)
        >>> t = gpu_block_tile(b, h200, DEFAULT_POLICY)
        >>> (t.th, t.tw, t.ck, t.bco, t.splits, t.ks)
        (7, 7, 32, 32, 6, 32)
        >>> gpu_block_tile(replace(b, images=32), h200, DEFAULT_POLICY) is None  # 6 chunks a work-group
        True
    """
    nt = policy.gpu_block_work_items
    if nt > target.max_work_group_size:
        return None
    (oh, ow), most = b.out_hw, policy.gpu_block_most_accumulators
    budget = min(target.local_mem_bytes, policy.gpu_block_local_bytes) // 4

    def layout(rows: int, cols: int, exact_rows: bool) -> tuple[int, int, int, int] | None:
        """(L rows, L cols, T rows, T cols): nt work items over a rows x cols block, rows ones dividing it where
        ``exact_rows``; the least time a k step of a work item takes, its T rows x T cols multiply-adds and T rows +
        T cols reads of local memory, a read costing as much as 4 multiply-adds (32 reads and 128 multiply-adds a
        clock on a compute unit of a recent NVIDIA GPU); of equals, the fewest padded outputs."""
        best: tuple[tuple[int, int], tuple[int, int, int, int]] | None = None
        for lr in (1, 2, 4, 8, 16, 32, 64):
            if nt % lr or (exact_rows and rows % lr):
                continue
            lc = nt // lr
            tr, tc = ceil_div(rows, lr), ceil_div(cols, lc)
            if tr * tc > most:
                continue
            key = (tr * tc + 4 * (tr + tc), lr * tr * lc * tc)
            if best is None or key < best[0]:
                best = (key, (lr, lc, tr, tc))
        return None if best is None else best[1]

    def projection(positions: int) -> tuple[int, int, tuple[int, int, int, int]] | None:
        """(output channels a block, blocks, the projection's layout) for a tile of ``positions``: the fewest
        blocks whose layout holds."""
        for cblocks in range(1, b.cout + 1):
            bco = ceil_div(b.cout, cblocks)
            lay = layout(bco, positions, False)
            if lay is not None:
                return bco, cblocks, lay
        return None

    # every tile of output positions with its cost (expand work on the halos plus the projection padded past the
    # map, per expanded channel), cheapest first (of equals, the most positions, then the first listed); the first
    # whose chunks fit the local memory and whose expand has a layout is taken
    projections = {positions: projection(positions) for positions in range(1, policy.gpu_block_most_positions + 1)}
    candidates = []
    for th in range(1, min(oh, 16) + 1):
        for tw in range(1, min(ow, 16) + 1):
            proj = projections.get(th * tw)
            if proj is None:
                continue
            hh, hw = b.halo(th, tw)
            tiles = ceil_div(oh, th) * ceil_div(ow, tw)
            cost = tiles * proj[1] * (hh * hw * b.cin + th * tw * proj[0])
            candidates.append(((cost, -th * tw), th, tw, proj))
    # input channels staged at a time: all of them where they fit (one round trip to memory a chunk), else 32 ... 8
    staged = sorted({min(v, ceil_div(b.cin, 8) * 8) for v in (64, 32, 16, 8)}, reverse=True)
    for _, th, tw, (bco, _, (lco, lcp, tco, tcp)) in sorted(candidates, key=lambda c: c[0]):
        hh, hw = b.halo(th, tw)
        sizes = [(ck, bki) for ck in (32, 16, 8) for bki in staged
                 if block_local_floats(b, th, tw, ck, bki, bco) <= budget]
        expand = next(((ck, bki, lay) for ck, bki in sizes if (lay := layout(ck, hh * hw, True))), None)
        if expand is not None:
            ck, bki, (lac, lap, tac, tap) = expand
            tile = BlockTile(th, tw, ck, bki, bco, 1, 0, lac, lap, tac, tap, lco, lcp, tco, tcp, nt)
            break
    else:
        return None
    chunks = ceil_div(b.ce, tile.ck)
    want = policy.gpu_block_groups_per_cu * target.compute_units
    splits = min(chunks, max(1, want // (tile.groups(b) * b.images)))
    ks = ceil_div(chunks, splits) * tile.ck
    tile = replace(tile, splits=ceil_div(b.ce, ks), ks=ks)
    sums = tile.splits * ceil_div(tile.bco * tile.th * tile.tw, nt) if tile.splits > 1 else 0
    if ks // tile.ck > policy.gpu_block_most_chunks or sums > policy.gpu_block_most_sums:
        return None
    return tile


def gemv_blocking(k_contiguous: bool, k: int, policy: TilingPolicy) -> tuple[int, int, int]:
    """(LN, LK, VEC) for gemv.cl: columns and k slices per work-group, and the k vector width of a load."""
    if k_contiguous:
        return 4, policy.gemv_k_lanes, 4 if k >= 4 * policy.gemv_k_lanes else 1
    return policy.gemv_n_lanes[0], policy.gemv_n_lanes[1], 1


def attention_rows(sq: int, batch_heads: int, d: int, dv: int, target: DeviceTarget, policy: TilingPolicy,
                   variant: int) -> int:
    """BQ, the query rows per work-group of attention.cl's tiled form (0: its per-row form): 32 where that gives
    every compute unit a work-group, else 16 (``variant`` 1 swaps them, 2 asks for the per-row form); 0 where the
    shapes do not suit the tiled form (D or DV not a multiple of 4) or its local memory does not fit.

        >>> h200 = DeviceTarget(is_gpu=True, compute_units=132, local_mem_bytes=49152, max_work_group_size=1024)
        >>> attention_rows(197, 12, 64, 64, h200, DEFAULT_POLICY, 0), attention_rows(197, 96, 64, 64, h200,
        ...                                                                         DEFAULT_POLICY, 0)
        (16, 32)
        >>> attention_rows(197, 12, 64, 50, h200, DEFAULT_POLICY, 0), attention_rows(197, 12, 64, 64, h200,
        ...                                                                         DEFAULT_POLICY, 2)
        (0, 0)
    """
    if variant == 2 or d % 4 or dv % 4:
        return 0
    big = -(-sq // 32) * batch_heads >= policy.gpu_attention_groups_per_cu * target.compute_units
    rows = 32 if big != (variant == 1) else 16

    def local_bytes(bq: int) -> int:  # Q, K, V blocks, the weights, the row partials (attention.cl)
        return 4 * (bq * (d + 4) + 32 * (d + 4) + 32 * (-(-dv // 32) * 32) + bq * 36 + 5 * bq)

    for bq in (rows, 16):
        if local_bytes(bq) <= target.local_mem_bytes:
            return bq
    return 0


def gpu_min_work_items(target: DeviceTarget, policy: TilingPolicy) -> int:
    """``min_work_items`` for the direct kernels (conv.cl, depthwise.cl) on a GPU target: enough work items to fill
    every compute unit."""
    return policy.gpu_work_items_per_cu * target.compute_units
