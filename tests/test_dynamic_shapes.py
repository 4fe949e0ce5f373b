"""Dynamic input shapes: one model, specialized per concrete shape, on the reference and the OpenCL runtime."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import mace
from mace.converter.dynamic import dynamic_model, model_specs
from mace.errors import ConversionError, InputError
from mace.model.shapes import ShapeSpec
from support import run_onnxruntime


def mace_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The mace CLI in a fresh process."""
    return subprocess.run([sys.executable, "-m", "mace.cli.main", *argv], capture_output=True, text=True)

RNG = np.random.default_rng(0)


@pytest.fixture
def opencl_available(monkeypatch: pytest.MonkeyPatch, tmp_path) -> bool:
    """Whether an OpenCL device is there; the engines' caches go to a fresh directory either way."""
    monkeypatch.setenv("MACE_STORAGE_PATH", str(tmp_path / "cache"))
    try:
        import pyopencl as cl

        return any(p.get_devices() for p in cl.get_platforms())
    except Exception:
        return False


def conv_net() -> onnx.ModelProto:
    """Conv → Relu → MaxPool → Conv → GlobalAveragePool → Flatten, then a Reshape whose shape comes from Shape/Gather
    (the chain that folds only once the batch is known). Batch, height and width are dim_params."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [8, 3, 3, 3], RNG.standard_normal(8 * 27).astype(np.float32))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [8, 8, 3, 3], RNG.standard_normal(8 * 72).astype(np.float32) / 8)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Gather", ["xs", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "eight"], ["target"], axis=0),
        helper.make_node("Reshape", ["g", "target"], ["y"]),
    ]
    consts = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
              helper.make_tensor("eight", TensorProto.INT64, [1], [8])]
    graph = helper.make_graph(nodes, "conv_net", [x], [y], [w1, w2, *consts])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def attention_block() -> onnx.ModelProto:
    """A transformer-like block over a varying sequence: LayerNorm → MatMul (QKᵀ) → scale → Softmax → MatMul (·V)."""
    d = 16
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "sequence", d])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "sequence", d])
    inits = [helper.make_tensor("gamma", TensorProto.FLOAT, [d], RNG.standard_normal(d).astype(np.float32)),
             helper.make_tensor("beta", TensorProto.FLOAT, [d], RNG.standard_normal(d).astype(np.float32)),
             helper.make_tensor("wq", TensorProto.FLOAT, [d, d], RNG.standard_normal(d * d).astype(np.float32) / 4),
             helper.make_tensor("wk", TensorProto.FLOAT, [d, d], RNG.standard_normal(d * d).astype(np.float32) / 4),
             helper.make_tensor("scale", TensorProto.FLOAT, [], [0.25])]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], axis=-1),
        helper.make_node("MatMul", ["h", "wq"], ["q"]),
        helper.make_node("MatMul", ["h", "wk"], ["k"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["ss"]),
        helper.make_node("Softmax", ["ss"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "h"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "attention", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_specs_come_from_the_model_or_the_command_line() -> None:
    specs = model_specs(conv_net())
    assert [s.describe() for s in specs] == ["[1.., 3, 1.., 1..]"]
    assert specs[0].dims[0].name == "batch"
    given = model_specs(conv_net(), {"x": ShapeSpec.parse("x", "1..4,3,16..64,16..64")})
    assert given[0].describe() == "[1..4, 3, 16..64, 16..64]" and given[0].dims[2].name == "height"
    assert model_specs(conv_net(), {"x": [2, 3, 8, 8]})[0].describe() == "[2, 3, 8, 8]"
    with pytest.raises(ConversionError, match="gives 3 dims"):
        model_specs(conv_net(), {"x": [1, 3, 16]})


@pytest.mark.parametrize("device", ["cpu", "opencl"])
def test_a_conv_net_at_several_sizes_and_batches_matches_onnxruntime(device: str, opencl_available: bool) -> None:
    if device == "opencl" and not opencl_available:
        pytest.skip("no OpenCL device")
    proto = conv_net()
    engine = mace.Engine(dynamic_model(proto, model_specs(proto)), device=device, max_specializations=3)
    assert engine.dynamic
    for shape in [(1, 3, 16, 16), (2, 3, 24, 40), (1, 3, 16, 16), (1, 3, 33, 17), (4, 3, 16, 16), (1, 3, 16, 16)]:
        x = RNG.standard_normal(shape).astype(np.float32)
        got = engine.run({"x": x})["y"]
        want = run_onnxruntime(proto, {"x": x})["y"]
        assert got.shape == (shape[0], 8)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    stats = engine.stats
    assert stats["specializations_made"] == 4  # (1,3,16,16) comes back while resident, (2,3,24,40) is evicted
    assert stats["specializations_evicted"] == 1 and len(stats["resident_shapes"]) == 3
    assert stats["resident_shapes"][-1] == "x=1x3x16x16"


@pytest.mark.parametrize("device", ["cpu", "opencl"])
def test_an_attention_block_at_several_sequence_lengths(device: str, opencl_available: bool) -> None:
    if device == "opencl" and not opencl_available:
        pytest.skip("no OpenCL device")
    proto = attention_block()
    engine = mace.Engine(dynamic_model(proto, model_specs(proto, {"x": ShapeSpec.parse("x", "1,1..256,16")})),
                         device=device)
    for seq in (1, 7, 64, 200):
        x = RNG.standard_normal((1, seq, 16)).astype(np.float32)
        np.testing.assert_allclose(engine.run({"x": x})["y"], run_onnxruntime(proto, {"x": x})["y"], rtol=1e-4,
                                   atol=1e-5)


def test_shapes_outside_the_spec_are_one_clear_error() -> None:
    proto = attention_block()
    engine = mace.Engine(dynamic_model(proto, model_specs(proto, {"x": ShapeSpec.parse("x", "1,1..256,16")})))
    with pytest.raises(InputError, match=r"input 'x' dimension 1 \(sequence\) is 300, expected 1..256"):
        engine.run({"x": np.zeros((1, 300, 16), np.float32)})
    with pytest.raises(InputError, match="input 'x' has 2 dimensions"):
        engine.run({"x": np.zeros((1, 16), np.float32)})
    with pytest.raises(InputError, match="dimension 2 is 8, expected 16"):
        engine.run({"x": np.zeros((1, 4, 8), np.float32)})
    assert engine.stats["specializations_made"] == 0


def test_memory_stays_bounded_over_a_stream_of_shapes() -> None:
    proto = attention_block()
    engine = mace.Engine(dynamic_model(proto, model_specs(proto)), max_specializations=2)
    for seq in (3, 5, 7, 9, 11, 3):
        engine.run({"x": RNG.standard_normal((1, seq, 16)).astype(np.float32)})
        assert len(engine.stats["resident_shapes"]) <= 2
    assert engine.stats["specializations_made"] == 6 and engine.stats["specializations_evicted"] == 4


def test_a_second_engine_converts_and_compiles_nothing_for_shapes_the_first_built(opencl_available: bool,
                                                                                  tmp_path) -> None:
    if not opencl_available:
        pytest.skip("no OpenCL device")
    proto = conv_net()
    model = dynamic_model(proto, model_specs(proto))
    shapes = [{"x": (1, 3, 16, 16)}, {"x": (2, 3, 20, 28)}]
    first = mace.Engine(model, device="opencl")
    first.warm_up(shapes=shapes)
    assert first.stats["programs_from_source"] == 2 and first.stats["specializations_converted"] == 2
    assert len(first.stats["warnings"]) == 2 and "mace cache build" in first.stats["warnings"][0]
    second = mace.Engine(model, device="opencl")
    for shape in shapes:
        x = RNG.standard_normal(shape["x"]).astype(np.float32)
        np.testing.assert_allclose(second.run({"x": x})["y"], run_onnxruntime(proto, {"x": x})["y"], rtol=1e-4,
                                   atol=1e-5)
    stats = second.stats
    assert stats["programs_from_source"] == 0 and stats["programs_from_cache"] == 2
    assert stats["specializations_converted"] == 0  # the converted graphs came from the storage directory


def test_a_damaged_converted_graph_is_converted_again(opencl_available: bool, tmp_path) -> None:
    proto = attention_block()
    model = dynamic_model(proto, model_specs(proto))
    mace.Engine(model).warm_up(shapes=[{"x": (1, 5, 16)}])
    (cached,) = (tmp_path / "cache" / "mace_specializations").glob("*.mace")
    cached.write_bytes(cached.read_bytes()[:100])
    engine = mace.Engine(model)
    x = RNG.standard_normal((1, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(engine.run({"x": x})["y"], run_onnxruntime(proto, {"x": x})["y"], rtol=1e-4, atol=1e-5)
    assert engine.stats["specializations_converted"] == 1
    assert any(str(cached) in w and "converting shape x=1x5x16 again" in w for w in engine.stats["warnings"])


def test_convert_keeps_named_dims_and_the_file_round_trips(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mace.model import modelfile
    from mace.model.dynamic import DynamicModel

    monkeypatch.setenv("MACE_STORAGE_PATH", str(tmp_path / "cache"))
    proto = conv_net()
    onnx_path = tmp_path / "net.onnx"
    onnx.save(proto, str(onnx_path))
    (out,) = mace.convert(onnx_path, tmp_path / "net.mace")
    loaded = modelfile.load(out)
    assert isinstance(loaded, DynamicModel) and loaded.specs[0].describe() == "[1.., 3, 1.., 1..]"
    assert modelfile.encode(loaded) == out.read_bytes()  # decode/encode are exact inverses
    assert out.read_bytes()[8:12] == (0x00010001).to_bytes(4, "little")  # format minor 1: dynamic models
    engine = mace.Engine(out)
    x = RNG.standard_normal((3, 3, 20, 20)).astype(np.float32)
    np.testing.assert_allclose(engine.run({"x": x})["y"], run_onnxruntime(proto, {"x": x})["y"], rtol=1e-4, atol=1e-5)
    (fixed,) = mace.convert(onnx_path, tmp_path / "fixed.mace", input_shapes={"x": [1, 3, 16, 16]})
    assert not isinstance(modelfile.load(fixed), DynamicModel)
    assert fixed.read_bytes()[8:12] == (0x00010000).to_bytes(4, "little")  # static files stay version 1.0
    with pytest.raises(mace.MaceError, match=r"a dynamic model .*give concrete shapes with --input-shape"):
        modelfile.load_graph(out)


def test_cli_convert_with_ranges_info_and_run(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("MACE_STORAGE_PATH", str(tmp_path / "cache"))
    proto = attention_block()
    onnx_path = tmp_path / "attn.onnx"
    onnx.save(proto, str(onnx_path))
    model = tmp_path / "attn.mace"

    proc = mace_cli("convert", str(onnx_path), "-o", str(model), "--input-shape", "x=1,1..64,16")
    assert proc.returncode == 0, proc.stderr
    assert "dynamic: x[1, 1..64, 16]" in proc.stdout
    info = json.loads(mace_cli("info", str(model), "--json").stdout)
    assert info["dynamic"] and info["inputs"] == [{"name": "x", "shape": "[1, 1..64, 16]", "dtype": "float32"}]
    x = RNG.standard_normal((1, 33, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = mace_cli("run", str(model), "--input", f"x={tmp_path / 'x.npy'}", "--save-outputs", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out" / "y.npy"), run_onnxruntime(proto, {"x": x})["y"], rtol=1e-4,
                               atol=1e-5)
    proc = mace_cli("run", str(model), "--input", f"x={tmp_path / 'x.npy'}", "--device", "cpu")
    assert proc.returncode == 0
    np.save(tmp_path / "big.npy", np.zeros((1, 65, 16), np.float32))
    proc = mace_cli("run", str(model), "--input", f"x={tmp_path / 'big.npy'}")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and "x" in proc.stderr


def test_cache_build_fills_listed_shapes_that_a_fresh_process_then_loads(opencl_available: bool, tmp_path) -> None:
    import json

    if not opencl_available:
        pytest.skip("no OpenCL device")
    proto = conv_net()
    onnx_path = tmp_path / "net.onnx"
    onnx.save(proto, str(onnx_path))
    (model,) = mace.convert(onnx_path, tmp_path / "net.mace", input_shapes={"x": ShapeSpec.parse("x", "1..8,3,?,?")})
    shipped = tmp_path / "shipped.bin"

    proc = mace_cli("cache", "build", str(model), "-o", str(shipped), "--input-shape", "x=1,3,16,16",
                    "--input-shape", "x=1,3,24,32", "--batch-sizes", "1,2")
    assert proc.returncode == 0, proc.stderr
    assert "4 program(s) compiled" in " ".join(proc.stdout.split())  # rich wraps lines
    report = json.loads(mace_cli("cache", "inspect", str(shipped), "--json").stdout)
    options = sorted(e["build_options"] for e in report["entries"])
    assert [o.split("-DMACE_INPUT_SHAPES=")[1] for o in options] == [
        "x:1x3x16x16", "x:1x3x24x32", "x:2x3x16x16", "x:2x3x24x32"]
    child = f"""
import json, numpy as np, mace
ctx = mace.GPUContextBuilder().disable_storage().set_opencl_binary_paths([{str(shipped)!r}]).finalize()
engine = mace.Engine({str(model)!r}, device="opencl", gpu_context=ctx)
for shape in [(2, 3, 24, 32), (1, 3, 16, 16)]:
    engine.run({{"x": np.zeros(shape, np.float32)}})
s = engine.stats
print(json.dumps([s["programs_from_source"], s["programs_from_cache"]]))
"""
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, 2]
    proc = mace_cli("cache", "build", str(model), "-o", str(tmp_path / "x.bin"), "--input-shape", "x=9,3,16,16")
    assert proc.returncode == 2 and "dimension 0 (batch) is 9, expected 1..8" in proc.stderr
    proc = mace_cli("cache", "build", str(model), "-o", str(tmp_path / "x.bin"))
    assert proc.returncode == 2 and "name the shapes to build with --input-shape" in proc.stderr


def test_tuning_is_kept_per_shape(opencl_available: bool, tmp_path) -> None:
    import json

    from mace.cachefiles import tuned_params

    if not opencl_available:
        pytest.skip("no OpenCL device")
    proto = attention_block()
    onnx_path = tmp_path / "attn.onnx"
    onnx.save(proto, str(onnx_path))
    (model,) = mace.convert(onnx_path, tmp_path / "attn.mace")
    storage = tmp_path / "tuned"

    def tune(*argv: str) -> subprocess.CompletedProcess[str]:
        return mace_cli("tune", str(model), "--storage-path", str(storage), "--repeats", "1", "--no-variants",
                        "--json", *argv)

    proc = tune()
    assert proc.returncode == 2 and "name the shape to tune with --input-shape" in proc.stderr
    counts, stored = [], []
    for seq in (8, 40):
        proc = tune("--input-shape", f"x=1,{seq},16")
        assert proc.returncode == 0, proc.stderr
        counts.append(json.loads(proc.stdout.strip().splitlines()[-1])["launches_tuned"])
        stored.append(len(tuned_params.decode((storage / "mace_cl_tuned_params.bin").read_bytes()).entries))
    # the second shape adds entries of its own (launches of one kernel at one size share an entry), none replaced
    assert counts[0] > 0 and stored[0] > 0 and stored[1] == 2 * stored[0]
    ctx = mace.GPUContextBuilder().set_storage_path(storage).finalize()
    engine = mace.Engine(model, device="opencl", gpu_context=ctx)
    engine.run({"x": np.zeros((1, 40, 16), np.float32)})
    assert engine.stats["tuned_launches"] == counts[1]
