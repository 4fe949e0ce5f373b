"""The ONNX op rules that the converter, the numpy reference ops and the OpenCL planner share: one home for each.

- padding: auto_pad (NOTSET / SAME_UPPER / SAME_LOWER / VALID) resolved to begin and end pads;
- windows: spatial attributes with their defaults, output sizes of Conv and pools (ceil_mode, dilations), and the
  ConvTranspose geometry (output_shape, output_padding, SAME);
- activations: the ONNX attribute defaults (LeakyRelu alpha 0.01, HardSigmoid 0.2/0.5, Selu alpha/gamma, ...) and
  the constants of HardSwish and the tanh Gelu, one table for ops, fusions and kernels;
- Resize: output sizes and scales, the coordinate transformations, nearest rounding and the taps (indices and
  weights) of every output index, so that the reference op and the OpenCL tap tables are the same numbers;
- ScatterND: its reductions (the kernel takes their index).

Plain Python and numpy only: no ONNX, no runtime. Attribute dicts are the IR's (JSON values, ONNX names).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Attrs = Mapping[str, Any]

# ---------------------------------------------------------------------------------------------------------------------
# Padding and windows

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
SAME = ("SAME_UPPER", "SAME_LOWER")


def int_list(value: Any) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


def spatial_attr(attrs: Attrs, key: str, n: int, default: int) -> list[int]:
    """A per-spatial-dim int list attribute (strides, dilations, pads: n = 2 * dims), ``default`` when absent."""
    value = attrs.get(key)
    return int_list(value) if value is not None and len(value) else [default] * n


def auto_pad_mode(attrs: Attrs, op: str = "") -> str:
    """The node's auto_pad ("" and absent are NOTSET); NotImplementedError for a value ONNX does not define."""
    mode = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if mode not in AUTO_PADS:
        raise NotImplementedError(f"{op or 'node'}: auto_pad={mode!r} is not supported")
    return str(mode)


def window_attrs(
    attrs: Attrs, n: int, kernel: Sequence[int] | None = None
) -> tuple[list[int], list[int], list[int]]:
    """(kernel_shape, strides, dilations) of a Conv or pool over ``n`` spatial dims, with the ONNX defaults:
    kernel_shape from ``kernel`` (W's spatial dims) when absent, strides and dilations 1."""
    if attrs.get("kernel_shape") is not None and len(attrs["kernel_shape"]):
        kernel_shape = int_list(attrs["kernel_shape"])
    elif kernel is not None:
        kernel_shape = [int(k) for k in kernel]
    else:
        raise ValueError("kernel_shape is required")
    return kernel_shape, spatial_attr(attrs, "strides", n, 1), spatial_attr(attrs, "dilations", n, 1)


def window_span(kernel: int, dilation: int) -> int:
    """How many input positions a dilated kernel covers."""
    return (kernel - 1) * dilation + 1


def split_pad(total: int, mode: str) -> tuple[int, int]:
    """(begin, end) of ``total`` padding: SAME_UPPER puts the odd one at the end, anything else at the beginning.

    ConvTranspose splits its total padding the same way (SAME_UPPER: begin = total // 2, otherwise the larger half).
    """
    small, big = total // 2, total - total // 2
    return (small, big) if mode == "SAME_UPPER" else (big, small)


def same_pads(
    in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], mode: str
) -> tuple[list[int], list[int]]:
    """Begin and end pads of auto_pad SAME_*: output = ceil(input / stride), padding split by ``split_pad``."""
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-size // s)
        begin, end = split_pad(max(0, (out - 1) * s + window_span(k, d) - size), mode)
        begins.append(begin)
        ends.append(end)
    return begins, ends


def resolve_pads(
    attrs: Attrs,
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    op: str = "",
) -> tuple[list[int], list[int]]:
    """Begin and end pads of a Conv or pool from ``pads`` (NOTSET) or ``auto_pad`` (VALID: none, SAME: same_pads)."""
    n = len(in_sizes)
    mode = auto_pad_mode(attrs, op)
    if mode == "VALID":
        return [0] * n, [0] * n
    if mode == "NOTSET":
        pads = spatial_attr(attrs, "pads", 2 * n, 0)
        return pads[:n], pads[n:]
    return same_pads(in_sizes, kernel, strides, dilations, mode)


def pool_output_size(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int, ceil_mode: bool) -> int:
    """Windows along one axis of a Conv (ceil_mode False) or pool over ``size`` padded by ``begin``/``end``.

    ceil_mode follows ONNX's reference and PyTorch: rounding up may add a window, but not one that would start in
    the end padding.
    """
    room = size + begin + end - window_span(kernel, dilation)
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + begin:
        out -= 1
    return out


def conv_transpose_pads(
    attrs: Attrs,
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    op: str = "ConvTranspose",
) -> tuple[list[int], list[int], list[int]]:
    """(begin pads, end pads, output sizes) of a ConvTranspose.

    The full output is stride * (in - 1) + output_padding + span; ``output_shape`` (its spatial dims) overrides
    ``pads``, and SAME_* without it asks for in * stride; the difference is split by ``split_pad``.
    """
    n = len(in_sizes)
    mode = auto_pad_mode(attrs, op)
    out_pad = spatial_attr(attrs, "output_padding", n, 0)
    full = [s * (i - 1) + p + window_span(k, d) for s, i, p, k, d in zip(strides, in_sizes, out_pad, kernel, dilations)]
    output_shape = attrs.get("output_shape")
    if output_shape is not None and len(output_shape):
        targets: list[int] | None = int_list(output_shape)[-n:]
    elif mode in SAME:
        targets = [i * s for i, s in zip(in_sizes, strides)]
    else:
        targets = None
    if targets is None:
        pads = [0] * (2 * n) if mode == "VALID" else spatial_attr(attrs, "pads", 2 * n, 0)
        begins, ends = pads[:n], pads[n:]
        return begins, ends, [f - b - e for f, b, e in zip(full, begins, ends)]
    splits = [split_pad(f - t, mode) for f, t in zip(full, targets)]
    return [b for b, _ in splits], [e for _, e in splits], targets


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int) -> int:
    """Output positions of a Conv along one axis: floor((size + pads - span) / stride) + 1."""
    return pool_output_size(size, kernel, stride, dilation, begin, end, ceil_mode=False)


def sliding_windows(
    x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> np.ndarray:
    """A view of shape (N, C, *out, *kernel) of every (strided, dilated) kernel window of an already padded ``x``."""
    n = len(kernel)
    span = [window_span(k, d) for k, d in zip(kernel, dilations)]
    view = sliding_window_view(x, span, axis=tuple(range(2, 2 + n)))
    picks = tuple(slice(None, None, s) for s in strides) + tuple(slice(None, None, d) for d in dilations)
    index = (slice(None), slice(None), *picks)
    return view[index]


# ---------------------------------------------------------------------------------------------------------------------
# Activations

SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875
HARD_SWISH_ALPHA = 1.0 / 6.0  # HardSwish(x) = x * HardSigmoid(x, 1/6, 0.5)
HARD_SWISH_BETA = 0.5
GELU_TANH_COEFF = 0.044715  # Gelu(approximate="tanh"): x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
GELU_TANH_SCALE = math.sqrt(2.0 / math.pi)
GELU_ERF_SCALE = 1.0 / math.sqrt(2.0)  # Gelu(approximate="none"): x/2 (1 + erf(x / sqrt(2)))

# op -> its float attributes and their ONNX defaults, in the order of a fused activation's activation_params. Clip's
# absent bounds are float32's lowest and max (ONNX's numeric_limits, as onnxruntime): Clip(inf) without max is FLT_MAX.
FLOAT32_MAX = float(np.finfo(np.float32).max)
ACTIVATION_DEFAULTS: dict[str, dict[str, float]] = {
    "Clip": {"min": -FLOAT32_MAX, "max": FLOAT32_MAX},
    "LeakyRelu": {"alpha": 0.01},
    "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
    "Elu": {"alpha": 1.0},
    "Celu": {"alpha": 1.0},
    "Selu": {"alpha": SELU_ALPHA, "gamma": SELU_GAMMA},
    "ThresholdedRelu": {"alpha": 1.0},
    "Shrink": {"lambd": 0.5, "bias": 0.0},
}


def activation_attr(op: str, attrs: Attrs, key: str) -> float:
    """Attribute ``key`` of activation ``op``, or its ONNX default."""
    return float(attrs.get(key, ACTIVATION_DEFAULTS[op][key]))


def activation_params(op: str, attrs: Attrs) -> list[float]:
    """All float attributes of activation ``op`` (defaults filled), in ACTIVATION_DEFAULTS order."""
    return [activation_attr(op, attrs, key) for key in ACTIVATION_DEFAULTS.get(op, {})]


def fused_params(name: str, params: Sequence[float]) -> list[float]:
    """A fused activation's ``activation_params`` with the missing trailing ones set to the ONNX defaults."""
    defaults = list(ACTIVATION_DEFAULTS.get(name, {}).values())
    given = [float(v) for v in params]
    return given + defaults[len(given) :]


# ---------------------------------------------------------------------------------------------------------------------
# Resize

RESIZE_MODES = {"nearest": "nearest", "linear": "linear", "bilinear": "linear", "trilinear": "linear", "cubic": "cubic"}
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
ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")
RESIZE_DEFAULTS: dict[str, Any] = {
    "mode": "nearest",
    "coordinate_transformation_mode": "half_pixel",
    "nearest_mode": "round_prefer_floor",
    "cubic_coeff_a": -0.75,
    "exclude_outside": 0,
    "extrapolation_value": 0.0,
    "keep_aspect_ratio_policy": "stretch",
}
# Legacy Upsample is Resize with these attributes (and its own mode).
UPSAMPLE_ATTRS = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}


def resize_attr(attrs: Attrs, key: str) -> Any:
    """Resize attribute ``key`` or its ONNX default; the string ones are checked (NotImplementedError)."""
    value = attrs.get(key, RESIZE_DEFAULTS[key])
    allowed = {
        "mode": RESIZE_MODES,
        "coordinate_transformation_mode": COORDINATE_MODES,
        "nearest_mode": NEAREST_MODES,
        "keep_aspect_ratio_policy": ASPECT_POLICIES,
    }.get(key)
    if allowed is not None and value not in allowed:
        raise NotImplementedError(f"Resize: {key}={value!r} is not supported")
    return RESIZE_MODES[value] if key == "mode" else value


def resize_output(
    in_sizes: Sequence[int], scales: Sequence[float] | None, sizes: Sequence[int] | None, policy: str = "stretch"
) -> tuple[list[float], list[int]]:
    """(scale, output size) of each resized axis from the ``scales`` or ``sizes`` input, in float32 as onnxruntime
    and the ONNX reference compute them.

    Scales: out = floor(in * scale). Sizes: scale = out / in, or with keep_aspect_ratio_policy not_larger /
    not_smaller one scale for all axes (the min / max ratio) and out = round_half_up(in * scale).
    """
    f = np.float32
    if sizes is not None and len(sizes):
        targets = [int(t) for t in sizes]
        ratios = [f(t) / f(s) for t, s in zip(targets, in_sizes)]
        if policy != "stretch":
            ratio = (min if policy == "not_larger" else max)(ratios)
            ratios = [ratio] * len(ratios)
            targets = [math.floor(float(ratio * f(s)) + 0.5) for s in in_sizes]
        return [float(r) for r in ratios], targets
    if scales is not None and len(scales):
        values = [f(v) for v in scales]
        return [float(v) for v in values], [math.floor(float(v * f(s))) for v, s in zip(values, in_sizes)]
    raise ValueError("Resize: needs 'scales' or 'sizes'")


def source_coordinates(
    coord_mode: str, out: int, size: int, scale: float | np.floating[Any], roi: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """The input coordinate (float32) of every output index along one axis (ONNX coordinate_transformation_mode).

    Everything is float32, in onnxruntime's operation order, so that exact ties (1.5 / 0.6 - 0.5 = 2 for a float32
    scale of 0.6) round the way float32 runtimes round them. half_pixel_symmetric too: its offset is 0 when
    out == scale * size (in float32), and it then equals half_pixel exactly, as the ONNX spec says it must.
    """
    f = np.float32
    xo = np.arange(out, dtype=f)
    scale_, length, resized = f(scale), f(size), f(out)
    if coord_mode == "half_pixel":
        return (xo + f(0.5)) / scale_ - f(0.5)
    if coord_mode == "half_pixel_symmetric":
        adjustment = resized / (scale_ * length)
        offset = length / f(2) * (f(1) - adjustment)
        return offset + (xo + f(0.5)) / scale_ - f(0.5)
    if coord_mode == "pytorch_half_pixel":
        return (xo + f(0.5)) / scale_ - f(0.5) if out > 1 else np.zeros(out, f)
    if coord_mode == "align_corners":
        return xo * (length - f(1)) / (resized - f(1)) if out > 1 else np.zeros(out, f)
    if coord_mode == "asymmetric":
        return xo / scale_
    if coord_mode == "tf_half_pixel_for_nn":
        return (xo + f(0.5)) / scale_
    if coord_mode == "tf_crop_and_resize":
        start, end = f(roi[0]), f(roi[1])
        if out > 1:
            return start * (length - f(1)) + xo * (end - start) * (length - f(1)) / (resized - f(1))
        return np.full(out, 0.5 * float(start + end) * float(length - f(1)), f)
    raise NotImplementedError(f"Resize: coordinate_transformation_mode={coord_mode!r} is not supported")


def nearest_index(coords: np.ndarray, nearest_mode: str) -> np.ndarray:
    """The input index (int64, not clamped) that ``nearest_mode`` rounds each float32 coordinate to."""
    f = np.float32
    c = np.asarray(coords, f)
    if nearest_mode == "round_prefer_floor":
        index = np.ceil(c - f(0.5))
    elif nearest_mode == "round_prefer_ceil":
        index = np.floor(c + f(0.5))
    elif nearest_mode == "floor":
        index = np.floor(c)
    elif nearest_mode == "ceil":
        index = np.ceil(c)
    else:
        raise NotImplementedError(f"Resize: nearest_mode={nearest_mode!r} is not supported")
    return index.astype(np.int64)


def cubic_weights(frac: np.ndarray, a: float) -> np.ndarray:
    """(n, 4) Keys cubic weights (coefficient ``a``) of the taps at floor-1 .. floor+2, ``frac`` = x - floor(x)."""
    d = np.stack([frac + 1, frac, 1 - frac, 2 - frac], axis=1)  # distances to the four taps
    near = ((a + 2) * d - (a + 3)) * d * d + 1  # |d| <= 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # 1 < |d| < 2
    return np.where(d <= 1, near, far)


def resize_taps(
    mode: str,
    coord_mode: str,
    in_len: int,
    out_len: int,
    scale: float | np.floating[Any],
    nearest_mode: str = "round_prefer_floor",
    cubic_coeff_a: float = -0.75,
    exclude_outside: bool = False,
    roi: tuple[float, float] = (0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index along one axis: input indices [out_len, taps] (int64, clamped to the input), their weights
    (float64, cast by the caller) and whether the coordinate is outside the input (tf_crop_and_resize only).

    nearest: 1 tap; linear: 2, the coordinate clamped to [0, in_len - 1]; cubic: 4, edge taps repeated unless
    exclude_outside (then their weight is 0 and the rest renormalized).
    """
    mode = RESIZE_MODES.get(mode, mode)
    coords = source_coordinates(coord_mode, out_len, in_len, scale, roi)
    if mode == "nearest":
        idx = nearest_index(coords, nearest_mode)[:, None]
        weights = np.ones(idx.shape, np.float64)
    elif mode == "linear":
        clamped = np.clip(coords, 0, in_len - 1)
        low = np.floor(clamped).astype(np.int64)
        t = clamped.astype(np.float64) - low
        idx = np.stack([low, low + 1], axis=1)
        weights = np.stack([1 - t, t], axis=1)
        # At the last input index both taps read it: half each, as onnxruntime, not 1 and 0 (inf * 0 would be NaN).
        weights[low + 1 > in_len - 1] = 0.5
    elif mode == "cubic":
        low = np.floor(coords).astype(np.int64)
        weights = cubic_weights(coords.astype(np.float64) - low, float(cubic_coeff_a))
        idx = low[:, None] + np.arange(-1, 3)
        if exclude_outside:
            weights = np.where((idx >= 0) & (idx < in_len), weights, 0.0)
            weights = weights / weights.sum(axis=1, keepdims=True)
    else:
        raise NotImplementedError(f"Resize: mode={mode!r} is not supported")
    if coord_mode == "tf_crop_and_resize":
        outside = (coords < 0) | (coords > in_len - 1)
    else:
        outside = np.zeros(out_len, bool)
    return np.clip(idx, 0, in_len - 1), weights, outside


# ---------------------------------------------------------------------------------------------------------------------
# ScatterND

SCATTER_REDUCTIONS = ("none", "add", "mul", "max", "min")  # the reduction attribute; indexing.cl takes the index
