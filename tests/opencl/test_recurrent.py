"""LSTM, GRU and RNN: the numpy reference against onnxruntime, and recurrent.cl (portable, CPU- and GPU-target plans)
against onnxruntime: directions, biases, sequence lengths, initial states, peepholes, clip, input_forget,
linear_before_reset, absent outputs, and the batch-first layout (which onnxruntime lacks: checked against the
sequence-first result)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

import mace
from mace.converter import convert_onnx
from mace.opencl.plan import DeviceTarget
from support import onnx_model, random_array, run_onnxruntime

GPU = DeviceTarget(True, 132, 48 << 10, 1024)
CPU = DeviceTarget(False, 2, 1 << 21, 4096)
SEQ, BATCH, IN, HID = 5, 3, 4, 6


def recurrent_model(direction: str, full: bool, outputs: tuple[str, ...] = ("y", "yh", "yc"), hidden: int = HID,
               size_in: int = IN, op: str = "LSTM", **attrs: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """An LSTM (GRU, RNN) of constant weights over input x (SEQ x BATCH x IN); ``full``: biases, sequence lengths (a
    run-time input), initial states and (LSTM) peepholes too."""
    dirs = 2 if direction == "bidirectional" else 1
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    init = {"w": random_array(dirs, gates * hidden, size_in, seed=1, low=-0.5, high=0.5),
            "r": random_array(dirs, gates * hidden, hidden, seed=2, low=-0.5, high=0.5)}
    inputs: dict[str, Any] = {"x": [SEQ, BATCH, size_in]}
    feeds = {"x": random_array(SEQ, BATCH, size_in, seed=3)}
    names = ["x", "w", "r"]
    if full:
        init.update({"b": random_array(dirs, 2 * gates * hidden, seed=4, low=-0.3, high=0.3),
                     "h0": random_array(dirs, BATCH, hidden, seed=5, low=-0.5, high=0.5)})
        inputs["lens"] = ([BATCH], np.int32)
        feeds["lens"] = np.array([SEQ, 2, 4][:BATCH], np.int32)
        names += ["b", "lens", "h0"]
        if op == "LSTM":
            init.update({"c0": random_array(dirs, BATCH, hidden, seed=6, low=-0.5, high=0.5),
                         "p": random_array(dirs, 3 * hidden, seed=7, low=-0.3, high=0.3)})
            names += ["c0", "p"]
    outs = [o if o in outputs else "" for o in ("y", "yh", "yc")[: 3 if op == "LSTM" else 2]]
    while outs and not outs[-1]:
        outs.pop()
    node = helper.make_node(op, names, outs, name=op.lower(), hidden_size=hidden, direction=direction, **attrs)
    model = onnx_model([node], inputs, {o: None for o in outs if o}, init)
    return model, feeds


def _check(model: Any, feeds: dict[str, np.ndarray], make_executor: Any) -> None:
    expected = run_onnxruntime(model, feeds)
    graph = convert_onnx(model)
    got = mace.Engine(graph, device="cpu").run(feeds)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=f"{name} on the reference")
    for target in (None, CPU, GPU):
        got = make_executor(graph, target=target).run(feeds)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=f"{name} on {target}")


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("full", [False, True], ids=["plain", "full"])
def test_lstm_matches_onnxruntime(direction: str, full: bool, make_executor: Any) -> None:
    _check(*recurrent_model(direction, full), make_executor)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_matches_onnxruntime(direction: str, linear_before_reset: int, make_executor: Any) -> None:
    _check(*recurrent_model(direction, True, op="GRU", linear_before_reset=linear_before_reset), make_executor)


def test_gru_plain_clipped_wide_and_h_alone(make_executor: Any) -> None:
    _check(*recurrent_model("forward", False, op="GRU"), make_executor)
    _check(*recurrent_model("bidirectional", True, op="GRU", clip=0.3), make_executor)
    _check(*recurrent_model("reverse", True, outputs=("yh",), hidden=70, size_in=9, op="GRU"), make_executor)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_rnn_matches_onnxruntime(direction: str, make_executor: Any) -> None:
    _check(*recurrent_model(direction, True, op="RNN"), make_executor)
    _check(*recurrent_model(direction, False, op="RNN", clip=0.5, hidden=70), make_executor)


def test_lstm_clip_input_forget_and_absent_outputs(make_executor: Any) -> None:
    _check(*recurrent_model("bidirectional", True, clip=0.4, input_forget=1), make_executor)
    _check(*recurrent_model("forward", True, outputs=("yh",)), make_executor)  # Y_h alone
    _check(*recurrent_model("reverse", False, outputs=("y",)), make_executor)


def test_lstm_with_more_units_than_work_items(make_executor: Any) -> None:
    """A hidden size above the portable plan's 64 work items: each takes several units."""
    _check(*recurrent_model("forward", True, hidden=70, size_in=9), make_executor)


def test_lstm_batch_first_layout_equals_the_sequence_first_one(make_executor: Any) -> None:
    model, feeds = recurrent_model("bidirectional", False)
    expected = run_onnxruntime(model, feeds)
    node = model.graph.node[0]
    node.attribute.append(helper.make_attribute("layout", 1))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = BATCH
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = SEQ
    del model.graph.output[:]
    model.graph.output.extend([helper.make_empty_tensor_value_info(o) for o in ("y", "yh", "yc")])
    graph = convert_onnx(model)
    first = {"x": np.ascontiguousarray(feeds["x"].transpose(1, 0, 2))}
    want = {"y": expected["y"].transpose(2, 0, 1, 3), "yh": expected["yh"].transpose(1, 0, 2),
            "yc": expected["yc"].transpose(1, 0, 2)}
    runs = [mace.Engine(graph, device="cpu").run(first)]
    runs += [make_executor(graph, target=target).run(first) for target in (None, GPU)]
    for got in runs:
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
