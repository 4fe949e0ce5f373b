"""Gemm, MatMul (numpy matmul semantics: batched, broadcast, 1-D promotion, as ONNX), Einsum, and mace's fused
ScaledDotProductAttention (mace.model.ir)."""

from __future__ import annotations

import numpy as np

from mace.ops.activations import softmax
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


@register("ScaledDotProductAttention")
def scaled_dot_product_attention(inputs: Inputs, attrs: Attrs) -> Outputs:
    """softmax(scale * Q @ K^T + mask) @ V over the last axis, the second input being K^T; with ``nan_to_zero``
    the probabilities that are NaN (a row of -inf scores) count as 0, as transformers' guard does."""
    q, kt, v, mask = required(inputs, 0), required(inputs, 1), required(inputs, 2), arg(inputs, 3)
    scores = np.matmul(_compute(q), _compute(kt)) * np.float32(attrs.get("scale", 1.0))
    if mask is not None:
        scores = scores + _compute(mask)
    probs = softmax(scores, -1)
    if int(attrs.get("nan_to_zero", 0)):
        probs = np.where(np.isnan(probs), np.float32(0.0), probs)
    return [np.matmul(probs, _compute(v)).astype(q.dtype, copy=False)]


@register("Einsum")
def einsum(inputs: Inputs, attrs: Attrs) -> Outputs:
    values = [x for x in inputs if x is not None]
    y = np.einsum(attrs["equation"], *(_compute(x) for x in values), optimize=True)
    return [np.asarray(y).astype(values[0].dtype, copy=False)]
