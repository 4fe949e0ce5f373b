"""Eight processes warming models into one storage path at once (issue: concurrency): four different models and the
same model four times. Nothing deadlocks, the final file is valid and holds every program, and a fresh engine for
each model then builds nothing from source."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import mace
from mace.cachefiles import program_cache
from mace.cachefiles.stores import PROGRAM_CACHE_NAME

pytest.importorskip("pyopencl")

CHILD = textwrap.dedent("""
    import sys, mace
    ctx = mace.GPUContextBuilder().set_storage_path(sys.argv[2]).finalize()
    engine = mace.Engine(sys.argv[1], device="opencl", gpu_context=ctx)
    engine.warm_up()
    print(engine.stats["programs_from_source"], engine.stats["programs_from_cache"])
""")


def _model(width: int) -> onnx.ModelProto:
    w = np.random.default_rng(width).standard_normal((width, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, f"m{width}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width, 8, 8])],
                              initializer=[helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_eight_processes_one_storage(tmp_path: Path) -> None:
    models = []
    for width in (2, 3, 4, 5):
        models.append(tmp_path / f"m{width}.mace")
        mace.convert(_model(width), models[-1])
    storage = tmp_path / "storage"
    jobs = models + [models[0]] * 4
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(m), str(storage)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for m in jobs]
    for proc in procs:
        _, err = proc.communicate(timeout=600)  # a deadlock would end here
        assert proc.returncode == 0, err
    parsed = program_cache.decode((storage / PROGRAM_CACHE_NAME).read_bytes())
    assert len(parsed.entries) == 4 and len(parsed.fingerprints) == 1
    for model in models:
        engine = mace.Engine(model, device="opencl",
                             gpu_context=mace.GPUContextBuilder().set_storage_path(storage).finalize())
        assert engine.stats["programs_from_source"] == 0 and engine.stats["programs_from_cache"] == 1
