"""File-system faults around the cache files and models: each test is one row of docs/reliability.md (the table
names the test). Hangs, unbounded reads, lost data, silent write failures, private files and repeated warnings.

Most use the stores and the CLI directly (no device); the engine tests need an OpenCL device (pocl here) and skip
without one. Permission cases that root would pass are run as a throw-away non-root user when one can be made.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mace
from mace.cachefiles import program_cache, tuned_params, xiaomi
from mace.cachefiles.program_cache import CacheEntry, ProgramCacheFormat
from mace.cachefiles.service import StoredRecords, Warnings
from mace.cachefiles.stores import LOCK_TIMEOUT_SECONDS, PROGRAM_CACHE_NAME, TUNED_PARAMS_NAME, FileStore, StoreError
from mace.cachefiles.tuned_params import TunedParamsFormat
from mace.cli.main import main
from mace.errors import ModelFormatError
from mace.model import modelfile
from support import tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cachefiles"))
from cachefile_samples import FP_CPU, program_cache_records, tuned_params_records

log = logging.getLogger("mace.tests.faults")
HANG_SECONDS = 10.0  # a step that takes longer than this is counted as a hang
KEY = b"fault-key"


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """fn() in a daemon thread: its result (or its exception re-raised); a failed test, not a hung run, when it has
    not returned within ``seconds``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"hung: no result within {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield path
    with contextlib.suppress(OSError):  # a reader blocked in open() (the bug) is released by a writer opening it
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def warnings_list() -> tuple[list[str], Warnings]:
    messages: list[str] = []
    return messages, Warnings(log, messages)


def programs(path: Path, messages: list[str] | None = None, key: bytes | None = None,
             store: FileStore | None = None) -> StoredRecords[CacheEntry, program_cache.CacheFile]:  # fmt: skip
    from mace.opencl.programs import _wording

    messages = [] if messages is None else messages
    return StoredRecords(store or FileStore(path), ProgramCacheFormat, FP_CPU, key, Warnings(log, messages),
                         _wording(True))  # fmt: skip


def new_entry(number: int = 0) -> CacheEntry:
    return CacheEntry.for_program(f"__kernel void k{number}() {{}}", "", FP_CPU, b"blob%d" % number, 5000.0)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def xiaomi_file() -> bytes:
    data = xiaomi.encode_mace_v11([("conv2d_opencl_kernel", b"\x7fELF" + bytes(60))])
    assert xiaomi.detect(data) == "mace-v1.1"
    return data


# -- 2. hangs ---------------------------------------------------------------------------------------------------------


def test_fifo_as_cache_file_is_named_not_waited_on(fifo: Path) -> None:
    with pytest.raises(StoreError, match="FIFO"):
        within(HANG_SECONDS, FileStore(fifo).read)
    messages: list[str] = []
    records = programs(fifo, messages)
    assert within(HANG_SECONDS, records.load) == {} and len(messages) == 1 and str(fifo) in messages[0]
    assert within(HANG_SECONDS, lambda: records.save([new_entry()])) is False
    assert fifo.exists() and not fifo.is_file()  # still the FIFO: nothing was written over it


def test_fifo_as_model_is_named_not_waited_on(fifo: Path) -> None:
    with pytest.raises(ModelFormatError, match="FIFO"):
        within(HANG_SECONDS, lambda: modelfile.load(fifo))


def test_cli_inspect_and_verify_of_a_fifo_exit_at_once(fifo: Path) -> None:
    for verb in ("inspect", "verify"):
        proc = subprocess.run([sys.executable, "-m", "mace.cli.main", "cache", verb, str(fifo)], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "FIFO" in proc.stderr and str(fifo) in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()  # hangs until the test ends
""")


@pytest.fixture
def hung_lock_holder(tmp_path: Path) -> Iterator[Path]:
    """A process that holds the lock of tmp_path/PROGRAM_CACHE_NAME and never lets go (until the test ends)."""
    lock = tmp_path / f"{PROGRAM_CACHE_NAME}.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield tmp_path / PROGRAM_CACHE_NAME
    finally:
        proc.kill()
        proc.wait()


def test_a_hung_lock_holder_costs_one_save_not_the_engine(hung_lock_holder: Path) -> None:
    messages: list[str] = []
    records = programs(hung_lock_holder, messages)
    records.load()
    started = time.monotonic()
    assert records.save([new_entry()]) is False
    waited = time.monotonic() - started
    assert LOCK_TIMEOUT_SECONDS <= 2.0 and waited < 3.0, f"the save waited {waited:.1f} s"
    assert len(messages) == 1 and f"{hung_lock_holder}.lock: lock not acquired" in messages[0]
    assert records.save([new_entry(1)]) is False and len(messages) == 1  # warned once
    assert not hung_lock_holder.exists()


def test_storage_in_proc_self_fails_at_once_naming_the_lock() -> None:
    store = FileStore(Path("/proc/self") / PROGRAM_CACHE_NAME)
    assert store.read() is None
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        within(HANG_SECONDS + 30, lambda: store.update(lambda current: b""))
    assert time.monotonic() - started < 1.0
    assert str(caught.value).startswith(f"/proc/self/{PROGRAM_CACHE_NAME}.lock: ")


# -- 3. memory --------------------------------------------------------------------------------------------------------

MEASURE = textwrap.dedent("""
    import sys, time
    started = time.monotonic()
    if sys.argv[1] == "load":
        from mace.cachefiles.stores import FileStore, StoreError
        try:
            FileStore(sys.argv[2]).read()
            outcome = "read"
        except StoreError as exc:
            outcome = str(exc)
    else:
        from mace.cli.main import main
        outcome = f"exit {main(['cache', sys.argv[1], sys.argv[2]])}"
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would count the forking pytest's own memory
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(f"{peak} {time.monotonic() - started:.3f} {outcome}")
""")


@pytest.mark.parametrize("how", ["load", "verify", "inspect"])
def test_a_huge_sparse_cache_file_is_refused_by_its_size(tmp_path: Path, how: str) -> None:
    from mace.cachefiles import stores

    path = tmp_path / PROGRAM_CACHE_NAME
    with open(path, "wb") as f:
        f.truncate(stores.MAX_FILE_BYTES + 4096)  # sparse: no disk used, but every byte reads as zero
    proc = subprocess.run([sys.executable, "-c", MEASURE, how, str(path)], capture_output=True, text=True, timeout=120)
    rss_kib, seconds, outcome = proc.stdout.strip().splitlines()[-1].split(" ", 2)
    assert int(rss_kib) < 400 * 1024, f"{how}: peak RSS {int(rss_kib) // 1024} MiB"
    assert float(seconds) < 5.0
    if how == "load":
        assert "-byte limit" in outcome and str(path) in outcome
    else:
        assert outcome != "exit 0" and "-byte limit" in proc.stderr and "Traceback" not in proc.stderr


# -- 4. lost data -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults_model")
    onnx_path = root / "tiny.onnx"
    onnx_path.write_bytes(tiny_model("Relu", {"x": [1, 3, 4, 4]}, {"y": [1, 3, 4, 4]}).SerializeToString())
    mace.convert(onnx_path, root / "tiny.mace")
    return root / "tiny.mace"


def opencl_or_skip() -> None:
    cl = pytest.importorskip("pyopencl")
    try:
        if not any(p.get_devices() for p in cl.get_platforms()):
            pytest.skip("no OpenCL device")
    except cl.Error:
        pytest.skip("no OpenCL platform")


@pytest.mark.parametrize("kind", ["model", "text", "xiaomi"])
def test_cache_build_never_overwrites_a_file_it_does_not_own(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    opencl_or_skip()
    output = tmp_path / f"existing.{kind}"
    content = {"model": model.read_bytes(), "text": b"my notes\n", "xiaomi": xiaomi_file()}[kind]
    output.write_bytes(content)
    code, out, err = run_cli(["cache", "build", str(model), "-o", str(output)], capsys)
    assert code == 2 and output.read_bytes() == content
    assert len(err.strip().splitlines()) == 1 and str(output) in err and "--force" in err and "compiled" not in out
    code, out, err = run_cli(["cache", "build", str(model), "-o", str(output), "--force"], capsys)
    assert code == 0 and program_cache.validate(output.read_bytes()) == []


def test_a_xiaomi_cache_in_the_storage_directory_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / PROGRAM_CACHE_NAME
    path.write_bytes(xiaomi_file())
    messages: list[str] = []
    records = programs(path, messages)
    assert records.load() == {} and not records.needs_rewrite
    assert records.save([new_entry()]) is False
    assert path.read_bytes() == xiaomi_file()
    assert len(messages) == 1 and "XiaoMi MACE program cache" in messages[0] and "bad magic" not in messages[0]


def test_a_damaged_magic_is_still_mace_s_own_file(tmp_path: Path) -> None:
    path = tmp_path / PROGRAM_CACHE_NAME
    path.write_bytes(b"XXXX" + program_cache.encode(program_cache_records())[4:])
    records = programs(path)
    records.load()
    assert records.needs_rewrite and records.save([new_entry()])
    assert program_cache.validate(path.read_bytes()) == []


def test_a_process_without_the_key_never_strips_a_signature(tmp_path: Path) -> None:
    path = tmp_path / PROGRAM_CACHE_NAME
    signed = program_cache.encode(program_cache_records(), key=KEY)
    path.write_bytes(signed)
    messages: list[str] = []
    keyless = programs(path, messages)
    assert len(keyless.load()) == 2  # readable, unchecked
    assert keyless.save([new_entry()]) is False and path.read_bytes() == signed
    assert len(messages) == 1 and "signed" in messages[0] and "key" in messages[0]
    keyed = programs(path, key=KEY)
    assert len(keyed.load()) == 2 and keyed.save([new_entry()])  # the keyed process keeps everything
    assert len(program_cache.decode(path.read_bytes(), key=KEY).entries) == 5


def test_tuned_params_signature_is_kept_too(tmp_path: Path) -> None:
    path = tmp_path / TUNED_PARAMS_NAME
    signed = tuned_params.encode(tuned_params_records(), key=KEY)
    path.write_bytes(signed)
    from mace.opencl.tuning.params import TunedParamsStore

    store = TunedParamsStore(path, FP_CPU)
    store.load()
    store.record(store.new_entry("k", "spec", (4,), (2,), 1.0))
    assert store.save() is False and path.read_bytes() == signed


def test_cache_merge_keeps_signatures(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("MACE_CACHE_KEY", raising=False)
    signed = tmp_path / "signed.bin"
    signed.write_bytes(program_cache.encode(program_cache_records(), key=KEY))
    unsigned = tmp_path / "unsigned.bin"
    unsigned.write_bytes(program_cache.encode(program_cache.CacheFile({FP_CPU.id(): FP_CPU}, [new_entry()])))
    out_path = tmp_path / "merged.bin"
    code, _, err = run_cli(["cache", "merge", str(signed), str(unsigned), "-o", str(out_path)], capsys)
    assert code == 2 and str(signed) in err and "--key" in err and not out_path.exists()
    code, _, err = run_cli(["cache", "merge", str(signed), str(unsigned), "-o", str(out_path), "--key",
                            KEY.decode()], capsys)  # fmt: skip
    assert code == 0, err
    assert len(program_cache.decode(out_path.read_bytes(), key=KEY).entries) == 5
    code, _, err = run_cli(["cache", "merge", str(unsigned), "-o", str(out_path)], capsys)  # would downgrade
    assert code == 2 and "signed" in err and program_cache.validate(out_path.read_bytes(), key=KEY) == []
    monkeypatch.setenv("MACE_CACHE_KEY", "wrong")
    code, _, err = run_cli(["cache", "merge", str(signed), "-o", str(tmp_path / "m2.bin")], capsys)
    assert code == 2 and str(signed) in err


def test_cache_merge_never_overwrites_a_file_it_does_not_own(tmp_path: Path, model: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    source = tmp_path / "a.bin"
    source.write_bytes(program_cache.encode(program_cache_records()))
    before = model.read_bytes()
    code, _, err = run_cli(["cache", "merge", str(source), "-o", str(model)], capsys)
    assert code == 2 and model.read_bytes() == before and ".mace model" in err


def test_cache_clear_leaves_files_it_does_not_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / PROGRAM_CACHE_NAME).write_bytes(xiaomi_file())
    (tmp_path / TUNED_PARAMS_NAME).write_bytes(tuned_params.encode(tuned_params_records()))
    code, out, _ = run_cli(["cache", "clear", "--storage-path", str(tmp_path)], capsys)
    assert code == 0 and (tmp_path / PROGRAM_CACHE_NAME).read_bytes() == xiaomi_file()
    assert not (tmp_path / TUNED_PARAMS_NAME).exists() and "left" in out


# -- 5. writes that fail ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_cache_build_that_cannot_write_fails_naming_the_file(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    opencl_or_skip()
    from mace.cachefiles import stores

    def failing_write(path: Path, data: bytes) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(stores, "atomic_write", failing_write)
    output = tmp_path / "out.bin"
    status, out, err = run_cli(["cache", "build", str(model), "-o", str(output)], capsys)
    assert status == 2 and "compiled" not in out and not output.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(output) in lines[0] and os.strerror(code) in lines[0]


def non_root_user() -> str:
    """A user without root's powers, for permission cases; skips (saying why) when none can be had."""
    if os.geteuid() != 0:
        return ""  # already not root: run directly
    name = "mace-fault-test"
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: a read-only directory would not stop root")
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"running as root and useradd failed: {made.stderr.decode().strip()}")
    return name


def as_user(user: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run(prefix + argv, capture_output=True, text=True, timeout=300, **kwargs)


def without_root_powers() -> list[str]:
    """A command prefix that runs without the capabilities that let root write into a read-only directory (root
    stays root otherwise, so this checkout's python still runs); [] when not root. Skips when neither works."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only directory would not stop root")
    prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root and setpriv cannot drop capabilities here")
    return prefix


def test_cache_build_into_a_read_only_directory_fails(tmp_path: Path, model: Path) -> None:
    opencl_or_skip()
    prefix = without_root_powers()
    shared = tmp_path / "ro"
    shared.mkdir()
    shutil.copy(model, shared / "m.mace")
    shared.chmod(0o555)
    output = shared / "out.bin"
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "mace.cli.main", "cache", "build", str(shared / "m.mace"),
                               "-o", str(output)], capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        shared.chmod(0o755)
    assert proc.returncode == 2 and "compiled" not in proc.stdout and not output.exists(), proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]  # (warnings may come before it)
    assert len(errors) == 1 and str(output) in errors[0] and "Traceback" not in proc.stderr


# -- 7. modes ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: Callable[[int], None], mask: int, mode: int) -> None:
    umask(mask)
    onnx_path = tmp_path / "tiny.onnx"
    onnx_path.write_bytes(tiny_model("Relu", {"x": [1, 2]}, {"y": [1, 2]}).SerializeToString())
    converted = tmp_path / "tiny.mace"
    mace.convert(onnx_path, converted)
    store = FileStore(tmp_path / PROGRAM_CACHE_NAME)
    store.update(lambda current: program_cache.encode(program_cache_records()))
    for path in (converted, store.path, store.lock_path):
        assert path.stat().st_mode & 0o777 == mode, f"{path.name}: {oct(path.stat().st_mode & 0o777)}"


def test_another_user_can_read_a_shipped_model(umask: Callable[[int], None]) -> None:
    user = non_root_user()
    if not user:
        pytest.skip("not root: no second user to read as")
    umask(0o022)
    tmp_path = Path(tempfile.mkdtemp(prefix="mace-shipped-"))  # pytest's own tmp dirs are private to root
    os.chmod(tmp_path, 0o755)
    onnx_path = tmp_path / "tiny.onnx"
    onnx_path.write_bytes(tiny_model("Relu", {"x": [1, 2]}, {"y": [1, 2]}).SerializeToString())
    converted = tmp_path / "tiny.mace"
    mace.convert(onnx_path, converted)
    proc = as_user(user, ["head", "-c", "7", str(converted)])
    shutil.rmtree(tmp_path)
    assert proc.returncode == 0 and proc.stdout == "MACEMDL", proc.stderr


# -- 8. noise ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "records"), [(ProgramCacheFormat, program_cache_records),
                                              (TunedParamsFormat, tuned_params_records)])  # fmt: skip
def test_one_bit_flip_is_at_most_one_warning(fmt: Any, records: Callable[[], Any]) -> None:
    from mace.cachefiles.stores import MemoryStore
    from mace.opencl.programs import _wording

    good = fmt.encode(records())
    rng = random.Random(8)
    counts: dict[int, int] = {}
    for _ in range(200):
        data = bytearray(good)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        messages: list[str] = []
        StoredRecords(MemoryStore(bytes(data)), fmt, FP_CPU, None, Warnings(log, messages), _wording(True)).load()
        counts[len(messages)] = counts.get(len(messages), 0) + 1
    print(f"\n{fmt.__name__}: warnings per single-bit flip: {dict(sorted(counts.items()))}")
    assert set(counts) <= {0, 1}


def test_tuned_warnings_are_printed_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mace.opencl.tuning.params import TunedParamsStore

    path = tmp_path / TUNED_PARAMS_NAME
    path.write_bytes(b"MCTP" + b"\0" * 60)
    runtime_warn = Warnings(logging.getLogger("mace.opencl"))  # what the runtime passes as on_warning
    with caplog.at_level(logging.WARNING):
        store = TunedParamsStore(path, FP_CPU, on_warning=runtime_warn)
        store.load()
    assert len(store.warnings) == 1 and runtime_warn.messages == store.warnings
    assert [r.getMessage() for r in caplog.records] == store.warnings


def test_a_corrupt_tuned_file_is_rewritten_after_the_first_run(tmp_path: Path, model: Path) -> None:
    opencl_or_skip()
    good = tuned_params.encode(tuned_params_records())
    damaged = bytearray(good)
    damaged[-40] ^= 1  # an entry of another device: the file stays, one entry is dropped
    (tmp_path / TUNED_PARAMS_NAME).write_bytes(bytes(damaged))

    def start() -> mace.Engine:
        ctx = mace.GPUContextBuilder().set_storage_path(tmp_path).finalize()
        return mace.Engine(model, device="opencl", gpu_context=ctx)

    engine = start()
    tuned_warnings = [w for w in engine.stats["warnings"] if TUNED_PARAMS_NAME in w]
    assert len(tuned_warnings) == 1
    engine.run({"x": np.zeros((1, 3, 4, 4), np.float32)})
    assert tuned_params.validate((tmp_path / TUNED_PARAMS_NAME).read_bytes()) == []
    again = start()
    assert not [w for w in again.stats["warnings"] if TUNED_PARAMS_NAME in w]


def test_a_lock_problem_names_the_lock_file(tmp_path: Path) -> None:
    path = tmp_path / PROGRAM_CACHE_NAME
    (tmp_path / f"{PROGRAM_CACHE_NAME}.lock").mkdir()  # in the way of the lock file
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        within(HANG_SECONDS + 30, lambda: FileStore(path).update(lambda current: b""))
    assert time.monotonic() - started < 1.0
    assert str(caught.value).startswith(f"{path}.lock: ")


# -- the whole matrix: every fault under every command, from fresh processes ------------------------------------------

MATRIX_CHILD = textwrap.dedent("""
    import contextlib, io, json, os, sys, time, traceback
    from mace.cli.main import main
    results = []
    for case in json.loads(sys.argv[1]):
        err, out = io.StringIO(), io.StringIO()
        started = time.monotonic()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(case["argv"])
        except BaseException:
            code, text = -1, traceback.format_exc()
            err.write(text)
        results.append({"name": case["name"], "code": code, "seconds": time.monotonic() - started,
                        "stderr": err.getvalue()})
        print(json.dumps(results[-1]), flush=True)
""")


def fault_files(root: Path, model: Path) -> dict[str, Path]:
    """One path per fault: what a user, a crash or another program may leave where mace reads."""
    from mace.cachefiles import stores

    faults = root / "faults"
    faults.mkdir()
    made: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        made[name] = faults / name
        made[name].write_bytes(data)

    good = program_cache.encode(program_cache_records())
    put("empty", b"")
    put("text", b"hello\n")
    put("model", model.read_bytes())
    put("xiaomi", xiaomi_file())
    put("truncated", good[: len(good) // 2])
    put("flipped", good[:-40] + bytes([good[-40] ^ 1]) + good[-39:])
    put("signed", program_cache.encode(program_cache_records(), key=KEY))
    put("tuned", tuned_params.encode(tuned_params_records()))
    os.mkfifo(faults / "fifo")
    made["fifo"] = faults / "fifo"
    (faults / "directory").mkdir()
    made["directory"] = faults / "directory"
    made["missing"] = faults / "missing"
    made["char-device"] = Path("/dev/zero")
    with open(faults / "sparse", "wb") as f:
        f.truncate(stores.MAX_FILE_BYTES + 1)
    made["sparse"] = faults / "sparse"
    return made


def test_fault_matrix_no_crash_no_hang_no_traceback(tmp_path: Path, model: Path) -> None:
    files = fault_files(tmp_path, model)
    good = tmp_path / "good.bin"
    good.write_bytes(program_cache.encode(program_cache_records()))
    cases = []
    for name, path in files.items():
        for verb in ("inspect", "verify"):
            cases.append({"name": f"{verb} {name}", "argv": ["cache", verb, str(path)]})
        cases.append({"name": f"merge {name}", "argv": ["cache", "merge", str(path), "-o", str(tmp_path / "m.bin")]})
        if path.parent == tmp_path / "faults" and name not in ("directory", "missing"):
            copy = tmp_path / f"out-{name}"
            if name == "fifo":
                os.mkfifo(copy)
            elif not path.is_dir():
                shutil.copyfile(path, copy, follow_symlinks=True)
            before = None if name == "fifo" else copy.read_bytes()
            cases.append({"name": f"merge -o {name}", "argv": ["cache", "merge", str(good), "-o", str(copy)],
                          "before": before, "path": str(copy)})
        cases.append({"name": f"run {name}", "argv": ["info", str(path)]})
    import json

    proc = subprocess.Popen([sys.executable, "-c", MATRIX_CHILD, json.dumps([{k: v for k, v in c.items()
                                                                            if k in ("name", "argv")}
                                                                           for c in cases])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=HANG_SECONDS * 6)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    results = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    hangs = len(cases) - len(results) + sum(r["seconds"] > HANG_SECONDS for r in results)
    crashes = sum(r["code"] not in (0, 1, 2) for r in results)
    tracebacks = sum("Traceback" in r["stderr"] or "internal error" in r["stderr"] for r in results)
    overwritten = [c["name"] for c in cases if c.get("before") and not c["before"].startswith(b"MCLP")
                   and Path(c["path"]).read_bytes() != c["before"]]  # fmt: skip
    print(f"\nfault matrix: {len(cases)} cases tried, {crashes} crashes, {hangs} hangs, {tracebacks} tracebacks, "
          f"{len(overwritten)} foreign files overwritten")  # fmt: skip
    bad = [r for r in results if r["code"] not in (0, 1, 2) or r["seconds"] > HANG_SECONDS
           or "Traceback" in r["stderr"] or "internal error" in r["stderr"]]  # fmt: skip
    assert (crashes, hangs, tracebacks, overwritten) == (0, 0, 0, []), (bad, stderr[-2000:])


def test_the_reliability_table_names_real_tests() -> None:
    """docs/reliability.md: every test a row names exists, and every test of this file has its row."""
    import re

    here = Path(__file__).parent
    table = (here.parents[1] / "docs" / "reliability.md").read_text()
    named = re.findall(r"\| `((?:test_\w+\.py::)?test_\w+|test_\w+\.py)` \|", table)
    assert named
    for name in named:
        module, _, test = name.rpartition("::") if "::" in name else (
            ("test_faults.py", "", name) if not name.endswith(".py") else (name, "", ""))  # fmt: skip
        source = (here / module).read_text()
        assert not test or re.search(rf"^def {test}\(", source, re.M), f"{name}: no such test"
    mine = re.findall(r"^def (test_\w+)\(", Path(__file__).read_text(), re.M)
    missing = [t for t in mine if t not in named and t != "test_the_reliability_table_names_real_tests"]
    assert not missing, f"tests without a row in docs/reliability.md: {missing}"
