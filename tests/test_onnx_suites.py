"""ONNX's own backend test runner drives mace over the test data shipped in the onnx wheel.

Kinds run: real (the 9 light models: AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet,
VGG-19, ZFNet-512 with stored outputs), simple, pytorch-converted, pytorch-operator. A case whose ops mace does not
support is skipped with the reason (the converter's UnsupportedOpError); any other failure fails the test.
Node tests (one per op) are not run here: tests/ops compares every op with onnxruntime directly.
"""

from __future__ import annotations

import os

import onnx
import onnx.backend.test
import pytest

from mace.converter import SUPPORTED_OPS
from mace.errors import UnsupportedOpError
from mace.onnx_backend import MaceBackend

# The light models write their generated inputs under ONNX_HOME; keep that inside pytest's temp area.
os.environ.setdefault("ONNX_HOME", os.path.join(os.environ.get("TMPDIR", "/tmp"), "mace-onnx-home"))


class _SkippingBackend(MaceBackend):
    """Turns 'mace cannot run this op' into a skip that names the op; everything else must pass."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs):  # type: ignore[override]
        unsupported = sorted({n.op_type for n in model.graph.node} - set(SUPPORTED_OPS))
        if unsupported:
            pytest.skip(f"unsupported op(s): {', '.join(unsupported)}")
        try:
            return super().prepare(model, device, **kwargs)
        except UnsupportedOpError as exc:
            pytest.skip(str(exc).split(". Supported ops")[0])


backend_test = onnx.backend.test.BackendTest(_SkippingBackend, __name__)
_cases = backend_test.test_cases
for _case in _cases.values():  # mace's ONNX backend is one device ("CPU" selects the engine device): no CUDA twins
    for _name in [n for n in vars(_case) if n.endswith("_cuda")]:
        delattr(_case, _name)
del _case  # a TestCase bound at module level would be collected a second time
OnnxBackendRealModelTest = _cases["OnnxBackendRealModelTest"]
OnnxBackendSimpleModelTest = _cases["OnnxBackendSimpleModelTest"]
OnnxBackendPyTorchConvertedModelTest = _cases["OnnxBackendPyTorchConvertedModelTest"]
OnnxBackendPyTorchOperatorModelTest = _cases["OnnxBackendPyTorchOperatorModelTest"]
