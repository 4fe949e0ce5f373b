"""The same ONNX test data as tests/test_onnx_suites.py, run on the OpenCL runtime (pocl in CI): the light models,
simple, pytorch-converted and pytorch-operator cases. Unsupported ops skip with the converter's reason; a case the
OpenCL runtime cannot lower fails (every op the converter emits must have a kernel). float64 cases skip: the OpenCL
runtime computes them in float32 and says so (cl_khr_fp64 is not portable)."""

from __future__ import annotations

import functools

import onnx
import onnx.backend.test
import pytest

import mace
from mace.converter import SUPPORTED_OPS, convert_onnx
from mace.errors import UnsupportedOpError
from mace.onnx_backend import MaceBackend, MaceBackendRep


@functools.lru_cache(maxsize=1)
def _shared_context():  # one OpenCL context for all cases: context creation is not what is tested here
    return mace.GPUContextBuilder().disable_storage().finalize()


class _Executor(MaceBackend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs):  # type: ignore[override]
        unsupported = sorted({n.op_type for n in model.graph.node} - set(SUPPORTED_OPS))
        if unsupported:
            pytest.skip(f"unsupported op(s): {', '.join(unsupported)}")
        try:
            graph = convert_onnx(model)
        except UnsupportedOpError as exc:
            pytest.skip(str(exc).split(". Supported ops")[0])
        if any(t.dtype == "float64" for t in graph.tensors.values()):
            pytest.skip("float64: the OpenCL runtime computes float64 models in float32 (and warns)")
        return MaceBackendRep(mace.Engine(graph, device="opencl", gpu_context=_shared_context()))


backend_test = onnx.backend.test.BackendTest(_Executor, __name__)
_cases = backend_test.test_cases
for _case in _cases.values():
    for _name in [n for n in vars(_case) if n.endswith("_cuda")]:
        delattr(_case, _name)
del _case
OnnxBackendRealModelTest = _cases["OnnxBackendRealModelTest"]
OnnxBackendSimpleModelTest = _cases["OnnxBackendSimpleModelTest"]
OnnxBackendPyTorchConvertedModelTest = _cases["OnnxBackendPyTorchConvertedModelTest"]
OnnxBackendPyTorchOperatorModelTest = _cases["OnnxBackendPyTorchOperatorModelTest"]
