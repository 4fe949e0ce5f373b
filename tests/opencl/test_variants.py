"""Kernel variants (tilings) as tuned choices: the planner offers and applies them, every variant computes the same
numbers, `mace tune` stores per-node choices, and a fresh engine plans them in (or falls back to the default tiling
with a warning when a stored variant is not offered)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import mace
from mace.cachefiles.stores import TUNED_PARAMS_NAME
from mace.model import modelfile
from mace.opencl.plan import plan_graph, tiling
from mace.opencl.runtime import OpenCLRuntime

cl = pytest.importorskip("pyopencl")

GPU = tiling.DeviceTarget(is_gpu=True, compute_units=8, local_mem_bytes=48 << 10, max_work_group_size=1024)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3x3 conv, a depthwise conv, a 1x1 conv and a classifier Gemm: every lowering that offers variants."""
    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        data = (rng.standard_normal(shape) * 0.3).astype(np.float32)
        return helper.make_tensor(name, TensorProto.FLOAT, shape, data.ravel())

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv3x3"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "wd"], ["c2"], pads=[1, 1, 1, 1], group=16, name="depthwise"),
        helper.make_node("Conv", ["c2", "w3"], ["c3"], name="pointwise"),
        helper.make_node("Flatten", ["c3"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wg"], ["y"], transB=1, name="classifier"),
    ]
    inits = [weight("w1", (16, 3, 3, 3)), weight("wd", (16, 1, 3, 3)), weight("w3", (8, 16, 1, 1)),
             weight("wg", (10, 8 * 12 * 12))]
    graph = helper.make_graph(nodes, "v", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path_factory.mktemp("variants") / "v.mace"
    mace.convert(onnx.load_from_string(proto.SerializeToString()), path)
    return path


X = np.random.default_rng(1).standard_normal((1, 3, 12, 12)).astype(np.float32)


def _engine(model: Path, storage: Path) -> mace.Engine:
    return mace.Engine(model, device="opencl",
                       gpu_context=mace.GPUContextBuilder().set_storage_path(storage).finalize())


def _runtime(model: Path, storage: Path) -> OpenCLRuntime:
    """The OpenCL runtime itself, for tests that write tuned entries by hand."""
    return OpenCLRuntime(modelfile.load(model), mace.GPUContextBuilder().set_storage_path(storage).finalize())


def test_the_planner_offers_variants_and_applies_only_offered_ones(model: Path) -> None:
    graph = modelfile.load(model)
    default = plan_graph(graph)
    assert default.variant_counts == {"conv3x3": 3, "depthwise": 3, "pointwise": 3, "classifier": 3}
    assert default.variants == {}
    # no floor: conv3x3 (16 channels of 12x12, far below the policy's min_work_items) takes a bigger block
    bigger = plan_graph(graph, variants={"conv3x3": 1})
    assert bigger.variants == {"conv3x3": 1} and bigger.source != default.source
    # a variant the lowering does not offer, or a node that offers none, plans as the default
    assert plan_graph(graph, variants={"conv3x3": 7, "relu": 1}).source == default.source
    gpu = plan_graph(graph, GPU)
    assert gpu.variant_counts["conv3x3"] == GPU.policy.gpu_tile_variants
    assert plan_graph(graph, GPU, {"conv3x3": 1}).source != gpu.source  # 64x64 blocks: not the default here


@pytest.mark.parametrize("target", [None, GPU], ids=["portable", "gpu-target"])
def test_every_variant_computes_the_reference(model: Path, target: Any, opencl_queue: Any) -> None:
    from mace.opencl.executor import Executor

    graph = modelfile.load(model)
    expected = mace.Engine(model).run({"x": X})["y"]
    context = opencl_queue.context

    def build(source: str, options: str) -> Any:
        return cl.Program(context, source).build(options=options)

    counts = plan_graph(graph, target).variant_counts
    sources = set()
    for variant in range(max(counts.values())):
        chosen = {name: variant for name, count in counts.items() if count > variant}
        executor = Executor(graph, context, opencl_queue, build, target=target, variants=chosen)
        assert executor.plan.variants == {k: v for k, v in chosen.items() if v}
        sources.add(executor.plan.source)
        got = executor.run({"x": X})["y"]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    assert len(sources) >= 2  # variants are other programs (one may coincide with the default on a small model)


def test_tune_stores_a_choice_per_node_that_a_fresh_engine_plans_in(model: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mace.cli.main", "tune", str(model), "--storage-path", str(tmp_path),
                           "--repeats", "2", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    variants = summary["variants"]
    assert variants["nodes_with_variants"] == 4 and variants["rejected_variants"] == []
    assert {"0", "1"} <= set(variants["device_us_per_variant"])  # 2 (a 4x floor) is the default on this small model
    engine = _engine(model, tmp_path)
    # the stored choices are exactly the ones planned: the changed nodes, or none when the whole was not faster
    assert engine.stats["tuned_variants"] == variants["nodes_changed"]
    assert len(engine.stats["variants"]) == variants["nodes_changed"]
    assert engine.stats["warnings"] == []
    np.testing.assert_allclose(engine.run({"x": X})["y"], mace.Engine(model).run({"x": X})["y"], rtol=1e-4,
                               atol=1e-4)


def test_a_stored_variant_is_planned_in_and_cached_as_its_own_program(model: Path, tmp_path: Path) -> None:
    from mace.opencl.tuning.variants import record_variants

    runtime = _runtime(model, tmp_path)
    runtime.run({"x": X})  # the default program is in the cache now
    record_variants(runtime.tuned, runtime.graph, runtime.target, {"conv3x3": 1, "pointwise": 0}, {"conv3x3": 5.0})
    assert runtime.tuned.save()
    fresh = _engine(model, tmp_path)
    assert fresh.stats["variants"] == {"conv3x3": 1}
    assert fresh.stats["tuned_variants"] == 1
    assert fresh.stats["programs_from_source"] == 1  # another source: not the cached default program
    np.testing.assert_allclose(fresh.run({"x": X})["y"], mace.Engine(model).run({"x": X})["y"], rtol=1e-4, atol=1e-4)
    again = _engine(model, tmp_path)
    assert again.stats["programs_from_source"] == 0 and again.stats["tuned_variants"] == 1


def test_a_stored_variant_that_is_not_offered_falls_back_with_a_warning(model: Path, tmp_path: Path) -> None:
    from mace.opencl.tuning.variants import record_variants

    runtime = _runtime(model, tmp_path)
    record_variants(runtime.tuned, runtime.graph, runtime.target, {"depthwise": 200}, {})
    runtime.tuned.save()
    assert (tmp_path / TUNED_PARAMS_NAME).exists()
    fresh = _engine(model, tmp_path)
    assert fresh.stats["variants"] == {}
    assert any("variant 200 of node depthwise is not offered" in w for w in fresh.stats["warnings"])
    np.testing.assert_allclose(fresh.run({"x": X})["y"], mace.Engine(model).run({"x": X})["y"], rtol=1e-4, atol=1e-4)


def test_tune_without_variants_keeps_the_default_tilings(model: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mace.cli.main", "tune", str(model), "--storage-path", str(tmp_path),
                           "--repeats", "1", "--no-variants", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["variants"] == {}
    assert _engine(model, tmp_path).stats["tuned_variants"] == 0


def test_cache_build_with_the_tuned_file_ships_the_tuned_program(model: Path, tmp_path: Path) -> None:
    from mace.opencl.tuning.variants import record_variants

    runtime = _runtime(model, tmp_path / "tuning")
    record_variants(runtime.tuned, runtime.graph, runtime.target, {"conv3x3": 1}, {"conv3x3": 5.0})
    runtime.tuned.save()
    tuned_file = tmp_path / "tuning" / TUNED_PARAMS_NAME
    shipped = tmp_path / "shipped.bin"
    proc = subprocess.run([sys.executable, "-m", "mace.cli.main", "cache", "build", str(model), "-o", str(shipped),
                           "--parameter-path", str(tuned_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ctx = (mace.GPUContextBuilder().disable_storage().set_opencl_binary_paths([shipped])
           .set_opencl_parameter_path(tuned_file).finalize())
    engine = mace.Engine(model, device="opencl", gpu_context=ctx)
    assert engine.stats["variants"] == {"conv3x3": 1}
    assert engine.stats["programs_from_source"] == 0 and engine.stats["programs_from_cache"] == 1


def test_variant_keys_are_those_earlier_versions_wrote() -> None:
    """Tuned files from before the tiling policy became data keep their keys: pinned hex digests (computed by the
    code of commit 27cd0c7); another policy gets other keys."""
    from dataclasses import replace

    from mace.converter import convert_onnx
    from mace.opencl.plan import DEFAULT_POLICY, DeviceTarget
    from mace.opencl.tuning.variants import variant_key

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 12, 12])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8, 3, 3], np.ones(8 * 8 * 9, np.float32))
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv3x3", pads=[1, 1, 1, 1])
    graph = convert_onnx(helper.make_model(helper.make_graph([node], "g", [x], [y], [w]),
                                           opset_imports=[helper.make_opsetid("", 17)]))
    gpu = DeviceTarget(is_gpu=True, compute_units=132, local_mem_bytes=49152, max_work_group_size=1024)
    gpu_key, portable_key = variant_key(graph, graph.nodes[0], gpu), variant_key(graph, graph.nodes[0], None)
    assert gpu_key == "2036a597394c729e6c89dfd8ae89401fa24c3d30eaca9b9a50b5b30a8b998685"
    assert portable_key == "1527df4c0bceec0f83e85fb4dfa439613b88db5c3095af7567cd49fce839c475"
    other = replace(gpu, policy=replace(DEFAULT_POLICY, gpu_split_min_ktiles=1))
    assert variant_key(graph, graph.nodes[0], other) != variant_key(graph, graph.nodes[0], gpu)
