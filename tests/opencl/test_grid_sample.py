"""GridSample on grid_sample.cl (portable, CPU- and GPU-target plans) against onnxruntime: every mode, padding and
align_corners, with a run-time grid reaching outside the input; what it does not take is named."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

import mace
from mace.converter import convert_onnx
from mace.errors import MaceError
from mace.opencl.plan import DeviceTarget
from support import onnx_model, random_array, run_onnxruntime

GPU = DeviceTarget(True, 132, 48 << 10, 1024)
CPU = DeviceTarget(False, 2, 1 << 21, 4096)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_matches_onnxruntime(mode: str, padding: str, align: int, make_executor: Any) -> None:
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs", mode=mode, padding_mode=padding,
                            align_corners=align)
    model = onnx_model([node], {"x": [2, 3, 5, 6], "grid": [2, 4, 7, 2]}, {"y": None}, opset=16)
    grid = random_array(2, 4, 7, 2, seed=2, low=-1.4, high=1.4)
    grid[0, 0, :3] = [[0.0, 0.0], [1.0, -1.0], [-1.0, 1.0]]
    feeds = {"x": random_array(2, 3, 5, 6, seed=1), "grid": grid}
    expected = run_onnxruntime(model, feeds)["y"]
    graph = convert_onnx(model)
    for target in (None, CPU, GPU):
        got = make_executor(graph, target=target).run(feeds)["y"]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=f"{target}")


def test_grid_sample_bicubic_is_named() -> None:
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs", mode="bicubic")
    model = onnx_model([node], {"x": [1, 1, 4, 4], "grid": [1, 2, 2, 2]}, {"y": None}, opset=16)
    with pytest.raises(MaceError, match="mode='bicubic' is not supported"):
        mace.Engine(convert_onnx(model), device="cpu").run({"x": random_array(1, 1, 4, 4),
                                                           "grid": random_array(1, 2, 2, 2, low=-1, high=1)})
