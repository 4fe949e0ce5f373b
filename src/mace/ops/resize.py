"""Resize (nearest / linear / cubic, every coordinate_transformation_mode; scales or sizes) and legacy Upsample.

Interpolation is separable, so it is done one axis at a time: each output coordinate maps back to an input
coordinate, then 1 (nearest), 2 (linear) or 4 (cubic) input rows are gathered and weighted. Linear clamps the
coordinate to [0, in-1]; cubic clamps its taps (edge) unless exclude_outside. tf_crop_and_resize writes
extrapolation_value where the coordinate falls outside the input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mace.ops.common import OpFn, arg, compute_dtype, ints, normalize_axis, registrar

OPS: dict[str, OpFn] = {}
register = registrar(OPS)

MODES = {"nearest": "nearest", "linear": "linear", "bilinear": "linear", "trilinear": "linear", "cubic": "cubic"}
COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
    "tf_crop_and_resize",
)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _check(attrs: dict[str, Any], key: str, default: str, allowed: Any) -> str:
    value = attrs.get(key, default)
    if value not in allowed:
        raise NotImplementedError(f"Resize: {key}={value!r} is not supported")
    return value


def source_coordinates(
    coord_mode: str, out: int, size: int, scale: float, roi: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """The input coordinate of every output index along one axis.

    Computed in float32 with onnxruntime's operation order, so that exact ties (e.g. 1.5 / 0.6 - 0.5 = 2 for a
    float32 scale of 0.6) round the way float32 runtimes (onnxruntime, the OpenCL kernels) round them.
    """
    f = np.float32
    xo = np.arange(out, dtype=f)
    scale, length, resized = f(scale), f(size), f(out)
    if coord_mode == "half_pixel":
        return (xo + f(0.5)) / scale - f(0.5)
    if coord_mode == "half_pixel_symmetric":  # the offset in float32, the rest in float64 (onnxruntime does so)
        offset = length / f(2) * (f(1) - resized / (scale * length))
        return (np.float64(offset) + (xo.astype(np.float64) + 0.5) / np.float64(scale) - 0.5).astype(f)
    if coord_mode == "pytorch_half_pixel":
        return (xo + f(0.5)) / scale - f(0.5) if out > 1 else np.zeros(out, f)
    if coord_mode == "align_corners":
        return xo * (length - f(1)) / (resized - f(1)) if out > 1 else np.zeros(out, f)
    if coord_mode == "asymmetric":
        return xo / scale
    if coord_mode == "tf_half_pixel_for_nn":
        return (xo + f(0.5)) / scale
    start, end = f(roi[0]), f(roi[1])  # tf_crop_and_resize
    if out > 1:
        return start * (length - f(1)) + xo * (end - start) * (length - f(1)) / (resized - f(1))
    return np.full(out, 0.5 * float(start + end) * float(length - f(1)), f)


def _nearest_index(coords: np.ndarray, nearest_mode: str) -> np.ndarray:
    if nearest_mode == "round_prefer_floor":
        index = np.ceil(coords - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        index = np.floor(coords + 0.5)
    elif nearest_mode == "floor":
        index = np.floor(coords)
    else:
        index = np.ceil(coords)
    return index.astype(np.int64)


def _cubic_weights(frac: np.ndarray, a: float) -> np.ndarray:
    """(out, 4) Keys cubic weights for taps at floor-1 .. floor+2, ``frac`` = coordinate - floor."""
    distances = np.stack([frac + 1, frac, 1 - frac, 2 - frac], axis=1)
    near = ((a + 2) * distances - (a + 3)) * distances * distances + 1  # |d| <= 1
    far = ((a * distances - 5 * a) * distances + 8 * a) * distances - 4 * a  # 1 < |d| < 2
    return np.where(distances <= 1, near, far)


def _resize_axis(x: np.ndarray, axis: int, out: int, scale: float, roi: tuple[float, float], attrs: dict) -> np.ndarray:
    """Resize ``x`` along ``axis`` to ``out`` elements (x is already in the compute dtype for linear/cubic)."""
    size = x.shape[axis]
    mode = MODES[attrs.get("mode", "nearest")]
    coord_mode = attrs.get("coordinate_transformation_mode", "half_pixel")
    coords = source_coordinates(coord_mode, out, size, scale, roi)
    bshape = [1] * x.ndim
    bshape[axis] = out

    def gather(index: np.ndarray) -> np.ndarray:
        return np.take(x, np.clip(index, 0, size - 1), axis=axis)

    if mode == "nearest":
        y = gather(_nearest_index(coords, attrs.get("nearest_mode", "round_prefer_floor")))
    elif mode == "linear":
        clamped = np.clip(coords, 0, size - 1)
        low = np.floor(clamped).astype(np.int64)
        w = (clamped - low).astype(x.dtype).reshape(bshape)
        y = gather(low) * (1 - w) + gather(low + 1) * w
    else:
        low = np.floor(coords).astype(np.int64)
        weights = _cubic_weights(coords - low, float(attrs.get("cubic_coeff_a", -0.75)))
        taps = low[:, None] + np.arange(-1, 3)
        if int(attrs.get("exclude_outside", 0)):
            weights = np.where((taps >= 0) & (taps < size), weights, 0)
            weights /= weights.sum(axis=1, keepdims=True)
        weights = weights.astype(x.dtype)
        y = sum(gather(taps[:, k]) * weights[:, k].reshape(bshape) for k in range(4))
    if coord_mode == "tf_crop_and_resize":
        outside = ((coords < 0) | (coords > size - 1)).reshape(bshape)
        y = np.where(outside, np.asarray(attrs.get("extrapolation_value", 0.0)).astype(x.dtype), y)
    return y


@register("Resize")
def resize(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Inputs X, roi, scales, sizes (empty or absent when unused); ``axes`` (opset 18) limits them to some axes.

    Without sizes, out = floor(in * scale) (the roi does not change it, as in onnxruntime and the ONNX reference);
    with sizes the scale is out / in, or, with keep_aspect_ratio_policy not_larger/not_smaller, one scale for all
    ``axes``.
    """
    x, roi_in, scales_in, sizes_in = inputs[0], arg(inputs, 1), arg(inputs, 2), arg(inputs, 3)
    mode = MODES[_check(attrs, "mode", "nearest", MODES)]
    coord_mode = _check(attrs, "coordinate_transformation_mode", "half_pixel", COORDINATE_MODES)
    _check(attrs, "nearest_mode", "round_prefer_floor", NEAREST_MODES)
    policy = _check(attrs, "keep_aspect_ratio_policy", "stretch", ("stretch", "not_larger", "not_smaller"))
    axes = [normalize_axis(a, x.ndim) for a in ints(attrs["axes"])] if attrs.get("axes") else list(range(x.ndim))
    in_sizes = [x.shape[a] for a in axes]

    roi = [(0.0, 1.0)] * x.ndim
    if coord_mode == "tf_crop_and_resize" and roi_in is not None and roi_in.size:
        values = [float(v) for v in np.asarray(roi_in).reshape(-1)]
        for i, a in enumerate(axes):
            roi[a] = (values[i], values[i + len(axes)])

    # Scales and sizes in float32, as onnxruntime and the ONNX reference compute them.
    f = np.float32
    scales = [1.0] * x.ndim
    outs = list(x.shape)
    if sizes_in is not None and sizes_in.size:
        targets = ints(sizes_in)
        ratios = [f(t) / f(s) for t, s in zip(targets, in_sizes)]
        if policy != "stretch":
            ratio = (min if policy == "not_larger" else max)(ratios)
            ratios = [ratio] * len(axes)
            targets = [math.floor(float(ratio * f(s)) + 0.5) for s in in_sizes]
        for a, ratio, t in zip(axes, ratios, targets):
            scales[a], outs[a] = float(ratio), t
    elif scales_in is not None and scales_in.size:
        for a, sc in zip(axes, np.asarray(scales_in, f).reshape(-1)):
            scales[a], outs[a] = float(sc), math.floor(float(sc * f(x.shape[a])))
    else:
        raise ValueError("Resize: needs 'scales' or 'sizes'")

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
def upsample(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Legacy Upsample = Resize with asymmetric coordinates (nearest: floor); scales is input 1 (or an attribute)."""
    scales = arg(inputs, 1)
    if scales is None:
        scales = np.asarray(attrs["scales"], np.float32)
    mode = attrs.get("mode", "nearest")
    if MODES.get(mode) not in ("nearest", "linear"):
        raise NotImplementedError(f"Upsample: mode={mode!r} is not supported")
    resize_attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    return resize([inputs[0], None, scales], resize_attrs)
