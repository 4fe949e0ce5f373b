"""Models with varying input shapes: kept as their ONNX source with a shape spec per input, converted per shape.

``dynamic_model`` checks what can be checked without concrete shapes (every op is supported, every input is a
tensor, the given ranges fit the model's rank and fixed dims) and keeps the ONNX bytes; ``specialize`` converts them
for one concrete set of input shapes exactly as ``convert_onnx`` would for a model exported with those shapes: the
shape arithmetic (Shape/Gather/Concat/Reshape chains) folds then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from onnx import helper

from mace.converter.onnx_import import NEVER_FOLD, SUPPORTED_OPS, default_opset, load_onnx
from mace.converter.pipeline import check_data_type, check_dims, convert_onnx
from mace.errors import ConversionError, UnsupportedOpError
from mace.model.dynamic import DynamicModel, Shapes
from mace.model.ir import Graph
from mace.model.shapes import Dim, ShapeSpec

ShapeArg = ShapeSpec | Sequence[int]


def model_specs(model: onnx.ModelProto, overrides: Mapping[str, ShapeArg] | None = None) -> list[ShapeSpec]:
    """One spec per graph input: the given one (its rank checked against the model's; a given dim overrides a fixed
    one, as exporters often fix a batch of 1 that the graph does not need), else the model's own dims (a dim_param or
    an unknown dim is any size from 1)."""
    overrides = dict(overrides or {})
    initializers = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    unknown = sorted(set(overrides) - {vi.name for vi in inputs})
    if unknown:
        raise ConversionError(f"--input-shape names unknown input(s) {unknown}; the model's inputs: "
                              f"{[vi.name for vi in inputs]}")
    specs = []
    for vi in inputs:
        if not vi.type.HasField("tensor_type"):
            raise ConversionError(f"input {vi.name!r} is not a tensor (sequences/maps are not supported)")
        declared = [Dim(d.dim_value, d.dim_value) if d.HasField("dim_value") and d.dim_value > 0
                    else Dim(1, None, d.dim_param) for d in vi.type.tensor_type.shape.dim]
        given = overrides.get(vi.name)
        if given is None:
            specs.append(ShapeSpec(vi.name, tuple(declared)))
            continue
        if not isinstance(given, ShapeSpec):
            check_dims(vi.name, list(given))
        spec = given if isinstance(given, ShapeSpec) else ShapeSpec(vi.name, tuple(Dim(int(v), int(v)) for v in given))
        if declared and len(declared) != len(spec.dims):
            raise ConversionError(f"input {vi.name!r}: --input-shape gives {len(spec.dims)} dims {spec.describe()}, "
                                  f"the model declares {len(declared)}")
        names = [d.name for d in declared] if declared else []
        specs.append(ShapeSpec(vi.name, tuple(Dim(d.lo, d.hi, d.name or (names[i] if i < len(names) else ""))
                                              for i, d in enumerate(spec.dims))))
    return specs


def dynamic_model(
    model: str | Path | onnx.ModelProto,
    specs: Sequence[ShapeSpec],
    data_type: str = "fp32_fp32",
    output_names: Sequence[str] | None = None,
    name: str | None = None,
) -> DynamicModel:
    """The model kept for per-shape conversion; unsupported ops and bad outputs are errors now, not at first run."""
    check_data_type(data_type)
    proto = load_onnx(model)
    opset = default_opset(proto)
    for index, node in enumerate(proto.graph.node):
        node_name = node.name or f"{node.op_type}_{index}"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(node.op_type, node_name, opset, f"custom domain {node.domain!r} is not "
                                     "supported", list(SUPPORTED_OPS))
        if node.op_type not in SUPPORTED_OPS or node.op_type in NEVER_FOLD:
            raise UnsupportedOpError(node.op_type, node_name, opset, "no implementation", list(SUPPORTED_OPS))
    outputs = list(output_names) if output_names else [o.name for o in proto.graph.output]
    produced = {o for node in proto.graph.node for o in node.output} | {i.name for i in proto.graph.input}
    missing = [o for o in outputs if o not in produced]
    if missing:
        raise ConversionError(f"output(s) {missing} are not produced by the model")
    dtypes = {vi.name: helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
              for vi in proto.graph.input if vi.name in {s.input for s in specs}}
    label = name or proto.graph.name or (Path(model).stem if isinstance(model, (str, Path)) else "model")
    return DynamicModel(label, data_type, list(specs), dtypes, outputs, proto.SerializeToString(),
                        list(output_names) if output_names else None,
                        {"source": "onnx", "opset": opset, "producer": proto.producer_name})


def specialize(model: DynamicModel, shapes: Shapes) -> Graph:
    """The model converted for these concrete input shapes (every input named; checked against the specs)."""
    missing = [n for n in model.input_names if n not in shapes]
    if missing:
        raise ConversionError(f"no shape given for input(s) {missing} of {model.name!r}")
    problem = model.check(shapes)
    if problem is not None:
        raise ConversionError(problem)
    proto = onnx.load_from_string(model.source)
    concrete = {n: tuple(int(v) for v in shapes[n]) for n in model.input_names}
    graph = convert_onnx(proto, concrete, model.data_type, model.output_names, model.name)
    graph.metadata["specialization"] = model.specialization_key(concrete)
    return graph
