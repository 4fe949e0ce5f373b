"""Planning makes device buffers of its own beside the graph's values (a conv weight relaid as ``w@km``, k-split
partial sums ``y@splitk``, the split-sum counters): ONNX names are free text, so a model tensor may be called
exactly that, and each must keep its own data (Planner._fresh). Before, the conv read the model's tensor as its
weight, or the Add the relaid weight as its addend."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from mace.converter import convert_onnx
from mace.opencl.plan import DeviceTarget
from support import onnx_model, random_array, run_onnxruntime

GPU = DeviceTarget(True, 16, 48 << 10, 1024)  # a GPU-shaped plan (gemm_tiled.cl), whatever the test device is


def test_a_model_tensor_named_like_a_planned_buffer_keeps_its_data(make_executor: Any) -> None:
    init = {"w": random_array(8, 3, 3, 3, seed=1, low=-0.5, high=0.5),
            "w@km": random_array(1, 8, 1, 1, seed=2)}  # what planning calls the conv weight relaid as [K][OC]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "w@km"], ["y"])]
    model = onnx_model(nodes, {"x": [1, 3, 9, 9]}, {"y": None}, init)
    x = random_array(1, 3, 9, 9, seed=4)
    got = make_executor(convert_onnx(model), target=GPU).run({"x": x})["y"]
    np.testing.assert_allclose(got, run_onnxruntime(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)
