"""The mace command: convert + run --save-outputs match onnxruntime; --json; errors are one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mace.cli.main import main
from mace.model import modelfile
from mace.opencl.device import list_devices
from mace.opencl.plan import plan_graph
from mace.opencl.runtime import program_plan
from support import SHARED_MODEL_NAMES, onnxruntime_outputs, relative_error, shared_model


@pytest.mark.parametrize("name", SHARED_MODEL_NAMES)
def test_convert_then_run_saves_outputs_matching_onnxruntime(name: str, tmp_path: Path, capsys) -> None:
    onnx_path = shared_model(name)
    model = tmp_path / f"{name}.mace"
    assert main(["convert", str(onnx_path), "-o", str(model)]) == 0
    x = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(model), "--input", f"input={tmp_path / 'x.npy'}", "--save-outputs",
                 str(tmp_path / "out")]) == 0
    got = np.load(tmp_path / "out" / "output.npy")
    expected = onnxruntime_outputs(onnx_path, {"input": x})["output"]
    assert relative_error(got, expected) <= 1e-4
    assert "top-5" in capsys.readouterr().out


def test_run_json_schema(tmp_path: Path, capsys) -> None:
    model = tmp_path / "sq.mace"
    assert main(["convert", str(shared_model("squeezenet1_1")), "-o", str(model)]) == 0
    capsys.readouterr()
    assert main(["run", str(model), "--json", "--runs", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"] == {"output": {"shape": [1, 1000], "dtype": "float32"}}
    assert set(report["timings"]) >= {"init", "first_run", "time_to_first_result", "steady_median"}
    assert all(isinstance(v, float) for v in report["timings"].values())
    assert isinstance(report["stats"], dict)


def test_info_shows_ops_before_and_after(tmp_path: Path, capsys) -> None:
    model = tmp_path / "m.mace"
    assert main(["convert", str(shared_model("mobilenet_v2")), "-o", str(model)]) == 0
    capsys.readouterr()
    assert main(["info", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ops_in_source"]["Clip"] == 35
    assert "Clip" not in info["ops_after_passes"]
    assert info["ops_after_passes"]["Conv+Clip"] > 0 and info["ops_after_passes"]["Conv+Add"] == 10
    assert info["parameters"] > 3_000_000 and info["file_bytes"] == model.stat().st_size
    # launches per run as planned: the portable plan and each OpenCL device's (pocl's CPU target here)
    graph = modelfile.load(model)
    assert info["launches"]["portable"] == len(plan_graph(graph).launches) > 50 and info["launch_errors"] == {}
    for choice in list_devices():
        assert info["launches"][choice.label] == len(program_plan(graph, choice.device, tf32=False).launches)


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mace"
    bad.write_bytes(b"MACEMDL\0" + b"\0" * 100)
    for args in (["run", str(bad)], ["convert", str(tmp_path / "absent.onnx")],
                 ["convert", "--input-shape", "nonsense", str(tmp_path / "x.onnx")]):
        proc = subprocess.run([sys.executable, "-m", "mace.cli.main", *args], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"mace {args[0]}: error: ")


def test_wrong_input_lists_what_is_expected(tmp_path: Path) -> None:
    import mace

    model = tmp_path / "sq.mace"
    mace.convert(shared_model("squeezenet1_1"), model)
    engine = mace.Engine(model)
    with pytest.raises(ValueError, match=r"unknown input\(s\) \['x'\]; missing input\(s\) \['input'\]; expected "
                                         r"input: float32\[1, 3, 224, 224\]"):
        engine.run({"x": np.zeros((1, 3, 224, 224), np.float32)})
    with pytest.raises(ValueError, match=r"shape \[1, 3, 32, 32\], expected \[1, 3, 224, 224\]"):
        engine.run({"input": np.zeros((1, 3, 32, 32), np.float32)})
    with pytest.raises(ValueError, match=r"dtype float64, expected float32"):
        engine.run({"input": np.zeros((1, 3, 224, 224))})
