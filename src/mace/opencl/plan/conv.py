"""Conv and ConvTranspose (1D to 3D, grouped, dilated, fused bias/residual/activation).

Conv takes one of three kernels:
- a 1x1 conv with stride 1 and no padding is a per-image GEMM ([OC x C] . [C x HW]) on gemm.cl (gemm.py);
- a depthwise conv (group == C, one input channel per group, 1D or 2D) runs on depthwise.cl (on a CPU target, fp32:
  depthwise_cpu.cl, VW output columns per work item as one vector);
- anything else runs on conv.cl (on a CPU target, 1D/2D fp32: conv_cpu.cl, TM channels x VW columns per work
  item), each work item computing OCB output channels x PB columns (tiling.py). Constant
  weights are re-laid out on the host as [OC/OCB][C/G][K...][OCB], so a work item reads its OCB weights as a vector;
  run-time weights keep OIHW, which is that layout for OCB = 1.
On a GPU target (Planner.gpu) every group-1 conv is instead an implicit GEMM on gemm_tiled.cl (gemm_tiled.py), and
a depthwise conv that only such a 1x1 conv reads is computed by that GEMM's loader (fuse_depthwise): MobileNet's
inverted residual blocks become two launches, not three (on NVIDIA, whose k splits need no second launch), and where
block.cl's work-groups can each take one chunk of the expanded channels, one (fuse_blocks, block.py).

Window attributes and pads (auto_pad, ConvTranspose's output_shape) are mace.model.rules', as in the reference ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mace.errors import DeviceError
from mace.model import rules
from mace.model.ir import Node
from mace.opencl.plan.block import gpu_block
from mace.opencl.plan.gemm import gemm
from mace.opencl.plan.gemm_cpu import cpu_gemm_applies
from mace.opencl.plan.gemm_shape import GemmShape
from mace.opencl.plan.gemm_tiled import gpu_conv
from mace.opencl.plan.planner import Arg, Planner, epilogue_split, lowers, optional, prepass
from mace.opencl.plan.templates import FLOAT_TAGS, prod, to3d
from mace.opencl.plan.tiling import (
    CPU_ROW_VARIANTS,
    WORK_ITEM_FLOOR_VARIANTS,
    conv_tiling,
    depthwise_tiling,
    variant_floor,
    variant_rows,
)
from mace.opencl.plan.tiling_cpu import cpu_conv_blocking, cpu_depthwise_blocking
from mace.opencl.plan.tiling_gpu import BlockWindow, gpu_block_tile, gpu_min_work_items


def _conv_window(node: Node, in_sp: Sequence[int], kernel: Sequence[int]) -> tuple[list[int], ...]:
    """(kernel_shape, strides, leading pads, dilations) of a Conv, by rules.window_attrs and rules.resolve_pads."""
    k, s, d = rules.window_attrs(node.attrs, len(in_sp), kernel)
    lead, _ = rules.resolve_pads(node.attrs, in_sp, k, s, d, node.op)
    return k, s, lead, d


def takes_gpu_gemm(p: Planner, node: Node) -> bool:
    """Whether Conv ``node`` runs on gemm_tiled.cl (gemm_tiled.gpu_conv): on GPU targets, every group-1 conv but a
    pointwise one at a single output position (a GEMV)."""
    if not p.gpu or int(node.attrs.get("group", 1)) != 1:
        return False
    xs, ys = p.shape(node.inputs[0]), p.shape(node.outputs[0])
    if not 1 <= len(xs) - 2 <= 3:
        return False
    return not (_is_pointwise(p, node) and prod(ys) == ys[1])


def writes_slices(p: Planner, node: Node) -> bool:
    """Whether Conv ``node``'s kernel can store its output in a slice of a bigger buffer (placement.py): gemm_tiled.cl
    on GPU targets (takes_gpu_gemm); on CPU targets gemm_cpu.cl for a 1x1 conv (gemm_cpu.cpu_gemm_applies) and
    conv_cpu.cl (_takes_conv_cpu)."""
    if p.gpu:
        return takes_gpu_gemm(p, node)
    if not p.cpu:
        return False
    core, residual = epilogue_split(node)
    if int(node.attrs.get("group", 1)) == 1 and _is_pointwise(p, node):
        return cpu_gemm_applies(p, core[1], core[0], optional(core, 2), residual, node.outputs[0],
                                _pointwise_shape(p, node))
    return not _depthwise_geometry(p, node) and _takes_conv_cpu(p, node)


def _pointwise_shape(p: Planner, node: Node) -> GemmShape:
    """A 1x1 conv as a per-image GEMM: [OC x C] . [C x HW]."""
    xs, oc = p.shape(node.inputs[0]), p.shape(node.inputs[1])[0]
    c, spatial = xs[1], prod(xs[2:])
    return GemmShape(oc, spatial, c, (c, 1), (spatial, 1), (1, 0), (xs[0],), (0,), (c * spatial,), (0,))


def _depthwise_geometry(p: Planner, node: Node) -> bool:
    """depthwise.cl's geometry (1D/2D, one input channel per group, a channel multiplier): depthwise.cl or
    depthwise_cpu.cl."""
    xs, ws = p.shape(node.inputs[0]), p.shape(node.inputs[1])
    group = int(node.attrs.get("group", 1))
    return len(xs) - 2 <= 2 and group == xs[1] and ws[1] == 1 and ws[0] % xs[1] == 0


def _takes_conv_cpu(p: Planner, node: Node) -> bool:
    """Whether a Conv (not 1x1, not depthwise) takes conv_cpu.cl: a CPU target, 1D/2D, a vector of output columns,
    fp32 throughout."""
    core, residual = epilogue_split(node)
    xs, ys = p.shape(core[0]), p.shape(node.outputs[0])
    if not p.cpu or len(xs) - 2 > 2:
        return False
    s = _conv_window(node, xs[2:], p.shape(core[1])[2:])[1]
    _, vw = cpu_conv_blocking(1, ys[-1], to3d(s, 1)[2], 1, p.cpu_vector)  # (VW depends on the columns only)
    values = [*core[:2], node.outputs[0], *(v for v in (optional(core, 2), residual) if v)]
    return bool(vw) and all(p.tag(v) == "F32" for v in values)


def _is_pointwise(p: Planner, node: Node) -> bool:
    """A 1x1 conv with stride 1 and no padding: out[c][pos] reads in[.][pos] only."""
    xs, ws, ys = p.shape(node.inputs[0]), p.shape(node.inputs[1]), p.shape(node.outputs[0])
    k, s, lead, _ = _conv_window(node, xs[2:], ws[2:])
    return all(v == 1 for v in (*k, *s)) and not any(lead) and list(xs[2:]) == list(ys[2:])


def _is_depthwise(p: Planner, node: Node) -> bool:
    """A 1D/2D depthwise conv with one output channel per input channel (depthwise.cl's geometry, MULT 1)."""
    xs, ws = p.shape(node.inputs[0]), p.shape(node.inputs[1])
    group = int(node.attrs.get("group", 1))
    return 1 <= len(xs) - 2 <= 2 and group == xs[1] == ws[0] and ws[1] == 1


@prepass
def fuse_depthwise(p: Planner) -> None:
    """GPU targets (``policy.gpu_fuse_depthwise``): a depthwise conv (no residual) whose output only a pointwise
    conv on gemm_tiled.cl reads, as its input, is computed in that conv's B loader (gemm_tiled.cl CONV 2): one launch
    and one stored tensor fewer, for depthwise taps recomputed once per block row of the product (which wants more
    work-groups than other convolutions to hide them: ``policy.gpu_fused_groups_per_cu``). Decided by the graph
    alone, so every tuned variant of the product is a fused one. Sets ``p.fused_depthwise`` and adds the depthwise
    conv to ``p.absorbed``."""
    if not (p.gpu and p.policy.gpu_fuse_depthwise):
        return
    producers = p.graph.producers()
    for node in p.graph.nodes:
        if node.op != "Conv" or not takes_gpu_gemm(p, node) or not _is_pointwise(p, node):
            continue
        x = node.inputs[0]
        depthwise = producers.get(x)
        if depthwise is None or depthwise.op != "Conv" or depthwise.attrs.get("residual"):
            continue
        sole = [u.name for u in p.consumers.get(x, [])] == [node.name] and node.inputs.count(x) == 1
        weights = p.tag(depthwise.inputs[1]) in FLOAT_TAGS
        if sole and x not in p.graph_outputs and weights and _is_depthwise(p, depthwise):
            p.fused_depthwise[node.name] = depthwise
            p.absorbed.add(depthwise.name)


@prepass
def fuse_blocks(p: Planner) -> None:
    """GPU targets (``policy.gpu_fuse_blocks``), after fuse_depthwise: a 1x1 conv whose loader computes a depthwise
    conv, that depthwise conv reading a 1x1 conv (no residual, constant float weights) that nothing else reads, is an
    inverted residual block: the three are one launch of block.cl (block.gpu_block), where gpu_block_tile finds a
    blocking. Sets ``p.fused_blocks`` and adds the expand conv to ``p.absorbed``. In graph order: where blocks
    chain (a block's project conv is the next one's expand: 1x1 -> depthwise -> 1x1 -> depthwise -> 1x1, as in
    MobileNet-v4) the first is fused and the second stays apart, and an expand conv that computed a depthwise conv
    before it in its loader (MobileNet-v4's ExtraDW block) gives it up, to be launched by itself."""
    if not (p.gpu and p.policy.gpu_fuse_blocks):
        return
    assert p.target is not None
    producers, nodes = p.graph.producers(), {node.name: node for node in p.graph.nodes}
    for name, depthwise in list(p.fused_depthwise.items()):
        if name not in p.fused_depthwise:  # (it gave its depthwise conv up to a block below)
            continue
        project, dx = nodes[name], depthwise.inputs[0]
        expand = producers.get(dx)
        if expand is None or expand.op != "Conv" or expand.attrs.get("residual") or not takes_gpu_gemm(p, expand):
            continue
        if expand.name in p.fused_blocks:  # the project conv of the block before: its input is inside that block
            continue
        sole = [u.name for u in p.consumers.get(dx, [])] == [depthwise.name] and depthwise.inputs.count(dx) == 1
        weights = all(p.is_const(w) and p.tag(w) in FLOAT_TAGS for w in (expand.inputs[1], project.inputs[1]))
        floats = p.tag(expand.inputs[0]) in FLOAT_TAGS
        if not (sole and dx not in p.graph_outputs and weights and floats and _is_pointwise(p, expand)):
            continue
        xs, dws, ys = p.shape(expand.inputs[0]), p.shape(depthwise.inputs[1]), p.shape(project.outputs[0])
        k, s, lead, d = _conv_window(depthwise, xs[2:], dws[2:])
        window = BlockWindow(
            xs[1], p.shape(dx)[1], ys[1], _hw(xs[2:], 1), _hw(ys[2:], 1), _hw(k, 1), _hw(s, 1), _hw(d, 1),
            _hw(lead, 0), xs[0])
        tile = gpu_block_tile(window, p.target, p.policy)
        if tile is not None:
            start = p.fused_depthwise.pop(expand.name, None)
            if start is not None:  # block.cl reads the expand conv's input as stored: that depthwise conv stores it
                p.absorbed.discard(start.name)
            p.fused_blocks[name] = (expand, window, tile)
            p.absorbed.add(expand.name)


def _hw(values: Sequence[int], fill: int) -> tuple[int, int]:
    """(H, W) of a 1D or 2D spatial attribute (1D: H = ``fill``)."""
    h, w = to3d(values, fill)[1:]
    return h, w


def _geometry(c: int, in_sp: list[int], out_sp: list[int], window: tuple[list[int], ...]) -> dict[str, int]:
    """conv.cl's and gemm_tiled.cl's C ID IH IW OD OH OW KD KH KW SD SH SW PD PH PW DD DH DW."""
    k, s, lead, d = window
    (id_, ih, iw), (od, oh, ow) = to3d(in_sp, 1), to3d(out_sp, 1)
    (kd, kh, kw), (sd, sh, sw) = to3d(k, 1), to3d(s, 1)
    (pd, ph, pw), (dd, dh, dw) = to3d(lead, 0), to3d(d, 1)
    geometry = {"C": c, "ID": id_, "IH": ih, "IW": iw, "OD": od, "OH": oh, "OW": ow, "KD": kd, "KH": kh, "KW": kw}
    geometry.update({"SD": sd, "SH": sh, "SW": sw, "PD": pd, "PH": ph, "PW": pw, "DD": dd, "DH": dh, "DW": dw})
    return geometry


@lowers("Conv")
def _lower_conv(p: Planner, node: Node) -> None:
    core, residual = epilogue_split(node)
    x, w, bias, y = core[0], core[1], optional(core, 2), node.outputs[0]
    xs, ws, ys = p.shape(x), p.shape(w), p.shape(y)
    n, c, in_sp = xs[0], xs[1], list(xs[2:])
    oc, cg, out_sp = ws[0], ws[1], list(ys[2:])
    nsp = len(in_sp)
    if not 1 <= nsp <= 3:
        raise DeviceError(f"OpenCL runtime has no kernel for {nsp}D Conv (node {node.name})")
    k, s, lead, d = _conv_window(node, in_sp, ws[2:])
    group = int(node.attrs.get("group", 1))

    if node.name in p.fused_blocks:  # with the expand conv before the depthwise one: block.cl (fuse_blocks)
        expand, window, tile = p.fused_blocks[node.name]
        gpu_block(p, node, expand, p.fused_depthwise[node.name], window, tile, residual)
        return
    fused = p.fused_depthwise.get(node.name)
    if fused is not None:  # the B loader computes the depthwise conv from its input (fuse_depthwise)
        dx, dws = fused.inputs[0], p.shape(fused.inputs[1])
        geometry = _geometry(c, list(p.shape(dx)[2:]), in_sp, _conv_window(fused, p.shape(dx)[2:], dws[2:]))
        gpu_conv(p, node, dx, w, bias, residual, y, geometry, fused)
        return
    if takes_gpu_gemm(p, node):
        gpu_conv(p, node, x, w, bias, residual, y, _geometry(c, in_sp, out_sp, (k, s, lead, d)))
        return
    if group == 1 and _is_pointwise(p, node):  # (on a GPU target: only at one output position, a GEMV)
        gemm(p, node, w, x, bias, residual, y, _pointwise_shape(p, node))
        return

    defines: dict[str, Any] = {"X_T": p.tag(x), "W_T": p.tag(w), "Y_T": p.tag(y)}
    if bias:
        defines["B_T"] = p.tag(bias)
    if p.tag(w) not in FLOAT_TAGS:
        raise DeviceError(f"OpenCL runtime has no kernel for Conv with {p.tag(w)} weights (node {node.name})")
    ow = out_sp[-1]
    if _depthwise_geometry(p, node):
        ih, iw = to3d(in_sp, 1)[1:]
        oh = to3d(out_sp, 1)[1]
        kh, kw = to3d(k, 1)[1:]
        sh, sw = to3d(s, 1)[1:]
        ph, pw = to3d(lead, 0)[1:]
        dh, dw = to3d(d, 1)[1:]
        defines.update({"N": n, "C": c, "MULT": oc // c, "IH": ih, "IW": iw, "OH": oh, "OW": ow, "KH": kh, "KW": kw})
        defines.update({"SH": sh, "SW": sw, "PH": ph, "PW": pw, "DH": dh, "DW": dw})
        # CPU targets: depthwise_cpu.cl (fp32), RB x VW outputs per work item
        rb, vw = cpu_depthwise_blocking(oh, ow, sw, _cpu_rows(p, node, p.policy.cpu_depthwise_rows), p.cpu_vector) \
            if p.cpu else (0, 0)
        if vw and all(p.tag(v) == "F32" for v in (x, w, y, *(v for v in (bias, residual) if v))):
            family, block, grid = "depthwise_cpu", {"RB": rb, "VW": vw}, [-(-ow // vw), -(-oh // rb), n * oc]
        else:
            pb = depthwise_tiling(n, oc, oh, ow, _floor(p, node))
            family, block, grid = "depthwise", {"PB": pb}, [-(-ow // pb), oh, n * oc]
        defines.update({**block, "HAS_BIAS": bool(bias)})
        _unplaced(p, node, y)
        args: list[Arg] = [p.use(x), p.use(w), *([p.use(bias)] if bias else [])]
        p.epilogue(node, defines, args, residual)
        args.append(p.define(y))
        p.launch(node, p.kernel(family, defines), grid, args)
        return

    ocg = oc // group
    if _takes_conv_cpu(p, node):
        tm, vw = cpu_conv_blocking(ocg, ow, to3d(s, 1)[2], _cpu_rows(p, node, p.policy.cpu_gemm_rows), p.cpu_vector)
        _cpu_conv(p, node, (x, w, bias, residual, y), tm if p.is_const(w) else 1, vw, defines)
        return
    _unplaced(p, node, y)
    ocb, pb = conv_tiling(n, ocg, group, out_sp, _floor(p, node))
    if not p.is_const(w):
        ocb = 1  # OIHW is already the [OC/1][C/G][K...][1] layout
        w_buf = p.use(w)
    else:
        wdata = p.graph.float_constant(w).reshape(oc // ocb, ocb, cg, -1).transpose(0, 2, 3, 1)
        w_buf = p.derived(f"{w}@oc{ocb}", wdata, p.tag(w))
    geometry = _geometry(c, in_sp, out_sp, (k, s, lead, d))
    defines.update({"N": n, "C": c, "OC": oc, "G": group, **geometry, "OCB": ocb, "PB": pb, "HAS_BIAS": bool(bias)})
    args = [p.use(x), w_buf, *([p.use(bias)] if bias else [])]
    p.epilogue(node, defines, args, residual)
    args.append(p.define(y))
    grid = [-(-ow // pb), geometry["OD"] * geometry["OH"], n * oc // ocb]
    p.launch(node, p.kernel("conv", defines), grid, args)


def _cpu_conv(
    p: Planner, node: Node, values: tuple[str, str, str | None, str | None, str], tm: int, vw: int,
    defines: dict[str, Any],
) -> None:
    """A 1D/2D conv on conv_cpu.cl (CPU targets, fp32): TM output channels x VW columns per work item, constant
    weights relaid as [OC/TM][C/G][KH][KW][TM] (run-time weights: TM = 1, OIHW as it is)."""
    x, w, bias, residual, y = values
    xs, ws, ys = p.shape(x), p.shape(w), p.shape(y)
    n, c, oc, cg = xs[0], xs[1], ws[0], ws[1]
    k, s, lead, d = _conv_window(node, xs[2:], ws[2:])
    (_, ih, iw), (_, oh, ow) = to3d(list(xs[2:]), 1), to3d(list(ys[2:]), 1)
    (_, kh, kw), (_, sh, sw) = to3d(k, 1), to3d(s, 1)
    (_, ph, pw), (_, dh, dw) = to3d(lead, 0), to3d(d, 1)
    if tm > 1:
        wdata = p.graph.float_constant(w).reshape(oc // tm, tm, cg, -1).transpose(0, 2, 3, 1)
        w_buf = p.derived(f"{w}@oc{tm}", wdata, p.tag(w))
    else:
        w_buf = p.use(w)
    defines.update({"N": n, "C": c, "OC": oc, "G": int(node.attrs.get("group", 1)), "IH": ih, "IW": iw, "OH": oh})
    defines.update({"OW": ow, "KH": kh, "KW": kw, "SH": sh, "SW": sw, "PH": ph, "PW": pw, "DH": dh, "DW": dw})
    defines.update({"TM": tm, "VW": vw, "HAS_BIAS": bool(bias)})
    args: list[Arg] = [p.use(x), w_buf, *([p.use(bias)] if bias else [])]
    p.epilogue(node, defines, args, residual)
    root, offset, bstride = p.placement.get(y, (y, 0, oc * oh * ow))  # a slice of a Concat's output (placement.py)
    defines.update({"Y_BSTRIDE": bstride, "Y_OFFSET": offset})
    args.append(p.define(root))
    p.launch(node, p.kernel("conv_cpu", defines), [-(-ow // vw), oh, n * oc // tm], args)


@lowers("ConvTranspose")
def _lower_conv_transpose(p: Planner, node: Node) -> None:
    """conv_transpose.cl gathers: each work item walks the input positions that reach its output, OCB channels."""
    core, residual = epilogue_split(node)
    x, w, bias, y = core[0], core[1], optional(core, 2), node.outputs[0]
    xs, ws, ys = p.shape(x), p.shape(w), p.shape(y)
    n, c, in_sp, out_sp = xs[0], xs[1], list(xs[2:]), list(ys[2:])
    nsp = len(in_sp)
    if not 1 <= nsp <= 3:
        raise DeviceError(f"OpenCL runtime has no kernel for {nsp}D ConvTranspose (node {node.name})")
    group = int(node.attrs.get("group", 1))
    ocg = ws[1]
    oc = ocg * group
    k, s, d = rules.window_attrs(node.attrs, nsp, ws[2:])
    lead, _, sizes = rules.conv_transpose_pads(node.attrs, in_sp, k, s, d)  # output_shape and SAME override pads
    if sizes != out_sp:
        raise DeviceError(f"ConvTranspose {node.name}: output {tuple(out_sp)} is not the attributes' {tuple(sizes)}")
    ocb = next(b for b in (4, 2, 1) if ocg % b == 0)
    (id_, ih, iw), (od, oh, ow) = to3d(in_sp, 1), to3d(out_sp, 1)
    (kd, kh, kw), (sd, sh, sw) = to3d(k, 1), to3d(s, 1)
    (pd, ph, pw), (dd, dh, dw) = to3d(lead, 0), to3d(d, 1)
    defines: dict[str, Any] = {"X_T": p.tag(x), "W_T": p.tag(w), "Y_T": p.tag(y)}
    if bias:
        defines["B_T"] = p.tag(bias)
    defines.update({"N": n, "C": c, "OC": oc, "G": group, "ID": id_, "IH": ih, "IW": iw, "OD": od, "OH": oh, "OW": ow})
    defines.update({"KD": kd, "KH": kh, "KW": kw, "SD": sd, "SH": sh, "SW": sw, "PD": pd, "PH": ph, "PW": pw})
    defines.update({"DD": dd, "DH": dh, "DW": dw, "OCB": ocb, "HAS_BIAS": bool(bias)})
    args: list[Arg] = [p.use(x), p.use(w), *([p.use(bias)] if bias else [])]
    p.epilogue(node, defines, args, residual)
    args.append(p.define(y))
    p.launch(node, p.kernel("deconv", defines), [ow, od * oh, n * oc // ocb], args)


def _unplaced(p: Planner, node: Node, y: str) -> None:
    """A kernel that stores its output whole: ``y`` must not have been placed in a Concat's slice (writes_slices)."""
    if y in p.placement:
        raise DeviceError(f"Conv {node.name}: planned into a slice of {p.placement[y][0]}, but its kernel cannot "
                          "write one (conv.writes_slices and the lowering disagree)")


def _cpu_rows(p: Planner, node: Node, rows: int) -> int:
    """Rows per work item of conv_cpu.cl/depthwise_cpu.cl for ``node``: the policy's ``rows``, or the tuned
    variant's."""
    return variant_rows(p.variant(node, CPU_ROW_VARIANTS), rows)


def _floor(p: Planner, node: Node) -> int:
    """The work-item floor of conv.cl/depthwise.cl for ``node``: the policy's for the target, or the tuned variant's."""
    floor = gpu_min_work_items(p.target, p.policy) if p.target is not None and p.gpu else p.policy.min_work_items
    return variant_floor(p.variant(node, WORK_ITEM_FLOOR_VARIANTS), floor)
