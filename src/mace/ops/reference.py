"""The numpy reference ops: ONNX semantics (latest opset form, see mace.model.ir), vectorized.

They are the oracle for the OpenCL runtime, the CPU fallback runtime and the converter's constant folding.
Each op is ``fn(inputs, attrs) -> outputs``: absent optional inputs are None (or missing at the end of the list),
attributes are plain Python values with ONNX defaults filled in here when absent. An attribute value mace does not
support raises ``NotImplementedError("<Op>: <attr>=<value> is not supported")``. Outputs may be views of the
inputs: treat them as read-only.

The ops live by family in sibling modules: activations, elementwise, conv, pool, resize, shape_ops, linalg, reduce,
normalization, recurrent.

>>> import numpy as np
>>> x = np.array([[-2.0, 3.0]], np.float32)
>>> run_node("Gemm", [x, np.eye(2, dtype=np.float32), x], {"activation": "Relu", "residual": 1})[0].tolist()
[[0.0, 6.0]]
"""

from __future__ import annotations

from mace.ops import activations, conv, elementwise, linalg, normalization, pool, recurrent, reduce, resize, shape_ops
from mace.ops.activations import apply_activation
from mace.ops.common import Attrs, Inputs, MissingInputError, OpFn, Outputs

__all__ = ["REFERENCE_OPS", "SUPPORTED_OPS", "OpFn", "apply_activation", "run_node"]

REFERENCE_OPS: dict[str, OpFn] = {
    **elementwise.OPS,
    **activations.OPS,
    **conv.OPS,
    **pool.OPS,
    **normalization.OPS,
    **linalg.OPS,
    **reduce.OPS,
    **recurrent.OPS,
    **resize.OPS,
    **shape_ops.OPS,
}

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(REFERENCE_OPS))


def run_node(op: str, inputs: Inputs, attrs: Attrs) -> Outputs:
    """Run one node, including the fusion epilogue of mace.model.ir: y = op(...); y += residual; y = activation(y).

    With ``attrs["residual"]`` the last input is the residual (not passed to the op). A required input that is
    absent raises MissingInputError (a ValueError) naming the op.
    """
    fn = REFERENCE_OPS.get(op)
    if fn is None:
        raise NotImplementedError(f"{op}: op is not supported")
    inputs = list(inputs)
    residual = inputs.pop() if attrs.get("residual") else None
    try:
        outputs = fn(inputs, attrs)
    except MissingInputError as exc:
        raise MissingInputError(f"{op}: {exc}") from None
    if residual is None and "activation" not in attrs:
        return outputs
    y = outputs[0]
    if residual is not None:
        y = (y + residual).astype(y.dtype, copy=False)
    if "activation" in attrs:
        y = apply_activation(y, attrs["activation"], attrs.get("activation_params", ()))
    return [y, *outputs[1:]]
