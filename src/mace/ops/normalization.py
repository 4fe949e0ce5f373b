"""Normalization: BatchNormalization (inference), LayerNormalization, InstanceNormalization, LRN. Math in float32."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mace.ops.common import Attrs, Inputs, OpFn, Outputs, arg, compute_dtype, normalize_axis, registrar, required

OPS: dict[str, OpFn] = {}
register = registrar(OPS)


def _channel(v: np.ndarray, rank: int, dtype: np.dtype) -> np.ndarray:
    """A per-channel (C,) vector shaped to broadcast over (N, C, *spatial)."""
    return v.astype(dtype, copy=False).reshape((1, -1) + (1,) * (rank - 2))


@register("BatchNormalization")
def batch_normalization(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Y = (X - mean) / sqrt(var + epsilon) * scale + B, per channel (axis 1)."""
    if int(attrs.get("training_mode", 0)):
        raise NotImplementedError("BatchNormalization: training_mode=1 is not supported")
    x, scale, bias, mean, var = (required(inputs, i) for i in range(5))
    dtype = compute_dtype(x.dtype)
    eps = float(attrs.get("epsilon", 1e-5))
    factor = scale.astype(dtype) / np.sqrt(var.astype(dtype) + dtype.type(eps))
    y = (x.astype(dtype, copy=False) - _channel(mean, x.ndim, dtype)) * _channel(factor, x.ndim, dtype)
    return [(y + _channel(bias, x.ndim, dtype)).astype(x.dtype, copy=False)]


@register("LayerNormalization")
def layer_normalization(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Normalizes over dims [axis, rank) (default axis -1); returns Y, Mean and InvStdDev (kept dims, float32)."""
    x, scale, bias = required(inputs, 0), required(inputs, 1), arg(inputs, 2)
    dtype = compute_dtype(x.dtype)
    axis = normalize_axis(int(attrs.get("axis", -1)), x.ndim)
    eps = float(attrs.get("epsilon", 1e-5))
    xf = x.astype(dtype, copy=False)
    axes = tuple(range(axis, x.ndim))
    mean = np.mean(xf, axis=axes, keepdims=True)
    centered = xf - mean
    inv_std = 1 / np.sqrt(np.mean(centered * centered, axis=axes, keepdims=True) + dtype.type(eps))
    y = centered * inv_std * scale.astype(dtype, copy=False)
    if bias is not None:
        y = y + bias.astype(dtype, copy=False)
    return [y.astype(x.dtype, copy=False), mean, inv_std]


@register("InstanceNormalization")
def instance_normalization(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Per (sample, channel) over the spatial dims, then per-channel scale and B."""
    x, scale, bias = (required(inputs, i) for i in range(3))
    dtype = compute_dtype(x.dtype)
    eps = float(attrs.get("epsilon", 1e-5))
    xf = x.astype(dtype, copy=False)
    axes = tuple(range(2, x.ndim))
    centered = xf - np.mean(xf, axis=axes, keepdims=True)
    y = centered / np.sqrt(np.mean(centered * centered, axis=axes, keepdims=True) + dtype.type(eps))
    y = y * _channel(scale, x.ndim, dtype) + _channel(bias, x.ndim, dtype)
    return [y.astype(x.dtype, copy=False)]


@register("LRN")
def lrn(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Y = X / (bias + alpha / size * sum of X^2 over channels [c - (size-1)//2, c + ceil((size-1)/2)]) ^ beta."""
    x = required(inputs, 0)
    dtype = compute_dtype(x.dtype)
    size = int(attrs["size"])
    alpha, beta, bias = (float(attrs.get(k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    xf = x.astype(dtype, copy=False)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    squares = np.pad(xf * xf, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    window = sliding_window_view(squares, size, axis=1).sum(axis=-1)
    return [(xf / (bias + alpha / size * window) ** beta).astype(x.dtype, copy=False)]
