"""Converter input errors: each names the thing that is wrong."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import mace
from mace.converter import convert_onnx
from mace.errors import ConversionError, UnsupportedOpError
from support import onnx_model, run_onnxruntime, tiny_model


def test_unsupported_op_names_op_node_opset_and_lists_supported() -> None:
    model = onnx_model([helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["y"], name="nms_1")],
                       {"boxes": [1, 4, 4], "scores": [1, 1, 4]}, {"y": ([None, 3], np.int64)}, opset=13)
    with pytest.raises(UnsupportedOpError) as info:
        convert_onnx(model)
    message = str(info.value)
    assert "'NonMaxSuppression'" in message and "'nms_1'" in message and "opset 13" in message
    assert "Supported ops:" in message and "Conv" in message and "Softmax" in message


def test_custom_domain_is_unsupported() -> None:
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fc", domain="com.microsoft")
    model = onnx_model([node], {"x": [1, 2]}, {"y": [1, 2]})
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError, match=r"custom domain 'com\.microsoft'"):
        convert_onnx(model)


def test_unsupported_attribute_is_named() -> None:
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], storage_order=1)
    model = onnx_model([node], {"x": [1, 1, 4, 4]}, {"y": [1, 1, 3, 3]})
    with pytest.raises(UnsupportedOpError, match="storage_order=1 is not supported"):
        convert_onnx(model)


def test_bicubic_resize_converts_and_matches_onnxruntime() -> None:
    """torch's bicubic interpolation (CrossViT's second branch: 240 -> 224) as exported: cubic_coeff_a -0.75,
    pytorch_half_pixel, sizes; on the numpy reference and on OpenCL."""
    import mace
    from support import random_array, run_onnxruntime

    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="down", mode="cubic", cubic_coeff_a=-0.75,
                            coordinate_transformation_mode="pytorch_half_pixel")
    model = onnx_model([node], {"x": [1, 3, 24, 20]}, {"y": None}, {"sizes": np.array([1, 3, 22, 17], np.int64)})
    feeds = {"x": random_array(1, 3, 24, 20)}
    expected = run_onnxruntime(model, feeds)["y"]
    graph = convert_onnx(model)
    for device in ("cpu", "opencl"):
        np.testing.assert_allclose(mace.Engine(graph, device=device).run(feeds)["y"], expected, rtol=1e-5, atol=1e-5,
                                   err_msg=device)


def _dynamic_model() -> onnx.ModelProto:
    return tiny_model("Relu", {"x": ["batch", 3]}, {"y": ["batch", 3]})


def test_dynamic_dim_needs_input_shape() -> None:
    with pytest.raises(ConversionError, match=r"input 'x' has a dynamic dimension 0 \('batch'\).*--input-shape x="):
        convert_onnx(_dynamic_model())
    graph = convert_onnx(_dynamic_model(), input_shapes={"x": [4, 3]})
    assert graph.inputs[0].shape == (4, 3) and graph.outputs[0].shape == (4, 3)


def test_input_shape_for_unknown_input_is_named() -> None:
    with pytest.raises(ConversionError, match=r"unknown input\(s\) \['nope'\]"):
        convert_onnx(_dynamic_model(), input_shapes={"nope": [1, 3]})


def test_runtime_shape_input_is_rejected_clearly() -> None:
    model = tiny_model("Reshape", {"x": [2, 3], "shape": ([2], np.int64)}, {"y": [3, 2]})
    with pytest.raises(UnsupportedOpError, match="decides the output shape"):
        convert_onnx(model)


def test_missing_and_unreadable_onnx_files(tmp_path) -> None:
    with pytest.raises(ConversionError, match="no such ONNX file"):
        mace.convert(tmp_path / "absent.onnx", tmp_path / "a.mace")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\x00 not a protobuf")
    with pytest.raises(ConversionError, match="not a readable ONNX model"):
        mace.convert(bad, tmp_path / "b.mace")


def test_constant_subgraph_folds_and_gemm_batchnorm_fuses() -> None:
    """Shape->Gather->Unsqueeze->Concat->Reshape folds; Gemm+BatchNorm folds; numbers stay those of onnxruntime."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((8, 6)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float32),
             "idx": np.array(0, np.int64), "minus1": np.array([-1], np.int64), "ax0": np.array([0], np.int64)}
    for name in ("scale", "bias", "mean"):
        inits[name] = rng.standard_normal(8).astype(np.float32)
    inits["var"] = rng.random(8).astype(np.float32) + 0.5
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "idx"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["g"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("BatchNormalization", ["g", "scale", "bias", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["y"]),
    ]
    model = onnx_model(nodes, {"x": [2, 2, 3]}, {"y": [2, 8]}, inits)
    graph = convert_onnx(model)
    assert [n.op for n in graph.nodes] == ["Reshape", "Gemm"]
    assert graph.nodes[1].attrs["activation"] == "Relu"
    x = rng.standard_normal((2, 2, 3)).astype(np.float32)
    expected = run_onnxruntime(model, {"x": x})["y"]
    got = mace.Engine(graph).run({"x": x})["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_ceil_mode_drops_a_last_window_that_starts_in_the_padding() -> None:
    model = tiny_model("MaxPool", {"x": [1, 1, 2, 2]}, {"y": None}, {"kernel_shape": [1, 1], "strides": [2, 2],
                                                                      "ceil_mode": 1})
    graph = convert_onnx(model)
    assert graph.outputs[0].shape == (1, 1, 1, 1)
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    assert mace.Engine(graph).run({"x": x})["y"].shape == (1, 1, 1, 1)


@pytest.mark.parametrize("op", ["ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"])
def test_opset13_reductions_keep_their_axes(op: str) -> None:
    """Below opset 18 these take `axes` as an attribute: it must become the input, not be dropped."""
    model = tiny_model(op, {"x": [2, 3, 4]}, {"y": [2, 1, 4]}, attrs={"axes": [1], "keepdims": 1}, opset=13)
    x = np.random.default_rng(0).uniform(0.5, 2.0, (2, 3, 4)).astype(np.float32)
    got = mace.Engine(convert_onnx(model)).run({"x": x})["y"]
    np.testing.assert_allclose(got, run_onnxruntime(model, {"x": x})["y"], rtol=1e-5)
