"""`mace serve --ray`: a local Ray instance, 2 replicas on pocl warm from a shipped program cache, both answering
correctly; SIGTERM stops it with exit 0. Skipped (with Ray's reason) only where Ray itself cannot start here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_support import follow_stderr, listening_url

import mace
from mace.cli.main import main

pytest.importorskip("ray.serve")

MACE = [sys.executable, "-m", "mace.cli.main"]
RAY_PROBE = "import ray; ray.init(num_cpus=1, include_dashboard=False); ray.shutdown()"


def _ray_cannot_start() -> str | None:
    probe = subprocess.run([sys.executable, "-c", RAY_PROBE], capture_output=True, text=True, timeout=300)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["no output"])[-1]


def _start(args: list[str]) -> tuple[subprocess.Popen[str], str, list[str]]:
    proc = subprocess.Popen([*MACE, "serve", *args], stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stderr is not None
    lines = follow_stderr(proc, lambda line: "ready" in line and "listening on" not in line)
    url = listening_url(lines)
    if not url or proc.poll() is not None:
        proc.wait(60)
        reason = _ray_cannot_start()
        if reason is not None:
            pytest.skip(f"Ray cannot start on this machine: {reason}")
        raise AssertionError("mace serve --ray did not get ready:\n" + "".join(lines))
    return proc, url, lines


def test_two_replicas_on_pocl_warm_from_the_shipped_cache(squeezenet_model: Path, tmp_path: Path) -> None:
    shipped = tmp_path / "shipped.bin"
    assert main(["cache", "build", str(squeezenet_model), "--device", "opencl", "-o",
                               str(shipped)]) == 0
    x = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    expected = mace.Engine(squeezenet_model).run({"input": x})["output"]

    proc, url, lines = _start([f"{squeezenet_model}:sq", "--ray", "--replicas", "2", "--replica-cpus", "0.5",
                               "--device", "opencl", "--binary-path", str(shipped), "--storage-path",
                               str(tmp_path / "empty-store"), "--max-batch", "1", "--port", "0"])
    try:
        request = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                               "data": x.ravel().tolist()}]}
        answers: dict[str, int] = {}
        metrics: dict[str, str] = {}
        with httpx.Client(timeout=60) as client:
            for _ in range(60):  # Ray's router picks the replica: ask until both have answered a few times
                r = client.post(f"{url}/v2/models/sq/infer", json=request)
                assert r.status_code == 200, r.text
                replica = r.headers["mace-replica"]
                got = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(expected.shape)
                np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
                answers[replica] = answers.get(replica, 0) + 1
                m = client.get(f"{url}/metrics")
                metrics[m.headers["mace-replica"]] = m.text
                if len(answers) == 2 and min(answers.values()) >= 2 and len(metrics) == 2:
                    break
            assert len(answers) == 2, answers
            assert len(metrics) == 2, sorted(metrics)
            for replica, text in metrics.items():  # every replica warm from the shipped file: nothing compiled
                assert 'mace_programs{model="sq",origin="source"} 0.0' in text, (replica, text)
                assert 'mace_programs{model="sq",origin="cache"} 1.0' in text, (replica, text)
            bad = client.post(f"{url}/v2/models/sq/infer", json={"inputs": [{"name": "nope", "shape": [1],
                                                                            "datatype": "FP32", "data": [1]}]})
            assert bad.status_code == 400 and "nope" in bad.json()["error"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    text = "".join(lines)
    assert "2 replica(s)" in text and "stopped" in text


def test_bad_ray_options_are_one_line_errors(squeezenet_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--replicas", "2"], "--replicas: only with --ray"),
        (["--ray", "--autoscaling", "{not json"], "--autoscaling: not JSON"),
        (["--ray", "--autoscaling", "[1]"], "--autoscaling: expected a JSON object"),
        (["--ray", "--replicas", "2", "--autoscaling", "{}"], "--replicas and --autoscaling"),
        (["--ray", "--replicas", "0"], "--replicas: must be positive"),
    ]
    for extra, message in cases:
        assert main(["serve", str(squeezenet_model), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
        assert len(err.strip().splitlines()) == 1, err
