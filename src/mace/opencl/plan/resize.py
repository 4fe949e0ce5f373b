"""Resize (and legacy Upsample) on resize.cl, over the two innermost dims; GridSample on grid_sample.cl.

The coordinate arithmetic of ONNX Resize (transformation modes, nearest rounding, cubic coefficients, exclude_outside)
runs here on the host, once: ``resize_taps`` gives each output row/column its input indices and weights, uploaded as
small tables, so the kernel is the same weighted gather for every mode.
"""

from __future__ import annotations

import numpy as np

from mace.errors import DeviceError
from mace.model import rules
from mace.model.ir import Node
from mace.opencl.plan.planner import Planner, ints, lowers, optional, positive_axis
from mace.opencl.plan.templates import prod
from mace.ops.resize import grid_sample_attrs


def resize_taps(
    mode: str,
    transform: str,
    nearest_mode: str,
    cubic_a: float,
    exclude_outside: bool,
    in_len: int,
    out_len: int,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per output index along one axis: the input indices [out_len, taps] (int32) and float32 weights of its taps,
    from rules.resize_taps, the function the reference op (ops/resize.py) resizes with."""
    if rules.RESIZE_MODES.get(mode) is None:
        raise DeviceError(f"OpenCL runtime has no Resize mode {mode!r}")
    if transform not in rules.COORDINATE_MODES or transform == "tf_crop_and_resize":
        raise DeviceError(f"OpenCL runtime has no Resize coordinate transformation {transform!r}")
    if nearest_mode not in rules.NEAREST_MODES:
        raise DeviceError(f"OpenCL runtime has no Resize nearest_mode {nearest_mode!r}")
    idx, weights, _ = rules.resize_taps(
        mode, transform, in_len, out_len, scale, nearest_mode, cubic_a, exclude_outside
    )
    return idx.astype(np.int32), weights.astype(np.float32)


@lowers("Upsample")
def _lower_upsample(p: Planner, node: Node) -> None:
    """Legacy Upsample: Resize with asymmetric coordinates, nearest rounding down."""
    mode = node.attrs.get("mode", "nearest")
    attrs = {"mode": rules.RESIZE_MODES.get(mode, mode), **rules.UPSAMPLE_ATTRS}
    scales = optional(node.inputs, 1)
    resize = Node("Resize", node.name, [node.inputs[0], "", scales or "", ""], node.outputs, attrs)
    if scales is None:
        attrs["scales"] = node.attrs["scales"]
    _lower_resize(p, resize)


@lowers("Resize")
def _lower_resize(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = p.shape(x), p.shape(y)
    rank = len(xs)
    attrs = node.attrs
    if attrs.get("antialias", 0):
        raise DeviceError(f"OpenCL runtime has no kernel for Resize with antialias (node {node.name})")
    axes = [positive_axis(a, rank) for a in ints(attrs.get("axes") or list(range(rank)))]
    scales_name, sizes_name = optional(node.inputs, 2), optional(node.inputs, 3)
    given = p.const(scales_name, "scales", node).reshape(-1) if scales_name else np.zeros(0)
    if "scales" in attrs:  # legacy Upsample's attribute
        given = np.asarray(attrs["scales"], np.float32)
    if given.size:
        sizes = None
    elif sizes_name and sizes_name in p.graph.constants:
        sizes = ints(p.const(sizes_name, "sizes", node))
    else:  # the output shape is the sizes
        sizes = [ys[a] for a in axes]
    # the scales as the reference op computes them (float32; one ratio for all axes under keep_aspect_ratio_policy)
    scales = [1.0] * rank
    policy = rules.resize_attr(attrs, "keep_aspect_ratio_policy")
    for axis, scale, _ in zip(axes, *rules.resize_output([xs[a] for a in axes], list(given), sizes, policy)):
        scales[axis] = scale
    if rank < 2 or any(xs[d] != ys[d] for d in range(rank - 2)):
        raise DeviceError(f"OpenCL runtime resizes only the two innermost dims (node {node.name})")
    mode = attrs.get("mode", rules.RESIZE_DEFAULTS["mode"])
    transform = attrs.get("coordinate_transformation_mode", rules.RESIZE_DEFAULTS["coordinate_transformation_mode"])
    tables = []
    for d in (rank - 2, rank - 1):
        if xs[d] == ys[d] and scales[d] == 1.0:
            idx, wts = np.arange(xs[d], dtype=np.int32)[:, None], np.ones((xs[d], 1), np.float32)
        else:
            idx, wts = resize_taps(
                mode,
                transform,
                attrs.get("nearest_mode", rules.RESIZE_DEFAULTS["nearest_mode"]),
                float(attrs.get("cubic_coeff_a", rules.RESIZE_DEFAULTS["cubic_coeff_a"])),
                bool(attrs.get("exclude_outside", rules.RESIZE_DEFAULTS["exclude_outside"])),
                xs[d],
                ys[d],
                scales[d],
            )
        tables.append(
            (p.derived(f"{node.name}@idx{d}", idx, "I32"), p.derived(f"{node.name}@w{d}", wts, "F32"), idx.shape[1])
        )
    (hidx, hw, th), (widx, ww, tw) = tables
    outer = prod(xs[:-2])
    defines = {"X_T": p.tag(x), "Y_T": p.tag(y), "OUTER": outer, "IH": xs[-2], "IW": xs[-1], "OH": ys[-2]}
    defines.update({"OW": ys[-1], "TH": th, "TW": tw})
    src = p.use(x)
    p.launch(node, p.kernel("resize", defines), [ys[-1], ys[-2], outer], [src, hidx, hw, widx, ww, p.define(y)])


@lowers("GridSample")
def _lower_grid_sample(p: Planner, node: Node) -> None:
    x, grid, y = node.inputs[0], node.inputs[1], node.outputs[0]
    xs, gs = p.shape(x), p.shape(grid)
    if len(xs) != 4 or len(gs) != 4 or gs[-1] != 2:
        raise DeviceError(f"OpenCL runtime samples only 2-D grids ([N, C, H, W] at [N, Ho, Wo, 2]), not X {list(xs)} "
                          f"at grid {list(gs)} (node {node.name})")
    try:
        mode, padding, align = grid_sample_attrs(node.attrs)
    except NotImplementedError as exc:
        raise DeviceError(f"OpenCL runtime: {exc} (node {node.name})") from exc
    n, c, h, w = xs
    defines = {"X_T": p.tag(x), "G_T": p.tag(grid), "Y_T": p.tag(y), "N": n, "C": c, "H": h, "W": w, "OH": gs[1],
               "OW": gs[2], "MODE": mode, "PADDING": padding, "ALIGN": align}
    args = [p.use(x), p.use(grid), p.define(y)]
    p.launch(node, p.kernel("grid_sample", defines), [gs[2], gs[1], n * c], args)
