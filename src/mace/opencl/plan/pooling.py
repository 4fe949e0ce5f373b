"""MaxPool and AveragePool on pooling.cl (1D to 3D, window geometry by mace.model.rules, as the reference op reads
it); the global pools are reductions over the spatial dims (reduce.py's kernel).

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
    defines: dict[str, Any] = {"X_T": p.tag(x), "Y_T": p.tag(y), "NC": xs[0] * xs[1]}
    defines.update({"ID": id_, "IH": ih, "IW": iw, "OD": od, "OH": oh, "OW": ow, "KD": kd, "KH": kh, "KW": kw})
    defines.update({"SD": sd, "SH": sh, "SW": sw, "PD": pd, "PH": ph, "PW": pw, "PDE": pde, "PHE": phe, "PWE": pwe})
    defines.update({"DD": dd, "DH": dh, "DW": dw, "IS_MAX": node.op == "MaxPool"})
    defines["COUNT_INCLUDE_PAD"] = bool(node.attrs.get("count_include_pad", 0))
    src = p.use(x)
    p.launch(node, p.kernel("pool", defines), [ow, od * oh, xs[0] * xs[1]], [src, p.define(y)])


@lowers("GlobalAveragePool", "GlobalMaxPool")
def _lower_global_pool(p: Planner, node: Node) -> None:
    x = node.inputs[0]
    op = "ReduceMean" if node.op == "GlobalAveragePool" else "ReduceMax"
    reduce(p, node, x, node.outputs[0], list(range(2, len(p.shape(x)))), op)
