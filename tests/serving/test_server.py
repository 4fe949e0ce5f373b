"""The server in a thread, driven by tritonclient.http (JSON and binary tensors) and by plain HTTP (httpx)."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from serving_support import SQUEEZENET_ONNX, engine_config

import mace
from mace.errors import DeviceError
from mace.serving.app import ServeSettings
from mace.serving.batcher import BatchSettings

httpclient = pytest.importorskip("tritonclient.http")


def infer(client: Any, model: str, x: np.ndarray, binary: bool, outputs: tuple[str, ...] = ("y",)) -> Any:
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    return client.infer(model, [tensor], outputs=wanted)


def metric(url: str, name: str) -> float:
    text = httpx.get(f"http://{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_endpoints_and_inference(serve, tiny_model: Path) -> None:
    server = serve([engine_config(tiny_model, "tiny")])
    client = httpclient.InferenceServerClient(server.url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("tiny")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"y": [-1, 3], "z": [-1, 4]}
    engine = mace.Engine(tiny_model)
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    expected = engine.run({"x": x})
    for binary in (False, True):
        result = infer(client, "tiny", x, binary, ("y", "z"))
        np.testing.assert_allclose(result.as_numpy("y"), expected["y"], rtol=1e-6)
        np.testing.assert_allclose(result.as_numpy("z"), expected["z"], rtol=1e-6)
    # all outputs when none are named (tritonclient then asks for binary ones)
    tensor = httpclient.InferInput("x", [3, 4], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("tiny", [tensor])
    np.testing.assert_allclose(result.as_numpy("z"), expected["z"], rtol=1e-6)
    # plain HTTP, JSON only
    r = httpx.post(f"http://{server.url}/v2/models/tiny/infer",
                   json={"id": "a", "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32",
                                                "data": x.tolist()}], "outputs": [{"name": "y"}]})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "a" and doc["model_name"] == "tiny"
    np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(3, 3), expected["y"], rtol=1e-6)
    assert httpx.get(f"http://{server.url}/v2/models/nope").status_code == 404
    assert "error" in httpx.get(f"http://{server.url}/v2/nothing").json()
    text = httpx.get(f"http://{server.url}/metrics").text
    assert 'mace_requests_total{code="200",model="tiny"} 4.0' in text
    assert "mace_request_latency_seconds_bucket" in text and "mace_queue_depth" in text
    assert 'mace_programs{model="tiny",origin="source"}' in text
    assert "mace_start_to_ready_seconds" in text


def test_squeezenet_matches_onnxruntime(serve, squeezenet_model: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    server = serve([engine_config(squeezenet_model, "squeezenet")])
    client = httpclient.InferenceServerClient(server.url)
    meta = client.get_model_metadata("squeezenet")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224]}]
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    tensor = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    got = client.infer("squeezenet", [tensor]).as_numpy("output")
    session = ort.InferenceSession(str(SQUEEZENET_ONNX), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


class Slow:
    """An engine whose run takes ``delay`` seconds longer (and counts runs and their batch sizes)."""

    def __init__(self, engine: Any, delay: float = 0.0) -> None:
        self._engine, self.delay, self.batches = engine, delay, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append(feeds["x"].shape[0])
        time.sleep(self.delay)
        if np.any(feeds["x"] == 999):
            raise DeviceError("clEnqueueNDRangeKernel failed: CL_OUT_OF_RESOURCES (simulated)")
        return self._engine.run(feeds)


def test_dynamic_batching_groups_and_splits(serve, tiny_model: Path) -> None:
    engines: list[Slow] = []

    def wrap(engine: Any) -> Slow:
        engines.append(Slow(engine, 0.05))
        return engines[-1]

    settings = ServeSettings(BatchSettings(max_batch=8, max_delay_ms=50, batch_sizes=(1, 4, 8)))
    server = serve([engine_config(tiny_model, "tiny", wrap=wrap)], settings)
    reference = mace.Engine(tiny_model)
    xs = [np.full((1, 4), i, np.float32) for i in range(16)]

    def one(i: int) -> np.ndarray:
        client = httpclient.InferenceServerClient(server.url)
        return infer(client, "tiny", xs[i], binary=i % 2 == 0).as_numpy("y")

    engines[0].batches.clear()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    for x, y in zip(xs, results):
        np.testing.assert_allclose(y, reference.run({"x": x})["y"], rtol=1e-5, atol=1e-5)  # batched sums may reorder
    batches = engines[0].batches
    assert max(batches) > 1 and len(batches) < 16, batches
    assert set(batches) <= {1, 4, 8}, batches  # padded to the precompiled sizes
    assert metric(server.url, "mace_batch_size_count") == len(batches)


def test_batching_off_runs_alone(serve, tiny_model: Path) -> None:
    engines: list[Slow] = []
    settings = ServeSettings(BatchSettings(max_batch=1))
    server = serve([engine_config(tiny_model, "tiny", wrap=lambda e: engines.append(Slow(e, 0.02)) or engines[-1])],
                   settings)
    engines[0].batches.clear()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: infer(httpclient.InferenceServerClient(server.url), "tiny",
                                      np.ones((2, 4), np.float32), True), range(6)))
    assert engines[0].batches == [2] * 6


def test_queue_full_is_503_and_timeout_is_504(serve, tiny_model: Path) -> None:
    settings = ServeSettings(BatchSettings(max_batch=1, max_queue=1), timeout_s=0.5)
    server = serve([engine_config(tiny_model, "tiny", wrap=lambda e: Slow(e, 0.4))], settings)
    url = f"http://{server.url}/v2/models/tiny/infer"
    request = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: httpx.post(url, json=request, timeout=10), range(6)))
    codes = sorted(r.status_code for r in responses)
    assert 503 in codes and 504 in codes, codes
    full = next(r for r in responses if r.status_code == 503)
    assert full.headers["Retry-After"] == "1" and "queued" in full.json()["error"]
    assert "--timeout-s" in next(r for r in responses if r.status_code == 504).json()["error"]
    time.sleep(1.0)
    assert httpx.post(url, json=request, timeout=10).status_code == 200


def test_bad_input_is_400_and_the_server_keeps_serving(serve, tiny_model: Path) -> None:
    server = serve([engine_config(tiny_model, "tiny", wrap=lambda e: Slow(e))],
                   ServeSettings(max_body_bytes=4096))
    url = f"http://{server.url}/v2/models/tiny/infer"
    good = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"content": b"{oops"}, "malformed JSON"),
        ({"json": {"inputs": [{**good["inputs"][0], "name": "q"}]}}, "'q'"),
        ({"json": {"inputs": [{**good["inputs"][0], "shape": [1, 3]}]}}, "'x'"),
        ({"json": {"inputs": [{**good["inputs"][0], "datatype": "INT64"}]}}, "'x'.datatype"),
        ({"json": {"inputs": [{**good["inputs"][0], "shape": [2, 4]}]}}, "'x'.data"),
        ({"json": {**good, "outputs": [{"name": "nope"}]}}, "'nope'"),
        ({"content": header + b"\0" * 12, "headers": {"Inference-Header-Content-Length": str(len(header))}},
         "binary data ends"),
        ({"content": header + b"\0" * 16, "headers": {"Inference-Header-Content-Length": "x1"}},
         "Inference-Header-Content-Length"),
        ({"content": b"\0" * 5000}, "--max-body-bytes"),
    ]
    for kwargs, names in cases:
        r = httpx.post(url, **kwargs)
        assert r.status_code == 400, (names, r.text)
        assert list(r.json()) == ["error"] and names in r.json()["error"], r.json()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        burst = list(pool.map(lambda i: httpx.post(url, **cases[i % len(cases)][0]).status_code, range(50)))
    assert burst == [400] * 50
    # a device error fails its request with 500; the next good one works
    bad = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [999, 2, 3, 4]}]}
    r = httpx.post(url, json=bad)
    assert r.status_code == 500 and "CL_OUT_OF_RESOURCES" in r.json()["error"]
    r = httpx.post(url, json=good)
    assert r.status_code == 200 and len(r.json()["outputs"]) == 2
    assert metric(server.url, 'mace_requests_total{code="400"') == len(cases) + 50


def test_not_ready_while_warming(serve, tiny_model: Path) -> None:
    gate = threading.Event()

    def wrap(engine: Any) -> Any:
        gate.wait(30)
        return engine

    server = serve([engine_config(tiny_model, "tiny", wrap=wrap)], ready=False)
    base = f"http://{server.url}"
    assert httpx.get(f"{base}/v2/health/live").status_code == 200
    assert httpx.get(f"{base}/v2/health/ready").status_code == 503
    assert httpx.get(f"{base}/v2/models/tiny/ready").status_code == 503
    r = httpx.post(f"{base}/v2/models/tiny/infer", json={"inputs": []})
    assert r.status_code == 503 and "still loading" in r.json()["error"]
    gate.set()
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
