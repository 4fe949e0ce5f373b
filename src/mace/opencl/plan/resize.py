"""Resize (and legacy Upsample) on resize.cl, over the two innermost dims.

The coordinate arithmetic of ONNX Resize (transformation modes, nearest rounding, cubic coefficients, exclude_outside)
runs here on the host, once: ``resize_taps`` gives each output row/column its input indices and weights, uploaded as
small tables, so the kernel is the same weighted gather for every mode.
"""

from __future__ import annotations

import numpy as np

from mace.errors import DeviceError
from mace.model.ir import Node
from mace.opencl.plan.planner import Planner, ints, lowers, optional, positive_axis
from mace.opencl.plan.templates import prod


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
    """Per output index along one axis: the input indices [out_len, taps] and weights of its taps (ONNX Resize)."""
    # float32 arithmetic, as onnxruntime computes coordinates: it decides ties in nearest rounding.
    o = np.arange(out_len, dtype=np.float32)
    f32 = np.float32
    sc = f32(scale)
    if transform == "half_pixel":
        x = (o + f32(0.5)) / sc - f32(0.5)
    elif transform == "pytorch_half_pixel":
        x = (o + f32(0.5)) / sc - f32(0.5) if out_len > 1 else np.zeros_like(o)
    elif transform == "align_corners":
        x = o * f32(in_len - 1) / f32(out_len - 1) if out_len > 1 else np.zeros_like(o)
    elif transform == "asymmetric":
        x = o / sc
    elif transform == "tf_half_pixel_for_nn":
        x = (o + f32(0.5)) / sc
    elif transform == "half_pixel_symmetric":
        adjustment = f32(out_len) / (sc * f32(in_len))
        offset = f32(in_len) / f32(2) * (f32(1) - adjustment)
        x = offset + (o + f32(0.5)) / sc - f32(0.5)
    else:
        raise DeviceError(f"OpenCL runtime has no Resize coordinate transformation {transform!r}")
    if mode == "nearest":
        rounding = {
            "round_prefer_floor": lambda v: np.ceil(v - f32(0.5)),
            "round_prefer_ceil": lambda v: np.floor(v + f32(0.5)),
            "floor": np.floor,
            "ceil": np.ceil,
        }
        if nearest_mode not in rounding:
            raise DeviceError(f"OpenCL runtime has no Resize nearest_mode {nearest_mode!r}")
        idx = np.clip(rounding[nearest_mode](x), 0, in_len - 1).astype(np.int32)[:, None]
        return idx, np.ones_like(idx, dtype=np.float32)
    base = np.floor(x)
    t = (x - base).astype(np.float64)
    if mode == "linear":
        offsets = np.array([0, 1])
        weights = np.stack([1 - t, t], axis=1)
    elif mode == "cubic":
        a = cubic_a
        offsets = np.array([-1, 0, 1, 2])
        d = np.stack([t + 1, t, 1 - t, 2 - t], axis=1)  # distances to the four taps
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        weights = np.where(d <= 1, near, far)
    else:
        raise DeviceError(f"OpenCL runtime has no Resize mode {mode!r}")
    idx = base.astype(np.int64)[:, None] + offsets[None, :]
    if exclude_outside:
        weights = np.where((idx >= 0) & (idx < in_len), weights, 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, in_len - 1).astype(np.int32), weights.astype(np.float32)


@lowers("Upsample")
def _lower_upsample(p: Planner, node: Node) -> None:
    """Legacy Upsample: Resize with asymmetric coordinates, nearest rounding down."""
    mode = {"bilinear": "linear"}.get(node.attrs.get("mode", "nearest"), node.attrs.get("mode", "nearest"))
    attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
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
    axes = [positive_axis(a, rank) for a in ints(attrs.get("axes", list(range(rank))))]
    scales = [ys[d] / xs[d] for d in range(rank)]
    scales_name, sizes_name = optional(node.inputs, 2), optional(node.inputs, 3)
    given = p.const(scales_name, "scales", node).reshape(-1) if scales_name else np.zeros(0)
    if "scales" in attrs:  # legacy Upsample's attribute
        given = np.asarray(attrs["scales"], np.float32)
    if given.size:
        for axis, value in zip(axes, given):
            scales[axis] = float(value)
    elif sizes_name:
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            ratios = [ys[a] / xs[a] for a in axes]
            common = min(ratios) if policy == "not_larger" else max(ratios)
            for axis in axes:
                scales[axis] = common
    if rank < 2 or any(xs[d] != ys[d] for d in range(rank - 2)):
        raise DeviceError(f"OpenCL runtime resizes only the two innermost dims (node {node.name})")
    mode = attrs.get("mode", "nearest")
    transform = attrs.get("coordinate_transformation_mode", "half_pixel")
    tables = []
    for d in (rank - 2, rank - 1):
        if xs[d] == ys[d] and scales[d] == 1.0:
            idx, wts = np.arange(xs[d], dtype=np.int32)[:, None], np.ones((xs[d], 1), np.float32)
        else:
            idx, wts = resize_taps(
                mode,
                transform,
                attrs.get("nearest_mode", "round_prefer_floor"),
                float(attrs.get("cubic_coeff_a", -0.75)),
                bool(attrs.get("exclude_outside", 0)),
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
