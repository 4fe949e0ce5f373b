"""Inverted residual blocks on GPU targets: a 1x1 expand conv, a depthwise conv and a 1x1 project conv (MobileNet-v2's
bottleneck) as one launch of block.cl, whose work-groups keep the expanded tensor and the depthwise output in local
memory (conv.fuse_blocks decides which blocks; tiling_gpu.gpu_block_tile how). Elsewhere such a block is two launches:
the expand's product, and the projection's with the depthwise conv in its loader (conv.fuse_depthwise)."""

from __future__ import annotations

from typing import Any

from mace.model.ir import Node
from mace.opencl.plan.gemm_tiled import product_launches, weights_km
from mace.opencl.plan.planner import Arg, Planner, optional
from mace.opencl.plan.templates import activation_macro
from mace.opencl.plan.tiling_gpu import BlockTile, BlockWindow


def gpu_block(
    p: Planner, project: Node, expand: Node, depthwise: Node, window: BlockWindow, tile: BlockTile,
    residual: str | None,
) -> None:
    """``project`` (and the ``expand`` and ``depthwise`` convs it reads through) on block.cl: ``window`` is the block's
    shape, ``tile`` its blocking (gpu_block_tile), ``residual`` the projection's fused residual."""
    assert p.target is not None
    x, we, eb = expand.inputs[0], expand.inputs[1], optional(expand.inputs, 2)
    dww, dwb = depthwise.inputs[1], optional(depthwise.inputs, 2)
    wp, bias, y = project.inputs[1], optional(project.inputs, 2), project.outputs[0]
    b = window
    # the weights as rows of a chunk: we [CIN][CE], wp [CE][COUT]
    we_buf, wp_buf = weights_km(p, we, b.ce, b.cin), weights_km(p, wp, b.cout, b.ce)
    (ih, iw), (oh, ow) = b.in_hw, b.out_hw
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = b.kernel, b.strides, b.dilations, b.pads
    defines: dict[str, Any] = {"X_T": p.tag(x), "WE_T": p.tag(we), "DWW_T": p.tag(dww), "WP_T": p.tag(wp)}
    defines.update({"N": b.images, "CIN": b.cin, "CE": b.ce, "COUT": b.cout, "IH": ih, "IW": iw, "OH": oh, "OW": ow})
    defines.update({"KH": kh, "KW": kw, "SH": sh, "SW": sw, "PH": ph, "PW": pw, "DH": dh, "DW": dw})
    defines.update({"TH": tile.th, "TW": tile.tw, "CK": tile.ck, "BKI": tile.bki, "BCO": tile.bco})
    defines.update({"SPLITS": tile.splits, "KS": tile.ks if tile.splits > 1 else b.ce, "NT": tile.nt})
    defines.update({"LAC": tile.lac, "LAP": tile.lap, "TAC": tile.tac, "TAP": tile.tap})
    defines.update({"LCO": tile.lco, "LCP": tile.lcp, "TCO": tile.tco, "TCP": tile.tcp})
    defines.update({"E_BIAS": eb is not None, **({"EB_T": p.tag(eb)} if eb else {})})
    defines.update({"DW_BIAS": dwb is not None, **({"DWB_T": p.tag(dwb)} if dwb else {})})
    defines["E_ACTIVATE(v)"] = activation_macro(expand.attrs)
    defines["DW_ACTIVATE(v)"] = activation_macro(depthwise.attrs)
    operands: list[Arg] = [p.use(x), we_buf, *([p.use(eb)] if eb else []), p.use(dww), *([p.use(dwb)] if dwb else [])]
    operands.append(wp_buf)
    grid, local = [tile.groups(b) * tile.nt, 1, b.images * tile.splits], [tile.nt, 1, 1]
    sum_groups = tile.groups(b) * b.images if tile.splits > 1 and p.target.nvidia_ptx else 0
    product_launches(p, project, "irblock", defines, operands, (y, bias, (1, 0), residual),
                     (tile.splits, b.images, b.cout, oh * ow), (grid, local), sum_groups)
