"""A well-formed cache file holding a wrong binary must not brick an app (issue item 1).

The file's hashes, keys and fingerprints are all right (recomputed by whoever cut the binary), so only the binary
itself can tell: pocl segfaults on a binary cut short (exit 139 on every start before the fix). Each engine runs in
a child process, so a crash is an exit status here, not the end of the test run:

- a cut binary (half, or 100 bytes) in the writable storage cache or in a shipped ``--binary-path`` file is rejected
  by its structure (one warning naming the file, a build from source, the storage entry replaced), and
  ``mace cache verify`` reports the entry invalid;
- a binary the structure checks cannot fault that crashes the driver anyway (simulated: the child's driver call
  kills the process) crashes one start; the next start skips that entry (the crash sentinel), warns once naming the
  file and builds from source; a shipped file keeps being skipped, never crashing again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import mace
from mace.cachefiles import program_cache
from mace.cachefiles.sentinel import DIRECTORY_NAME
from mace.cachefiles.stores import PROGRAM_CACHE_NAME
from mace.cli.main import main

pytest.importorskip("pyopencl")

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import mace
    from mace.opencl import programs
    args = json.loads(sys.argv[1])
    if args.get("crash_in_driver"):
        def crash(self, blob, options):  # a driver that faults on the binary (SIGKILL: LLVM's handlers catch SIGSEGV)
            os.kill(os.getpid(), signal.SIGKILL)
        programs.ProgramCache._driver_build = crash
    if args.get("no_checks"):  # as before the fix: the binary goes to the driver unchecked
        from mace.cachefiles import binary_checks
        binary_checks.check = lambda *a, **k: None
    builder = mace.GPUContextBuilder()
    builder = builder.set_storage_path(args["storage"]) if args.get("storage") else builder.disable_storage()
    if args.get("binaries"):
        builder.set_opencl_binary_paths(args["binaries"])
    engine = mace.Engine(args["model"], device="opencl", gpu_context=builder.finalize())
    engine.warm_up()
    print(json.dumps({k: engine.stats[k] for k in ("programs_from_source", "programs_from_cache", "warnings")}))
""")


def _model() -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "crafted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              initializer=[helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def start(model: Path, tmp: Path, **args: Any) -> tuple[int, dict[str, Any] | None, str]:
    """One engine start in a child: (exit status, its stats or None when it died, stderr)."""
    env = {**os.environ, "TMPDIR": str(tmp / "tmp")}  # the per-user sentinel of storage-less starts stays in tmp
    (tmp / "tmp").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"model": str(model), **args})],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    stats = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    return proc.returncode, stats, proc.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """The model and a valid program cache for it (built by a child, as an app would)."""
    tmp = tmp_path_factory.mktemp("crafted")
    model = tmp / "m.mace"
    mace.convert(_model(), model)
    rc, stats, err = start(model, tmp, storage=str(tmp / "storage"))
    assert rc == 0 and stats is not None and stats["programs_from_source"] == 1, err
    return model, (tmp / "storage" / PROGRAM_CACHE_NAME).read_bytes()


def cut(data: bytes, how: str) -> bytes:
    """The same file with every binary cut short (half, or to 100 bytes) and every hash recomputed."""
    cache = program_cache.decode(data)
    for entry in cache.entries:
        entry.blob = entry.blob[: len(entry.blob) // 2] if how == "half" else entry.blob[:100]
    return program_cache.encode(cache)


def warnings_about(stats: dict[str, Any], text: str) -> list[str]:
    return [w for w in stats["warnings"] if text in w]


def key_of(data: bytes) -> str:
    return program_cache.decode(data).entries[0].program_key[:12]


@pytest.mark.parametrize("how", ["half", "100"])
def test_verify_reports_a_cut_binary(built: tuple[Path, bytes], tmp_path: Path, how: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    _, data = built
    path = tmp_path / "cut.bin"
    path.write_bytes(cut(data, how))
    assert main(["cache", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "invalid: entry 0" in out and key_of(data) in out and "pocl binary" in out, out
    (tmp_path / "ok.bin").write_bytes(data)
    assert main(["cache", "verify", str(tmp_path / "ok.bin")]) == 0


@pytest.mark.parametrize("how", ["half", "100"])
def test_cut_binary_in_storage_never_crashes(built: tuple[Path, bytes], tmp_path: Path, how: str) -> None:
    model, data = built
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / PROGRAM_CACHE_NAME).write_bytes(cut(data, how))
    rc, stats, err = start(model, tmp_path, storage=str(storage))
    assert rc == 0, f"the first start crashed (exit {rc}): {err}"  # pocl: rejected by structure before the driver
    assert stats is not None and stats["programs_from_source"] == 1 and stats["programs_from_cache"] == 0
    [warning] = warnings_about(stats, key_of(data))
    assert str(storage / PROGRAM_CACHE_NAME) in warning and "malformed" in warning and "dropping it" in warning
    rc, stats, err = start(model, tmp_path, storage=str(storage))  # the storage entry was replaced
    assert rc == 0 and stats is not None, err
    assert stats["programs_from_cache"] == 1 and stats["programs_from_source"] == 0 and not stats["warnings"]
    assert main(["cache", "verify", str(storage / PROGRAM_CACHE_NAME)]) == 0


@pytest.mark.parametrize("storage_on", [True, False], ids=["with-storage", "storage-off"])
def test_cut_binary_shipped_never_crashes(built: tuple[Path, bytes], tmp_path: Path, storage_on: bool) -> None:
    model, data = built
    shipped = tmp_path / "shipped.bin"
    shipped.write_bytes(cut(data, "half"))
    storage = str(tmp_path / "storage") if storage_on else None
    for run in range(2):
        rc, stats, err = start(model, tmp_path, storage=storage, binaries=[str(shipped)])
        assert rc == 0 and stats is not None, f"start {run} crashed (exit {rc}): {err}"
        if storage_on and run == 1:  # built from source once, then served by the storage cache
            assert stats["programs_from_cache"] == 1 and not warnings_about(stats, key_of(data))
        else:
            assert stats["programs_from_source"] == 1
            [warning] = warnings_about(stats, key_of(data))
            assert str(shipped) in warning and "malformed" in warning and "dropping" not in warning
    assert shipped.read_bytes() == cut(data, "half")  # read-only: never written


def test_sentinel_skips_the_entry_that_crashed_the_driver(built: tuple[Path, bytes], tmp_path: Path) -> None:
    model, data = built
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / PROGRAM_CACHE_NAME).write_bytes(data)  # structurally fine: only the sentinel can help
    rc, _, err = start(model, tmp_path, storage=str(storage), crash_in_driver=True)
    assert rc == -signal.SIGKILL, err
    assert [p.name.startswith("loading-") for p in (storage / DIRECTORY_NAME).iterdir()] == [True]
    rc, stats, err = start(model, tmp_path, storage=str(storage))
    assert rc == 0 and stats is not None, f"the second start crashed (exit {rc}): {err}"
    assert stats["programs_from_source"] == 1 and stats["programs_from_cache"] == 0
    [warning] = warnings_about(stats, key_of(data))
    assert str(storage / PROGRAM_CACHE_NAME) in warning
    assert "crashed while the driver loaded this binary" in warning and "dropping it" in warning
    [entry] = program_cache.decode((storage / PROGRAM_CACHE_NAME).read_bytes()).entries
    assert entry.created > program_cache.decode(data).entries[0].created  # the entry that crashed is gone
    rc, stats, err = start(model, tmp_path, storage=str(storage))  # its replacement loads
    assert rc == 0 and stats is not None and stats["programs_from_cache"] == 1 and not stats["warnings"], err


def test_a_real_driver_crash_happens_at_most_once(built: tuple[Path, bytes], tmp_path: Path) -> None:
    """With the structure checks off (as before the fix), pocl itself segfaults on the cut binary: once."""
    model, data = built
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / PROGRAM_CACHE_NAME).write_bytes(cut(data, "half"))
    rc, stats, err = start(model, tmp_path, storage=str(storage), no_checks=True)
    if rc == 0:
        pytest.skip("this driver rejects the cut binary without crashing: nothing for the sentinel to do")
    assert rc in (-signal.SIGSEGV, -signal.SIGBUS, -signal.SIGABRT), err
    rc, stats, err = start(model, tmp_path, storage=str(storage), no_checks=True)
    assert rc == 0 and stats is not None, f"the second start crashed too (exit {rc}): {err}"
    assert stats["programs_from_source"] == 1
    [warning] = warnings_about(stats, key_of(data))
    assert str(storage / PROGRAM_CACHE_NAME) in warning
    rc, stats, err = start(model, tmp_path, storage=str(storage), no_checks=True)
    assert rc == 0 and stats is not None and stats["programs_from_cache"] == 1 and not stats["warnings"], err


def test_sentinel_keeps_skipping_a_shipped_entry(built: tuple[Path, bytes], tmp_path: Path) -> None:
    model, data = built
    shipped = tmp_path / "shipped.bin"
    shipped.write_bytes(data)
    rc, _, err = start(model, tmp_path, binaries=[str(shipped)], crash_in_driver=True)
    assert rc == -signal.SIGKILL, err
    for run in range(2):  # read-only and storage off: the crash record in the per-user directory remembers
        rc, stats, err = start(model, tmp_path, binaries=[str(shipped)], crash_in_driver=True)
        assert rc == 0 and stats is not None, f"start {run + 2} crashed (exit {rc}): {err}"
        assert stats["programs_from_source"] == 1
        [warning] = warnings_about(stats, key_of(data))
        assert str(shipped) in warning and "crashed while the driver loaded" in warning


def test_a_load_in_progress_elsewhere_is_not_a_crash(tmp_path: Path) -> None:
    """A live process's mark (its driver still loading) is not stale: the lock is held, the entry is loaded."""
    from mace.cachefiles.sentinel import EntryId, Sentinel

    entry = EntryId("f" * 64, "k" * 64, 100, 1.0)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from mace.cachefiles.sentinel import EntryId, Sentinel
            with Sentinel(Path({str(tmp_path)!r})).loading(EntryId("f" * 64, "k" * 64, 100, 1.0), "file"):
                print("loading", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "loading"
        assert Sentinel(tmp_path).crashed(entry) is None
        assert [p.name.startswith("loading-") for p in tmp_path.iterdir()] == [True]  # left alone
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0 and list(tmp_path.iterdir()) == []  # removed when the load returned
    assert Sentinel(tmp_path).crashed(entry) is None


def test_a_dead_process_mark_is_a_crash(tmp_path: Path) -> None:
    from mace.cachefiles.sentinel import EntryId, Sentinel

    entry = EntryId("f" * 64, "k" * 64, 100, 1.0)
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from mace.cachefiles.sentinel import EntryId, Sentinel
        with Sentinel(Path({str(tmp_path)!r})).loading(EntryId("f" * 64, "k" * 64, 100, 1.0), "the/file.bin"):
            os._exit(1)
    """)
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 1
    crash = Sentinel(tmp_path).crashed(entry)
    assert crash is not None and crash.file == "the/file.bin" and crash.entry == entry
    assert Sentinel(tmp_path).crashed(entry) == crash  # kept (as a crash record) for the next start too
    assert Sentinel(tmp_path).crashed(EntryId("f" * 64, "k" * 64, 100, 2.0)) is None  # a rebuilt entry loads
