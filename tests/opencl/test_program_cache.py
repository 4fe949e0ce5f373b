"""The compiled-program cache end to end on a real OpenCL device (pocl in CI): cold build, warm start in a fresh
process, damaged/foreign/rejected files, binary-path order, unwritable storage, merging, concurrent savers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import mace
from mace.cachefiles import program_cache
from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.cachefiles.stores import PROGRAM_CACHE_NAME
from mace.opencl.device import fingerprint, select_device
from mace.opencl.plan import DeviceTarget, plan_graph
from mace.opencl.programs import NO_BINARY_WARNING

pytestmark = pytest.mark.filterwarnings("ignore")


def _tiny_onnx(channels: int) -> bytes:
    """Conv+Relu -> MaxPool -> Flatten -> Gemm: small enough that pocl builds it in about a second."""
    rng = np.random.default_rng(channels)
    w = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((10, channels * 4 * 4)).astype(np.float32)
    inits = [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
             helper.make_tensor("fc", TensorProto.FLOAT, fc.shape, fc.ravel())]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import onnx

    out = tmp_path_factory.mktemp("models")
    paths = {}
    for name, channels in (("a", 4), ("b", 6)):
        paths[name] = out / f"{name}.mace"
        mace.convert(onnx.load_from_string(_tiny_onnx(channels)), paths[name])
    return paths


X = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)


def _engine(model: Path, storage: Path | None = None, binaries: list[Path] | None = None,
            memory: bytes | None = None) -> mace.Engine:
    builder = mace.GPUContextBuilder()
    builder = builder.set_storage_path(storage) if storage is not None else builder.disable_storage()
    if binaries:
        builder.set_opencl_binary_paths(binaries)
    if memory is not None:
        builder.set_opencl_binary(memory)
    return mace.Engine(model, device="opencl", gpu_context=builder.finalize())


CHILD = textwrap.dedent("""
    import json, sys, numpy as np, mace
    model, storage = sys.argv[1], sys.argv[2]
    ctx = mace.GPUContextBuilder().set_storage_path(storage).finalize()
    engine = mace.Engine(model, device="opencl", gpu_context=ctx)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    y = engine.run({"x": x})["y"]
    print(json.dumps({"stats": engine.stats, "y": y.tolist()}))
""")


def _fresh_process(model: Path, storage: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model), str(storage)], capture_output=True, text=True,
                          env={**__import__("os").environ, "POCL_KERNEL_CACHE": "0"}, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cold_builds_and_writes_then_fresh_process_builds_nothing(models, tmp_path: Path) -> None:
    engine = _engine(models["a"], tmp_path)
    cold = engine.run({"x": X})["y"]
    stats = engine.stats
    assert stats["programs_from_source"] == 1 and stats["programs_from_cache"] == 0
    assert stats["warnings"] == [NO_BINARY_WARNING]
    cache_path = tmp_path / PROGRAM_CACHE_NAME
    assert stats["cache_files_written"] == [str(cache_path)]
    parsed = program_cache.decode(cache_path.read_bytes())
    assert len(parsed.entries) == 1 and len(parsed.entries[0].blob) > 0
    np.testing.assert_allclose(cold, mace.Engine(models["a"]).run({"x": X})["y"], rtol=1e-4, atol=1e-4)

    warm = _fresh_process(models["a"], tmp_path)
    assert warm["stats"]["programs_from_source"] == 0
    assert warm["stats"]["programs_from_cache"] == 1
    assert warm["stats"]["warnings"] == [] and warm["stats"]["cache_files_written"] == []
    np.testing.assert_array_equal(np.asarray(warm["y"], np.float32), cold)
    assert cache_path.read_bytes() == program_cache.encode(parsed)  # a warm start does not rewrite the file


def _damage(kind: str, data: bytes) -> bytes:
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "bit-flipped":
        damaged = bytearray(data)
        damaged[len(damaged) - 40] ^= 0x01  # inside the last blob
        return bytes(damaged)
    if kind == "bad-magic":
        return b"XXXX" + data[4:]
    return b""


@pytest.mark.parametrize("kind", ["truncated", "bit-flipped", "bad-magic", "empty"])
def test_damaged_file_warns_rebuilds_and_rewrites(models, tmp_path: Path, kind: str) -> None:
    _engine(models["a"], tmp_path).warm_up()
    cache_path = tmp_path / PROGRAM_CACHE_NAME
    cache_path.write_bytes(_damage(kind, cache_path.read_bytes()))
    engine = _engine(models["a"], tmp_path)
    engine.warm_up()
    assert engine.stats["programs_from_source"] == 1
    assert len(engine.stats["warnings"]) >= 1 and str(cache_path) in engine.stats["warnings"][0]
    assert program_cache.validate(cache_path.read_bytes()) == []
    assert _engine(models["a"], tmp_path).stats["programs_from_cache"] == 1


def _fake_fingerprint() -> DeviceFingerprint:
    return DeviceFingerprint("Other Platform", "Other", "OpenCL 3.0", "Other GPU", "Other", "OpenCL 3.0",
                                       "99.1", 64, True, mace.__version__)


def test_foreign_fingerprint_is_ignored_and_kept_on_save(models, tmp_path: Path) -> None:
    graph = mace.Engine(models["a"]).graph
    plan = plan_graph(graph)
    foreign = program_cache.CacheFile()
    foreign = foreign.merged(program_cache.CacheFile({_fake_fingerprint().id(): _fake_fingerprint()}, [
        program_cache.CacheEntry.for_program(plan.source, plan.build_options, _fake_fingerprint(), b"foreign", 1.0)]))
    cache_path = tmp_path / PROGRAM_CACHE_NAME
    cache_path.write_bytes(program_cache.encode(foreign))
    engine = _engine(models["a"], tmp_path)
    engine.warm_up()
    assert engine.stats["programs_from_source"] == 1
    assert any("holds no program for this device" in w for w in engine.stats["warnings"])
    merged = program_cache.decode(cache_path.read_bytes())
    assert len(merged.fingerprints) == 2 and len(merged.entries) == 2  # the other device's entry survives


def test_binary_the_driver_rejects_is_rebuilt(models, tmp_path: Path) -> None:
    graph = mace.Engine(models["a"]).graph
    device = select_device("")
    plan = plan_graph(graph, DeviceTarget.from_device(device.device))  # the program the engine builds here
    fp = fingerprint(device)
    bogus = program_cache.CacheFile({fp.id(): fp}, [
        program_cache.CacheEntry.for_program(plan.source, plan.build_options, fp, b"\x7fELF not a real binary", 1.0)])
    cache_path = tmp_path / PROGRAM_CACHE_NAME
    cache_path.write_bytes(program_cache.encode(bogus))
    engine = _engine(models["a"], tmp_path)
    y = engine.run({"x": X})["y"]
    assert engine.stats["programs_from_source"] == 1
    assert any("rejected the cached binary" in w for w in engine.stats["warnings"])
    assert program_cache.decode(cache_path.read_bytes()).entries[0].blob != b"\x7fELF not a real binary"
    np.testing.assert_allclose(y, mace.Engine(models["a"]).run({"x": X})["y"], rtol=1e-4, atol=1e-4)


def test_binary_paths_order_first_match_wins(models, tmp_path: Path) -> None:
    shipped_a = tmp_path / "shipped_a.bin"
    shipped_b = tmp_path / "shipped_b.bin"
    subprocess.run([sys.executable, "-m", "mace.cli.main", "cache", "build", str(models["a"]), "-o", str(shipped_a)],
                   check=True, capture_output=True)
    shipped_b.write_bytes(shipped_a.read_bytes())
    missing = tmp_path / "missing.bin"
    engine = _engine(models["a"], None, [missing, shipped_b, shipped_a])
    engine.run({"x": X})
    assert engine.stats["programs_from_cache"] == 1 and engine.stats["programs_from_source"] == 0
    assert engine.stats["program_origins"] == [str(shipped_b)]
    assert engine.stats["cache_files_written"] == []  # read-only paths are never written
    memory = _engine(models["a"], None, None, memory=shipped_a.read_bytes())
    assert memory.stats["programs_from_cache"] == 1


def test_no_file_anywhere_warns_once(models, tmp_path: Path) -> None:
    engine = _engine(models["a"], None, [tmp_path / "nope.bin"])
    engine.run({"x": X})
    engine.run({"x": X})
    assert engine.stats["warnings"] == [NO_BINARY_WARNING]


def test_unwritable_storage_warns_and_keeps_working(models, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    engine = _engine(models["a"], blocker / "cache")  # mkdir fails even for root
    y = engine.run({"x": X})["y"]
    y2 = engine.run({"x": X})["y"]
    np.testing.assert_array_equal(y, y2)
    problems = [w for w in engine.stats["warnings"] if "cannot write" in w or "not saved" in w]
    assert len(problems) == 1 and engine.stats["cache_files_written"] == []


def test_merge_two_fingerprints_cli(models, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    subprocess.run([sys.executable, "-m", "mace.cli.main", "cache", "build", str(models["a"]), "-o", str(local)],
                   check=True, capture_output=True)
    fake = _fake_fingerprint()
    other = tmp_path / "other.bin"
    other.write_bytes(program_cache.encode(program_cache.CacheFile({fake.id(): fake}, [
        program_cache.CacheEntry.for_program("kernel void k() {}", "", fake, b"blob", 2.0)])))
    merged = tmp_path / "merged.bin"
    subprocess.run([sys.executable, "-m", "mace.cli.main", "cache", "merge", str(local), str(other), "-o",
                    str(merged)], check=True, capture_output=True)
    result = program_cache.decode(merged.read_bytes())
    assert len(result.fingerprints) == 2 and len(result.entries) == 2
    verify = subprocess.run([sys.executable, "-m", "mace.cli.main", "cache", "verify", str(merged)],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and "valid (2 entries, 2 device fingerprints)" in verify.stdout
    engine = _engine(models["a"], None, [merged])
    assert engine.stats["programs_from_cache"] == 1


def test_two_processes_saving_at_once_lose_nothing(models, tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(models[name]), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    parsed = program_cache.decode((tmp_path / PROGRAM_CACHE_NAME).read_bytes())
    assert len(parsed.entries) == 2
    for name in ("a", "b"):
        assert _engine(models[name], tmp_path).stats["programs_from_source"] == 0


def test_cache_verify_and_inspect_report_damage(models, tmp_path: Path) -> None:
    path = tmp_path / "c.bin"
    subprocess.run([sys.executable, "-m", "mace.cli.main", "cache", "build", str(models["a"]), "-o", str(path)],
                   check=True, capture_output=True)
    inspect = subprocess.run([sys.executable, "-m", "mace.cli.main", "cache", "inspect", str(path)],
                             capture_output=True, text=True)
    assert inspect.returncode == 0 and "verdict: valid" in inspect.stdout and "00000000  4d 43 4c 50" in inspect.stdout
    path.write_bytes(path.read_bytes()[:-7])
    verify = subprocess.run([sys.executable, "-m", "mace.cli.main", "cache", "verify", str(path)],
                            capture_output=True, text=True)
    assert verify.returncode == 1 and "invalid: byte offset" in verify.stdout


def test_signed_cache_rejects_unsigned_and_tampered_files(models, tmp_path: Path) -> None:
    key = b"app-secret"
    signed = mace.GPUContextBuilder().set_storage_path(tmp_path).set_cache_key(key).finalize()
    mace.Engine(models["a"], device="opencl", gpu_context=signed).warm_up()
    cache_path = tmp_path / PROGRAM_CACHE_NAME
    assert program_cache.validate(cache_path.read_bytes(), key=key) == []
    assert program_cache.validate(cache_path.read_bytes(), key=b"other") != []

    def start(with_key: bytes | None) -> mace.Engine:
        builder = mace.GPUContextBuilder().set_storage_path(tmp_path)
        if with_key:
            builder.set_cache_key(with_key)
        return mace.Engine(models["a"], device="opencl", gpu_context=builder.finalize())

    assert start(key).stats["programs_from_cache"] == 1
    # an unsigned but otherwise valid file (what an attacker without the key can write) is rejected
    unsigned = program_cache.encode(program_cache.decode(cache_path.read_bytes()))
    cache_path.write_bytes(unsigned)
    engine = start(key)
    assert engine.stats["programs_from_cache"] == 0 and engine.stats["programs_from_source"] == 1
    assert any("signature" in w or "signed" in w for w in engine.stats["warnings"])
    engine.run({"x": X})  # rebuilds and saves a signed file again
    assert program_cache.validate(cache_path.read_bytes(), key=key) == []
    # a well-formed file whose blob was swapped and every hash recomputed, but not the HMAC
    parsed = program_cache.decode(cache_path.read_bytes())
    parsed.entries[0].blob = parsed.entries[0].blob[:-1] + bytes([parsed.entries[0].blob[-1] ^ 1])
    forged = program_cache.encode(parsed, key=b"attacker-key")
    cache_path.write_bytes(forged)
    engine = start(key)
    assert engine.stats["programs_from_source"] == 1 and engine.stats["warnings"]


def test_size_cap_evicts_least_recently_used(models, tmp_path: Path) -> None:
    mace.Engine(models["a"], device="opencl",
                gpu_context=mace.GPUContextBuilder().set_storage_path(tmp_path).finalize()).warm_up()
    cache_path = tmp_path / PROGRAM_CACHE_NAME
    size_a = len(program_cache.decode(cache_path.read_bytes()).entries[0].blob)
    capped = mace.GPUContextBuilder().set_storage_path(tmp_path).set_max_cache_bytes(size_a + 10).finalize()
    engine = mace.Engine(models["b"], device="opencl", gpu_context=capped)
    engine.warm_up()
    assert engine.stats.get("cache_entries_evicted") == 1
    kept = program_cache.decode(cache_path.read_bytes())
    assert len(kept.entries) == 1  # b (in use) stays, a (older) is gone
    assert _engine(models["b"], tmp_path).stats["programs_from_cache"] == 1
    assert _engine(models["a"], tmp_path).stats["programs_from_cache"] == 0


def test_last_used_is_refreshed_at_most_daily(models, tmp_path: Path) -> None:
    _engine(models["a"], tmp_path).warm_up()
    cache_path = tmp_path / PROGRAM_CACHE_NAME
    parsed = program_cache.decode(cache_path.read_bytes())
    recent = cache_path.read_bytes()
    engine = _engine(models["a"], tmp_path)
    engine.run({"x": X})
    assert cache_path.read_bytes() == recent and engine.stats["cache_files_written"] == []
    parsed.entries[0].last_used -= 3 * 24 * 3600  # three days unused
    cache_path.write_bytes(program_cache.encode(parsed))
    engine = _engine(models["a"], tmp_path)
    engine.run({"x": X})
    assert engine.stats["cache_files_written"] == [str(cache_path)]
    refreshed = program_cache.decode(cache_path.read_bytes()).entries[0]
    assert refreshed.last_used > parsed.entries[0].last_used + 2 * 24 * 3600
    assert refreshed.created == parsed.entries[0].created
