"""Every graph pass of mace.converter.passes on small hand-built graphs: the structure after the pass (node count, op
types, attributes) and the numbers of the optimized graph against onnxruntime on the original ONNX model.

Each pass is run on its own on the imported graph (so the structure it leaves is its own doing) and then the whole
pipeline (convert_onnx) is checked end to end through mace.Engine(graph, device="cpu")."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

import mace
from mace.converter import convert_onnx
from mace.converter import passes as P
from mace.converter.onnx_import import import_onnx
from mace.model.ir import Graph
from mace.runtime.cpu import CPURuntime
from support import onnx_model, random_array, run_onnxruntime, tiny_model


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def only_node(graph: Graph, op: str) -> Any:
    found = [n for n in graph.nodes if n.op == op]
    assert len(found) == 1, f"expected one {op}, graph has {ops(graph)}"
    return found[0]


def assert_matches_onnxruntime(model: Any, graph: Graph, feeds: dict[str, np.ndarray], rtol: float = 1e-4,
                               atol: float = 1e-5) -> None:
    expected = run_onnxruntime(model, feeds)
    got = mace.Engine(graph, device="cpu").run(feeds)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol, err_msg=name)


def imported(model: Any) -> Graph:
    return import_onnx(model)


# -- remove_identities ---------------------------------------------------------------------------------------------

def test_identity_and_dropout_are_removed_and_consumers_rewired() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["b"]),
             helper.make_node("Dropout", ["b"], ["c"]), helper.make_node("Tanh", ["c"], ["y"])]
    model = onnx_model(nodes, {"x": [2, 5]}, {"y": [2, 5]})
    graph = imported(model)
    assert ops(graph) == ["Relu", "Identity", "Dropout", "Tanh"]
    assert P.remove_identities(graph) == 2
    assert ops(graph) == ["Relu", "Tanh"]
    assert graph.nodes[1].inputs == ["a"]
    assert_matches_onnxruntime(model, graph, {"x": random_array(2, 5)})


def test_identity_that_writes_a_graph_output_is_kept() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["y"])]
    model = onnx_model(nodes, {"x": [3]}, {"y": [3]})
    graph = imported(model)
    assert P.remove_identities(graph) == 0
    assert ops(graph) == ["Relu", "Identity"] and graph.outputs[0].name == "y"
    assert_matches_onnxruntime(model, convert_onnx(model), {"x": random_array(3)})


# -- eliminate_dead_code -------------------------------------------------------------------------------------------

def test_dead_nodes_constants_and_tensors_are_removed() -> None:
    nodes = [helper.make_node("Add", ["x", "k_live"], ["y"]),
             helper.make_node("Mul", ["x", "k_dead"], ["dead1"]), helper.make_node("Sigmoid", ["dead1"], ["dead2"])]
    init = {"k_live": random_array(4, seed=1), "k_dead": random_array(4, seed=2)}
    model = onnx_model(nodes, {"x": [4]}, {"y": [4]}, init)
    graph = imported(model)
    assert P.eliminate_dead_code(graph) == 2
    assert ops(graph) == ["Add"]
    assert set(graph.constants) == {"k_live"}
    assert "dead1" not in graph.tensors and "dead2" not in graph.tensors and "k_dead" not in graph.tensors
    assert {"x", "k_live", "y"} <= set(graph.tensors)
    assert_matches_onnxruntime(model, graph, {"x": random_array(4)})


def test_live_graph_has_nothing_to_eliminate() -> None:
    model = tiny_model("Relu", {"x": [2, 2]}, {"y": [2, 2]})
    graph = imported(model)
    assert P.eliminate_dead_code(graph) == 0 and ops(graph) == ["Relu"]


# -- explicit_attributes -------------------------------------------------------------------------------------------

def test_conv_defaults_are_filled_from_the_weight() -> None:
    model = tiny_model("Conv", {"x": [1, 2, 6, 5]}, {"y": None}, initializers={"w": random_array(3, 2, 3, 2)})
    graph = imported(model)
    assert P.explicit_attributes(graph) == 1
    assert graph.nodes[0].attrs == {"kernel_shape": [3, 2], "strides": [1, 1], "dilations": [1, 1],
                                    "pads": [0, 0, 0, 0], "group": 1}
    assert_matches_onnxruntime(model, graph, {"x": random_array(1, 2, 6, 5)})


def test_pool_defaults_are_filled() -> None:
    nodes = [helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[2, 2]),
             helper.make_node("AveragePool", ["m"], ["y"], kernel_shape=[2, 1], strides=[1, 2])]
    model = onnx_model(nodes, {"x": [1, 2, 7, 8]}, {"y": None})
    graph = imported(model)
    assert P.explicit_attributes(graph) == 2
    assert graph.nodes[0].attrs == {"kernel_shape": [2, 2], "strides": [1, 1], "dilations": [1, 1],
                                    "pads": [0, 0, 0, 0], "ceil_mode": 0}
    assert graph.nodes[1].attrs == {"kernel_shape": [2, 1], "strides": [1, 2], "dilations": [1, 1],
                                    "pads": [0, 0, 0, 0], "ceil_mode": 0, "count_include_pad": 0}
    assert_matches_onnxruntime(model, graph, {"x": random_array(1, 2, 7, 8)})


# Input 7x6, kernel 4x3, strides 2x1: output ceil(7/2)=4 x 6; total padding (4-1)*2+4-7 = 3 rows, (6-1)*1+3-6 = 2
# columns; with dilations 1x2 the columns need (6-1)*1+(3-1)*2+1-6 = 4. SAME_UPPER puts the odd row at the end,
# SAME_LOWER at the beginning.
SAME_PADS = {("SAME_UPPER", 1): [1, 1, 2, 1], ("SAME_LOWER", 1): [2, 1, 1, 1],
             ("SAME_UPPER", 2): [1, 2, 2, 2], ("SAME_LOWER", 2): [2, 2, 1, 2]}


def _same_model(op: str, auto_pad: str | None, dilation: int, pads: list[int] | None = None) -> Any:
    attrs: dict[str, Any] = {"strides": [2, 1]}
    if auto_pad:
        attrs["auto_pad"] = auto_pad
    if pads:
        attrs["pads"] = pads
    if dilation > 1:
        attrs["dilations"] = [1, dilation]
    init = {}
    if op == "Conv":
        init = {"w": random_array(3, 2, 4, 3, seed=1), "b": random_array(3, seed=2)}
    else:
        attrs["kernel_shape"] = [4, 3]
    return tiny_model(op, {"x": [1, 2, 7, 6]}, {"y": None}, attrs, initializers=init)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize(("op", "dilation"), [("Conv", 1), ("Conv", 2), ("MaxPool", 1), ("MaxPool", 2),
                                              ("AveragePool", 1)])  # AveragePool has dilations from opset 19
def test_same_auto_pad_becomes_explicit_pads(op: str, auto_pad: str, dilation: int) -> None:
    model = _same_model(op, auto_pad, dilation)
    graph = imported(model)
    assert P.explicit_attributes(graph) == 1
    attrs = graph.nodes[0].attrs
    assert "auto_pad" not in attrs
    assert attrs["pads"] == SAME_PADS[auto_pad, dilation]
    assert graph.tensors["y"].shape[2:] == (4, 6)  # ceil(input / stride), as the ONNX spec says
    x = random_array(1, 2, 7, 6)
    got = mace.Engine(graph, device="cpu").run({"x": x})["y"]
    # onnxruntime refuses SAME with dilations for Conv and ignores the dilation for MaxPool's SAME padding (its
    # output is too small), so with dilations the oracle is the same node with the explicit pads computed above
    oracle = model if dilation == 1 else _same_model(op, None, dilation, SAME_PADS[auto_pad, dilation])
    np.testing.assert_allclose(got, run_onnxruntime(oracle, {"x": x})["y"], rtol=1e-4, atol=1e-5)


def test_valid_auto_pad_is_zero_pads() -> None:
    model = tiny_model("Conv", {"x": [1, 1, 5, 5]}, {"y": None}, {"auto_pad": "VALID", "strides": [2, 2]},
                       initializers={"w": random_array(2, 1, 3, 3)})
    graph = imported(model)
    P.explicit_attributes(graph)
    assert graph.nodes[0].attrs["pads"] == [0, 0, 0, 0] and "auto_pad" not in graph.nodes[0].attrs
    assert_matches_onnxruntime(model, graph, {"x": random_array(1, 1, 5, 5)})


def test_conv_transpose_keeps_same_auto_pad_for_the_op() -> None:
    model = tiny_model("ConvTranspose", {"x": [1, 2, 3, 3]}, {"y": None}, {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
                       initializers={"w": random_array(2, 3, 3, 3)})
    graph = imported(model)
    P.explicit_attributes(graph)
    attrs = graph.nodes[0].attrs
    assert attrs["auto_pad"] == "SAME_UPPER" and attrs["kernel_shape"] == [3, 3] and attrs["group"] == 1
    assert_matches_onnxruntime(model, graph, {"x": random_array(1, 2, 3, 3)})


def test_same_padding_end_to_end_in_convert_onnx() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], auto_pad="SAME_LOWER", strides=[2, 2]),
             helper.make_node("MaxPool", ["c"], ["y"], auto_pad="SAME_UPPER", kernel_shape=[2, 2])]
    model = onnx_model(nodes, {"x": [1, 1, 6, 6]}, {"y": None}, {"w": random_array(2, 1, 2, 2)})
    graph = convert_onnx(model)
    conv, pool = graph.nodes
    assert conv.attrs["pads"] == [0, 0, 0, 0]  # out 3: (3-1)*2+2-6 = 0
    assert pool.attrs["pads"] == [0, 0, 1, 1]  # out 3: (3-1)+2-3 = 1, at the end
    assert_matches_onnxruntime(model, graph, {"x": random_array(1, 1, 6, 6)})


# -- fold_batchnorm ------------------------------------------------------------------------------------------------

def _bn_params(channels: int, seed: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"scale": rng.uniform(0.5, 2, channels).astype(np.float32),
            "shift": rng.uniform(-1, 1, channels).astype(np.float32),
            "mean": rng.uniform(-1, 1, channels).astype(np.float32),
            "var": rng.uniform(0.2, 2, channels).astype(np.float32)}


@pytest.mark.parametrize("bias", [True, False])
def test_batchnorm_after_conv_folds_into_its_weights(bias: bool) -> None:
    init = {"w": random_array(4, 3, 3, 3, seed=1)}
    conv_inputs = ["x", "w"]
    if bias:
        init["b"] = random_array(4, seed=2)
        conv_inputs.append("b")
    init.update(_bn_params(4))
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"], epsilon=1e-3)]
    model = onnx_model(nodes, {"x": [1, 3, 5, 5]}, {"y": None}, init)
    graph = imported(model)
    assert P.fold_batchnorm(graph) == 1
    conv = only_node(graph, "Conv")
    assert ops(graph) == ["Conv"] and conv.outputs == ["y"]
    assert conv.inputs == ["x", "conv__bn_weight", "conv__bn_bias"]
    assert not np.array_equal(graph.constants["conv__bn_weight"], init["w"])
    assert_matches_onnxruntime(model, graph, {"x": random_array(1, 3, 5, 5)})


@pytest.mark.parametrize("trans_b", [0, 1])
def test_batchnorm_after_gemm_folds_and_beta_moves_into_the_bias(trans_b: int) -> None:
    w = random_array(6, 4, seed=1) if trans_b else random_array(4, 6, seed=1)
    init = {"w": w, "c": random_array(6, seed=2), **_bn_params(6)}
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["g"], alpha=0.5, beta=2.0, transB=trans_b, name="fc"),
             helper.make_node("BatchNormalization", ["g", "scale", "shift", "mean", "var"], ["y"])]
    model = onnx_model(nodes, {"x": [3, 4]}, {"y": None}, init)
    graph = imported(model)
    assert P.fold_batchnorm(graph) == 1
    gemm = only_node(graph, "Gemm")
    assert len(graph.nodes) == 1 and gemm.attrs["beta"] == 1.0 and gemm.attrs["alpha"] == 0.5
    assert_matches_onnxruntime(model, graph, {"x": random_array(3, 4)})


def test_batchnorm_is_not_folded_when_the_conv_output_has_another_consumer() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"]),
             helper.make_node("Relu", ["c"], ["z"])]
    model = onnx_model(nodes, {"x": [1, 2, 4, 4]}, {"y": None, "z": None},
                       {"w": random_array(3, 2, 1, 1), **_bn_params(3)})
    graph = imported(model)
    assert P.fold_batchnorm(graph) == 0
    assert ops(graph) == ["Conv", "BatchNormalization", "Relu"]
    assert_matches_onnxruntime(model, convert_onnx(model), {"x": random_array(1, 2, 4, 4)})


# -- fuse_residual_add ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("conv_first", [True, False])
def test_residual_add_joins_the_conv_epilogue(conv_first: bool) -> None:
    add_inputs = ["c", "skip"] if conv_first else ["skip", "c"]
    nodes = [helper.make_node("Tanh", ["x"], ["skip"]),
             helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", add_inputs, ["y"])]
    model = onnx_model(nodes, {"x": [1, 2, 4, 4]}, {"y": None}, {"w": random_array(2, 2, 3, 3)})
    graph = imported(model)
    assert P.fuse_residual_add(graph) == 1
    assert ops(graph) == ["Tanh", "Conv"]
    conv = graph.nodes[1]
    assert conv.attrs["residual"] == 1 and conv.inputs == ["x", "w", "", "skip"] and conv.outputs == ["y"]
    assert_matches_onnxruntime(model, graph, {"x": random_array(1, 2, 4, 4)})


def test_residual_add_then_relu_fuses_both() -> None:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Add", ["c", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    model = onnx_model(nodes, {"x": [1, 3, 4, 4]}, {"y": None},
                       {"w": random_array(3, 3, 1, 1, seed=1), "b": random_array(3, seed=2)})
    graph = convert_onnx(model)
    conv = only_node(graph, "Conv")
    assert len(graph.nodes) == 1 and conv.attrs["residual"] == 1 and conv.attrs["activation"] == "Relu"
    assert conv.inputs == ["x", "w", "b", "x"]
    assert graph.metadata["passes"]["fuse_residual_add"] == 1 and graph.metadata["passes"]["fuse_activations"] == 1
    assert_matches_onnxruntime(model, graph, {"x": random_array(1, 3, 4, 4)})


def test_broadcasting_add_is_not_a_residual() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "bias"], ["y"])]
    model = onnx_model(nodes, {"x": [1, 2, 3, 3]}, {"y": None},
                       {"w": random_array(2, 2, 1, 1), "bias": random_array(2, 1, 1)})
    graph = imported(model)
    assert P.fuse_residual_add(graph) == 0 and ops(graph) == ["Conv", "Add"]
    assert_matches_onnxruntime(model, convert_onnx(model), {"x": random_array(1, 2, 3, 3)})


# -- fuse_activations ----------------------------------------------------------------------------------------------

ACTIVATION_CASES = [
    ("Relu", {}, [], "Relu", []),
    ("Sigmoid", {}, [], "Sigmoid", []),
    ("Tanh", {}, [], "Tanh", []),
    ("HardSwish", {}, [], "HardSwish", []),
    ("LeakyRelu", {"alpha": 0.25}, [], "LeakyRelu", [0.25]),
    ("LeakyRelu", {}, [], "LeakyRelu", [0.01]),
    ("HardSigmoid", {"alpha": 0.25, "beta": 0.375}, [], "HardSigmoid", [0.25, 0.375]),
    ("Clip", {}, [-0.5, 1.5], "Clip", [-0.5, 1.5]),
    ("Clip", {}, [0.0], "Clip", [0.0, 3.4028234663852886e38]),  # an absent max is float32's max (ONNX)
]


def _producer(kind: str) -> tuple[list[Any], dict[str, Any], dict[str, np.ndarray]]:
    """(nodes, inputs, initializers) of a producer `kind` writing "p"."""
    if kind == "Conv":
        return ([helper.make_node("Conv", ["x", "w", "b"], ["p"], pads=[1, 1, 1, 1])], {"x": [1, 2, 4, 4]},
                {"w": random_array(3, 2, 3, 3, seed=1), "b": random_array(3, seed=2)})
    if kind == "ConvTranspose":
        return ([helper.make_node("ConvTranspose", ["x", "w"], ["p"], strides=[2, 2])], {"x": [1, 2, 3, 3]},
                {"w": random_array(2, 3, 2, 2, seed=1)})
    if kind == "Gemm":
        return ([helper.make_node("Gemm", ["x", "w", "b"], ["p"], transB=1)], {"x": [2, 5]},
                {"w": random_array(4, 5, seed=1), "b": random_array(4, seed=2)})
    return [helper.make_node("MatMul", ["x", "w"], ["p"])], {"x": [2, 3, 5]}, {"w": random_array(5, 4, seed=1)}


PRODUCERS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]


@pytest.mark.parametrize("producer", PRODUCERS)
@pytest.mark.parametrize(("op", "attrs", "clip", "activation", "params"), ACTIVATION_CASES)
def test_activation_joins_the_producer_epilogue(producer: str, op: str, attrs: dict, clip: list, activation: str,
                                                params: list) -> None:
    nodes, inputs, init = _producer(producer)
    act_inputs = ["p"]
    for i, bound in enumerate(clip):
        init[f"bound{i}"] = np.asarray(bound, np.float32)
        act_inputs.append(f"bound{i}")
    nodes.append(helper.make_node(op, act_inputs, ["y"], **attrs))
    model = onnx_model(nodes, inputs, {"y": None}, init)
    graph = imported(model)
    assert P.fuse_activations(graph) == 1
    fused = only_node(graph, producer)
    assert len(graph.nodes) == 1 and fused.outputs == ["y"]
    assert fused.attrs["activation"] == activation
    np.testing.assert_allclose(fused.attrs["activation_params"], params, rtol=1e-6)
    assert "p" not in graph.tensors
    feeds = {name: random_array(*shape, seed=5) for name, shape in inputs.items()}
    assert_matches_onnxruntime(model, graph, feeds)


def test_clip_with_a_runtime_bound_is_not_fused() -> None:
    nodes, inputs, init = _producer("Gemm")
    nodes.append(helper.make_node("Clip", ["p", "lo"], ["y"]))
    model = onnx_model(nodes, {**inputs, "lo": []}, {"y": None}, init)
    graph = imported(model)
    assert P.fuse_activations(graph) == 0 and ops(graph) == ["Gemm", "Clip"]


def test_activation_of_a_shared_output_is_not_fused() -> None:
    nodes, inputs, init = _producer("Conv")
    nodes += [helper.make_node("Relu", ["p"], ["y"]), helper.make_node("Neg", ["p"], ["z"])]
    model = onnx_model(nodes, inputs, {"y": None, "z": None}, init)
    graph = imported(model)
    assert P.fuse_activations(graph) == 0 and ops(graph) == ["Conv", "Relu", "Neg"]


@pytest.mark.parametrize("producer", PRODUCERS)
@pytest.mark.parametrize("sigmoid_first", [True, False])
def test_x_times_sigmoid_x_becomes_silu(producer: str, sigmoid_first: bool) -> None:
    nodes, inputs, init = _producer(producer)
    nodes += [helper.make_node("Sigmoid", ["p"], ["s"]),
              helper.make_node("Mul", ["s", "p"] if sigmoid_first else ["p", "s"], ["y"])]
    model = onnx_model(nodes, inputs, {"y": None}, init)
    graph = imported(model)
    assert P.fuse_activations(graph) == 1
    fused = only_node(graph, producer)
    assert len(graph.nodes) == 1 and fused.outputs == ["y"]
    assert fused.attrs["activation"] == "SiLU" and fused.attrs["activation_params"] == []
    assert "s" not in graph.tensors and "p" not in graph.tensors
    feeds = {name: random_array(*shape, seed=5) for name, shape in inputs.items()}
    assert_matches_onnxruntime(model, graph, feeds)
    assert convert_onnx(model).op_histogram() == {f"{producer}+SiLU": 1}


def test_silu_after_residual_conv_end_to_end() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["c", "x"], ["p"]),
             helper.make_node("Sigmoid", ["p"], ["s"]), helper.make_node("Mul", ["p", "s"], ["y"])]
    model = onnx_model(nodes, {"x": [1, 2, 5, 5]}, {"y": None}, {"w": random_array(2, 2, 3, 3)})
    graph = convert_onnx(model)
    assert graph.op_histogram() == {"Conv+Add+SiLU": 1}
    assert_matches_onnxruntime(model, graph, {"x": random_array(1, 2, 5, 5)})


@pytest.mark.parametrize("case", ["third_consumer", "producer_is_output", "sigmoid_is_output"])
def test_silu_is_not_fused_when_a_value_is_needed_elsewhere(case: str) -> None:
    nodes, inputs, init = _producer("Conv")
    outputs: dict[str, Any] = {"y": None}
    if case == "third_consumer":
        nodes.append(helper.make_node("Neg", ["p"], ["z"]))
        outputs["z"] = None
    elif case == "producer_is_output":
        outputs["p"] = None
    else:
        outputs["s"] = None
    nodes += [helper.make_node("Sigmoid", ["p"], ["s"]), helper.make_node("Mul", ["p", "s"], ["y"])]
    model = onnx_model(nodes, inputs, outputs, init)
    graph = imported(model)
    before = ops(graph)
    assert P.fuse_activations(graph) == 0
    assert ops(graph) == before and not any("activation" in n.attrs for n in graph.nodes)
    feeds = {name: random_array(*shape, seed=5) for name, shape in inputs.items()}
    assert_matches_onnxruntime(model, convert_onnx(model), feeds)


def test_sigmoid_times_another_value_is_a_sigmoid_epilogue_not_silu() -> None:
    nodes, inputs, init = _producer("Conv")
    nodes += [helper.make_node("Sigmoid", ["p"], ["s"]), helper.make_node("Mul", ["x2", "s"], ["y"])]
    inputs = {**inputs, "x2": [1, 3, 4, 4]}
    model = onnx_model(nodes, inputs, {"y": None}, init)
    graph = imported(model)
    assert P.fuse_activations(graph) == 1
    assert ops(graph) == ["Conv", "Mul"] and graph.nodes[0].attrs["activation"] == "Sigmoid"
    feeds = {name: random_array(*shape, seed=5) for name, shape in inputs.items()}
    assert_matches_onnxruntime(model, graph, feeds)


# -- store_half_weights --------------------------------------------------------------------------------------------

def test_fp16_storage_halves_parameters_only() -> None:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]), helper.make_node("Mul", ["r", "k"], ["y"])]
    init = {"w": random_array(2, 1, 1, 1, seed=1), "b": random_array(2, seed=2),
            "shape": np.asarray([1, 18], np.int64), "k": random_array(18, seed=3)}
    model = onnx_model(nodes, {"x": [1, 1, 3, 3]}, {"y": None}, init)
    graph = imported(model)
    assert P.store_half_weights(graph) == 0  # fp32_fp32: nothing to do
    graph.data_type = "fp16_fp32"
    assert P.store_half_weights(graph) == 3
    assert {n: graph.constants[n].dtype.name for n in graph.constants} == {
        "w": "float16", "b": "float16", "shape": "int64", "k": "float16"}
    assert graph.tensors["w"].dtype == "float16" and graph.tensors["shape"].dtype == "int64"
    expected = run_onnxruntime(model, {"x": random_array(1, 1, 3, 3)})["y"]
    got = mace.Engine(graph, device="cpu").run({"x": random_array(1, 1, 3, 3)})["y"]
    np.testing.assert_allclose(got, expected, rtol=5e-3, atol=5e-3)


def test_a_constant_used_outside_a_parameter_slot_stays_float32() -> None:
    nodes = [helper.make_node("Mul", ["x", "k"], ["m"]), helper.make_node("Greater", ["x", "k"], ["g"]),
             helper.make_node("Where", ["g", "m", "x"], ["y"])]
    model = onnx_model(nodes, {"x": [2, 3]}, {"y": None}, {"k": random_array(3)})
    graph = imported(model)
    graph.data_type = "fp16_fp32"
    assert P.store_half_weights(graph) == 0  # k is Greater's operand too: halving it would change the comparison
    assert graph.constants["k"].dtype == np.float32 and graph.tensors["k"].dtype == "float32"


# -- the pipeline --------------------------------------------------------------------------------------------------

def test_optimize_reports_every_pass_and_the_pipeline_matches_onnxruntime() -> None:
    init = {"w1": random_array(4, 3, 3, 3, seed=1), **_bn_params(4),
            "w2": random_array(4, 4, 1, 1, seed=2), "six": np.asarray(6, np.float32),
            "zero": np.asarray(0, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], auto_pad="SAME_UPPER", strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c1", "scale", "shift", "mean", "var"], ["bn"]),
             helper.make_node("Identity", ["bn"], ["bn_id"]),
             helper.make_node("Sigmoid", ["bn_id"], ["sg"]), helper.make_node("Mul", ["bn_id", "sg"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2"], ["c2"]), helper.make_node("Add", ["c2", "a1"], ["s"]),
             helper.make_node("Clip", ["s", "zero", "six"], ["y"]), helper.make_node("Neg", ["a1"], ["unused"])]
    model = onnx_model(nodes, {"x": [1, 3, 7, 7]}, {"y": None}, init)
    graph = convert_onnx(model)
    assert graph.metadata["passes"] == {"remove_identities": 1, "eliminate_dead_code": 1, "explicit_attributes": 2,
                                        "lower_einsum": 0, "fold_batchnorm": 1, "transposes_as_reshapes": 0,
                                        "fuse_attention": 0, "fuse_gelu": 0, "fuse_matmul_bias": 0,
                                        "fuse_residual_add": 1, "fuse_qkv_projections": 0, "fuse_activations": 2,
                                        "store_half_weights": 0}
    assert graph.op_histogram() == {"Conv+Add+Clip": 1, "Conv+SiLU": 1}
    assert graph.nodes[0].attrs["pads"] == [1, 1, 1, 1]
    assert_matches_onnxruntime(model, graph, {"x": random_array(1, 3, 7, 7)})
    half = convert_onnx(model, data_type="fp16_fp32")
    assert half.metadata["passes"]["store_half_weights"] == 3  # two weights and the folded BN bias


def test_repeated_and_missing_node_names_stay_apart() -> None:
    """ONNX does not require node names to be unique or present: what the converter derives from a name (constants
    made from attributes, fused nodes) must not mix two nodes up. Two Squeezes named alike (opset 11: axes an
    attribute, made a constant named after the node) and a nameless node whose generated name another node has."""
    nodes = [helper.make_node("Squeeze", ["x"], ["a"], axes=[1], name="same"),
             helper.make_node("Unsqueeze", ["a"], ["b"], axes=[0], name="same"),
             helper.make_node("Squeeze", ["b"], ["c"], axes=[3], name="Squeeze_3"),
             helper.make_node("Squeeze", ["c"], ["y"], axes=[0])]
    model = onnx_model(nodes, {"x": [2, 1, 3, 1]}, {"y": None}, opset=11)
    graph = convert_onnx(model)
    assert len({node.name for node in import_onnx(model).nodes}) == 4
    x = random_array(2, 1, 3, 1, seed=5)  # (onnxruntime refuses two nodes of one name: the oracle is numpy)
    np.testing.assert_array_equal(CPURuntime(graph).run({"x": x})["y"], x.reshape(2, 3))


def test_derived_names_never_take_over_a_value_the_model_has() -> None:
    """ONNX names are free text: a model may have a tensor called exactly what the converter would name a value it
    derives from a node (the BatchNorm fold's ``conv__bn_weight``, a legacy Softmax's ``sm__shape``, an opset-11
    Squeeze's ``sqz__axes``). The derived value gets another name (``#2``); the model's keeps its own and its data."""
    init = {"w": random_array(4, 3, 3, 3, seed=1, low=-0.5, high=0.5),
            "scale": random_array(4, seed=2, low=0.5, high=1.5), "bias": random_array(4, seed=3),
            "mean": random_array(4, seed=4), "var": random_array(4, seed=5, low=0.5, high=2.0),
            "conv__bn_weight": random_array(1, 4, 1, 1, seed=6),  # what the fold would call conv's new weight
            "sm__shape": np.asarray([3.0], np.float32),  # what the legacy Softmax would call its shape constant
            "sqz__axes": np.asarray([0.25], np.float32)}  # what normalizing would call the Squeeze's axes
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"], name="bn"),
             helper.make_node("Add", ["b", "conv__bn_weight"], ["a"], name="add1"),
             helper.make_node("Softmax", ["a"], ["s"], axis=1, name="sm"),  # opset < 13: over the flattened [1, 144]
             helper.make_node("Mul", ["s", "sm__shape"], ["m"], name="mul"),
             helper.make_node("Unsqueeze", ["m"], ["u"], axes=[0], name="unsq"),
             helper.make_node("Squeeze", ["u"], ["v"], axes=[0], name="sqz"),
             helper.make_node("Add", ["v", "sqz__axes"], ["y"], name="add2")]
    model = onnx_model(nodes, {"x": [1, 3, 6, 6]}, {"y": None}, init, opset=11)
    graph = convert_onnx(model)
    for name, value in init.items():
        if name in graph.constants:
            np.testing.assert_array_equal(graph.constants[name], value)
    x = random_array(1, 3, 6, 6, seed=7)
    np.testing.assert_allclose(CPURuntime(graph).run({"x": x})["y"], run_onnxruntime(model, {"x": x})["y"],
                               rtol=1e-5, atol=1e-6)
