"""OpenCL failures name the step that failed; an engine whose run failed on the device says it is unusable."""

from __future__ import annotations

import numpy as np
import pyopencl as cl
import pytest

import mace
from mace.errors import DeviceError
from mace.model.ir import Graph, Node, TensorInfo
from mace.opencl.runtime import OpenCLRuntime


def _relu_graph(elements: int) -> Graph:
    x, y = TensorInfo("x", (1, elements), "float32"), TensorInfo("y", (1, elements), "float32")
    return Graph("big", [x], [y], [Node("Relu", "relu_0", ["x"], ["y"])], {}, {"x": x, "y": y})


def test_allocation_beyond_the_device_limit_names_step_and_tensor() -> None:
    ctx = mace.GPUContextBuilder().disable_storage().finalize()
    too_big = ctx.device.max_mem_alloc_size // 4 + 1024  # float32 elements: just over the largest allowed buffer
    with pytest.raises(DeviceError, match=r"OpenCL error while allocating [\d.]+ MB for tensor\(s\) .*\b[xy]\b"):
        mace.Engine(_relu_graph(too_big), device="opencl", gpu_context=ctx)


def test_a_failed_run_makes_the_engine_say_it_is_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = mace.GPUContextBuilder().disable_storage().finalize()
    runtime = OpenCLRuntime(_relu_graph(16), ctx)
    x = np.arange(16, dtype=np.float32).reshape(1, 16) - 8
    np.testing.assert_array_equal(runtime.run({"x": x})["y"], np.maximum(x, 0))
    executor = runtime.executor

    def lost_device(*args, **kwargs):
        record = cl._cl._ErrorRecord(msg="out of resources", code=cl.status_code.OUT_OF_RESOURCES,
                                     routine="clEnqueueNDRangeKernel")
        raise cl.RuntimeError(record)

    monkeypatch.setattr(cl, "enqueue_nd_range_kernel", lost_device)
    with pytest.raises(DeviceError, match=r"launching node relu_0 \(Relu\)"):
        runtime.run({"x": x})
    monkeypatch.undo()
    with pytest.raises(DeviceError, match="no longer usable: an earlier run failed"):
        runtime.run({"x": x})
    assert executor is runtime.executor
