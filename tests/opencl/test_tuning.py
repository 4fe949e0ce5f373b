"""Tuned work-group sizes through the engine: `mace tune` writes the file, a fresh engine applies it, a bad value is
re-checked away, and a size the driver refuses falls back to the driver's choice with a warning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import mace
from mace.cachefiles import tuned_params
from mace.cachefiles.stores import TUNED_PARAMS_NAME
from mace.model import modelfile
from mace.opencl.runtime import OpenCLRuntime

pytest.importorskip("pyopencl")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])],
                              initializer=[helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path_factory.mktemp("tune") / "t.mace"
    mace.convert(onnx.load_from_string(proto.SerializeToString()), path)
    return path


X = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)


def _engine(model: Path, storage: Path) -> mace.Engine:
    return mace.Engine(model, device="opencl", gpu_context=mace.GPUContextBuilder().set_storage_path(storage)
                       .finalize())


def _runtime(model: Path, storage: Path) -> OpenCLRuntime:
    """The OpenCL runtime itself, for tests that plant tuned values or local sizes by hand."""
    return OpenCLRuntime(modelfile.load(model), mace.GPUContextBuilder().set_storage_path(storage).finalize())


def test_tune_cli_writes_file_that_a_fresh_engine_applies(model: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mace.cli.main", "tune", str(model), "--storage-path",
                           str(tmp_path), "--repeats", "2", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["launches_tuned"] >= 1 and summary["saved"] is True
    data = (tmp_path / TUNED_PARAMS_NAME).read_bytes()
    assert tuned_params.validate(data) == []
    # the file holds, for this device, one local-size entry per tunable launch of the model (keyed as the runtime
    # looks it up), each a size the launch's kernel can take; a fresh runtime applies every one of them
    from mace.opencl.tuning.local_sizes import validate_local_size

    runtime = _runtime(model, tmp_path)
    entries = tuned_params.decode(data).entries_for(runtime.gpu_context.fingerprint)
    local_size_entries = {key: e for key, e in entries.items() if not e.variant}
    spec = runtime._specialization()
    tunable = [(kernel, launch) for i, (kernel, launch) in enumerate(runtime.executor.kernels)
               if runtime.executor.tunable(i)]
    assert len(tunable) == summary["launches_tuned"] == len(local_size_entries)
    for kernel, launch in tunable:
        entry = local_size_entries[tuned_params.tuning_key(launch.kernel, spec, launch.global_size)]
        assert entry.global_size == tuple(launch.global_size)
        limits = runtime._limits(kernel)
        assert validate_local_size(entry.local_size, launch.global_size, limits.work_group_size,
                                   limits.max_work_item_sizes, limits.needs_uniform) is None
        assert launch.local_size == (tuple(entry.local_size) if entry.local_size else None)
    assert runtime.stats["tuned_launches"] == len(tunable)
    engine = _engine(model, tmp_path)
    assert engine.stats["tuned_launches"] == summary["launches_tuned"]
    expected = mace.Engine(model).run({"x": X})["y"]
    np.testing.assert_allclose(engine.run({"x": X})["y"], expected, rtol=1e-4, atol=1e-5)


def test_a_tuned_value_that_breaks_the_kernel_limits_is_ignored(model: Path, tmp_path: Path) -> None:
    runtime = _runtime(model, tmp_path)
    index = next(i for i in range(len(runtime.executor.kernels)) if runtime.executor.tunable(i))
    _, launch = runtime.executor.kernels[index]
    entry = runtime.tuned.new_entry(launch.kernel, runtime._specialization(), launch.global_size,
                                    (4096,) * len(launch.global_size), 1.0)  # beyond any work-group limit
    runtime.tuned.record(entry)
    runtime.tuned.save()
    fresh = _engine(model, tmp_path)
    assert fresh.stats["tuned_launches"] == 0
    assert any("is not usable" in w for w in fresh.stats["warnings"])
    np.testing.assert_allclose(fresh.run({"x": X})["y"], mace.Engine(model).run({"x": X})["y"], rtol=1e-4,
                               atol=1e-5)


def test_a_size_the_driver_refuses_falls_back_with_a_warning(model: Path, tmp_path: Path) -> None:
    runtime = _runtime(model, tmp_path)
    executor = runtime.executor
    index = next(i for i in range(len(executor.kernels)) if executor.tunable(i))
    _, launch = executor.kernels[index]
    executor.set_local_size(index, (100003,) + (1,) * (len(launch.global_size) - 1))  # past the check, as if stale
    got = runtime.run({"x": X})["y"]
    np.testing.assert_allclose(got, mace.Engine(model).run({"x": X})["y"], rtol=1e-4, atol=1e-5)
    assert any("refused by the driver" in w for w in runtime.stats["warnings"])
    assert executor.kernels[index][1].local_size is None
