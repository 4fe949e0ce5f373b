"""The real architectures in ../shared/models, converted and run on the reference runtime, match onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

import mace
from mace.model import modelfile
from support import SHARED_MODEL_NAMES, onnxruntime_outputs, relative_error, shared_model


@pytest.mark.parametrize("name", SHARED_MODEL_NAMES)
def test_shared_model_matches_onnxruntime(name: str, converted_dir) -> None:
    onnx_path = shared_model(name)
    [path] = mace.convert(onnx_path, converted_dir / f"{name}.mace")
    engine = mace.Engine(path, device="cpu")
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    got = engine.run({"input": x})["output"]
    expected = onnxruntime_outputs(onnx_path, {"input": x})["output"]
    assert got.shape == expected.shape == (1, 1000)
    assert relative_error(got, expected) <= 1e-4


def test_passes_fuse_mobilenet(converted_dir) -> None:
    """MobileNet-v2: every Clip (ReLU6) joins its conv and the residual Adds join the conv epilogue."""
    graph = mace.converter.convert_onnx(shared_model("mobilenet_v2"))
    ops = [n.op for n in graph.nodes]
    assert "Clip" not in ops and "Add" not in ops and "Identity" not in ops
    assert sum(1 for n in graph.nodes if n.attrs.get("residual")) == 10
    assert sum(1 for n in graph.nodes if n.attrs.get("activation") == "Clip") == 35
    assert graph.metadata["passes"]["fuse_activations"] == 35


def test_shufflenet_shape_chains_fold() -> None:
    """ShuffleNet's Shape/Gather/Slice/Div/Mul arithmetic folds away at convert time."""
    graph = mace.converter.convert_onnx(shared_model("shufflenet_v2_x1_0"))
    ops = {n.op for n in graph.nodes}
    assert not ops & {"Shape", "Gather", "Div", "Mul", "Constant"}
    assert graph.metadata["folded_nodes"] > 0


def test_fp16_storage_halves_the_file(converted_dir) -> None:
    onnx_path = shared_model("squeezenet1_1")
    [fp32] = mace.convert(onnx_path, converted_dir / "sq32.mace")
    [fp16] = mace.convert(onnx_path, converted_dir / "sq16.mace", data_type="fp16_fp32")
    assert fp16.stat().st_size < 0.55 * fp32.stat().st_size
    graph = modelfile.load(fp16)
    assert graph.data_type == "fp16_fp32"
    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    got = mace.Engine(graph).run({"input": x})["output"]
    expected = onnxruntime_outputs(onnx_path, {"input": x})["output"]
    assert relative_error(got, expected) <= 1e-2
