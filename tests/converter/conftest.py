"""The converter tests' OpenCL check: a converted graph on the test OpenCL device (pocl here), portable and
GPU-target plans, against expected outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from targets import CPU, GPU, OpenCLCheck

from mace.model.ir import Graph
from support import opencl_devices


@pytest.fixture(scope="module")
def opencl_check() -> OpenCLCheck:
    """check(graph, feeds, expected, variants=({},), rtol=1e-4, atol=1e-4): runs ``graph`` with the portable plan, a
    CPU-target plan and the GPU-target plan (each of ``variants``: node name -> kernel variant) and compares every
    output, NaNs at the same places."""
    cl = pytest.importorskip("pyopencl")
    devices = opencl_devices()
    if not devices:
        pytest.skip("no OpenCL device")
    from mace.opencl.executor import Executor

    context = cl.Context([devices[0]])
    queue = cl.CommandQueue(context)

    def build(source: str, options: str) -> Any:
        return cl.Program(context, source).build(options=options)

    def check(graph: Graph, feeds: dict[str, np.ndarray], expected: dict[str, np.ndarray],
              variants: tuple[Mapping[str, int], ...] = ({},), rtol: float = 1e-4, atol: float = 1e-4) -> None:
        runs = [(None, {}), (CPU, {}), *((GPU, v) for v in variants)]
        for target, chosen in runs:
            got = Executor(graph, context, queue, build, target=target, variants=chosen).run(feeds)
            for name, value in expected.items():
                np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol, equal_nan=True,
                                           err_msg=f"{name} on {target} with variants {chosen}")

    return check
