"""Conv and ConvTranspose (1D to 3D, grouped, dilated, fused bias/residual/activation).

Conv takes one of three kernels:
- a 1x1 conv with stride 1 and no padding is a per-image GEMM ([OC x C] . [C x HW]) on gemm.cl (gemm.py);
- a depthwise conv (group == C, one input channel per group, 1D or 2D) runs on depthwise.cl;
- anything else runs on conv.cl, each work item computing OCB output channels x PB columns (tiling.py). Constant
  weights are re-laid out on the host as [OC/OCB][C/G][K...][OCB], so a work item reads its OCB weights as a vector;
  run-time weights keep OIHW, which is that layout for OCB = 1.
On a GPU target (Planner.gpu) every group-1 conv is instead an implicit GEMM on gemm_tiled.cl (gemm_tiled.py).

The window helpers here (``spatial_attrs``, ``same_pads``, ``to3d``) are shared with pooling.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mace.errors import DeviceError
from mace.model.ir import Node
from mace.opencl.plan.gemm import GemmShape, gemm
from mace.opencl.plan.gemm_tiled import gpu_conv
from mace.opencl.plan.planner import Arg, Planner, epilogue_split, ints, lowers, optional
from mace.opencl.plan.templates import FLOAT_TAGS, prod
from mace.opencl.plan.tiling import (
    WORK_ITEM_FLOOR_VARIANTS,
    conv_tiling,
    depthwise_tiling,
    gpu_min_work_items,
    variant_floor,
)


def spatial_attrs(node: Node, kernel: Sequence[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(kernel_shape, strides, leading pads, dilations) with ONNX defaults."""
    nsp = len(kernel)
    kshape = ints(node.attrs.get("kernel_shape", kernel))
    strides = ints(node.attrs.get("strides", [1] * nsp))
    pads = ints(node.attrs.get("pads", [0] * (2 * nsp)))
    dilations = ints(node.attrs.get("dilations", [1] * nsp))
    return kshape, strides, pads, dilations


def same_pads(
    node: Node, in_sp: Sequence[int], out_sp: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int]
) -> list[int] | None:
    """Leading pads for auto_pad SAME_*; None when the node's explicit pads apply."""
    mode = node.attrs.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", "VALID"):
        return None if mode == "NOTSET" else [0] * len(k)
    begins = []
    for i, o, kk, ss, dd in zip(in_sp, out_sp, k, s, d):
        total = max((o - 1) * ss + (kk - 1) * dd + 1 - i, 0)
        begins.append(total // 2 if mode == "SAME_UPPER" else total - total // 2)
    return begins


def to3d(values: Sequence[int], fill: int) -> list[int]:
    """Spatial values padded in front to (D, H, W): the kernels are written for 3D and take 1D/2D as D = 1 (H = 1)."""
    return [fill] * (3 - len(values)) + list(values)


def takes_gpu_gemm(p: Planner, node: Node) -> bool:
    """Whether Conv ``node`` runs on gemm_tiled.cl (gemm_tiled.gpu_conv): on GPU targets, every group-1 conv but a
    pointwise one at a single output position (a GEMV)."""
    if not p.gpu or int(node.attrs.get("group", 1)) != 1:
        return False
    xs, ws, ys = p.shape(node.inputs[0]), p.shape(node.inputs[1]), p.shape(node.outputs[0])
    if not 1 <= len(xs) - 2 <= 3:
        return False
    k, s, pads, d = spatial_attrs(node, ws[2:])
    lead = same_pads(node, xs[2:], ys[2:], k, s, d) or pads[: len(k)]
    pointwise = all(v == 1 for v in (*k, *s)) and not any(lead) and list(xs[2:]) == list(ys[2:])
    return not (pointwise and prod(ys) == ys[1])


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
    k, s, pads, d = spatial_attrs(node, ws[2:])
    lead = same_pads(node, in_sp, out_sp, k, s, d) or pads[:nsp]
    group = int(node.attrs.get("group", 1))
    spatial = prod(in_sp)

    pointwise = all(v == 1 for v in k) and all(v == 1 for v in s) and not any(lead) and in_sp == out_sp
    if takes_gpu_gemm(p, node):
        (id_, ih, iw), (od, oh, ow) = to3d(in_sp, 1), to3d(out_sp, 1)
        (kd, kh, kw), (sd, sh, sw) = to3d(k, 1), to3d(s, 1)
        (pd, ph, pw), (dd, dh, dw) = to3d(lead, 0), to3d(d, 1)
        geometry = {"C": c, "ID": id_, "IH": ih, "IW": iw, "OD": od, "OH": oh, "OW": ow, "KD": kd, "KH": kh}
        geometry.update({"KW": kw, "SD": sd, "SH": sh, "SW": sw, "PD": pd, "PH": ph, "PW": pw, "DD": dd, "DH": dh})
        gpu_conv(p, node, x, w, bias, residual, y, dict(geometry, DW=dw))
        return
    if group == 1 and pointwise:
        # 1x1 conv = per-image GEMM: [OC x C] . [C x HW] (on a GPU target: only at one output position, a GEMV).
        shape = GemmShape(oc, spatial, c, (c, 1), (spatial, 1), (1, 0), (n,), (0,), (c * spatial,), (0,))
        gemm(p, node, w, x, bias, residual, y, shape)
        return

    defines: dict[str, Any] = {"X_T": p.tag(x), "W_T": p.tag(w), "Y_T": p.tag(y)}
    if bias:
        defines["B_T"] = p.tag(bias)
    if p.tag(w) not in FLOAT_TAGS:
        raise DeviceError(f"OpenCL runtime has no kernel for Conv with {p.tag(w)} weights (node {node.name})")
    ow = out_sp[-1]
    if nsp <= 2 and group == c and cg == 1 and oc % c == 0:
        ih, iw = to3d(in_sp, 1)[1:]
        oh = to3d(out_sp, 1)[1]
        pb = depthwise_tiling(n, oc, oh, ow, _floor(p, node))
        kh, kw = to3d(k, 1)[1:]
        sh, sw = to3d(s, 1)[1:]
        ph, pw = to3d(lead, 0)[1:]
        dh, dw = to3d(d, 1)[1:]
        defines.update({"N": n, "C": c, "MULT": oc // c, "IH": ih, "IW": iw, "OH": oh, "OW": ow, "KH": kh, "KW": kw})
        defines.update({"SH": sh, "SW": sw, "PH": ph, "PW": pw, "DH": dh, "DW": dw, "PB": pb, "HAS_BIAS": bool(bias)})
        args: list[Arg] = [p.use(x), p.use(w)] + ([p.use(bias)] if bias else [])
        p.epilogue(node, defines, args, residual)
        args.append(p.define(y))
        p.launch(node, p.kernel("depthwise", defines), [-(-ow // pb), oh, n * oc], args)
        return

    ocg = oc // group
    ocb, pb = conv_tiling(n, ocg, group, out_sp, _floor(p, node))
    if not p.is_const(w):
        ocb = 1  # OIHW is already the [OC/1][C/G][K...][1] layout
        w_buf = p.use(w)
    else:
        wdata = p.graph.float_constant(w).reshape(oc // ocb, ocb, cg, -1).transpose(0, 2, 3, 1)
        w_buf = p.derived(f"{w}@oc{ocb}", wdata, p.tag(w))
    (id_, ih, iw), (od, oh, _) = to3d(in_sp, 1), to3d(out_sp, 1)
    (kd, kh, kw), (sd, sh, sw) = to3d(k, 1), to3d(s, 1)
    (pd, ph, pw), (dd, dh, dw) = to3d(lead, 0), to3d(d, 1)
    defines.update({"N": n, "C": c, "OC": oc, "G": group, "ID": id_, "IH": ih, "IW": iw, "OD": od, "OH": oh, "OW": ow})
    defines.update({"KD": kd, "KH": kh, "KW": kw, "SD": sd, "SH": sh, "SW": sw, "PD": pd, "PH": ph, "PW": pw})
    defines.update({"DD": dd, "DH": dh, "DW": dw, "OCB": ocb, "PB": pb, "HAS_BIAS": bool(bias)})
    args = [p.use(x), w_buf] + ([p.use(bias)] if bias else [])
    p.epilogue(node, defines, args, residual)
    args.append(p.define(y))
    p.launch(node, p.kernel("conv", defines), [-(-ow // pb), od * oh, n * oc // ocb], args)


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
    k, s, pads, d = spatial_attrs(node, ws[2:])
    lead = pads[:nsp]
    if "pads" not in node.attrs and ("output_shape" in node.attrs or node.attrs.get("auto_pad", "NOTSET") != "NOTSET"):
        out_pad = ints(node.attrs.get("output_padding", [0] * nsp))
        lead = []
        for i in range(nsp):
            total = s[i] * (in_sp[i] - 1) + out_pad[i] + (k[i] - 1) * d[i] + 1 - out_sp[i]
            upper = node.attrs.get("auto_pad") == "SAME_UPPER"
            lead.append(total // 2 if upper else total - total // 2)
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
    args: list[Arg] = [p.use(x), p.use(w)] + ([p.use(bias)] if bias else [])
    p.epilogue(node, defines, args, residual)
    args.append(p.define(y))
    p.launch(node, p.kernel("deconv", defines), [ow, od * oh, n * oc // ocb], args)


def _floor(p: Planner, node: Node) -> int:
    """The work-item floor of conv.cl/depthwise.cl for ``node``: the target's, or the tuned variant's."""
    return variant_floor(p.variant(node, WORK_ITEM_FLOOR_VARIANTS), gpu_min_work_items(p.target) if p.gpu else None)
