"""MaxPool and AveragePool on pooling.cl (1D to 3D, window geometry by mace.model.rules, as the reference op reads
it; on a CPU target, 1D/2D fp32: pool_cpu.cl, RB rows x VW columns per work item); the global pools are reductions
over the spatial dims (reduce.py's kernel).

Ceil-mode pools need no flag: the IR's output shape already says how many windows there are, and the trailing pads
(explicit, or for SAME rules.same_pads') tell the kernel which taps are padding.
"""

from __future__ import annotations

from typing import Any

from mace.errors import DeviceError
from mace.model import rules
from mace.model.ir import Node
from mace.opencl.plan.planner import Planner, lowers
from mace.opencl.plan.reduce import reduce
from mace.opencl.plan.templates import to3d
from mace.opencl.plan.tiling import CPU_ROW_VARIANTS, variant_rows
from mace.opencl.plan.tiling_cpu import cpu_depthwise_blocking


@lowers("MaxPool", "AveragePool")
def _lower_pool(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if len(node.outputs) > 1 and p.is_used(node.outputs[1]):
        raise DeviceError(f"OpenCL runtime has no kernel for MaxPool indices (node {node.name})")
    xs, ys = p.shape(x), p.shape(y)
    in_sp, out_sp = list(xs[2:]), list(ys[2:])
    nsp = len(in_sp)
    if not 1 <= nsp <= 3:
        raise DeviceError(f"OpenCL runtime has no kernel for {nsp}D {node.op} (node {node.name})")
    k, s, d = rules.window_attrs(node.attrs, nsp)
    lead, trail = rules.resolve_pads(node.attrs, in_sp, k, s, d, node.op)
    (id_, ih, iw), (od, oh, ow) = to3d(in_sp, 1), to3d(out_sp, 1)
    (kd, kh, kw), (sd, sh, sw) = to3d(k, 1), to3d(s, 1)
    (pd, ph, pw), (pde, phe, pwe), (dd, dh, dw) = to3d(lead, 0), to3d(trail, 0), to3d(d, 1)
    is_max, include_pad = node.op == "MaxPool", bool(node.attrs.get("count_include_pad", 0))
    src, nc = p.use(x), xs[0] * xs[1]
    rows = variant_rows(p.variant(node, CPU_ROW_VARIANTS), p.policy.cpu_depthwise_rows) if p.cpu else 0
    rb, vw = cpu_depthwise_blocking(oh, ow, sw, rows, p.cpu_vector) if p.cpu and nsp <= 2 else (0, 0)
    if vw and p.tag(x) == p.tag(y) == "F32":
        cpu: dict[str, Any] = {"NC": nc, "IH": ih, "IW": iw, "OH": oh, "OW": ow, "KH": kh, "KW": kw, "SH": sh, "SW": sw}
        cpu.update({"PH": ph, "PW": pw, "PHE": phe, "PWE": pwe, "DH": dh, "DW": dw, "RB": rb, "VW": vw})
        cpu.update({"IS_MAX": is_max, "COUNT_INCLUDE_PAD": include_pad})
        grid = [-(-ow // vw), -(-oh // rb), nc]
        p.launch(node, p.kernel("pool_cpu", cpu), grid, [src, p.define(y)])
        return
    defines: dict[str, Any] = {"X_T": p.tag(x), "Y_T": p.tag(y), "NC": nc}
    defines.update({"ID": id_, "IH": ih, "IW": iw, "OD": od, "OH": oh, "OW": ow, "KD": kd, "KH": kh, "KW": kw})
    defines.update({"SD": sd, "SH": sh, "SW": sw, "PD": pd, "PH": ph, "PW": pw, "PDE": pde, "PHE": phe, "PWE": pwe})
    defines.update({"DD": dd, "DH": dh, "DW": dw, "IS_MAX": is_max, "COUNT_INCLUDE_PAD": include_pad})
    # (rounded up: a size with no large divisor would leave the driver only small work-groups)
    p.launch(node, p.kernel("pool", defines), [-(-nc * od * oh * ow // 256) * 256], [src, p.define(y)])


@lowers("GlobalAveragePool", "GlobalMaxPool")
def _lower_global_pool(p: Planner, node: Node) -> None:
    x = node.inputs[0]
    op = "ReduceMean" if node.op == "GlobalAveragePool" else "ReduceMax"
    reduce(p, node, x, node.outputs[0], list(range(2, len(p.shape(x)))), op)
