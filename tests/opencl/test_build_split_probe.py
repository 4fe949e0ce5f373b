"""benchmarks/build_split_probe.py measures building a model's program in pieces: its groups must hold every
specialization exactly once, under the shared header, and a program linked from them must compute what the one-piece
build computes (on the test device; pocl here)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from mace.converter import convert_onnx
from mace.opencl.plan import DeviceTarget, plan_graph
from opencl.test_tensor_cores import H200, conv_and_product_model

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
try:
    import build_split_probe
finally:
    sys.path.pop(0)


def test_groups_hold_each_specialization_once_under_the_header() -> None:
    source = plan_graph(convert_onnx(conv_and_product_model()), H200).source
    header, *chunks = source.split(build_split_probe.CHUNK)
    assert len(chunks) >= 3
    for n in (1, 2, len(chunks), len(chunks) + 3):  # more groups than specializations: no empty program
        parts = build_split_probe.groups(source, n)
        assert len(parts) == min(n, len(chunks))
        assert all(part.startswith(header) and len(part) > len(header) for part in parts)
        pieces = sorted(c for part in parts for c in part[len(header):].split(build_split_probe.CHUNK)[1:])
        assert pieces == sorted(chunks)


def test_a_linked_program_computes_what_one_build_does(opencl_queue: Any) -> None:
    import pyopencl as cl

    from mace.opencl.executor import Executor

    if not opencl_queue.device.get_info(cl.device_info.LINKER_AVAILABLE):
        import pytest

        pytest.skip("the device has no linker")
    ctx, device = opencl_queue.context, opencl_queue.device
    graph = convert_onnx(conv_and_product_model())
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 13, 41, 41)).astype(np.float32)}
    target = DeviceTarget.from_device(device)
    whole = Executor(graph, ctx, opencl_queue, lambda s, o: cl.Program(ctx, s).build(options=o), target=target)
    times: dict[str, float] = {}
    linked = Executor(graph, ctx, opencl_queue,
                      lambda s, o: build_split_probe.build_linked(ctx, device, s, o, 2, times), target=target)
    np.testing.assert_array_equal(linked.run(feeds)["y"], whole.run(feeds)["y"])
    assert set(times) == {"compile_s", "link_s"}
