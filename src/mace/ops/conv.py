"""Conv and ConvTranspose for any number of spatial dims (NC + spatial), via im2col / col2im and one matmul per call.

Attribute defaults are ONNX's: strides/dilations 1, pads 0, group 1, kernel_shape from W, auto_pad NOTSET.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mace.ops.common import OpFn, arg, compute_dtype, ints, registrar

OPS: dict[str, OpFn] = {}
register = registrar(OPS)

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def spatial_attr(attrs: dict[str, Any], key: str, n: int, default: int) -> list[int]:
    """A per-spatial-dim int list attribute (strides, dilations, ...), ``default`` everywhere when absent."""
    value = attrs.get(key)
    return ints(value) if value is not None and len(value) else [default] * n


def auto_pad_mode(op: str, attrs: dict[str, Any]) -> str:
    mode = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if mode not in AUTO_PADS:
        raise NotImplementedError(f"{op}: auto_pad={mode!r} is not supported")
    return mode


def same_pads(total: int, mode: str) -> tuple[int, int]:
    """Split ``total`` padding: SAME_UPPER puts the odd one at the end, SAME_LOWER at the beginning."""
    small, big = total // 2, total - total // 2
    return (small, big) if mode == "SAME_UPPER" else (big, small)


def resolve_pads(
    op: str,
    attrs: dict[str, Any],
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Begin and end pads of a Conv/pool from ``pads`` or ``auto_pad`` (SAME: output = ceil(input / stride))."""
    n = len(in_sizes)
    mode = auto_pad_mode(op, attrs)
    if mode == "VALID":
        return [0] * n, [0] * n
    if mode == "NOTSET":
        pads = spatial_attr(attrs, "pads", 2 * n, 0)
        return pads[:n], pads[n:]
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        begin, end = same_pads(total, mode)
        begins.append(begin)
        ends.append(end)
    return begins, ends


def windows(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> np.ndarray:
    """A view of shape (N, C, *out, *kernel) of every (strided, dilated) kernel window of the padded ``x``."""
    n = len(kernel)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    view = sliding_window_view(x, span, axis=tuple(range(2, 2 + n)))
    picks = tuple(slice(None, None, s) for s in strides) + tuple(slice(None, None, d) for d in dilations)
    return view[(slice(None), slice(None), *picks)]


def _bias(y: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    if b is not None:
        y += b.astype(y.dtype).reshape((1, -1) + (1,) * (y.ndim - 2))
    return y


@register("Conv")
def conv(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Y = conv(X, W) + B; W is (M, C/group, *kernel)."""
    x, w, b = inputs[0], inputs[1], arg(inputs, 2)
    n = x.ndim - 2
    kernel = list(w.shape[2:])
    strides = spatial_attr(attrs, "strides", n, 1)
    dilations = spatial_attr(attrs, "dilations", n, 1)
    group = int(attrs.get("group", 1))
    begins, ends = resolve_pads("Conv", attrs, x.shape[2:], kernel, strides, dilations)

    dtype = compute_dtype(x.dtype)
    xp = np.pad(x.astype(dtype, copy=False), [(0, 0), (0, 0), *zip(begins, ends)])
    win = windows(xp, kernel, strides, dilations)  # (N, C, *out, *kernel)
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
    index = tuple(slice(b + p, b + p + s) for b, p, s in zip(begins, before, sizes))
    return y[(slice(None), slice(None), *index)] if n else y


@register("ConvTranspose")
def conv_transpose(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """W is (C, M/group, *kernel). output_shape (spatial dims) overrides pads; SAME_* without it gives in*stride."""
    x, w, b = inputs[0], inputs[1], arg(inputs, 2)
    n = x.ndim - 2
    in_sizes = list(x.shape[2:])
    kernel = list(w.shape[2:])
    strides = spatial_attr(attrs, "strides", n, 1)
    dilations = spatial_attr(attrs, "dilations", n, 1)
    out_pad = spatial_attr(attrs, "output_padding", n, 0)
    group = int(attrs.get("group", 1))
    mode = auto_pad_mode("ConvTranspose", attrs)
    full = [s * (i - 1) + (k - 1) * d + 1 for s, i, k, d in zip(strides, in_sizes, kernel, dilations)]

    output_shape = attrs.get("output_shape")
    if output_shape is not None and len(output_shape):
        targets = ints(output_shape)[-n:]
    elif mode in ("SAME_UPPER", "SAME_LOWER"):
        targets = [i * s for i, s in zip(in_sizes, strides)]
    else:
        targets = None
    if targets is not None:
        begins = [same_pads(f + p - t, mode)[0] for f, p, t in zip(full, out_pad, targets)]
        sizes = targets
    else:
        pads = [0] * (2 * n) if mode == "VALID" else spatial_attr(attrs, "pads", 2 * n, 0)
        sizes = [f + p - bg - e for f, p, bg, e in zip(full, out_pad, pads[:n], pads[n:])]
        begins = pads[:n]

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
        y[(slice(None), slice(None), slice(None), *dst)] += cols[(slice(None), slice(None), slice(None), *tap)]
    y = _crop(y.reshape(batch, group * mg, *y.shape[3:]), begins, sizes)
    return [_bias(np.ascontiguousarray(y), b).astype(x.dtype, copy=False)]
