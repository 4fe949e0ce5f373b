"""Activations (elementwise, with ONNX attribute defaults), Softmax/LogSoftmax, and ``apply_activation`` for fusions.

Float math is done in float32 (float64 for float64 inputs) and cast back to the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mace.model.rules import (
    ACTIVATION_DEFAULTS,
    GELU_TANH_COEFF,
    GELU_TANH_SCALE,
    HARD_SWISH_ALPHA,
    HARD_SWISH_BETA,
    activation_attr,
    fused_params,
)
from mace.ops.common import Attrs, Inputs, OpFn, Outputs, arg, compute_dtype, like, normalize_axis, registrar, required

OPS: dict[str, OpFn] = {}
register = registrar(OPS)



def _f(x: np.ndarray) -> np.ndarray:
    return x.astype(compute_dtype(x.dtype), copy=False)


# ---------------------------------------------------------------------------------------------------------------------
# Plain functions (also used by apply_activation)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.zeros((), x.dtype))


def leaky_relu(x: np.ndarray, alpha: float = ACTIVATION_DEFAULTS["LeakyRelu"]["alpha"]) -> np.ndarray:
    return like(np.where(x < 0, _f(x) * alpha, x), x)


def clip(x: np.ndarray, lo: np.ndarray | float | None = None, hi: np.ndarray | float | None = None) -> np.ndarray:
    """ONNX Clip: min then max, so min > max gives max everywhere; None is the type's lowest / max (ONNX's default, as
    onnxruntime: a float inf becomes the largest finite float). NaN stays NaN."""
    if np.issubdtype(x.dtype, np.floating):
        limits = np.finfo(x.dtype)
        lo = limits.min if lo is None else lo
        hi = limits.max if hi is None else hi
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo).astype(x.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi).astype(x.dtype))
    return y.copy() if y is x else y


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free: exp(-|x|) is at most 1."""
    xf = _f(x)
    e = np.exp(-np.abs(xf))
    return like(np.where(xf >= 0, 1 / (1 + e), e / (1 + e)), x)


def hard_sigmoid(
    x: np.ndarray,
    alpha: float = ACTIVATION_DEFAULTS["HardSigmoid"]["alpha"],
    beta: float = ACTIVATION_DEFAULTS["HardSigmoid"]["beta"],
) -> np.ndarray:
    return like(np.clip(_f(x) * alpha + beta, 0, 1), x)


def hard_swish(x: np.ndarray) -> np.ndarray:
    xf = _f(x)
    return like(xf * np.clip(xf * HARD_SWISH_ALPHA + HARD_SWISH_BETA, 0, 1), x)


def tanh(x: np.ndarray) -> np.ndarray:
    return like(np.tanh(_f(x)), x)


def silu(x: np.ndarray) -> np.ndarray:
    return like(_f(x) * sigmoid(_f(x)), x)


def _erf_series(a: np.ndarray, tolerance: float) -> np.ndarray:
    """erf(a) for a >= 0 as 2/sqrt(pi) * exp(-a^2) * sum_n (2a^2)^n a / (2n+1)!!, in float64.

    All terms are positive (no cancellation), so the error is about ``tolerance`` plus float64 rounding. It needs
    about 2 a^2 + 20 terms; the loop is over terms, vectorized over elements.
    """
    two_a2 = 2 * a * a
    term = a.copy()
    total = a.copy()
    n = 0
    while a.size:
        n += 1
        term *= two_a2
        term *= 1 / (2 * n + 1)
        total += term
        if n % 4 == 0 and not np.any(term > tolerance * total):
            break
    return np.minimum(2 / math.sqrt(math.pi) * np.exp(-a * a) * total, 1.0)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function (numpy has none), to float64 accuracy for float64 and ~1e-10 relative otherwise.

    Elements are grouped by magnitude so that small ones need few series terms; past ``saturation`` erf rounds
    to 1 in the output dtype (1 - erf(4.5) = 2e-10, 1 - erf(6) = 2e-17).
    """
    x = np.asarray(x)
    a = np.abs(x.astype(np.float64))
    y = np.where(np.isnan(a), np.nan, 1.0)
    wide = x.dtype == np.float64
    saturation, tolerance = (6.0, 1e-17) if wide else (4.5, 1e-10)
    low = 0.0
    for high in (1.0, 2.0, 3.0, saturation):
        group = (a >= low) & (a < high)
        y[group] = _erf_series(a[group], tolerance)
        low = high
    return np.copysign(y, x).astype(x.dtype, copy=False)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """approximate='none': x/2 (1 + erf(x/sqrt 2)); 'tanh': x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    xf = _f(x)
    if approximate == "none":
        y = 0.5 * xf * (1 + erf(xf / math.sqrt(2)))
    elif approximate == "tanh":
        with np.errstate(over="ignore"):  # x^3 overflows to inf for |x| > 7e12: tanh(+-inf) = +-1, as the formula
            y = 0.5 * xf * (1 + np.tanh(GELU_TANH_SCALE * (xf + GELU_TANH_COEFF * xf**3)))
    else:
        raise NotImplementedError(f"Gelu: approximate={approximate!r} is not supported")
    return like(y, x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    xf = _f(x)
    with np.errstate(invalid="ignore"):  # a row of only -inf is NaN (-inf - -inf), as in onnxruntime: no warning
        e = np.exp(xf - np.max(xf, axis=axis, keepdims=True))
        return like(e / np.sum(e, axis=axis, keepdims=True), x)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    xf = _f(x)
    with np.errstate(invalid="ignore"):  # as softmax
        shifted = xf - np.max(xf, axis=axis, keepdims=True)
        return like(shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True)), x)


# ---------------------------------------------------------------------------------------------------------------------
# ONNX ops


@register("Relu")
def _relu(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [relu(required(inputs, 0))]


@register("LeakyRelu")
def _leaky_relu(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [leaky_relu(required(inputs, 0), activation_attr("LeakyRelu", attrs, "alpha"))]


@register("PRelu")
def _prelu(inputs: Inputs, attrs: Attrs) -> Outputs:
    """The slope broadcasts to X (numpy rules, unidirectional)."""
    x, slope = required(inputs, 0), required(inputs, 1)
    return [like(np.where(x < 0, x * slope, x), x)]


@register("Clip")
def _clip(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [clip(required(inputs, 0), arg(inputs, 1), arg(inputs, 2))]


@register("Sigmoid")
def _sigmoid(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [sigmoid(required(inputs, 0))]


@register("HardSigmoid")
def _hard_sigmoid(inputs: Inputs, attrs: Attrs) -> Outputs:
    alpha, beta = (activation_attr("HardSigmoid", attrs, k) for k in ("alpha", "beta"))
    return [hard_sigmoid(required(inputs, 0), alpha, beta)]


@register("HardSwish")
def _hard_swish(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [hard_swish(required(inputs, 0))]


@register("Tanh")
def _tanh(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [tanh(required(inputs, 0))]


@register("Elu")
def _elu(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    alpha = activation_attr("Elu", attrs, "alpha")
    return [like(np.where(x < 0, alpha * np.expm1(np.minimum(_f(x), 0)), x), x)]


@register("Celu")
def _celu(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    alpha = activation_attr("Celu", attrs, "alpha")
    return [like(np.maximum(_f(x), 0) + alpha * np.expm1(np.minimum(_f(x), 0) / alpha), x)]


@register("Selu")
def _selu(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    alpha, gamma = (activation_attr("Selu", attrs, k) for k in ("alpha", "gamma"))
    return [like(gamma * np.where(x <= 0, alpha * np.expm1(np.minimum(_f(x), 0)), _f(x)), x)]


@register("ThresholdedRelu")
def _thresholded_relu(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    return [like(np.where(x > activation_attr("ThresholdedRelu", attrs, "alpha"), x, 0), x)]


@register("Shrink")
def _shrink(inputs: Inputs, attrs: Attrs) -> Outputs:
    """x - bias above lambd, x + bias below -lambd, else 0."""
    x = required(inputs, 0)
    lambd, bias = (activation_attr("Shrink", attrs, k) for k in ("lambd", "bias"))
    xf = _f(x)
    return [like(np.where(xf > lambd, xf - bias, np.where(xf < -lambd, xf + bias, 0)), x)]


@register("Softplus")
def _softplus(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [like(np.logaddexp(0, _f(required(inputs, 0))), required(inputs, 0))]


@register("Softsign")
def _softsign(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = _f(required(inputs, 0))
    return [like(x / (1 + np.abs(x)), required(inputs, 0))]


@register("Mish")
def _mish(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = _f(required(inputs, 0))
    return [like(x * np.tanh(np.logaddexp(0, x)), required(inputs, 0))]


@register("Erf")
def _erf(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [erf(required(inputs, 0))]


@register("Gelu")
def _gelu(inputs: Inputs, attrs: Attrs) -> Outputs:
    """approximate='none': x/2 (1 + erf(x/sqrt 2)); 'tanh': x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return [gelu(required(inputs, 0), str(attrs.get("approximate", "none")))]


@register("Softmax")
def _softmax(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Opset 13 semantics: normalized along the single axis ``axis`` (default -1)."""
    x = required(inputs, 0)
    return [softmax(x, normalize_axis(int(attrs.get("axis", -1)), x.ndim))]


@register("LogSoftmax")
def _log_softmax(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    return [log_softmax(x, normalize_axis(int(attrs.get("axis", -1)), x.ndim))]


# ---------------------------------------------------------------------------------------------------------------------
# Fusion epilogue


def apply_activation(x: np.ndarray, name: str, params: Sequence[float] = ()) -> np.ndarray:
    """Apply the fused activation ``name`` (a key of mace.model.ir.ACTIVATIONS) with its ``activation_params``.

    Missing params take the ONNX defaults (mace.model.rules.ACTIVATION_DEFAULTS; Clip: float32 lowest and max).

    >>> apply_activation(np.array([-1.0, 0.5, 9.0], np.float32), "Clip", [0.0, 6.0]).tolist()
    [0.0, 0.5, 6.0]
    """
    p = fused_params(name, params)
    if name == "Relu":
        return relu(x)
    if name == "Clip":  # an infinite bound is no bound
        lo, hi = (v if math.isfinite(v) else None for v in p[:2])
        return clip(x, lo, hi)
    if name == "LeakyRelu":
        return leaky_relu(x, p[0])
    if name == "Sigmoid":
        return sigmoid(x)
    if name == "HardSigmoid":
        return hard_sigmoid(x, p[0], p[1])
    if name == "HardSwish":
        return hard_swish(x)
    if name == "Tanh":
        return tanh(x)
    if name == "SiLU":
        return silu(x)
    if name == "Gelu":
        return gelu(x, "none")
    if name == "GeluTanh":
        return gelu(x, "tanh")
    raise NotImplementedError(f"activation={name!r} is not supported")
