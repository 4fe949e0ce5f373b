"""Reductions (opset 18 form: ``axes`` is an optional input; keepdims, noop_with_empty_axes), ArgMax/ArgMin,
CumSum (the running sum along an axis) and TopK."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mace.ops.common import (
    Attrs,
    Inputs,
    OpFn,
    Outputs,
    arg,
    compute_dtype,
    ints,
    like,
    normalize_axis,
    registrar,
    required,
)

OPS: dict[str, OpFn] = {}
register = registrar(OPS)

Reduction = Callable[[np.ndarray, tuple[int, ...] | None, bool], np.ndarray]

_REDUCTIONS: dict[str, tuple[Reduction, bool]] = {
    # name: (fn(x, axes, keepdims), float math)
    "ReduceSum": (lambda x, a, k: np.sum(x, axis=a, keepdims=k), False),
    "ReduceMean": (lambda x, a, k: np.mean(x, axis=a, keepdims=k), True),
    "ReduceMax": (lambda x, a, k: np.max(x, axis=a, keepdims=k), False),
    "ReduceMin": (lambda x, a, k: np.min(x, axis=a, keepdims=k), False),
    "ReduceProd": (lambda x, a, k: np.prod(x, axis=a, keepdims=k), False),
    "ReduceL1": (lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k), False),
    "ReduceL2": (lambda x, a, k: np.sqrt(np.sum(x * x, axis=a, keepdims=k)), True),
    "ReduceSumSquare": (lambda x, a, k: np.sum(x * x, axis=a, keepdims=k), False),
    "ReduceLogSum": (lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)), True),
    "ReduceLogSumExp": (lambda x, a, k: _log_sum_exp(x, a, k), True),
}


def _log_sum_exp(x: np.ndarray, axes: tuple[int, ...] | None, keepdims: bool) -> np.ndarray:
    peak = np.max(x, axis=axes, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0)
    y = np.log(np.sum(np.exp(x - peak), axis=axes, keepdims=True)) + peak
    return y if keepdims else np.squeeze(y, axis=axes)


def _make(name: str, fn: Reduction, float_math: bool) -> OpFn:
    def op(inputs: Inputs, attrs: Attrs) -> Outputs:
        """Empty/absent axes reduce everything, or nothing when noop_with_empty_axes=1."""
        x, axes_in = required(inputs, 0), arg(inputs, 1)
        keepdims = bool(int(attrs.get("keepdims", 1)))
        if axes_in is None or axes_in.size == 0:
            if int(attrs.get("noop_with_empty_axes", 0)):
                return [x]
            axes = None
        else:
            axes = tuple(sorted({normalize_axis(a, x.ndim) for a in ints(axes_in)}))
        xc = x.astype(compute_dtype(x.dtype), copy=False) if float_math else x
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return [like(fn(xc, axes, keepdims), x)]

    op.__name__ = op.__qualname__ = name
    return op


for _name, (_fn, _float_math) in _REDUCTIONS.items():
    register(_name)(_make(_name, _fn, _float_math))


def _arg_extreme(x: np.ndarray, attrs: Attrs, fn: Callable[..., np.ndarray]) -> np.ndarray:
    """select_last_index=1 picks the last of equal extremes (argmax of the reversed axis).

    NaN as onnxruntime (and reduce.cl): the first element is the running best and a NaN never compares better, so
    NaNs are skipped, and a NaN first element is the answer (index 0); numpy's argmax would pick the first NaN.

    >>> arg_max([np.array([[np.nan, 1, 2], [1, np.nan, 3], [4, np.nan, 3]], np.float32)], {"axis": 1})[0].ravel()
    array([0, 2, 0])
    """
    axis = normalize_axis(int(attrs.get("axis", 0)), x.ndim)
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        nan = np.isnan(x)
        skipped = np.where(nan, -np.inf if fn is np.argmax else np.inf, x)
        best = (np.max if fn is np.argmax else np.min)(skipped, axis=axis, keepdims=True)
        first = np.arange(x.shape[axis]).reshape([-1] + [1] * (x.ndim - axis - 1)) == 0
        x = np.where(np.take(nan, [0], axis=axis), first, x == best)  # the candidates
        fn = np.argmax  # the first (or, reversed, the last) candidate
    if int(attrs.get("select_last_index", 0)):
        index = x.shape[axis] - 1 - fn(np.flip(x, axis=axis), axis=axis)
    else:
        index = fn(x, axis=axis)
    index = np.asarray(index, dtype=np.int64)
    return np.expand_dims(index, axis) if int(attrs.get("keepdims", 1)) else index


@register("ArgMax")
def arg_max(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [_arg_extreme(required(inputs, 0), attrs, np.argmax)]


@register("ArgMin")
def arg_min(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [_arg_extreme(required(inputs, 0), attrs, np.argmin)]


@register("CumSum")
def cum_sum(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Along ``axis`` (a one-element input); ``exclusive``: each sum leaves its own element out; ``reverse``: from
    the end. Sums in the input's type (int64 stays exact), floats in float32 as onnxruntime does."""
    x, axis_in = required(inputs, 0), required(inputs, 1)
    if axis_in.size != 1:
        raise ValueError(f"CumSum axis must have one element, got shape {list(axis_in.shape)}")
    axis = normalize_axis(int(axis_in.reshape(())), x.ndim)
    reverse, exclusive = bool(int(attrs.get("reverse", 0))), bool(int(attrs.get("exclusive", 0)))
    v = np.flip(x, axis) if reverse else x
    y = np.cumsum(v, axis=axis, dtype=x.dtype)
    if exclusive:
        y = np.concatenate([np.zeros_like(np.take(y, [0], axis)), np.take(y, range(x.shape[axis] - 1), axis)], axis)
    return [np.flip(y, axis) if reverse else y]


@register("TopK")
def top_k(inputs: Inputs, attrs: Attrs) -> Outputs:
    """The ``k`` largest (``largest`` 0: smallest) elements along ``axis`` and their int64 indices, in order (also
    for ``sorted`` 0, whose order ONNX leaves open); equal values in index order, as onnxruntime; NaNs come after
    every number (numpy's sort order)."""
    x, k_in = required(inputs, 0), required(inputs, 1)
    if k_in.size != 1:
        raise ValueError(f"TopK: K must have one element, got shape {list(k_in.shape)}")
    axis = normalize_axis(int(attrs.get("axis", -1)), x.ndim)
    k = int(k_in.reshape(()))
    if not 0 <= k <= x.shape[axis]:
        raise ValueError(f"TopK: K={k} is outside [0, {x.shape[axis]}] (axis {axis} of shape {list(x.shape)})")
    largest = bool(int(attrs.get("largest", 1)))
    keys = -x.astype(np.float64) if largest and x.dtype.kind == "f" else (-x.astype(np.int64) if largest else x)
    order = np.argsort(keys, axis=axis, kind="stable")
    index = np.take(order, np.arange(k), axis=axis)
    return [np.take_along_axis(x, index, axis=axis), index.astype(np.int64)]
