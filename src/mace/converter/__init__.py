"""ONNX -> .mace: import (normalize, fold constants, infer static shapes), optimize (fusions), save."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from mace.converter.deployment import ModelSpec, read_deployment
from mace.converter.dynamic import dynamic_model, model_specs, specialize
from mace.converter.onnx_import import SUPPORTED_OPS, load_onnx
from mace.converter.pipeline import convert_onnx
from mace.errors import ConversionError
from mace.model import modelfile
from mace.model.dynamic import DynamicModel
from mace.model.ir import Graph
from mace.model.shapes import ShapeSpec

log = logging.getLogger(__name__)

__all__ = ["SUPPORTED_OPS", "convert", "convert_deployment", "convert_onnx", "dynamic_model", "specialize"]


def convert_deployment(config: str | Path, output_dir: str | Path | None = None) -> list[Path]:
    """Convert every model of a MACE-style deployment file; writes <output_dir>/<model name>.mace for each."""
    config = Path(config)
    out_dir = Path(output_dir) if output_dir is not None else config.parent
    written = []
    for spec in read_deployment(config):
        graph = _convert_spec(spec)
        written.append(modelfile.save(graph, out_dir / f"{spec.name}.mace"))
    return written


def _convert_spec(spec: ModelSpec) -> Graph:
    for key in spec.ignored_keys:
        log.info("deployment file: %s is a MACE build setting that mace ignores", key)
    graph = convert_onnx(spec.model_file, spec.input_shapes, spec.data_type, spec.output_tensors or None, spec.name)
    produced = {t.name: list(t.shape) for t in graph.outputs}
    for tensor, shape in spec.output_shapes.items():
        if produced.get(tensor) != shape:
            raise ConversionError(
                f"models.{spec.name}.subgraphs[0].output_shapes: {tensor!r} is declared {shape}, "
                f"the model produces {produced.get(tensor)}"
            )
    graph.metadata["runtime"] = spec.runtime
    return graph


def convert(
    model: str | Path | onnx.ModelProto | None = None,
    output: str | Path | None = None,
    *,
    config: str | Path | None = None,
    input_shapes: Mapping[str, Sequence[int] | ShapeSpec] | None = None,
    data_type: str = "fp32_fp32",
    output_dir: str | Path | None = None,
) -> list[Path]:
    """Convert an ONNX model, or every model of a deployment file, to .mace files. Returns the paths written.

    An input whose shape is not fixed (by the model, or by ``input_shapes`` where a ``ShapeSpec`` gives ranges such
    as ``1..8,3,32..1280,32..1280``) makes a dynamic model: the engine converts it per concrete shape
    (docs/model-format.md).

    >>> import mace
    >>> mace.convert("mobilenet_v2.onnx", "mobilenet_v2.mace", data_type="fp16_fp32")  # doctest: +SKIP
    [PosixPath('mobilenet_v2.mace')]
    >>> mace.convert(config="deploy.yml", output_dir="build/")  # doctest: +SKIP
    """
    if config is not None:
        if model is not None:
            raise ConversionError("give either an ONNX model or a deployment file (config=...), not both")
        return convert_deployment(config, output_dir)
    if model is None:
        raise ConversionError("nothing to convert: give an ONNX model path or a deployment file (config=...)")
    proto = load_onnx(model)
    name = None if isinstance(model, onnx.ModelProto) else Path(model).stem
    specs = model_specs(proto, input_shapes)
    converted: Graph | DynamicModel
    if all(spec.fixed for spec in specs):
        converted = convert_onnx(proto, {spec.input: spec.example() for spec in specs}, data_type, name=name)
    else:
        converted = dynamic_model(proto, specs, data_type, name=name)
    if output is None:
        if isinstance(model, onnx.ModelProto):
            raise ConversionError("an output path is needed when converting an in-memory ONNX model")
        output = Path(output_dir or Path(model).parent) / (Path(model).stem + ".mace")
    return [modelfile.save(converted, output)]
