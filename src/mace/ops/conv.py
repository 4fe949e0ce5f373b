"""Conv and ConvTranspose for any number of spatial dims (NC + spatial), via im2col / col2im and one matmul per call.

Attribute defaults are ONNX's: strides/dilations 1, pads 0, group 1, kernel_shape from W, auto_pad NOTSET.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mace.model.rules import conv_transpose_pads, resolve_pads, sliding_windows, spatial_attr
from mace.ops.common import Attrs, Inputs, OpFn, Outputs, arg, compute_dtype, registrar, required

OPS: dict[str, OpFn] = {}
register = registrar(OPS)

def _bias(y: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    if b is not None:
        y += b.astype(y.dtype).reshape((1, -1) + (1,) * (y.ndim - 2))
    return y


@register("Conv")
def conv(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Y = conv(X, W) + B; W is (M, C/group, *kernel)."""
    x, w, b = required(inputs, 0), required(inputs, 1), arg(inputs, 2)
    n = x.ndim - 2
    kernel = list(w.shape[2:])
    strides = spatial_attr(attrs, "strides", n, 1)
    dilations = spatial_attr(attrs, "dilations", n, 1)
    group = int(attrs.get("group", 1))
    begins, ends = resolve_pads(attrs, x.shape[2:], kernel, strides, dilations, "Conv")

    dtype = compute_dtype(x.dtype)
    xp = np.pad(x.astype(dtype, copy=False), [(0, 0), (0, 0), *zip(begins, ends)])
    win = sliding_windows(xp, kernel, strides, dilations)  # (N, C, *out, *kernel)
    batch, channels = x.shape[:2]
    out = win.shape[2 : 2 + n]
    m = w.shape[0]
    cg, mg = channels // group, m // group
    win = win.reshape(batch, group, cg, *out, *kernel)
    perm = (0, 1, *range(3, 3 + n), 2, *range(3 + n, 3 + 2 * n))
    cols = win.transpose(perm).reshape(batch, group, math.prod(out), cg * math.prod(kernel))
    wm = w.astype(dtype, copy=False).reshape(group, mg, cg * math.prod(kernel))
    # float64 accumulation: BLAS tiles rows differently, and a float32 sum would make equal channels differ in
    # their last bits (the light models, with constant weights, then disagree with the stored outputs)
    y = np.matmul(cols.astype(np.float64), wm.transpose(0, 2, 1).astype(np.float64)).astype(dtype)
    y = np.ascontiguousarray(y.transpose(0, 1, 3, 2)).reshape(batch, m, *out)
    return [_bias(y, b).astype(x.dtype, copy=False)]


def _crop(y: np.ndarray, begins: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """Spatial window [begin, begin + size) of y; parts outside y (negative pads) read as zeros."""
    n = len(sizes)
    before = [max(0, -b) for b in begins]
    after = [max(0, b + s - full) for b, s, full in zip(begins, sizes, y.shape[2:])]
    if any(before) or any(after):
        y = np.pad(y, [(0, 0), (0, 0), *zip(before, after)])
    index = (slice(None), slice(None), *(slice(b + p, b + p + s) for b, p, s in zip(begins, before, sizes)))
    return y[index] if n else y


@register("ConvTranspose")
def conv_transpose(inputs: Inputs, attrs: Attrs) -> Outputs:
    """W is (C, M/group, *kernel). output_shape (spatial dims) overrides pads; SAME_* without it gives in*stride."""
    x, w, b = required(inputs, 0), required(inputs, 1), arg(inputs, 2)
    n = x.ndim - 2
    in_sizes = list(x.shape[2:])
    kernel = list(w.shape[2:])
    strides = spatial_attr(attrs, "strides", n, 1)
    dilations = spatial_attr(attrs, "dilations", n, 1)
    out_pad = spatial_attr(attrs, "output_padding", n, 0)
    group = int(attrs.get("group", 1))
    full = [s * (i - 1) + (k - 1) * d + 1 for s, i, k, d in zip(strides, in_sizes, kernel, dilations)]
    begins, _, sizes = conv_transpose_pads(attrs, in_sizes, kernel, strides, dilations)

    dtype = compute_dtype(x.dtype)
    batch, channels = x.shape[:2]
    cg, mg = channels // group, w.shape[1]
    xr = x.astype(dtype, copy=False).reshape(batch, group, cg, math.prod(in_sizes)).transpose(0, 1, 3, 2)
    wr = w.astype(dtype, copy=False).reshape(group, cg, mg * math.prod(kernel))
    cols = np.matmul(xr, wr).reshape(batch, group, *in_sizes, mg, *kernel)
    cols = cols.transpose(0, 1, 2 + n, *range(3 + n, 3 + 2 * n), *range(2, 2 + n))  # (N, g, M/g, *kernel, *in)
    y = np.zeros((batch, group, mg, *(f + p for f, p in zip(full, out_pad))), dtype)
    for tap in np.ndindex(*kernel):
        dst = tuple(slice(t * d, t * d + s * (i - 1) + 1, s) for t, d, s, i in zip(tap, dilations, strides, in_sizes))
        y[(slice(None),) * 3 + dst] += cols[(slice(None),) * 3 + tap]
    y = _crop(y.reshape(batch, group * mg, *y.shape[3:]), begins, sizes)
    return [_bias(np.ascontiguousarray(y), b).astype(x.dtype, copy=False)]
