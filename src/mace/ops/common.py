"""Shared pieces of the reference ops: the op signature, a per-module registry and small argument helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Inputs = Sequence[np.ndarray | None]
"""An op's inputs, in ONNX order: an absent optional input is None (or missing at the end)."""
Attrs = dict[str, Any]
"""An op's attributes: ONNX attribute name -> plain Python value (int, float, str, list, ndarray; open by nature)."""
Outputs = list[np.ndarray]
"""An op's outputs, in ONNX order."""
OpFn = Callable[[Inputs, Attrs], Outputs]
"""A reference op: ``fn(inputs, attrs) -> outputs``."""


class MissingInputError(ValueError):
    """A required op input is absent (None or past the end of the inputs)."""


def registrar(table: dict[str, OpFn]) -> Callable[..., Callable[[OpFn], OpFn]]:
    """``register = registrar(OPS)`` then ``@register("Relu", "Relu6")`` adds the function under each name."""

    def register(*names: str) -> Callable[[OpFn], OpFn]:
        def add(fn: OpFn) -> OpFn:
            for name in names:
                table[name] = fn
            return fn

        return add

    return register


def arg(inputs: Inputs, index: int) -> np.ndarray | None:
    """Optional input ``index``: None when absent or past the end of the list."""
    return inputs[index] if index < len(inputs) else None


def required(inputs: Inputs, index: int) -> np.ndarray:
    """Required input ``index``; MissingInputError when it is absent or past the end of the list."""
    value = arg(inputs, index)
    if value is None:
        raise MissingInputError(f"input {index} is required but absent")
    return value


def ints(value: np.ndarray | Sequence[int] | int) -> list[int]:
    """A constant index tensor or attribute as a list of Python ints."""
    return [int(v) for v in np.asarray(value).reshape(-1)]


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype float math is done in: float16 widens to float32; float32/float64 stay."""
    return np.promote_types(dtype, np.float32) if np.issubdtype(dtype, np.floating) else np.dtype(np.float32)


def like(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y`` with the dtype of ``x`` (undoes numpy's float64 promotion); no copy when already right."""
    return np.asarray(y).astype(x.dtype, copy=False)
