"""ONNX's own backend test runner drives mace over the test data shipped in the onnx wheel, on each runtime.

Kinds run: real (the 9 light models: AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet,
VGG-19, ZFNet-512 with stored outputs), simple, pytorch-converted, pytorch-operator. Node tests (one per op) are not run
here: tests/ops compares every op with onnxruntime directly.

Written once, instantiated per device: ``OnnxBackend<Kind>ModelTest_cpu`` (the numpy reference runtime; the
MACE_BACKEND_DEVICE variable of mace.onnx_backend can point it elsewhere) and ``OnnxBackend<Kind>ModelTest_opencl``
(the OpenCL runtime, pocl in CI; every case skips with the reason where no OpenCL device can be opened).
- A case whose ops mace does not support skips with the reason (the converter's UnsupportedOpError); any other failure
  fails the test. On OpenCL a case the runtime cannot lower fails (every op the converter emits must have a kernel).
- float64 cases skip on OpenCL: the runtime computes them in float32 and says so (cl_khr_fp64 is not portable).
Select one device with ``-k _cpu`` / ``-k _opencl``; tests/conftest.py prints the per-kind summary.
"""

from __future__ import annotations

import functools
import os
import unittest
from typing import Any

import onnx
import onnx.backend.test
import pytest

from mace.converter import SUPPORTED_OPS, convert_onnx
from mace.errors import MaceError, UnsupportedOpError
from mace.onnx_backend import MaceBackend, MaceBackendRep, engine_device
from mace.runtime.engine import Engine

# The light models write their generated inputs under ONNX_HOME; keep that inside pytest's temp area.
os.environ.setdefault("ONNX_HOME", os.path.join(os.environ.get("TMPDIR", "/tmp"), "mace-onnx-home"))

DEVICES = ("cpu", "opencl")
KINDS = ("Real", "Simple", "PyTorchConverted", "PyTorchOperator")


@functools.lru_cache(maxsize=1)
def _opencl_context() -> tuple[Any, str | None]:
    """One OpenCL context for all cases (context creation is not what is tested here), or why there is none."""
    try:
        import pyopencl  # noqa: F401
    except ImportError:
        return None, "no OpenCL: pyopencl is not installed"
    import mace

    try:
        return mace.GPUContextBuilder().disable_storage().finalize(), None
    except MaceError as exc:
        return None, f"no OpenCL device: {exc}"


def _skip_unsupported(exc: UnsupportedOpError) -> None:
    pytest.skip(str(exc).split(". Supported ops")[0])


class _SuiteBackend(MaceBackend):
    """Turns 'mace cannot run this op' into a skip that names the op; everything else must pass."""

    device = "cpu"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> MaceBackendRep:  # type: ignore[override]
        unsupported = sorted({n.op_type for n in model.graph.node} - set(SUPPORTED_OPS))
        if unsupported:
            pytest.skip(f"unsupported op(s): {', '.join(unsupported)}")
        try:
            graph = convert_onnx(model, input_shapes=kwargs.get("input_shapes"),
                                 data_type=kwargs.get("data_type", "fp32_fp32"))
            if cls.device == "cpu":
                return MaceBackendRep(Engine(graph, device=engine_device(device)))
        except UnsupportedOpError as exc:
            _skip_unsupported(exc)
        if any(t.dtype == "float64" for t in graph.tensors.values()):
            pytest.skip("float64: the OpenCL runtime computes float64 models in float32 (and warns)")
        context, _ = _opencl_context()
        return MaceBackendRep(Engine(graph, device="opencl", gpu_context=context))


def _require_opencl(cls: type) -> None:
    _, reason = _opencl_context()
    if reason is not None:
        raise unittest.SkipTest(reason)


def _suites(device: str) -> dict[str, type[unittest.TestCase]]:
    backend = type(f"_SuiteBackend_{device}", (_SuiteBackend,), {"device": device})
    cases = onnx.backend.test.BackendTest(backend, __name__).test_cases
    suites = {}
    for kind in KINDS:
        case = cases[f"OnnxBackend{kind}ModelTest"]
        for name in [n for n in vars(case) if n.endswith("_cuda")]:  # one ONNX device ("CPU" = the engine's)
            delattr(case, name)
        if device == "opencl":
            case.setUpClass = classmethod(_require_opencl)  # type: ignore[assignment]
        case.__name__ = case.__qualname__ = f"OnnxBackend{kind}ModelTest_{device}"
        suites[case.__name__] = case
    return suites


for _device in DEVICES:
    globals().update(_suites(_device))
del _device
