"""`mace serve` as a process: start warm, SIGTERM with requests in flight, OpenCL (pocl), a missing dependency."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serving_support import follow_stderr, listening_url

from mace.cli.main import main

MACE = [sys.executable, "-m", "mace.cli.main"]


def start(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str, list[str]]:
    proc = subprocess.Popen([*MACE, "serve", *args, "--port", "0"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    assert proc.stderr is not None
    lines = follow_stderr(proc, lambda line: "listening on" in line)
    url = listening_url(lines)
    assert url, "".join(lines)
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
    except BaseException:
        proc.kill()
        raise
    return proc, url, lines


def test_sigterm_answers_every_accepted_request(tiny_model: Path, tmp_path: Path) -> None:
    proc, url, lines = start([f"{tiny_model}:tiny", "--max-batch", "4", "--max-delay-ms", "20", "--batch-sizes",
                              "1,2,4", "--storage-path", str(tmp_path / "cache")])
    try:
        request = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=40))
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(client.post, f"{url}/v2/models/tiny/infer", json=request) for _ in range(48)]
            time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            answered = refused = 0
            for future in futures:
                try:
                    response = future.result()
                except httpx.TransportError:  # not accepted: the listener had closed
                    refused += 1
                    continue
                assert response.status_code == 200, response.text
                assert len(response.json()["outputs"]) == 2
                answered += 1
        assert proc.wait(60) == 0, "".join(lines)
        assert answered > 0, (answered, refused)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    assert "warming tiny" in text and "ready:" in text and "stopped" in text


def test_opencl_squeezenet_starts_warm(squeezenet_model: Path, tmp_path: Path) -> None:
    try:
        import pyopencl as cl

        if not any(p.get_devices() for p in cl.get_platforms()):
            pytest.skip("no OpenCL device")
    except Exception:
        pytest.skip("no OpenCL device")
    cache = tmp_path / "cache"
    times = []
    for _ in range(2):  # cold (compiles, writes the cache), then warm (loads it)
        t0 = time.monotonic()
        proc, url, _lines = start([f"{squeezenet_model}:sq", "--device", "opencl", "--storage-path", str(cache)])
        try:
            times.append(time.monotonic() - t0)
            metrics = httpx.get(f"{url}/metrics", timeout=30).text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    source = float(re.search(r'mace_programs\{model="sq",origin="source"\} (\S+)', metrics).group(1))
    cached = float(re.search(r'mace_programs\{model="sq",origin="cache"\} (\S+)', metrics).group(1))
    assert source == 0 and cached >= 1, metrics
    ready = float(re.search(r"^mace_start_to_ready_seconds (\S+)", metrics, re.M).group(1))
    print(f"pocl squeezenet start-to-ready: cold {times[0]:.2f} s, warm {times[1]:.2f} s (metric {ready:.2f} s)")
    assert 0 < ready < 60


def test_missing_dependency_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                        tiny_model: Path) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", str(tiny_model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'mace-opencl[serve]'" in err, err
