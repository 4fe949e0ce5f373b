"""The model IR: a typed graph with static shapes that the converter produces and every runtime executes.

Conventions (the contract between converter, model file and runtimes):
- Ops keep their ONNX names and ONNX semantics (latest opset form: values that older opsets passed as attributes,
  e.g. Clip min/max, Slice starts/ends, Squeeze axes, Pad pads, Split sizes, Reduce axes, are *inputs*, normally
  constants). Optional inputs that are absent are the empty string "".
- Attributes are JSON values: int, float, str, list[int], list[float], list[str]. ONNX defaults are filled in by
  the converter for Conv/ConvTranspose/pools (kernel_shape, strides, pads, dilations, group), so runtimes need not.
- Fusions add attributes to the producing node (Conv, ConvTranspose, Gemm, MatMul):
    ``activation``: one of ACTIVATIONS, ``activation_params``: list[float] (see ACTIVATIONS for the meaning),
    ``residual``: 1 when the node's last input is a tensor of the output's shape added before the activation.
  The epilogue is: y = op(...) (+ bias) ; y = y + residual ; y = activation(y).
- MatMul takes an optional third input, ``bias`` (mace's extension, as Gemm's C): a float tensor that broadcasts
  against the output and is added to the product, y = A @ B + bias. The converter makes it of MatMul(x, W) + Add(b)
  with a constant b[N] broadcast over the last axis (nn.Linear as torch exports it); absent is "" (a residual then
  is the fourth input).
- Every tensor (inputs, outputs, intermediates, constants) has a TensorInfo with a static shape and a dtype.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# name -> meaning of activation_params
ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "Relu": (),
    "Clip": ("min", "max"),
    "LeakyRelu": ("alpha",),
    "Sigmoid": (),
    "HardSigmoid": ("alpha", "beta"),
    "HardSwish": (),
    "Tanh": (),
    "SiLU": (),  # x * sigmoid(x)
    "Gelu": (),  # x/2 (1 + erf(x/sqrt 2)), ONNX Gelu(approximate="none")
    "GeluTanh": (),  # x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), ONNX Gelu(approximate="tanh")
}

FUSABLE_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

DATA_TYPES = ("fp32_fp32", "fp16_fp32")  # storage_compute, MACE naming


def fresh_name(base: str, taken: Container[str]) -> str:
    """``base``, or where a value already has it ``base#2``, ``base#3``, ...: the name of a value that a conversion
    step derives from a node's name (its constants, the nodes a pass makes) must not take over a value the model
    has (ONNX names are free text: a tensor may well be called ``conv1__bn_weight``)."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}#{k}"
    return name


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: float32, float16, int64, int32, bool, ...

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorInfo:
        return cls(str(d["name"]), tuple(int(x) for x in d["shape"]), str(d["dtype"]))


@dataclass
class Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "name": self.name, "inputs": self.inputs, "outputs": self.outputs, "attrs": self.attrs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Node:
        return cls(str(d["op"]), str(d["name"]), list(d["inputs"]), list(d["outputs"]), dict(d.get("attrs", {})))


@dataclass
class Graph:
    """A topologically sorted graph. ``constants`` hold the weights; ``tensors`` the static info of every value."""

    name: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    nodes: list[Node]
    constants: dict[str, np.ndarray]
    tensors: dict[str, TensorInfo]
    data_type: str = "fp32_fp32"
    metadata: dict[str, Any] = field(default_factory=dict)

    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    users.setdefault(name, []).append(node)
        return users

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for node in self.nodes:
            label = node.op
            if node.attrs.get("residual"):
                label += "+Add"
            if "activation" in node.attrs:
                label += "+" + node.attrs["activation"]
            hist[label] = hist.get(label, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def parameter_count(self) -> int:
        return int(sum(c.size for c in self.constants.values()))

    def iter_values(self) -> Iterator[str]:
        """Every value name, in order of definition: inputs, constants, then node outputs."""
        yield from (t.name for t in self.inputs)
        yield from self.constants
        for node in self.nodes:
            yield from (o for o in node.outputs if o)

    def fresh_name(self, base: str) -> str:
        """A name for a new value derived from ``base`` (fresh_name): none of this graph's values has it."""
        return fresh_name(base, {*self.iter_values(), *self.tensors})

    def add_constant(self, name: str, value: np.ndarray) -> str:
        """Sets constant ``name`` (new or replaced) and its TensorInfo from ``value``; returns the name."""
        self.constants[name] = value
        self.tensors[name] = TensorInfo(name, tuple(int(d) for d in value.shape), value.dtype.name)
        return name

    def float_constant(self, name: str) -> np.ndarray:
        """A constant as the runtimes compute with it: fp16 storage is widened to float32."""
        value = self.constants[name]
        return value.astype(np.float32) if value.dtype == np.float16 else value
