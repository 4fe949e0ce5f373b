"""Matrix products for GPU targets (Planner.gpu): gemm_tiled.cl for Gemm, MatMul and group-1 convolutions (an
implicit GEMM: the kernel gathers the input windows itself), gemv.cl for products with a single row or column
(classifier layers at batch 1).

The portable kernels give each work item a few outputs and a serial loop over k: a GPU then sees a few thousand work
items on a 7x7 layer, each streaming thousands of operands from global memory, and a classifier's 1000 outputs run as
250 work items. Here work-groups share operands through local memory, small outputs split k between work-groups
(tiling_gpu.gpu_gemm_tile), and a GEMV spreads each output's k over a work-group. A conv whose output only a channel
Concat reads writes its slice of the Concat's output directly (placement.place_concat_operands).

Measured on an H200 (benchmarks/gpu_kernels.py), batch 1: MobileNet-v2 2.27 -> 0.71 ms, ResNet-50 7.28 -> 1.19 ms,
Inception-v3 13.2 -> 2.0 ms; the classifier GEMVs 0.7-1.1 ms -> 6-10 us.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mace.model.ir import Node
from mace.opencl.plan.gemm_shape import GemmShape
from mace.opencl.plan.planner import Arg, Planner, optional
from mace.opencl.plan.templates import FLOAT_TAGS, activation_macro, collapse, prod
from mace.opencl.plan.tiling import GemmTile, variant_tile
from mace.opencl.plan.tiling_gpu import gemv_blocking, gpu_gemm_tile


def gpu_gemm(
    p: Planner, node: Node, a: str, b: str, bias: str | None, residual: str | None, out: str, g: GemmShape
) -> None:
    """gemm.gemm for GPU targets: the same contract (out[b][m][n], operands addressed as ``g`` says)."""
    bshape, (a_bs, b_bs, c_bs) = collapse(g.batch, g.a_batch, g.b_batch, g.c_batch)
    nbatch = prod(bshape)
    rows: dict[str, Any] = {}
    if _shares_b(p, out, g, bshape, a_bs, b_bs, c_bs):
        # A batch of products of one B (transformer projections: [batch, tokens, features] @ W, or exported as
        # [tokens, batch, features] through a Transpose view) is one product with the batch folded into m: whole
        # tiles instead of each product's m padded to a block (ViT-B/16's MLP at batch 32, M 197 of each image),
        # and no GEMV per row re-reading B where m is 1 (its qkv projections at batch 1 on an H200: 1.85 -> 0.83 ms).
        # Rows lie uniformly apart unless A is a view whose batch stride is not m rows (A_ROWS).
        m_stride = a_bs[0] if g.m == 1 else g.a_strides[0]
        if g.m > 1 and a_bs[0] != g.m * g.a_strides[0]:
            rows = {"A_ROWS": g.m, "AS_B": a_bs[0]}
        c_strides = (c_bs[0], g.c_strides[1]) if g.m == 1 else g.c_strides
        g = replace(g, m=nbatch * g.m, a_strides=(m_stride, g.a_strides[1]), c_strides=c_strides, batch=())
        g = replace(g, a_batch=(), b_batch=(), c_batch=())
        bshape, (a_bs, b_bs, c_bs) = collapse(g.batch, g.a_batch, g.b_batch, g.c_batch)
        nbatch = prod(bshape)
    batch: dict[str, Any] = {"BATCH": nbatch, "BATCH_RANK": len(bshape) if nbatch > 1 else 0}
    if nbatch > 1:
        batch.update({"BATCH_SHAPE": bshape, "A_BSTRIDES": a_bs, "B_BSTRIDES": b_bs, "C_BSTRIDES": c_bs})
    assert g.y_permute == 1 or (nbatch == 1 and g.m > 1 and g.n > 1), "permuted rows: one product of rows and columns"
    if g.n == 1 and g.m > 1:  # y = A.b is y^T = b^T.A^T: a row times a matrix, with the operands' roles swapped
        swapped = dict(batch, A_BSTRIDES=b_bs, B_BSTRIDES=a_bs) if nbatch > 1 else batch
        b_strides = (g.a_strides[1], g.a_strides[0])
        _gemv(p, node, b, a, bias, residual, out, g.m, g.k, g.b_strides[0], b_strides, g.c_strides[0], g, swapped)
        return
    if g.m == 1:
        _gemv(p, node, a, b, bias, residual, out, g.n, g.k, g.a_strides[1], g.b_strides, g.c_strides[1], g, batch)
        return
    defines: dict[str, Any] = {"A_T": p.tag(a), "B_T": p.tag(b), "Y_T": p.tag(out), "M": g.m, "N": g.n, "K": g.k}
    defines.update({"AS_M": g.a_strides[0], "AS_K": g.a_strides[1], "A_MFAST": g.a_strides[0] == 1, "CONV": 0, **rows})
    defines.update({"BS_K": g.b_strides[0], "BS_N": g.b_strides[1], "B_NFAST": g.b_strides[1] == 1}, **batch)
    can_split = not any(c_bs) or bias is None
    _tiled(p, node, defines, [p.use(a), p.use(b)], bias, g.c_strides, residual, out, g, nbatch, can_split,
           y_permute=g.y_permute)


def gpu_conv(
    p: Planner, node: Node, x: str, w: str, bias: str | None, residual: str | None, y: str, geometry: dict[str, int],
    depthwise: Node | None = None,
) -> None:
    """A group-1 convolution as y[img] = W[OC][C*KD*KH*KW] . im2col(x[img]), the columns gathered in the kernel.
    ``geometry`` holds conv.cl's C ID IH IW OD OH OW KD KH KW SD SH SW PD PH PW DD DH DW; N is the images. With
    ``depthwise`` (a 1x1 ``node`` reading that depthwise conv's output, conv.fuse_depthwise), ``x`` is the depthwise
    conv's input and ``geometry`` its window: the loader computes the depthwise output (CONV 2)."""
    oc, images, c = p.shape(w)[0], p.shape(x)[0], geometry["C"]
    window = 1 if depthwise is not None else geometry["KD"] * geometry["KH"] * geometry["KW"]
    k = c * window
    n = geometry["OD"] * geometry["OH"] * geometry["OW"]
    fold = images if images > 1 and p.policy.gpu_fold_images else 1  # gemm_tiled.cl FOLD: the images along n
    tile = _gpu_tile(p, node, oc, fold * n, k, images // fold, True, conv=True, fused=depthwise is not None)
    # gemm_tiled.cl C_INNER (the channels inner in k, a window position a BK step), where the weights can follow
    wanted = p.policy.gpu_channels_inner if tile.mma else p.policy.gpu_channels_inner_simt
    c_inner = depthwise is None and wanted and c % tile.bk == 0 and (window == 1 or p.is_const(w))
    if p.is_const(w):
        w_buf, a_strides = weights_km(p, w, oc, k, c if c_inner else 0), (1, oc)
    else:
        w_buf, a_strides = p.use(w), (k, 1)
    g = GemmShape(oc, fold * n, k, a_strides, (0, 0), (1, 0))
    defines: dict[str, Any] = {"A_T": p.tag(w), "B_T": p.tag(x), "Y_T": p.tag(y), "M": oc, "N": g.n, "K": k}
    defines.update({"AS_M": a_strides[0], "AS_K": a_strides[1], "A_MFAST": a_strides[0] == 1, "CONV": 1})
    defines.update(geometry, BATCH=images // fold, BATCH_RANK=0, **({"FOLD": n} if fold > 1 else {}))
    if c_inner:
        defines["C_INNER"] = 1
    if c_inner and tile.mma and p.policy.gpu_mma_async and p.tag(w) == p.tag(x) == "F32":
        defines["MMA_ASYNC"] = 1  # cp.async copies raw words: float operands only
    operands: list[Arg] = [w_buf, p.use(x)]
    if depthwise is not None:
        dww, dwb = depthwise.inputs[1], optional(depthwise.inputs, 2)
        defines.update({"CONV": 2, "DWW_T": p.tag(dww), "DW_BIAS": dwb is not None})
        defines.update({**({"DWB_T": p.tag(dwb)} if dwb else {}), "DW_ACTIVATE(v)": activation_macro(depthwise.attrs)})
        operands += [p.use(dww), *([p.use(dwb)] if dwb else [])]
    _tiled(p, node, defines, operands, bias, (1, 0), residual, y, g, images // fold, True, fold, tile)


def weights_km(p: Planner, w: str, m: int, k: int, channels_inner: int = 0) -> str:
    """The buffer of a constant conv weight of m output channels and k terms each, relaid as [K][M]: a loader pass
    reads consecutive output channels (gemm_tiled.cl A_MFAST, block.cl's chunks). One relayout for every reader.
    ``channels_inner`` = C: its k ordered window position first, channel second (gemm_tiled.cl C_INNER); for a 1x1
    window (k = C) that order is the plain one, and so is the buffer."""
    data = p.graph.float_constant(w).reshape(m, k)
    if channels_inner in (0, k):
        return p.derived(f"{w}@km", data.T, p.tag(w))
    data = data.reshape(m, channels_inner, k // channels_inner).transpose(0, 2, 1).reshape(m, k)
    return p.derived(f"{w}@kcm", data.T, p.tag(w))


def _shares_b(
    p: Planner, out: str, g: GemmShape, bshape: list[int], a_bs: list[int], b_bs: list[int], c_bs: list[int]
) -> bool:
    """Whether ``g``'s batch (one dim after collapse) multiplies one B, with the bias's rows and out's rows each
    uniformly apart across the batch (not a slice of a Concat's output with another stride), so it folds into m."""
    if len(bshape) != 1 or bshape[0] == 1 or b_bs[0] != 0 or g.n == 1:
        return False
    bias_rows = g.m == 1 or c_bs[0] == g.m * g.c_strides[0]
    return bias_rows and p.placement.get(out, (out, 0, g.m * g.n))[2] == g.m * g.n


def _gpu_tile(
    p: Planner, node: Node, m: int, n: int, k: int, nbatch: int, can_split: bool, conv: bool, fused: bool = False
) -> GemmTile:
    """The blocking of ``node``'s product on gemm_tiled.cl: the tuned variant's tile or the policy's choice
    (``fused``: a depthwise conv in its loader, CONV 2, which wants its own number of work-groups, and not the
    tensor-core tiles: their 128 work items a block, against 256, leave the loader's taps unhidden, MobileNet-v2's
    M 320 N 49 K 960 projection at batch 32 93 -> 214 us on an H200)."""
    assert p.target is not None
    only = variant_tile(p.variant(node, p.policy.gpu_tile_variants), p.policy)
    policy = p.policy
    if fused:
        policy = replace(policy, gpu_groups_per_cu=policy.gpu_fused_groups_per_cu,
                         gpu_split_min_ktiles=policy.gpu_fused_split_min_ktiles, gpu_mma_tiles=())
    return gpu_gemm_tile(m, n, k, nbatch, p.target, policy, can_split, only, conv=conv)


def _tiled(
    p: Planner,
    node: Node,
    defines: dict[str, Any],
    operands: list[Arg],
    bias: str | None,
    c_strides: tuple[int, int],
    residual: str | None,
    out: str,
    g: GemmShape,
    nbatch: int,
    can_split: bool,
    fold: int = 1,
    tile: GemmTile | None = None,
    y_permute: int = 1,
) -> None:
    """``g``'s product on gemm_tiled.cl, ``nbatch`` of them (``fold``: that many images side by side along n, FOLD),
    with ``tile`` or else _gpu_tile's choice; ``y_permute``: product_launches'."""
    assert p.target is not None
    if tile is None:
        tile = _gpu_tile(p, node, g.m, g.n, g.k, nbatch, can_split, conv=bool(defines["CONV"]),
                         fused=defines["CONV"] == 2)
    splits = tile.splits
    defines.update({"LM": tile.lm, "LN": tile.ln, "TM": tile.tm, "TN": tile.tn, "BK": tile.bk, "VLDS": tile.vlds})
    defines["UNROLL_STEP"] = tile.unroll
    if tile.mma:
        defines["MMA"] = 1
        defines["MMA_PASSES"] = 1 if p.target.tf32 else 3
    defines.update({"SPLITS": splits, "KS": tile.ks if splits > 1 else g.k})
    grid = [-(-g.n // tile.bn) * tile.ln, -(-g.m // tile.bm) * tile.lm, nbatch * splits]
    local = [tile.ln, tile.lm, 1]
    shape = (splits, nbatch * fold, g.m, g.n // fold)  # y's layout: [image][m][position]
    summed = p.target.nvidia_ptx and splits * tile.tm * tile.tn <= p.policy.gpu_split_sum_most
    split_blocks = 0  # the blocks split, and their partial sums' layout, where the kernel sums them
    part: tuple[int, ...] = ()
    if splits > 1 and (summed or tile.split_from):
        # the last piece of a block sums them (SPLIT_SUM): the work-groups in a row, the whole blocks first
        assert p.target.nvidia_ptx, "whole blocks before split ones need the in-kernel sum"
        split_blocks = tile.groups(g.m, g.n, nbatch) - tile.split_from
        defines["SPLIT_FROM"] = tile.split_from
        grid = [(tile.split_from + split_blocks * splits) * tile.ln, tile.lm, 1]
        part = (split_blocks, splits, tile.bm, tile.bn)
    product_launches(p, node, "tgemm", defines, operands, (out, bias, c_strides, residual), shape, (grid, local),
                     split_blocks, (g.alpha, g.beta), part, y_permute)


def product_launches(
    p: Planner,
    node: Node,
    family: str,
    defines: dict[str, Any],
    operands: list[Arg],
    writes: tuple[str, str | None, tuple[int, int], str | None],
    shape: tuple[int, int, int, int],
    sizes: tuple[list[int], list[int]],
    sum_groups: int,
    scale: tuple[float, float] = (1.0, 1.0),
    summed_part: tuple[int, ...] = (),
    y_permute: int = 1,
) -> None:
    """The launches of a work-group tiled product (``family``: gemm_tiled.cl's tgemm, block.cl's irblock) whose
    ``writes`` = (out, bias, bias strides (m, n), residual) get the conv/GEMM epilogue, ``shape`` = (splits, batch,
    m, n), ``sizes`` = (global, local), ``scale`` = (ALPHA, BETA). With one split the product's launch applies the
    epilogue; with more, its work-groups write partial sums to part[splits][batch][m][n] (or ``summed_part``, the
    kernel's own layout), summed (in the same order) by the last of each block's work-groups where ``sum_groups``
    (the blocks split, counted in Planner.counters: SPLIT_SUM, NVIDIA targets) or else by a second launch
    (SPLIT_K_SUM). ``out`` may be a slice of a Concat's output (placement.py), or with ``y_permute`` Q > 1 (gemm_tiled's
    only) take row r * Q + q at row q * (m / Q) + r, and the residual from there (GemmShape.y_permute)."""
    out, bias, c_strides, residual = writes
    splits, batch, m, n = shape
    grid, local = sizes
    root, offset, bstride = p.placement.get(out, (out, 0, m * n))  # a slice of a Concat's output (placement.py)
    epilogue: dict[str, Any] = {"Y_T": p.tag(out), "Y_BSTRIDE": bstride, "Y_OFFSET": offset}
    epilogue.update({"ALPHA": scale[0], "BETA": scale[1], "HAS_BIAS": bias is not None})
    if y_permute > 1:
        assert batch == 1 and m % y_permute == 0 and out not in p.placement, "permuted rows: one unplaced product"
        epilogue["Y_PERMUTE"] = y_permute
    tail: list[Arg] = []
    if bias is not None:
        epilogue.update({"C_T": p.tag(bias), "CS_M": c_strides[0], "CS_N": c_strides[1]})
        tail.append(p.use(bias))
    p.epilogue(node, epilogue, tail, residual)
    if splits == 1:
        p.launch(node, p.kernel(family, {**defines, **epilogue}), grid, [*operands, *tail, p.define(root)], local)
        return
    part = p.scratch(f"{out}@splitk", summed_part or (splits, batch, m, n), "F32")
    if sum_groups:
        args = [*operands, part, p.counters(sum_groups), *tail, p.define(root)]
        p.launch(node, p.kernel(family, {**defines, **epilogue, "SPLIT_SUM": 1}), grid, args, local)
        return
    p.launch(node, p.kernel(family, defines), grid, [*operands, part], local)
    epilogue.update({"M": m, "N": n, "BATCH": batch, "SPLITS": splits})
    p.launch(node, p.kernel("ksum", epilogue), [batch * m * n], [part, *tail, p.define(root)])


def _gemv(
    p: Planner,
    node: Node,
    a: str,
    b: str,
    bias: str | None,
    residual: str | None,
    out: str,
    n: int,
    k: int,
    as_k: int,
    b_strides: tuple[int, int],
    cs_n: int,
    g: GemmShape,
    batch: dict[str, Any],
) -> None:
    """out[b][n] = epilogue(sum_k a[b][k * as_k] * B[b][k][n]), B at ``b_strides`` (k, n), the bias at n * cs_n."""
    kfast = b_strides[0] == 1
    ln, lk, vec = gemv_blocking(kfast, k, p.policy)
    if not (kfast and as_k == 1 and p.tag(a) in FLOAT_TAGS and p.tag(b) in FLOAT_TAGS):
        vec = 1
    defines: dict[str, Any] = {"A_T": p.tag(a), "B_T": p.tag(b), "Y_T": p.tag(out), "N": n, "K": k}
    defines.update({"LN": ln, "LK": lk, "VEC": vec, "KFAST": kfast, "AS_K": as_k, "BS_K": b_strides[0]})
    defines.update({"BS_N": b_strides[1], **batch, "ALPHA": g.alpha, "BETA": g.beta, "HAS_BIAS": bias is not None})
    args: list[Arg] = [p.use(a), p.use(b)]
    if bias is not None:
        defines.update({"C_T": p.tag(bias), "CS_N": cs_n})
        args.append(p.use(bias))
    p.epilogue(node, defines, args, residual)
    args.append(p.define(out))
    columns = -(-n // ln) * ln
    nbatch = batch["BATCH"]
    grid, local = ([lk, columns, nbatch], [lk, ln, 1]) if kfast else ([columns, lk, nbatch], [ln, lk, 1])
    p.launch(node, p.kernel("gemv", defines), grid, args, local)
