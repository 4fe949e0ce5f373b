"""MaxPool / AveragePool (N-d: pads, auto_pad, strides, dilations, ceil_mode, count_include_pad) and global pools.

ceil_mode follows ONNX/PyTorch: a last window that would start in the end padding is dropped. AveragePool divides by
the count of real elements (count_include_pad=0) or of elements inside the explicit pads (=1); the ceil-mode
overhang past the end pad is never counted. MaxPool's optional second output (Indices) is not produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mace.model.rules import pool_output_size, resolve_pads, sliding_windows, spatial_attr, window_span
from mace.ops.common import Attrs, Inputs, OpFn, Outputs, compute_dtype, ints, registrar, required

OPS: dict[str, OpFn] = {}
register = registrar(OPS)


@dataclass
class PoolGeometry:
    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begins: list[int]
    ends: list[int]
    outs: list[int]
    overhang: list[int]  # ceil-mode windows reaching past the end pads

    def windows(self, x: np.ndarray) -> np.ndarray:
        """(N, C, *out, *kernel) windows of an x already padded by begins and ends + overhang."""
        win = sliding_windows(x, self.kernel, self.strides, self.dilations)
        index = (slice(None), slice(None), *(slice(0, o) for o in self.outs))
        return win[index]

    @property
    def kernel_axes(self) -> tuple[int, ...]:
        n = len(self.kernel)
        return tuple(range(2 + n, 2 + 2 * n))


def pool_geometry(op: str, x: np.ndarray, attrs: dict[str, Any]) -> PoolGeometry:
    n = x.ndim - 2
    kernel = ints(attrs["kernel_shape"])
    strides = spatial_attr(attrs, "strides", n, 1)
    dilations = spatial_attr(attrs, "dilations", n, 1)
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    begins, ends = resolve_pads(attrs, x.shape[2:], kernel, strides, dilations, op)
    outs, overhang = [], []
    for size, k, s, d, b, e in zip(x.shape[2:], kernel, strides, dilations, begins, ends):
        out = pool_output_size(size, k, s, d, b, e, ceil_mode)  # SAME pads give ceil(size / s), any ceil_mode
        outs.append(out)
        overhang.append(max(0, (out - 1) * s + window_span(k, d) - (size + b + e)))
    return PoolGeometry(kernel, strides, dilations, begins, ends, outs, overhang)


def _spatial_pads(begins: list[int], ends: list[int]) -> list[tuple[int, int]]:
    return [(0, 0), (0, 0), *zip(begins, ends)]


@register("MaxPool")
def max_pool(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    if int(attrs.get("storage_order", 0)):
        raise NotImplementedError("MaxPool: storage_order=1 is not supported")
    g = pool_geometry("MaxPool", x, attrs)
    fill = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    ends = [e + o for e, o in zip(g.ends, g.overhang)]
    xp = np.pad(x, _spatial_pads(g.begins, ends), constant_values=fill)
    return [np.max(g.windows(xp), axis=g.kernel_axes)]


@register("AveragePool")
def average_pool(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    g = pool_geometry("AveragePool", x, attrs)
    dtype = compute_dtype(x.dtype)
    ends = [e + o for e, o in zip(g.ends, g.overhang)]
    total = np.sum(g.windows(np.pad(x.astype(dtype, copy=False), _spatial_pads(g.begins, ends))), axis=g.kernel_axes)
    # The divisor: windows over a mask of ones on the input (and on the explicit pads if count_include_pad).
    mask = np.ones((1, 1, *x.shape[2:]), dtype)
    if int(attrs.get("count_include_pad", 0)):
        mask = np.pad(mask, _spatial_pads(g.begins, g.ends), constant_values=1)
        mask = np.pad(mask, _spatial_pads([0] * len(ends), g.overhang))
    else:
        mask = np.pad(mask, _spatial_pads(g.begins, ends))
    count = np.sum(g.windows(mask), axis=g.kernel_axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [(total / count).astype(x.dtype, copy=False)]


@register("GlobalAveragePool")
def global_average_pool(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    axes = tuple(range(2, x.ndim))
    return [np.mean(x.astype(compute_dtype(x.dtype), copy=False), axis=axes, keepdims=True).astype(x.dtype)]


@register("GlobalMaxPool")
def global_max_pool(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    return [np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)]
