"""Gemm, MatMul (numpy matmul semantics: batched, broadcast, 1-D promotion, as ONNX) and Einsum."""

from __future__ import annotations

import numpy as np

from mace.ops.common import Attrs, Inputs, OpFn, Outputs, arg, compute_dtype, registrar, required

OPS: dict[str, OpFn] = {}
register = registrar(OPS)


def _compute(x: np.ndarray) -> np.ndarray:
    return x.astype(compute_dtype(x.dtype), copy=False) if np.issubdtype(x.dtype, np.floating) else x


@register("Gemm")
def gemm(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Y = alpha * A' @ B' + beta * C, with A' = A.T if transA (same for B); C broadcasts to Y."""
    a, b, c = required(inputs, 0), required(inputs, 1), arg(inputs, 2)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    am = _compute(a).T if int(attrs.get("transA", 0)) else _compute(a)
    bm = _compute(b).T if int(attrs.get("transB", 0)) else _compute(b)
    y = am @ bm
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (_compute(c) * beta if beta != 1.0 else _compute(c))
    return [y.astype(a.dtype, copy=False)]


@register("MatMul")
def matmul(inputs: Inputs, attrs: Attrs) -> Outputs:
    """ONNX MatMul, and mace's optional third input ``bias`` (mace.model.ir): y = A @ B + bias, bias broadcast."""
    a, b, bias = required(inputs, 0), required(inputs, 1), arg(inputs, 2)
    y = np.asarray(np.matmul(_compute(a), _compute(b)))
    if bias is not None:
        y = y + _compute(bias)
    return [y.astype(a.dtype, copy=False)]


@register("Einsum")
def einsum(inputs: Inputs, attrs: Attrs) -> Outputs:
    values = [x for x in inputs if x is not None]
    y = np.einsum(attrs["equation"], *(_compute(x) for x in values), optimize=True)
    return [np.asarray(y).astype(values[0].dtype, copy=False)]
