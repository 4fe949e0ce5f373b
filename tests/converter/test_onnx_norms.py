"""converter/onnx_norms.py: ONNX's GroupNormalization (opset 18: per-group scale; opset 21: per channel),
RMSNormalization (opset 23), LpNormalization and MeanVarianceNormalization imported as InstanceNormalization /
reductions, against onnxruntime on the numpy
reference and on OpenCL (portable, CPU- and GPU-target plans)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from targets import OpenCLCheck

import mace
from mace.converter import convert_onnx
from mace.errors import UnsupportedOpError
from support import onnx_model, random_array, run_onnxruntime


def _check(model: object, feeds: dict[str, np.ndarray], opencl_check: OpenCLCheck) -> None:
    expected = run_onnxruntime(model, feeds)
    graph = convert_onnx(model)
    assert not {n.op for n in graph.nodes} & {"GroupNormalization", "RMSNormalization", "LpNormalization",
                                             "MeanVarianceNormalization"}
    got = mace.Engine(graph, device="cpu").run(feeds)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    opencl_check(graph, feeds, expected)


@pytest.mark.parametrize(("opset", "shape", "groups"), [(18, (2, 6, 5, 4), 3), (21, (2, 6, 5, 4), 2),
                                                        (21, (1, 8, 7), 4), (18, (1, 4, 3, 2, 2), 1)])
@pytest.mark.parametrize("weights", ["constant", "input"])
def test_group_normalization_matches(opset: int, shape: tuple[int, ...], groups: int, weights: str,
                                     opencl_check: OpenCLCheck) -> None:
    per = shape[1] if opset >= 21 else groups
    params = {"scale": random_array(per, seed=2, low=0.5, high=1.5), "bias": random_array(per, seed=3)}
    node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["y"], name="gn", num_groups=groups,
                            epsilon=1e-3)
    inputs: dict[str, object] = {"x": list(shape)}
    if weights == "input":
        inputs.update({k: [per] for k in params})
    model = onnx_model([node], inputs, {"y": None}, params if weights == "constant" else {}, opset=opset)
    feeds = {"x": random_array(*shape, seed=1) * 3 + 1}
    if weights == "input":
        feeds.update(params)
    _check(model, feeds, opencl_check)


@pytest.mark.parametrize(("shape", "axis"), [((2, 5, 16), -1), ((2, 3, 4, 5), 2), ((3, 8), 0)])
def test_rms_normalization_matches(shape: tuple[int, ...], axis: int, opencl_check: OpenCLCheck) -> None:
    scale = random_array(*shape[axis:], seed=2, low=0.5, high=1.5)
    node = helper.make_node("RMSNormalization", ["x", "scale"], ["y"], name="rms", axis=axis, epsilon=1e-6)
    model = onnx_model([node], {"x": list(shape)}, {"y": None}, {"scale": scale}, opset=23)
    _check(model, {"x": random_array(*shape, seed=1)}, opencl_check)


def test_group_normalization_that_does_not_divide_is_named() -> None:
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], name="gn", num_groups=4)
    model = onnx_model([node], {"x": [1, 6, 3, 3]}, {"y": None},
                       {"s": np.ones(6, np.float32), "b": np.zeros(6, np.float32)}, opset=21)
    with pytest.raises(UnsupportedOpError, match=r"gn.*num_groups=4 does not divide the 6 channels"):
        convert_onnx(model)
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], name="gn", num_groups=3)
    model = onnx_model([node], {"x": [1, 6, 3, 3]}, {"y": None},
                       {"s": np.ones(6, np.float32), "b": np.zeros(6, np.float32)}, opset=18)
    with pytest.raises(UnsupportedOpError, match="opset 18 wants 3 values"):
        convert_onnx(model)


@pytest.mark.parametrize(("p_norm", "axis"), [(2, -1), (1, 1), (2, 0)])
def test_lp_normalization_matches(p_norm: int, axis: int, opencl_check: OpenCLCheck) -> None:
    node = helper.make_node("LpNormalization", ["x"], ["y"], name="lp", axis=axis, p=p_norm)
    model = onnx_model([node], {"x": [3, 4, 5]}, {"y": None})
    x = random_array(3, 4, 5, seed=1)
    x[1, :, 2] = 0.0
    x[:, 2, :] = 0.0  # zero norms along every axis tried: zeros out, as onnxruntime
    _check(model, {"x": x}, opencl_check)


@pytest.mark.parametrize("axes", [None, [1], [0, 1, 2, 3]])
def test_mean_variance_normalization_matches(axes: list[int] | None, opencl_check: OpenCLCheck) -> None:
    node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name="mvn", **({"axes": axes} if axes else {}))
    model = onnx_model([node], {"x": [2, 3, 4, 5]}, {"y": None})
    _check(model, {"x": random_array(2, 3, 4, 5, seed=1) * 2 + 1}, opencl_check)
