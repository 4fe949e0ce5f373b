"""An OpenCL context and queue for the kernel tests: pocl's CPU device here, any device elsewhere; tests that use them
skip cleanly where no OpenCL platform is installed. MACE_TEST_OPENCL_DEVICE=<substring> picks a device by name."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from mace.model.ir import Graph
from mace.opencl.plan import DeviceTarget, TilingPolicy
from support import opencl_devices


@pytest.fixture(scope="session")
def opencl_queue() -> Any:
    cl = pytest.importorskip("pyopencl")
    devices = opencl_devices()
    wanted = os.environ.get("MACE_TEST_OPENCL_DEVICE", "")
    devices = [d for d in devices if wanted.lower() in d.name.lower()]
    if not devices:
        pytest.skip("no OpenCL device" + (f" matching {wanted!r}" if wanted else ""))
    return cl.CommandQueue(cl.Context([devices[0]]))


@pytest.fixture(scope="session")
def make_executor(opencl_queue: Any) -> Callable[..., Any]:
    """Builds an Executor for a graph on the test device, compiling without mace's program cache:
    ``make_executor(graph, policy=None, target=None)``, the plan's tiling policy and device target as plan_graph
    takes them."""
    import pyopencl as cl

    from mace.opencl.executor import Executor

    context = opencl_queue.context

    def build(source: str, options: str) -> Any:
        return cl.Program(context, source).build(options=options)

    def make(graph: Graph, policy: TilingPolicy | None = None, target: DeviceTarget | None = None) -> Any:
        return Executor(graph, context, opencl_queue, build, target=target, policy=policy)

    return make


@pytest.fixture(scope="session")
def fence_free_build(opencl_queue: Any) -> Callable[[str, str], Any]:
    """An Executor build function, for the test device, of programs holding NVIDIA's device-scope fence (membar.gl,
    inline PTX, which only NVIDIA compiles: the split sums of gemm_tiled.cl and block.cl on NVIDIA targets): pocl's
    CPU memory is coherent, so mem_fence serves in its place. Fails where the source has no such fence."""
    import pyopencl as cl

    fence = 'asm volatile("membar.gl;" ::: "memory");'

    def build(source: str, options: str) -> Any:
        assert fence in source
        return cl.Program(opencl_queue.context, source.replace(fence, "mem_fence(CLK_GLOBAL_MEM_FENCE);")).build(
            options=options)

    return build
