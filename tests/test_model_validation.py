"""Crafted .mace files: a valid sha256 over a bad graph description must fail on load with a ModelFormatError naming
the node and the field (mace.model.validate), or, for an op this mace does not know, with UnsupportedOpError when
the engine is created; a harmless change runs cleanly. Never another exception type (before the validation, 20 of
these ended in ZeroDivisionError, ValueError, IndexError or NotImplementedError)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mace
from mace.errors import ModelFormatError, UnsupportedOpError
from mace.model import modelfile
from mace.model.samples import sample_inputs
from support import shared_model

Description = dict[str, Any]


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("validation") / "squeezenet.mace"
    mace.convert(shared_model("squeezenet1_1"), path)
    return path.read_bytes()


def description_of(data: bytes) -> Description:
    _magic, _v, _hs, json_off, json_len, *_ = modelfile.HEADER.unpack_from(data, 0)
    return json.loads(data[json_off:json_off + json_len])


def reseal(data: bytes, description: Description) -> bytes:
    """The same weights under another description, with a header and a sha256 that are valid again."""
    _magic, _v, _hs, _jo, _jl, w_off, w_len, _total, flags = modelfile.HEADER.unpack_from(data, 0)
    weights = data[w_off:w_off + w_len]
    text = json.dumps(description).encode("utf-8")
    new_w_off = -(-(modelfile.HEADER_SIZE + len(text)) // modelfile.ALIGNMENT) * modelfile.ALIGNMENT
    total = new_w_off + len(weights) + modelfile.TRAILER_SIZE
    header = modelfile.HEADER.pack(modelfile.MAGIC, modelfile.FORMAT_VERSION, modelfile.HEADER_SIZE,
                                   modelfile.HEADER_SIZE, len(text), new_w_off, len(weights), total, flags)
    body = (header.ljust(modelfile.HEADER_SIZE, b"\0") + text).ljust(new_w_off, b"\0") + weights
    return body + hashlib.sha256(body).digest()


def node(d: Description, op: str, index: int = 0) -> dict[str, Any]:
    return [n for n in d["nodes"] if n["op"] == op][index]


def tensor(d: Description, name: str) -> dict[str, Any]:
    return next(t for t in d["tensors"] if t["name"] == name)


def setter(op: str, key: str, value: Any, index: int = 0) -> Callable[[Description], None]:
    def mutate(d: Description) -> None:
        node(d, op, index)["attrs"][key] = value
    return mutate


def field(op: str, key: str, value: Any, index: int = 0) -> Callable[[Description], None]:
    def mutate(d: Description) -> None:
        node(d, op, index)[key] = value
    return mutate


def conv_inputs(transform: Callable[[list[str]], list[str]]) -> Callable[[Description], None]:
    def mutate(d: Description) -> None:
        n = node(d, "Conv")
        n["inputs"] = transform(n["inputs"])
    return mutate


def first_input_shape(shape: list[int]) -> Callable[[Description], None]:
    def mutate(d: Description) -> None:
        d["inputs"][0]["shape"] = shape
        tensor(d, d["inputs"][0]["name"])["shape"] = shape
    return mutate


def conv_output_shape(shape: list[int]) -> Callable[[Description], None]:
    def mutate(d: Description) -> None:
        tensor(d, node(d, "Conv")["outputs"][0])["shape"] = shape
    return mutate


def reverse_nodes(d: Description) -> None:
    d["nodes"].reverse()


def duplicate_name(d: Description) -> None:
    d["nodes"][1]["name"] = d["nodes"][0]["name"]


def duplicate_input(d: Description) -> None:
    d["inputs"].append(dict(d["inputs"][0]))


def drop_output_tensor(d: Description) -> None:
    name = d["outputs"][0]["name"]
    d["tensors"] = [t for t in d["tensors"] if t["name"] != name]


def rename_output(d: Description) -> None:
    d["outputs"][0]["name"] = "nowhere"


def output_shape(shape: list[int]) -> Callable[[Description], None]:
    def mutate(d: Description) -> None:
        d["outputs"][0]["shape"] = shape
    return mutate


def undefined_input(d: Description) -> None:
    node(d, "GlobalAveragePool")["inputs"] = ["never_defined"]


def redefine_tensor(d: Description) -> None:
    d["nodes"].append({**node(d, "Flatten"), "name": "flatten_again"})


def top(key: str, value: Any) -> Callable[[Description], None]:
    def mutate(d: Description) -> None:
        d[key] = value
    return mutate


def drop_attr(op: str, key: str) -> Callable[[Description], None]:
    def mutate(d: Description) -> None:
        node(d, op)["attrs"].pop(key, None)
    return mutate


FORMAT, UNSUPPORTED, CLEAN = "ModelFormatError", "UnsupportedOpError", "clean run"
# (case id, mutation, expected outcome, text the message must contain)
CASES: list[tuple[str, Callable[[Description], None], str, str]] = [
    ("conv group 0", setter("Conv", "group", 0), FORMAT, "attribute group is 0"),
    ("conv group -1", setter("Conv", "group", -1), FORMAT, "group"),
    ("conv group 2 (does not divide 3 channels)", setter("Conv", "group", 2), FORMAT, "does not divide"),
    ("conv group '2'", setter("Conv", "group", "2"), FORMAT, "group"),
    ("conv group 1.5", setter("Conv", "group", 1.5), FORMAT, "group"),
    ("conv group true", setter("Conv", "group", True), FORMAT, "group"),
    ("conv strides '2,2'", setter("Conv", "strides", "2,2"), FORMAT, "attribute strides"),
    ("conv strides [2]", setter("Conv", "strides", [2]), FORMAT, "attribute strides"),
    ("conv strides [0, 0]", setter("Conv", "strides", [0, 0]), FORMAT, "attribute strides"),
    ("conv strides [-1, 2]", setter("Conv", "strides", [-1, 2]), FORMAT, "attribute strides"),
    ("conv strides [1, 1] (output shape no longer matches)", setter("Conv", "strides", [1, 1]), FORMAT, "outputs[0]"),
    ("conv pads negative", setter("Conv", "pads", [-1, 0, 0, 0]), FORMAT, "attribute pads"),
    ("conv pads too short", setter("Conv", "pads", [0, 0]), FORMAT, "attribute pads"),
    ("conv dilations 0", setter("Conv", "dilations", [0, 1]), FORMAT, "attribute dilations"),
    ("conv kernel_shape not the weight's", setter("Conv", "kernel_shape", [5, 5]), FORMAT, "kernel_shape"),
    ("conv auto_pad unknown", setter("Conv", "auto_pad", "SIDEWAYS"), FORMAT, "auto_pad"),
    ("conv activation unknown", setter("Conv", "activation", "Mish"), FORMAT, "attribute activation"),
    ("conv activation not a string", setter("Conv", "activation", 3), FORMAT, "attribute activation"),
    ("conv activation_params too many", setter("Conv", "activation_params", [1.0, 2.0, 3.0]), FORMAT,
     "activation_params"),
    ("conv activation_params a string", setter("Conv", "activation_params", "x"), FORMAT, "activation_params"),
    ("conv residual 2", setter("Conv", "residual", 2), FORMAT, "residual"),
    ("conv residual of the wrong shape (the bias)", setter("Conv", "residual", 1), FORMAT, "residual"),
    ("conv without inputs", field("Conv", "inputs", []), FORMAT, "inputs"),
    ("conv without a weight", conv_inputs(lambda i: i[:1]), FORMAT, "inputs"),
    ("conv input absent", conv_inputs(lambda i: ["", *i[1:]]), FORMAT, "inputs[0]"),
    ("conv weight and bias swapped", conv_inputs(lambda i: [i[0], i[2], i[1]]), FORMAT, "inputs[1]"),
    ("conv bias of another conv", conv_inputs(lambda i: [i[0], i[1], "features.3.squeeze.bias"]), FORMAT,
     "inputs[2]"),
    ("conv output spatial size", conv_output_shape([1, 64, 10, 10]), FORMAT, "outputs[0]"),
    ("conv output channels", conv_output_shape([1, 32, 111, 111]), FORMAT, "outputs[0]"),
    ("conv outputs empty", field("Conv", "outputs", []), FORMAT, "never defined"),
    ("unknown op", field("Conv", "op", "FancyConv"), UNSUPPORTED, "FancyConv"),
    ("op renamed to a known op of other arity (Relu)", field("Conv", "op", "Relu"), FORMAT, "outputs[0]"),
    ("conv turned into MaxPool", field("Conv", "op", "MaxPool"), FORMAT, "outputs[0]"),
    ("empty op name", field("Conv", "op", ""), FORMAT, "op"),
    ("attrs a string", field("Conv", "attrs", "x"), FORMAT, "malformed"),
    ("concat without inputs", field("Concat", "inputs", []), FORMAT, "inputs"),
    ("concat axis 7", setter("Concat", "axis", 7), FORMAT, "attribute axis"),
    ("concat axis '1'", setter("Concat", "axis", "1"), FORMAT, "axis"),
    ("concat of one part", lambda d: node(d, "Concat").update(inputs=node(d, "Concat")["inputs"][:1]), FORMAT,
     "outputs[0]"),
    ("flatten axis 9", setter("Flatten", "axis", 9), FORMAT, "attribute axis"),
    ("flatten without inputs", field("Flatten", "inputs", []), FORMAT, "inputs"),
    ("maxpool kernel 0", setter("MaxPool", "kernel_shape", [0, 0]), FORMAT, "kernel_shape"),
    ("maxpool kernel larger than the input", setter("MaxPool", "kernel_shape", [300, 300]), FORMAT, "window"),
    ("maxpool strides 0", setter("MaxPool", "strides", [0, 0]), FORMAT, "strides"),
    ("maxpool ceil_mode 'yes'", setter("MaxPool", "ceil_mode", "yes"), FORMAT, "ceil_mode"),
    ("maxpool pads of one value", setter("MaxPool", "pads", [1]), FORMAT, "pads"),
    ("maxpool without kernel_shape", drop_attr("MaxPool", "kernel_shape"), FORMAT, "kernel_shape"),
    ("negative input shape", first_input_shape([1, 3, -5, 224]), FORMAT, "negative"),
    ("negative output shape", output_shape([1, -1000]), FORMAT, "negative"),
    ("output shape differs from its tensor", output_shape([1, 999]), FORMAT, "tensors entry"),
    ("input dtype complex64", lambda d: d["inputs"][0].update(dtype="complex64"), FORMAT, "complex64"),
    ("data_type fp8", top("data_type", "fp8"), FORMAT, "data_type"),
    ("node reads an undefined tensor", undefined_input, FORMAT, "never_defined"),
    ("nodes in reverse order", reverse_nodes, FORMAT, "never defined"),
    ("duplicate node name", duplicate_name, FORMAT, "used twice"),
    ("duplicate graph input", duplicate_input, FORMAT, "twice"),
    ("graph output never produced", rename_output, FORMAT, "nowhere"),
    ("output without tensors entry", drop_output_tensor, FORMAT, "no shape/dtype entry"),
    ("a tensor defined twice", redefine_tensor, FORMAT, "already defined"),
    ("nodes not a list", top("nodes", 5), FORMAT, "malformed"),
    # harmless changes: the model still runs
    ("graph renamed", top("name", "renamed"), CLEAN, ""),
    ("metadata changed", top("metadata", {"opset": "x"}), CLEAN, ""),
    ("fused Clip(0, 6)", lambda d: node(d, "Conv")["attrs"].update(activation="Clip", activation_params=[0.0, 6.0]),
     CLEAN, ""),
    ("fused LeakyRelu without params", lambda d: node(d, "Conv")["attrs"].update(activation="LeakyRelu",
                                                                                 activation_params=[]), CLEAN, ""),
    ("activation_params dropped", drop_attr("Conv", "activation_params"), CLEAN, ""),
    ("concat axis -3 (= 1)", setter("Concat", "axis", -3), CLEAN, ""),
    ("shape given as floats", lambda d: d["inputs"][0].update(shape=[1.0, 3.0, 224.0, 224.0]), CLEAN, ""),
]


def outcome(data: bytes) -> tuple[str, str]:
    try:
        graph = modelfile.decode(data, "crafted.mace")
    except ModelFormatError as exc:
        return FORMAT, str(exc)
    try:
        engine = mace.Engine(graph, device="cpu")
    except UnsupportedOpError as exc:
        return UNSUPPORTED, str(exc)
    outputs = engine.run(sample_inputs(engine.inputs, 0))
    assert all(np.all(np.isfinite(v)) for v in outputs.values())
    return CLEAN, ""


def test_there_are_fifty_crafted_cases_and_a_valid_one_runs(squeezenet: bytes) -> None:
    assert len(CASES) >= 50
    assert len({case_id for case_id, *_ in CASES}) == len(CASES)
    assert outcome(reseal(squeezenet, description_of(squeezenet))) == (CLEAN, "")


@pytest.mark.parametrize(("mutate", "expected", "text"), [pytest.param(m, e, t, id=i) for i, m, e, t in CASES])
def test_crafted_description(mutate: Callable[[Description], None], expected: str, text: str,
                             squeezenet: bytes) -> None:
    d = description_of(squeezenet)
    mutate(d)
    kind, message = outcome(reseal(squeezenet, d))  # any other exception type fails the test
    assert kind == expected, message
    assert text in message, message
    if kind == FORMAT:
        assert message.startswith("crafted.mace: invalid mace model file"), message


def test_crafted_cases_tally(squeezenet: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """The counts the report quotes: every case is one of the three outcomes."""
    tally: Counter[str] = Counter()
    for _case_id, mutate, _expected, _text in CASES:
        d = description_of(squeezenet)
        mutate(d)
        tally[outcome(reseal(squeezenet, d))[0]] += 1
    with capsys.disabled():
        print(f"\ncrafted .mace descriptions: {len(CASES)} cases: {dict(tally)}")
    assert sum(tally.values()) == len(CASES) and set(tally) <= {FORMAT, UNSUPPORTED, CLEAN}


def test_the_message_names_the_node_and_the_field(squeezenet: bytes, tmp_path: Path) -> None:
    d = description_of(squeezenet)
    conv = node(d, "Conv")
    conv["attrs"]["group"] = 0
    path = tmp_path / "group0.mace"
    path.write_bytes(reseal(squeezenet, d))
    with pytest.raises(ModelFormatError) as info:
        modelfile.load(path)
    assert str(info.value) == (f"{path}: invalid mace model file: node {conv['name']!r} (Conv): attribute group is "
                               "0, expected a positive integer")
