"""ONNX model -> IR graph with static shapes, constants folded.

One walk over the topologically sorted nodes does three things per node:
  1. normalize it to the latest opset's form (normalize.py);
  2. if every input is known at convert time (or it is a Shape/Size of a static tensor), evaluate it now with the
     reference ops and keep the result as a constant: this folds PyTorch's Shape/Gather/Concat/Reshape chains;
  3. otherwise infer its output shapes with ONNX's own per-op inference (falling back to evaluating the node on zeros).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from mace.converter.normalize import Constants, normalize_node
from mace.converter.onnx_attention import AttentionUnsupported, expand_attention
from mace.converter.onnx_norms import (
    NormUnsupported,
    expand_group_norm,
    expand_lp_norm,
    expand_mvn,
    expand_rms_norm,
)
from mace.errors import ConversionError, UnsupportedOpError
from mace.model.ir import Graph, Node, TensorInfo, fresh_name
from mace.ops.reference import REFERENCE_OPS

log = logging.getLogger(__name__)

# Ops the converter accepts. Some exist only to be folded (Constant) or rewired (Identity), the rest run.
FOLD_ONLY_OPS = ("Constant",)
# (and ops imported as other IR nodes: onnx_attention.py, onnx_norms.py)
NORMS = ("GroupNormalization", "RMSNormalization", "LpNormalization", "MeanVarianceNormalization")
SUPPORTED_OPS = tuple(sorted(set(REFERENCE_OPS) | set(FOLD_ONLY_OPS) | {"Upsample", "Attention", *NORMS}))
# Random or stateful ops are never folded even when their inputs are constant.
NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
# Shape-like constants are passed to ONNX's shape inference by value; large weights only by shape.
_VALUE_LIMIT = 4096
# Inputs that decide an output's shape: mace runs static shapes, so they must be known at convert time.
SHAPE_INPUTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4), "Resize": (1, 2, 3), "Pad": (1, 3), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceSumSquare": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,),
    "Upsample": (1,), "OneHot": (1,), "TopK": (1,),
}
IR_OPSET = 18  # the opset whose form normalized nodes follow, used for per-node shape inference


def load_onnx(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.exists():
        raise ConversionError(f"{path}: no such ONNX file")
    if path.is_dir():
        raise ConversionError(f"{path}: is a directory, not an ONNX file")
    try:
        if path.stat().st_size == 0:
            raise ConversionError(f"{path}: the file is empty (0 bytes), not an ONNX model")
        loaded = onnx.load(str(path))
    except ConversionError:
        raise
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ConversionError(f"{path}: not a readable ONNX model: {exc}") from exc
    # protobuf reads many byte strings as a message with unknown fields: an ONNX model has a graph and an opset
    if not loaded.HasField("graph") or not loaded.opset_import or loaded.ir_version <= 0:
        missing = "graph" if not loaded.HasField("graph") else "opset_import" if not loaded.opset_import \
            else "ir_version"
        raise ConversionError(f"{path}: not an ONNX model (it has no {missing}; is it a .onnx file?)")
    return loaded


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _attribute_value(attr: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    if isinstance(value, float):
        return float(np.float32(value))  # ONNX floats are float32: keep their exact value
    return value


def _static_shape(value_info: onnx.ValueInfoProto, override: Sequence[int] | None) -> tuple[int, ...]:
    dims = value_info.type.tensor_type.shape.dim
    if override is not None:
        if dims and len(dims) != len(override):
            raise ConversionError(
                f"input {value_info.name!r}: --input-shape gives {len(override)} dims {list(override)}, "
                f"the model declares {len(dims)}"
            )
        return tuple(int(x) for x in override)
    shape = []
    for i, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(int(dim.dim_value))
        else:
            label = dim.dim_param or "?"
            raise ConversionError(
                f"input {value_info.name!r} has a dynamic dimension {i} ({label!r}); fix it with "
                f"--input-shape {value_info.name}=<comma-separated dims> (or input_shapes in the deployment file)"
            )
    return tuple(shape)


def _np_dtype_name(elem_type: int) -> str:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


class _Importer:
    def __init__(self, model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None) -> None:
        self.model = model
        self.opset = default_opset(model)
        self.input_shapes = dict(input_shapes or {})
        self.constants: dict[str, np.ndarray] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self.nodes: list[Node] = []
        self.inputs: list[TensorInfo] = []
        self.renamed: dict[str, str] = {}  # folded-away aliases (Identity of a constant keeps its own name)
        self.folded = 0
        # every value name the model has, and those import makes (fresh): a derived name must not take one over
        g = model.graph
        self.taken: set[str] = {*(i.name for i in g.initializer), *(v.name for v in (*g.input, *g.output)),
                                *(name for n in g.node for name in (*n.input, *n.output))}
        self.new_constants = Constants(self.constants, self.fresh)

    def fresh(self, base: str) -> str:
        """A value name derived from ``base`` that no value of the model has (ir.fresh_name), now taken."""
        name = fresh_name(base, self.taken)
        self.taken.add(name)
        return name

    # -- graph boundary ----------------------------------------------------------------------------------------
    def read_boundary(self) -> None:
        g = self.model.graph
        for init in g.initializer:
            self.constants[init.name] = numpy_helper.to_array(init)
        for init in g.sparse_initializer:
            raise ConversionError(f"sparse initializer {init.values.name!r} is not supported")
        known = set(self.constants)
        unknown = set(self.input_shapes) - {i.name for i in g.input if i.name not in known}
        if unknown:
            names = [i.name for i in g.input if i.name not in known]
            raise ConversionError(f"--input-shape names unknown input(s) {sorted(unknown)}; "
                                  f"the model's inputs: {names}")
        for vi in g.input:
            if vi.name in known:
                continue  # old exporters list initializers as inputs too
            if not vi.type.HasField("tensor_type"):
                raise ConversionError(f"input {vi.name!r} is not a tensor (sequences/maps are not supported)")
            info = TensorInfo(vi.name, _static_shape(vi, self.input_shapes.get(vi.name)),
                              _np_dtype_name(vi.type.tensor_type.elem_type))
            self.inputs.append(info)
            self.tensors[vi.name] = info
        for name, value in self.constants.items():
            self.tensors[name] = TensorInfo(name, tuple(value.shape), value.dtype.name)

    # -- per node ----------------------------------------------------------------------------------------------
    def import_nodes(self) -> None:
        used: set[str] = set()
        for index, proto in enumerate(self.model.graph.node):
            name = _unique_name(proto.name or f"{proto.op_type}_{index}", index, used)
            if proto.domain not in ("", "ai.onnx"):
                raise UnsupportedOpError(proto.op_type, name, self.opset,
                                         f"custom domain {proto.domain!r} is not supported", list(SUPPORTED_OPS))
            if proto.op_type not in SUPPORTED_OPS or proto.op_type in NEVER_FOLD:
                raise UnsupportedOpError(proto.op_type, name, self.opset, "no implementation", list(SUPPORTED_OPS))
            node = Node(proto.op_type, name, [self.renamed.get(i, i) for i in proto.input], list(proto.output),
                        {a.name: _attribute_value(a) for a in proto.attribute})
            for sub in ("then_branch", "else_branch", "body"):
                if sub in node.attrs:
                    raise UnsupportedOpError(node.op, name, self.opset, "control flow is not supported",
                                             list(SUPPORTED_OPS))
            self._check_attributes(node)
            for value in node.inputs:
                if value and value not in self.tensors:
                    raise ConversionError(f"node {name!r} ({node.op}) reads {value!r}, which is not defined before it")
            normalize_node(node, self.new_constants, self.opset)
            for cname, cvalue in self.constants.items():
                if cname not in self.tensors:
                    self.tensors[cname] = TensorInfo(cname, tuple(cvalue.shape), cvalue.dtype.name)
            self._import_node(node)

    def _check_attributes(self, node: Node) -> None:
        def unsupported(detail: str) -> UnsupportedOpError:
            return UnsupportedOpError(node.op, node.name, self.opset, detail, list(SUPPORTED_OPS))

        if node.op == "MaxPool" and len([o for o in node.outputs if o]) > 1:
            raise unsupported("the Indices output is not supported")
        if node.op in ("MaxPool", "AveragePool", "Conv", "ConvTranspose") and node.attrs.get("storage_order", 0):
            raise unsupported("storage_order=1 is not supported")
        if node.op == "BatchNormalization" and node.attrs.get("training_mode", 0):
            raise unsupported("training_mode=1 is not supported (inference only)")

    def _import_node(self, node: Node) -> None:
        if node.op == "Attention":
            self._attention(node)
            return
        if node.op in NORMS:
            self._norm(node)
            return
        if node.op == "Constant":
            self._add_constant(node.outputs[0], self._constant_value(node))
            return
        values = [self.constants.get(i) if i else None for i in node.inputs]
        if node.op not in NEVER_FOLD and all(v is not None for i, v in zip(node.inputs, values) if i):
            self._fold(node, values)
            return
        if node.op in ("Shape", "Size"):
            static = np.zeros(self.tensors[node.inputs[0]].shape, dtype=np.uint8)
            self._fold(node, [static])
            return
        for index in SHAPE_INPUTS.get(node.op, ()):
            if index < len(node.inputs) and node.inputs[index] and node.inputs[index] not in self.constants:
                raise UnsupportedOpError(node.op, node.name, self.opset,
                                         f"input {index} ({node.inputs[index]!r}) decides the output shape and is only "
                                         "known at run time; mace needs static shapes (fix it with a constant)",
                                         list(SUPPORTED_OPS))
        if node.op == "PRelu":
            self._legacy_prelu_slope(node)
        if node.op in ("Softmax", "LogSoftmax") and node.attrs.pop("legacy_coerce_2d", 0):
            self._legacy_softmax(node)
            return
        for out, info in zip(node.outputs, self._infer(node)):
            if out:
                self.tensors[out] = TensorInfo(out, info[0], info[1])
        self.nodes.append(node)

    def _attention(self, node: Node) -> None:
        """ONNX Attention: the IR nodes of onnx_attention.expand_attention, each imported (folded, shapes inferred)."""
        shapes = {n: self.tensors[n].shape for n in node.inputs if n}
        dtypes = {n: self.tensors[n].dtype for n in node.inputs if n}
        try:
            nodes = expand_attention(node, shapes, dtypes, self._add_constant, self.fresh)
        except AttentionUnsupported as exc:
            raise UnsupportedOpError(node.op, node.name, self.opset, str(exc), list(SUPPORTED_OPS)) from exc
        for part in nodes:
            self._import_node(part)

    def _norm(self, node: Node) -> None:
        """The normalizations of onnx_norms as its IR nodes, each imported (folded, shapes inferred)."""
        shapes = {n: self.tensors[n].shape for n in node.inputs if n}
        try:
            if node.op == "GroupNormalization":
                nodes = expand_group_norm(node, shapes, self.opset, self._add_constant, self.fresh)
            else:
                expand = {"RMSNormalization": expand_rms_norm, "LpNormalization": expand_lp_norm,
                          "MeanVarianceNormalization": expand_mvn}[node.op]
                nodes = expand(node, shapes, self._add_constant, self.fresh)
        except NormUnsupported as exc:
            raise UnsupportedOpError(node.op, node.name, self.opset, str(exc), list(SUPPORTED_OPS)) from exc
        for part in nodes:
            self._import_node(part)

    def _constant_value(self, node: Node) -> np.ndarray:
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in node.attrs:
                value = node.attrs[key]
                if key.startswith("value_int"):
                    return np.asarray(value, dtype=np.int64)
                return np.asarray(value, dtype=np.float32) if key != "value" else np.asarray(value)
        raise UnsupportedOpError("Constant", node.name, self.opset,
                                 f"attributes {sorted(node.attrs)} are not supported", list(SUPPORTED_OPS))

    def _add_constant(self, name: str, value: np.ndarray) -> None:
        value = np.asarray(value)
        self.constants[name] = value
        self.tensors[name] = TensorInfo(name, tuple(value.shape), value.dtype.name)

    def _fold(self, node: Node, values: list[np.ndarray | None]) -> None:
        try:
            results = REFERENCE_OPS[node.op](values, node.attrs)
        except NotImplementedError as exc:
            raise UnsupportedOpError(node.op, node.name, self.opset, str(exc), list(SUPPORTED_OPS)) from exc
        except Exception as exc:
            raise ConversionError(f"node {node.name!r} ({node.op}): folding its constant inputs failed: {exc}") from exc
        for out, value in zip(node.outputs, results):
            if out:
                self._add_constant(out, value)
        self.folded += 1

    def _legacy_prelu_slope(self, node: Node) -> None:
        """Before opset 7 a 1-D slope applied per channel (axis 1); numpy broadcasting would put it on the last axis."""
        x_shape = self.tensors[node.inputs[0]].shape
        slope = self.constants.get(node.inputs[1])
        if (slope is not None and slope.ndim == 1 and len(x_shape) >= 3 and slope.shape[0] == x_shape[1]
                and slope.shape[0] not in (1, x_shape[-1])):
            name = self.fresh(f"{node.name}__slope")
            self._add_constant(name, slope.reshape(-1, *([1] * (len(x_shape) - 2))))
            node.inputs[1] = name

    def _legacy_softmax(self, node: Node) -> None:
        """Opset < 13 Softmax works on the input flattened to 2-D at `axis`: Flatten -> Softmax(-1) -> Reshape."""
        info = self.tensors[node.inputs[0]]
        axis = node.attrs.get("axis", 1) % max(len(info.shape), 1)
        if axis == len(info.shape) - 1:
            node.attrs["axis"] = -1
            self.tensors[node.outputs[0]] = TensorInfo(node.outputs[0], info.shape, info.dtype)
            self.nodes.append(node)
            return
        flat, soft = self.fresh(f"{node.name}__2d"), self.fresh(f"{node.name}__2d_out")
        rows = int(np.prod(info.shape[:axis], dtype=np.int64))
        cols = int(np.prod(info.shape[axis:], dtype=np.int64))
        shape_const = self.fresh(f"{node.name}__shape")
        self._add_constant(shape_const, np.asarray(info.shape, dtype=np.int64))
        self.nodes.append(Node("Flatten", f"{node.name}_flatten", [node.inputs[0]], [flat], {"axis": axis}))
        self.tensors[flat] = TensorInfo(flat, (rows, cols), info.dtype)
        self.nodes.append(Node(node.op, node.name, [flat], [soft], {"axis": -1}))
        self.tensors[soft] = TensorInfo(soft, (rows, cols), info.dtype)
        self.nodes.append(Node("Reshape", f"{node.name}_reshape", [soft, shape_const], [node.outputs[0]], {}))
        self.tensors[node.outputs[0]] = TensorInfo(node.outputs[0], info.shape, info.dtype)

    # -- shape inference ---------------------------------------------------------------------------------------
    def _infer(self, node: Node) -> list[tuple[tuple[int, ...], str]]:
        if node.attrs.get("ceil_mode"):
            # ONNX's inference keeps a last window that would start in the padding; the op (and ONNX's own test
            # data) drops it, so the shape comes from evaluating the pool itself
            return self._infer_by_evaluation(node)
        inferred = self._infer_with_onnx(node)
        if inferred is not None:
            return inferred
        return self._infer_by_evaluation(node)

    def _infer_with_onnx(self, node: Node) -> list[tuple[tuple[int, ...], str]] | None:
        inits, inputs = [], []
        for name in dict.fromkeys(i for i in node.inputs if i):
            info = self.tensors[name]
            value = self.constants.get(name)
            if value is not None and value.size <= _VALUE_LIMIT:
                inits.append(numpy_helper.from_array(np.asarray(value), name))
            else:
                elem = helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype))
                inputs.append(helper.make_tensor_value_info(name, elem, list(info.shape)))
        attrs = {k: v for k, v in node.attrs.items() if k != "num_outputs" or node.op == "Split"}
        try:
            proto = helper.make_node(node.op, node.inputs, node.outputs, **attrs)
            graph = helper.make_graph([proto], "infer", inputs, [helper.make_value_info(o, onnx.TypeProto())
                                                                  for o in node.outputs if o], initializer=inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", IR_OPSET)])
            model.ir_version = 8
            result = shape_inference.infer_shapes(model, strict_mode=True)
        except Exception as exc:
            log.debug("ONNX shape inference failed for %s (%s): %s", node.name, node.op, exc)
            return None
        found = {vi.name: vi for vi in result.graph.output}
        out: list[tuple[tuple[int, ...], str]] = []
        for name in node.outputs:
            if not name:
                out.append(((), "float32"))
                continue
            vi = found.get(name)
            if vi is None or not vi.type.tensor_type.HasField("shape"):
                return None
            dims = vi.type.tensor_type.shape.dim
            if not all(d.HasField("dim_value") for d in dims) or not vi.type.tensor_type.elem_type:
                return None
            out.append((tuple(int(d.dim_value) for d in dims), _np_dtype_name(vi.type.tensor_type.elem_type)))
        return out

    def _infer_by_evaluation(self, node: Node) -> list[tuple[tuple[int, ...], str]]:
        values: list[np.ndarray | None] = []
        for name in node.inputs:
            if not name:
                values.append(None)
            elif name in self.constants:
                values.append(self.constants[name])
            else:
                info = self.tensors[name]
                values.append(np.zeros(info.shape, dtype=info.dtype))
        try:
            results = REFERENCE_OPS[node.op](values, node.attrs)
        except NotImplementedError as exc:
            raise UnsupportedOpError(node.op, node.name, self.opset, str(exc), list(SUPPORTED_OPS)) from exc
        except Exception as exc:
            shapes = {n: self.tensors[n].shape for n in node.inputs if n}
            raise ConversionError(f"node {node.name!r} ({node.op}): cannot infer output shapes from inputs {shapes}: "
                                  f"{exc}") from exc
        return [(tuple(r.shape), r.dtype.name) for r in results]

    # -- result ------------------------------------------------------------------------------------------------
    def outputs(self, names: Sequence[str] | None) -> list[TensorInfo]:
        wanted = list(names) if names else [o.name for o in self.model.graph.output]
        result = []
        for name in wanted:
            if name not in self.tensors:
                raise ConversionError(f"output tensor {name!r} does not exist in the model")
            result.append(self.tensors[name])
        return result


def import_onnx(
    model: str | Path | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    output_names: Sequence[str] | None = None,
    name: str | None = None,
) -> Graph:
    """Read an ONNX model into an IR graph with static shapes and constant subgraphs folded."""
    proto = load_onnx(model)
    importer = _Importer(proto, input_shapes)
    importer.read_boundary()
    importer.import_nodes()
    graph_name = name or (Path(model).stem if not isinstance(model, onnx.ModelProto) else proto.graph.name) or "model"
    source_hist: dict[str, int] = {}
    for n in proto.graph.node:
        source_hist[n.op_type] = source_hist.get(n.op_type, 0) + 1
    return Graph(
        name=graph_name,
        inputs=importer.inputs,
        outputs=importer.outputs(output_names),
        nodes=importer.nodes,
        constants=importer.constants,
        tensors=importer.tensors,
        metadata={
            "source": "onnx",
            "opset": importer.opset,
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "source_op_histogram": dict(sorted(source_hist.items(), key=lambda kv: (-kv[1], kv[0]))),
            "folded_nodes": importer.folded,
        },
    )


def _unique_name(name: str, index: int, used: set[str]) -> str:
    """``name``, or where an earlier node has it (ONNX does not require names to be unique) ``name#index``: names
    derived from a node's (its constants, the nodes fused from it) must not mix two nodes up."""
    unique, k = name, 0
    while unique in used:
        unique = f"{name}#{index}" if k == 0 else f"{name}#{index}.{k}"
        k += 1
    used.add(unique)
    return unique
