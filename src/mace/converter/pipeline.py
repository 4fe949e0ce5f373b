"""One ONNX model to one optimized IR graph: import (normalize, fold constants, static shapes), then the passes."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from mace.converter.onnx_import import import_onnx
from mace.converter.passes import optimize
from mace.errors import ConversionError
from mace.model.ir import DATA_TYPES, Graph


def convert_onnx(
    model: str | Path | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    data_type: str = "fp32_fp32",
    output_names: Sequence[str] | None = None,
    name: str | None = None,
) -> Graph:
    """Convert an ONNX model (path or proto) to an optimized IR graph held in memory."""
    check_data_type(data_type)
    for input_name, dims in (input_shapes or {}).items():
        check_dims(input_name, dims)
    graph = import_onnx(model, input_shapes, output_names, name)
    graph.data_type = data_type
    graph.metadata["nodes_before_passes"] = len(graph.nodes)
    graph.metadata["op_histogram_before_passes"] = graph.op_histogram()
    graph.metadata["passes"] = optimize(graph)
    return graph


def check_data_type(data_type: str) -> None:
    if data_type not in DATA_TYPES:
        raise ConversionError(f"data type {data_type!r} is not one of {', '.join(DATA_TYPES)}")


def check_dims(input_name: str, dims: Sequence[int]) -> None:
    """A fixed input shape: at least one dimension, each a positive integer."""
    bad = [d for d in dims if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1]
    if bad or not dims:
        what = f"dimension {bad[0]!r} is not a positive integer" if bad else "no dimensions"
        raise ConversionError(f"input shape of {input_name!r}: {what} in {list(dims)}")
