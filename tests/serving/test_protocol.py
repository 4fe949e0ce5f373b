"""The KServe v2 codec alone: JSON and binary requests, responses, and every error naming its field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mace.serving.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    TensorMeta,
    build_infer_response,
    check_inputs,
    check_outputs,
    parse_infer_request,
)

META = [TensorMeta("x", "FP32", (-1, 4))]


def body(doc: dict, binary: bytes = b"") -> tuple[bytes, str | None]:
    text = json.dumps(doc).encode()
    return text + binary, (str(len(text)) if binary else None)


def test_json_request_nested_or_flat() -> None:
    for data in ([1, 2, 3, 4, 5, 6, 7, 8], [[1, 2, 3, 4], [5, 6, 7, 8]]):
        req = parse_infer_request(*body({"id": "r1", "inputs": [
            {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": data}]}))
        assert req.id == "r1"
        np.testing.assert_array_equal(req.inputs["x"], np.arange(1, 9, dtype=np.float32).reshape(2, 4))
        assert req.inputs["x"].dtype == np.float32
        check_inputs(req, META)


def test_binary_request_and_outputs() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    ids = np.array([3, -1], dtype=np.int64)
    req = parse_infer_request(*body({
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}},
                   {"name": "ids", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}]},
        x.tobytes() + ids.astype("<i8").tobytes()))
    np.testing.assert_array_equal(req.inputs["x"], x)
    np.testing.assert_array_equal(req.inputs["ids"], ids)
    y = np.ones((2, 3), np.float32)
    payload, length = build_infer_response("m", req, {"y": y, "z": np.zeros(2, np.int64)})
    assert length is not None
    doc = json.loads(payload[:length])
    assert doc["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [2, 3],
                                 "parameters": {"binary_data_size": 24}}
    assert doc["outputs"][1]["data"] == [0, 0] and doc["outputs"][1]["datatype"] == "INT64"
    np.testing.assert_array_equal(np.frombuffer(payload[length:], np.float32).reshape(2, 3), y)


def test_request_level_binary_output() -> None:
    req = parse_infer_request(*body({"parameters": {"binary_data_output": True},
                                     "inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [True]}]}))
    payload, length = build_infer_response("m", req, {"y": np.array([True])})
    assert length is not None and payload[length:] == b"\x01"
    json_req = parse_infer_request(*body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1]}]}))
    payload, length = build_infer_response("m", json_req, {"y": np.array([0.5], np.float16)})
    assert length is None and json.loads(payload)["outputs"][0]["data"] == [0.5]


X = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}


@pytest.mark.parametrize(("doc", "binary", "header", "names"), [
    (b"{not json", b"", None, "malformed JSON"),
    (b"[1, 2]", b"", None, "request body"),
    ({"inputs": []}, b"", None, "inputs"),
    ({"inputs": [{**X, "datatype": "FP99"}]}, b"", None, "'x'.datatype"),
    ({"inputs": [{**X, "datatype": "BYTES"}]}, b"", None, "'x'.datatype"),
    ({"inputs": [{**X, "shape": [1, -4]}]}, b"", None, "'x'.shape"),
    ({"inputs": [{**X, "shape": "1,4"}]}, b"", None, "'x'.shape"),
    ({"inputs": [{**X, "shape": [2, 4]}]}, b"", None, "'x'.data: 4 elements"),
    ({"inputs": [{**X, "data": ["a", 1, 2, 3]}]}, b"", None, "'x'.data"),
    ({"inputs": [{**X, "datatype": "INT8", "data": [1, 2, 3, 300]}]}, b"", None, "range of INT8"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, b"", None, "no data"),
    ({"inputs": [X, X]}, b"", None, "given twice"),
    ({"inputs": [{**X, "name": 5}]}, b"", None, "inputs[0].name"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]},
     b"\0" * 12, "auto", "binary_data_size: 12 bytes"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]},
     b"\0" * 8, "auto", "binary data ends"),
    ({"inputs": [X]}, b"\0" * 8, "auto", "bytes after"),
    ({"inputs": [X]}, b"", "abc", HEADER_LENGTH),
    ({"inputs": [X]}, b"", "99999", HEADER_LENGTH),
    ({"inputs": [X], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}, b"", None, "binary_data"),
])
def test_bad_requests_name_the_field(doc, binary, header, names) -> None:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    if header == "auto":
        header = str(len(raw))
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(raw + binary, header)
    assert names in str(info.value) and info.value.status == 400


def test_checks_against_the_model() -> None:
    def parsed(tensor: dict) -> object:
        return parse_infer_request(json.dumps({"inputs": [tensor]}).encode(), None)

    for tensor, names in [({**X, "name": "q"}, "'q': the model has no such input"),
                          ({**X, "datatype": "FP64"}, "'x'.datatype: FP64, the model takes FP32"),
                          ({**X, "shape": [1, 2, 2]}, "'x'.shape: [1, 2, 2]"),
                          ({**X, "shape": [2, 2], "data": [1, 2, 3, 4]}, "'x'.shape: [2, 2]")]:
        with pytest.raises(ProtocolError, match=names.replace("[", r"\[")):
            check_inputs(parsed(tensor), META)  # type: ignore[arg-type]
    req = parse_infer_request(json.dumps({"inputs": [X], "outputs": [{"name": "nope"}]}).encode(), None)
    with pytest.raises(ProtocolError, match="'nope'"):
        check_outputs(req, ["y"])
    with pytest.raises(ProtocolError, match=r"dimension 0 is 1, expected 2\.\.8"):
        check_inputs(req, META, {"x": lambda shape: "dimension 0 is 1, expected 2..8"})
