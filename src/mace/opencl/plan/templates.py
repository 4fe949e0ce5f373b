"""What the generated C sees: storage tags of common.h, the kernel template files, C literals, the fused activation
macro, and the stride helpers that let one template serve every rank.

Everything here turns values into source text, so it must be deterministic: the source is the program cache's key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from mace.errors import DeviceError
from mace.model.rules import GELU_ERF_SCALE, GELU_TANH_COEFF, GELU_TANH_SCALE, fused_params

KERNEL_DIR = Path(__file__).parent.parent / "kernels"

# --- storage types -------------------------------------------------------------------------------------------------

_TAG_OF_DTYPE = {
    "float32": "F32",
    "float64": "F32",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}
TAG_DTYPES: dict[str, np.dtype[Any]] = {
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
FLOAT_TAGS = ("F32", "F16")


def storage_tag(dtype: str, data_type: str) -> str:
    """The storage tag (common.h) of a tensor: float tensors are half on the device under fp16_fp32."""
    tag = _TAG_OF_DTYPE.get(dtype)
    if tag is None:
        raise DeviceError(f"OpenCL runtime cannot store tensors of dtype {dtype}")
    return "F16" if tag == "F32" and data_type == "fp16_fp32" else tag


# --- template files ------------------------------------------------------------------------------------------------

# family -> (template file, selector macro for files holding several kernels)
FAMILIES: dict[str, tuple[str, str | None]] = {
    "eltwise": ("elementwise.cl", None),
    "attention": ("attention.cl", None),
    "conv": ("conv.cl", None),
    "conv_cpu": ("conv_cpu.cl", None),
    "depthwise": ("depthwise.cl", None),
    "depthwise_cpu": ("depthwise_cpu.cl", None),
    "gemm": ("gemm.cl", None),
    "gemm_cpu": ("gemm_cpu.cl", None),
    "tgemm": ("gemm_tiled.cl", "TILED_GEMM"),
    "ksum": ("gemm_tiled.cl", "SPLIT_K_SUM"),
    "irblock": ("block.cl", None),
    "gemv": ("gemv.cl", None),
    "deconv": ("conv_transpose.cl", None),
    "pool": ("pooling.cl", None),
    "pool_cpu": ("pool_cpu.cl", None),
    "reduce": ("reduce.cl", "REDUCE"),
    "argreduce": ("reduce.cl", "ARG_REDUCE"),
    "cumsum": ("reduce.cl", "CUM_SUM"),
    "topk": ("reduce.cl", "TOP_K"),
    "softmax": ("softmax.cl", None),
    "softmax_cpu": ("softmax_cpu.cl", None),
    "rownorm": ("norm.cl", "ROW_NORM"),
    "lrn": ("norm.cl", "LRN"),
    "resize": ("resize.cl", None),
    "grid_sample": ("grid_sample.cl", None),
    "copy": ("indexing.cl", "STRIDED_COPY"),
    "copy_cpu": ("copy_cpu.cl", None),
    "gather": ("indexing.cl", "GATHER"),
    "pad": ("indexing.cl", "PAD"),
    "gather_elements": ("indexing.cl", "GATHER_ELEMENTS"),
    "trilu": ("indexing.cl", "TRILU"),
    "one_hot": ("indexing.cl", "ONE_HOT"),
    "lstm": ("recurrent.cl", "LSTM"),
    "gru": ("recurrent.cl", "GRU"),
    "rnn": ("recurrent.cl", "RNN"),
    "gather_nd": ("indexing.cl", "GATHER_ND"),
    "scatter_nd": ("indexing.cl", "SCATTER_ND"),
    "scatter_elements": ("indexing.cl", "SCATTER_ELEMENTS"),
}


@cache
def template(filename: str) -> str:
    return (KERNEL_DIR / filename).read_text()


# --- C literals ----------------------------------------------------------------------------------------------------


def c_float(value: float) -> str:
    """A float literal that denotes exactly the float32 nearest to ``value``."""
    with np.errstate(over="ignore"):
        v = float(np.float32(value))
    if math.isnan(v):
        return "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "(-INFINITY)"
    text = f"{v!r}f"
    return f"({text})" if v < 0 else text


def c_value(value: Any) -> str:
    """The text of a #define: ints and bools as integers, floats as exact float32 literals, lists comma-separated."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return c_float(float(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(c_value(v) for v in value)
    return str(value)


def activation_macro(attrs: dict[str, Any]) -> str:
    """The ACTIVATE(v) body for a node's fused activation (ir.ACTIVATIONS)."""
    name = attrs.get("activation")
    if name is None:
        return "ACT_NONE(v)"
    p = fused_params(name, attrs.get("activation_params", []))
    simple = {"Relu": "RELU", "Sigmoid": "SIGMOID", "HardSwish": "HARD_SWISH", "Tanh": "TANH", "SiLU": "SILU"}
    if name in simple:
        return f"ACT_{simple[name]}(v)"
    if name == "Clip":
        return f"ACT_CLIP(v, {c_float(p[0])}, {c_float(p[1])})"
    if name == "LeakyRelu":
        return f"ACT_LEAKY_RELU(v, {c_float(p[0])})"
    if name == "HardSigmoid":
        return f"ACT_HARD_SIGMOID(v, {c_float(p[0])}, {c_float(p[1])})"
    if name == "Gelu":
        return f"ACT_GELU(v, {c_float(GELU_ERF_SCALE)})"
    if name == "GeluTanh":
        return f"ACT_GELU_TANH(v, {c_float(GELU_TANH_SCALE)}, {c_float(GELU_TANH_COEFF)})"
    raise DeviceError(f"OpenCL runtime has no fused activation {name!r}")


# --- shapes and strides --------------------------------------------------------------------------------------------


def to3d(values: Sequence[int], fill: int) -> list[int]:
    """Spatial values padded in front to (D, H, W): the kernels are written for 3D and take 1D/2D as D = 1 (H = 1)."""
    return [fill] * (3 - len(values)) + list(values)


def prod(values: Sequence[int]) -> int:
    return int(np.prod(values, dtype=np.int64))


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides, acc = [], 1
    for dim in reversed(shape):
        strides.append(acc)
        acc *= int(dim)
    return strides[::-1]


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """Element strides of a tensor of ``shape`` read at the indices of ``out_shape`` (numpy broadcasting)."""
    pad = len(out_shape) - len(shape)
    if pad < 0:
        raise DeviceError(f"cannot broadcast shape {tuple(shape)} to {tuple(out_shape)}")
    own = contiguous_strides(shape)
    strides = [0] * pad
    for d, (dim, stride) in enumerate(zip(shape, own)):
        if dim != out_shape[pad + d] and dim != 1:
            raise DeviceError(f"cannot broadcast shape {tuple(shape)} to {tuple(out_shape)}")
        strides.append(0 if dim == 1 else stride)
    return strides


def collapse(shape: Sequence[int], *strides: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """Drops size-1 dims and merges adjacent dims that every stride list walks contiguously; keeps rank >= 1."""
    dims = [(int(n), [int(s[d]) for s in strides]) for d, n in enumerate(shape) if n != 1]
    merged: list[tuple[int, list[int]]] = []
    for n, ss in dims:
        if merged:
            pn, ps = merged[-1]
            if all(p == s * n for p, s in zip(ps, ss)):
                merged[-1] = (pn * n, ss)
                continue
        merged.append((n, ss))
    if not merged:
        merged = [(1, [0] * len(strides))]
    return [n for n, _ in merged], [[ss[i] for _, ss in merged] for i in range(len(strides))]


def row_offset(dims: Sequence[int], strides: Sequence[int]) -> str:
    """The C expression of the element offset of row ``r`` (row-major over ``dims``) through ``strides``.

    >>> row_offset([2, 58], [784, 1568]), row_offset([], [])
    ('(r) / 58 * 784 + (r) % 58 * 1568', '0')
    """
    terms, inner = [], 1
    for d in reversed(range(len(dims))):
        index = "(r)" if inner == 1 else f"(r) / {inner}"
        index = index if d == 0 else f"{index} % {dims[d]}"
        if strides[d]:
            terms.append(f"{index} * {strides[d]}")
        inner *= dims[d]
    return " + ".join(reversed(terms)) or "0"
