"""Resize (nearest / linear / cubic, every coordinate_transformation_mode; scales or sizes), legacy Upsample, and
GridSample (2-D: nearest / bilinear, zeros / border / reflection padding, align_corners).

Interpolation is separable, so it is done one axis at a time: each output coordinate maps back to an input
coordinate, then 1 (nearest), 2 (linear) or 4 (cubic) input rows are gathered and weighted. Linear clamps the
coordinate to [0, in-1]; cubic clamps its taps (edge) unless exclude_outside. tf_crop_and_resize writes
extrapolation_value where the coordinate falls outside the input.
"""

from __future__ import annotations

import numpy as np

from mace.model import rules
from mace.ops.common import Attrs, Inputs, OpFn, Outputs, arg, compute_dtype, ints, normalize_axis, registrar, required

OPS: dict[str, OpFn] = {}
register = registrar(OPS)

def _resize_axis(
    x: np.ndarray, axis: int, out: int, scale: float, roi: tuple[float, float], attrs: Attrs
) -> np.ndarray:
    """Resize ``x`` along ``axis`` to ``out`` elements (x is already in the compute dtype for linear/cubic), with the
    taps of rules.resize_taps (the OpenCL runtime's tap tables are the same)."""
    coord_mode = rules.resize_attr(attrs, "coordinate_transformation_mode")
    index, weights, outside = rules.resize_taps(
        rules.resize_attr(attrs, "mode"),
        coord_mode,
        x.shape[axis],
        out,
        scale,
        rules.resize_attr(attrs, "nearest_mode"),
        float(rules.resize_attr(attrs, "cubic_coeff_a")),
        bool(int(rules.resize_attr(attrs, "exclude_outside"))),
        roi,
    )
    bshape = [1] * x.ndim
    bshape[axis] = out
    if index.shape[1] == 1:  # nearest
        y = np.take(x, index[:, 0], axis=axis)
    else:
        w = weights.astype(x.dtype)
        y = sum(np.take(x, index[:, k], axis=axis) * w[:, k].reshape(bshape) for k in range(index.shape[1]))
    if coord_mode == "tf_crop_and_resize":
        fill = np.asarray(rules.resize_attr(attrs, "extrapolation_value")).astype(x.dtype)
        y = np.where(outside.reshape(bshape), fill, y)
    return y


@register("Resize")
def resize(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Inputs X, roi, scales, sizes (empty or absent when unused); ``axes`` (opset 18) limits them to some axes.

    Without sizes, out = floor(in * scale) (the roi does not change it, as in onnxruntime and the ONNX reference);
    with sizes the scale is out / in, or, with keep_aspect_ratio_policy not_larger/not_smaller, one scale for all
    ``axes``.
    """
    x, roi_in, scales_in, sizes_in = required(inputs, 0), arg(inputs, 1), arg(inputs, 2), arg(inputs, 3)
    mode = rules.resize_attr(attrs, "mode")
    coord_mode = rules.resize_attr(attrs, "coordinate_transformation_mode")
    rules.resize_attr(attrs, "nearest_mode")
    policy = rules.resize_attr(attrs, "keep_aspect_ratio_policy")
    axes = [normalize_axis(a, x.ndim) for a in ints(attrs["axes"])] if attrs.get("axes") else list(range(x.ndim))
    in_sizes = [x.shape[a] for a in axes]

    roi = [(0.0, 1.0)] * x.ndim
    if coord_mode == "tf_crop_and_resize" and roi_in is not None and roi_in.size:
        values = [float(v) for v in np.asarray(roi_in).reshape(-1)]
        for i, a in enumerate(axes):
            roi[a] = (values[i], values[i + len(axes)])

    scales = [1.0] * x.ndim
    outs = list(x.shape)
    given_scales = [float(v) for v in np.asarray(scales_in).reshape(-1)] if scales_in is not None else None
    given_sizes = ints(sizes_in) if sizes_in is not None else None
    for a, scale, size in zip(axes, *rules.resize_output(in_sizes, given_scales, given_sizes, policy)):
        scales[a], outs[a] = scale, size

    if int(attrs.get("antialias", 0)) and mode != "nearest" and any(s < 1 for s in scales):
        raise NotImplementedError("Resize: antialias=1 is not supported when downsampling")

    dtype = x.dtype if mode == "nearest" else compute_dtype(x.dtype)
    y = x.astype(dtype, copy=False)
    for a in range(x.ndim):  # an axis with scale 1, same size and the full roi is left alone (any coordinate mode)
        if not (outs[a] == x.shape[a] and scales[a] == 1.0 and roi[a] == (0.0, 1.0)):
            y = _resize_axis(y, a, outs[a], scales[a], roi[a], attrs)
    if np.issubdtype(x.dtype, np.integer) and mode != "nearest":
        info = np.iinfo(x.dtype)
        y = np.clip(np.rint(y), info.min, info.max)
    return [y.copy() if y is x else y.astype(x.dtype, copy=False)]


@register("Upsample")
def upsample(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Legacy Upsample = Resize with asymmetric coordinates (nearest: floor); scales is input 1 (or an attribute)."""
    scales = arg(inputs, 1)
    if scales is None:
        scales = np.asarray(attrs["scales"], np.float32)
    mode = attrs.get("mode", "nearest")
    if rules.RESIZE_MODES.get(mode) not in ("nearest", "linear"):
        raise NotImplementedError(f"Upsample: mode={mode!r} is not supported")
    resize_attrs = {"mode": mode, **rules.UPSAMPLE_ATTRS}
    return resize([required(inputs, 0), None, scales], resize_attrs)


GRID_MODES = {"nearest": 0, "bilinear": 1, "linear": 1}  # (opset 20 renamed bilinear linear)
GRID_PADDINGS = ("zeros", "border", "reflection")


def grid_sample_attrs(attrs: Attrs) -> tuple[int, int, bool]:
    """(mode: 0 nearest, 1 bilinear; padding: an index of GRID_PADDINGS; align_corners), checked."""
    mode, padding = str(attrs.get("mode", "bilinear")), str(attrs.get("padding_mode", "zeros"))
    if mode not in GRID_MODES:
        raise NotImplementedError(f"GridSample: mode={mode!r} is not supported (nearest, bilinear / linear)")
    if padding not in GRID_PADDINGS:
        raise NotImplementedError(f"GridSample: padding_mode={padding!r} is not supported")
    return GRID_MODES[mode], GRID_PADDINGS.index(padding), bool(int(attrs.get("align_corners", 0)))


def grid_coordinates(g: np.ndarray, size: int, padding: int, align: bool) -> np.ndarray:
    """Normalized grid coordinates ([-1, 1] spans the input) as input coordinates along an axis of ``size``, in
    float32: held inside (border) or reflected at the edges (reflection; then held) as onnxruntime and torch do."""
    f = np.float32
    g = g.astype(f)
    x = (g + f(1)) / f(2) * f(size - 1) if align else ((g + f(1)) * f(size) - f(1)) / f(2)
    if padding == 2:  # reflection, about the edge pixels' centers (align_corners) or their outer edges
        low, high = (f(0), f(size - 1)) if align else (f(-0.5), f(size - 0.5))
        span = high - low
        if span <= 0:
            return np.zeros_like(x)
        d = np.abs(x - low)
        flips, extra = np.floor(d / span), np.fmod(d, span)
        x = np.where(flips % 2 == 0, low + extra, high - extra).astype(f)
    if padding >= 1:
        x = np.clip(x, f(0), f(size - 1))
    return x


@register("GridSample")
def grid_sample(inputs: Inputs, attrs: Attrs) -> Outputs:
    """X [N, C, H, W] sampled at grid [N, Ho, Wo, 2] (x then y, normalized): [N, C, Ho, Wo]. Nearest rounds half to
    even; samples outside the input are zero with zeros padding."""
    x, grid = required(inputs, 0), required(inputs, 1)
    if x.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != x.shape[0]:
        raise NotImplementedError(f"GridSample: X {list(x.shape)} and grid {list(grid.shape)}: only 2-D sampling "
                                  "([N, C, H, W] at [N, Ho, Wo, 2]) is supported")
    mode, padding, align = grid_sample_attrs(attrs)
    n, _, h, w = x.shape
    xc = x.astype(compute_dtype(x.dtype), copy=False)
    ix = grid_coordinates(grid[..., 0], w, padding, align)  # [N, Ho, Wo]
    iy = grid_coordinates(grid[..., 1], h, padding, align)
    batch = np.arange(n)[:, None, None]

    def tap(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:  # [N, C, Ho, Wo], zero outside
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        yc, xcl = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
        values = xc[batch, :, yc, xcl]  # [N, Ho, Wo, C]
        return np.where(inside[..., None], values, 0).transpose(0, 3, 1, 2)

    if mode == 0:
        y = tap(np.rint(iy).astype(np.int64), np.rint(ix).astype(np.int64))
    else:
        x0, y0 = np.floor(ix), np.floor(iy)
        fx, fy = (ix - x0)[:, None], (iy - y0)[:, None]
        x0i, y0i = x0.astype(np.int64), y0.astype(np.int64)
        y = ((1 - fy) * ((1 - fx) * tap(y0i, x0i) + fx * tap(y0i, x0i + 1))
             + fy * ((1 - fx) * tap(y0i + 1, x0i) + fx * tap(y0i + 1, x0i + 1)))
    return [y.astype(x.dtype, copy=False)]
