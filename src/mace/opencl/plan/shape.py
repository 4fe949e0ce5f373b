"""Ops that compute no data: Reshape-likes and same-type Casts become aliases (the output shares its input's buffer),
Shape and Size become constants (shapes are static). A Cast between storage types is an elementwise copy.

An alias is why a buffer can outlive its value: the memory planner (../memory.py) keeps a root alive until the last
read of any alias of it.
"""

from __future__ import annotations

import numpy as np

from mace.errors import DeviceError
from mace.model.ir import Node
from mace.opencl.plan.elementwise import elementwise, operand
from mace.opencl.plan.planner import Planner, lowers
from mace.opencl.plan.templates import prod

ALIAS_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")


@lowers(*ALIAS_OPS)
def _lower_alias(p: Planner, node: Node) -> None:
    p.alias(node.outputs[0], node.inputs[0])
    for extra in node.outputs[1:]:
        if node.op == "Dropout" and p.is_used(extra):  # inference keeps everything: the mask is all true
            p.known(extra, np.ones(p.shape(extra), np.bool_))
        elif p.is_used(extra):
            raise DeviceError(f"OpenCL runtime has no kernel for {node.op} output {extra!r} (node {node.name})")


@lowers("Shape", "Size")
def _lower_shape(p: Planner, node: Node) -> None:
    """Static shapes make these constants: the output is uploaded, not computed."""
    shape = p.shape(node.inputs[0])
    if node.op == "Size":
        value = np.array(prod(shape), np.int64)
    else:
        rank = len(shape)
        start, end = int(node.attrs.get("start", 0)), int(node.attrs.get("end", rank))
        value = np.array(shape[slice(start, end)], np.int64)
    out = node.outputs[0]
    p.known(out, value)


@lowers("Cast", "CastLike")
def _lower_cast(p: Planner, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if p.tag(x) == p.tag(y):
        p.alias(y, x)
        return
    elementwise(p, node, [operand(p, x, allow_literal=False)], y, "$0", "$0")
