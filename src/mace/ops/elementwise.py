"""Elementwise ops: arithmetic (numpy broadcasting, variadic Max/Min/Sum/Mean), comparisons, logic, unary math, Cast.

Outputs keep the dtype of the first input (comparisons give bool). Integer Div truncates toward zero like C/ONNX.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import onnx

from mace.ops.common import Attrs, Inputs, OpFn, Outputs, compute_dtype, like, registrar, required

OPS: dict[str, OpFn] = {}
register = registrar(OPS)

Binary = Callable[[np.ndarray, np.ndarray], np.ndarray]
Unary = Callable[[np.ndarray], np.ndarray]


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        with np.errstate(divide="ignore", invalid="ignore"):
            quotient = np.abs(a) // np.abs(b)
        return np.where((a < 0) != (b < 0), -quotient, quotient)
    return np.divide(a, b)


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exponent may have another dtype than the base; integer bases go through float64 (like std::pow)."""
    if np.issubdtype(a.dtype, np.integer):
        return np.power(a.astype(np.float64), b.astype(np.float64))
    dtype = compute_dtype(a.dtype)
    return np.power(a.astype(dtype, copy=False), b.astype(dtype, copy=False))


def _mod(a: np.ndarray, b: np.ndarray, fmod: int) -> np.ndarray:
    """fmod=0 (integers only): the result takes the divisor's sign (Python %); fmod=1: C fmod."""
    if not fmod and np.issubdtype(a.dtype, np.floating):
        raise NotImplementedError("Mod: fmod=0 is not supported for floating-point inputs")
    return np.fmod(a, b) if fmod else np.mod(a, b)


def _binary(name: str, fn: Binary) -> None:
    def op(inputs: Inputs, attrs: Attrs) -> Outputs:
        a, b = required(inputs, 0), required(inputs, 1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return [like(fn(a, b), a)]

    op.__name__ = op.__qualname__ = name
    register(name)(op)


def _variadic(name: str, fn: Binary, mean: bool = False) -> None:
    def op(inputs: Inputs, attrs: Attrs) -> Outputs:
        values = [x for x in inputs if x is not None]
        if len(values) == 1:
            return [values[0].copy()]
        y = functools.reduce(fn, values)
        return [like(y / len(values) if mean else y, values[0])]

    op.__name__ = op.__qualname__ = name
    register(name)(op)


def _compare(name: str, fn: Binary) -> None:
    def op(inputs: Inputs, attrs: Attrs) -> Outputs:
        return [np.asarray(fn(required(inputs, 0), required(inputs, 1)), dtype=bool)]

    op.__name__ = op.__qualname__ = name
    register(name)(op)


def _unary(name: str, fn: Unary, float_math: bool = True) -> None:
    """``float_math``: computed in float32/float64 (float16 widened) and cast back."""

    def op(inputs: Inputs, attrs: Attrs) -> Outputs:
        x = required(inputs, 0)
        xf = x.astype(compute_dtype(x.dtype), copy=False) if float_math else x
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return [like(fn(xf), x)]

    op.__name__ = op.__qualname__ = name
    register(name)(op)


_ARITHMETIC: dict[str, Binary] = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _div, "Pow": _pow}
_VARIADIC: dict[str, Binary] = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add}
_COMPARISONS: dict[str, Binary] = {
    "Equal": np.equal,
    "Less": np.less,
    "LessOrEqual": np.less_equal,
    "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal,
    "And": np.logical_and,
    "Or": np.logical_or,
    "Xor": np.logical_xor,
}
_FLOAT_UNARY: dict[str, Unary] = {
    "Sqrt": np.sqrt,
    "Exp": np.exp,
    "Log": np.log,
    "Reciprocal": np.reciprocal,
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Round": np.round,  # half to even, as ONNX
    "Sin": np.sin,
    "Cos": np.cos,
    "Tan": np.tan,
    "Asin": np.arcsin,
    "Acos": np.arccos,
    "Atan": np.arctan,
    "Sinh": np.sinh,
    "Cosh": np.cosh,
    "Asinh": np.arcsinh,
    "Acosh": np.arccosh,
    "Atanh": np.arctanh,
}
_EXACT_UNARY: dict[str, Unary] = {"Abs": np.abs, "Neg": np.negative, "Sign": np.sign}

for _name, _fn in _ARITHMETIC.items():
    _binary(_name, _fn)
for _name, _fn in _VARIADIC.items():
    _variadic(_name, _fn)
_variadic("Mean", np.add, mean=True)
for _name, _fn in _COMPARISONS.items():
    _compare(_name, _fn)
for _name, _unary_fn in _FLOAT_UNARY.items():
    _unary(_name, _unary_fn)
for _name, _unary_fn in _EXACT_UNARY.items():
    _unary(_name, _unary_fn, float_math=False)


@register("Mod")
def mod(inputs: Inputs, attrs: Attrs) -> Outputs:
    a, b = required(inputs, 0), required(inputs, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return [like(_mod(a, b, int(attrs.get("fmod", 0))), a)]


@register("Not")
def logical_not(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [np.logical_not(required(inputs, 0))]


@register("IsNaN")
def is_nan(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [np.isnan(required(inputs, 0))]


@register("IsInf")
def is_inf(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    positive, negative = int(attrs.get("detect_positive", 1)), int(attrs.get("detect_negative", 1))
    return [np.isinf(x) & (((x > 0) & bool(positive)) | ((x < 0) & bool(negative)))]


@register("Where")
def where(inputs: Inputs, attrs: Attrs) -> Outputs:
    cond, x, y = required(inputs, 0), required(inputs, 1), required(inputs, 2)
    return [like(np.where(cond, x, y), x)]


def onnx_to_numpy_dtype(to: int) -> np.dtype:
    """An ONNX TensorProto data type number as a numpy dtype (NotImplementedError for strings and unknowns)."""
    if to == onnx.TensorProto.STRING:
        raise NotImplementedError("Cast: to=STRING is not supported")
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to))
    except (KeyError, TypeError, ValueError) as exc:
        raise NotImplementedError(f"Cast: to={to} is not supported") from exc


@register("Cast")
def cast(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Float to integer truncates toward zero (numpy astype, like C)."""
    return [np.array(required(inputs, 0), dtype=onnx_to_numpy_dtype(int(attrs["to"])))]


@register("CastLike")
def cast_like(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [np.array(required(inputs, 0), dtype=required(inputs, 1).dtype)]
