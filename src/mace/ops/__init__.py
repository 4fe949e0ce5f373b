"""Op implementations shared by the runtimes and the converter: the numpy reference ops."""

from mace.ops.common import Attrs, Inputs, MissingInputError, Outputs
from mace.ops.reference import REFERENCE_OPS, SUPPORTED_OPS, OpFn, apply_activation, run_node

__all__ = [
    "REFERENCE_OPS",
    "SUPPORTED_OPS",
    "Attrs",
    "Inputs",
    "MissingInputError",
    "OpFn",
    "Outputs",
    "apply_activation",
    "run_node",
]
