"""Rewrite ONNX nodes of any opset (7-21) into the one form the IR uses: the latest opset's.

Older opsets passed values as attributes that newer ones take as inputs (Clip min/max, Slice starts/ends, Pad pads,
Squeeze/Unsqueeze axes, Split sizes, Reduce axes, Upsample scales). Here they become constant inputs, so the reference
ops and the kernels implement each op once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mace.model.ir import Node


class Constants:
    """Where normalizing puts the constants it makes: into ``values`` (the importer's), each named ``fresh(its
    node's name + suffix)``, a name no value of the model has (the importer's, after ir.fresh_name)."""

    def __init__(self, values: dict[str, np.ndarray], fresh: Callable[[str], str]) -> None:
        self.values, self.fresh = values, fresh

    def add(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.values[name] = value
        return name


def _const(node: Node, constants: Constants, suffix: str, value: np.ndarray) -> str:
    return constants.add(f"{node.name}__{suffix}", value)


def _attr_to_input(node: Node, constants: Constants, attr: str, position: int, dtype: Any) -> None:
    """Move attribute `attr` to input `position` (padding absent optional inputs with "")."""
    if attr not in node.attrs:
        return
    value = np.asarray(node.attrs.pop(attr), dtype=dtype)
    while len(node.inputs) < position:
        node.inputs.append("")
    name = _const(node, constants, attr, value)
    if len(node.inputs) == position:
        node.inputs.append(name)
    else:
        node.inputs[position] = name


def _clip(node: Node, constants: Constants, opset: int) -> None:
    if opset < 11:
        if "min" in node.attrs:
            _attr_to_input(node, constants, "min", 1, np.float32)
        if "max" in node.attrs:
            _attr_to_input(node, constants, "max", 2, np.float32)


def _slice(node: Node, constants: Constants, opset: int) -> None:
    if opset < 10:
        _attr_to_input(node, constants, "starts", 1, np.int64)
        _attr_to_input(node, constants, "ends", 2, np.int64)
        _attr_to_input(node, constants, "axes", 3, np.int64)


def _pad(node: Node, constants: Constants, opset: int) -> None:
    if opset < 11:
        if "paddings" in node.attrs:  # opset 1 name
            node.attrs["pads"] = node.attrs.pop("paddings")
        _attr_to_input(node, constants, "pads", 1, np.int64)
        if "value" in node.attrs:
            _attr_to_input(node, constants, "value", 2, np.float32)


def _axes_to_input(node: Node, constants: Constants, opset: int) -> None:
    # Squeeze/Unsqueeze/ReduceSum moved axes to an input in opset 13, the other reductions in 18.
    moved_at = 13 if node.op in ("Squeeze", "Unsqueeze", "ReduceSum") else 18
    if opset < moved_at:
        _attr_to_input(node, constants, "axes", 1, np.int64)


def _split(node: Node, constants: Constants, opset: int) -> None:
    if opset < 13:
        _attr_to_input(node, constants, "split", 1, np.int64)
    if len(node.inputs) < 2 or not node.inputs[1]:
        node.attrs["num_outputs"] = len(node.outputs)
    else:
        node.attrs.pop("num_outputs", None)


def _upsample(node: Node, constants: Constants, opset: int) -> None:
    """Upsample (deprecated) is Resize with asymmetric coordinates; linear Upsample is bilinear."""
    if opset < 9:
        _attr_to_input(node, constants, "scales", 1, np.float32)
    scales = node.inputs[1]
    mode = node.attrs.pop("mode", "nearest")
    node.op = "Resize"
    node.inputs = [node.inputs[0], "", scales]
    node.attrs = {
        "mode": "linear" if mode in ("linear", "bilinear") else "nearest",
        "coordinate_transformation_mode": "asymmetric",
        "nearest_mode": "floor",
    }


def _resize(node: Node, constants: Constants, opset: int) -> None:
    if opset < 11:  # opset 10: (X, scales)
        node.inputs = [node.inputs[0], "", node.inputs[1]]
        node.attrs.setdefault("coordinate_transformation_mode", "asymmetric")
        node.attrs.setdefault("nearest_mode", "floor")


def _softmax(node: Node, constants: Constants, opset: int) -> None:
    # Before opset 13 Softmax/LogSoftmax flattened the input to 2-D at `axis` (default 1); the converter
    # marks it so shape inference and the runtimes coerce exactly as ONNX did.
    if opset < 13:
        node.attrs["axis"] = node.attrs.get("axis", 1)
        node.attrs["legacy_coerce_2d"] = 1


def _batchnorm(node: Node, constants: Constants, opset: int) -> None:
    for legacy in ("spatial", "is_test", "consumed_inputs", "momentum"):
        node.attrs.pop(legacy, None)
    del node.outputs[1:]  # training outputs (mean, var, ...) are never produced in inference


def _dropout(node: Node, constants: Constants, opset: int) -> None:
    node.attrs.pop("is_test", None)
    node.attrs.pop("ratio", None)
    node.attrs.pop("seed", None)
    node.inputs = node.inputs[:1]


def _drop_legacy_attrs(node: Node, constants: Constants, opset: int) -> None:
    node.attrs.pop("consumed_inputs", None)
    if node.op in ("Add", "Sub", "Mul", "Div") and opset < 7:
        node.attrs.pop("broadcast", None)
        node.attrs.pop("axis", None)


NORMALIZERS: dict[str, Callable[[Node, Constants, int], None]] = {
    "Clip": _clip,
    "Slice": _slice,
    "Pad": _pad,
    "Squeeze": _axes_to_input,
    "Unsqueeze": _axes_to_input,
    "ReduceMean": _axes_to_input,
    "ReduceSum": _axes_to_input,
    "ReduceMax": _axes_to_input,
    "ReduceMin": _axes_to_input,
    "ReduceProd": _axes_to_input,
    "ReduceL1": _axes_to_input,
    "ReduceL2": _axes_to_input,
    "ReduceSumSquare": _axes_to_input,
    "ReduceLogSum": _axes_to_input,
    "ReduceLogSumExp": _axes_to_input,
    "Split": _split,
    "Upsample": _upsample,
    "Resize": _resize,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "BatchNormalization": _batchnorm,
    "Dropout": _dropout,
}


def normalize_node(node: Node, constants: Constants, opset: int) -> None:
    _drop_legacy_attrs(node, constants, opset)
    fix = NORMALIZERS.get(node.op)
    if fix is not None:
        fix(node, constants, opset)
