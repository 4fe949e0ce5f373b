"""Faults a user meets with the `mace` command and the API: a device spec that matches nothing, input files that are
no arrays, ONNX files that are no models, outputs that cannot be written (a directory, under a file, read-only, a full
disk), negative shapes, caches that cannot be cleared or merged, a batch's top-5 and the compiler's chatter. Each is
one error line (exit 2) naming the option and the file, with nothing left behind, or the right output."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mace
from mace.cli.main import main
from mace.errors import ConversionError, DeviceError, MaceError, UnsupportedOpError
from mace.model.ir import Graph, Node, TensorInfo
from support import tiny_model


def _empty_cache() -> bytes:
    from mace.cachefiles import program_cache

    return program_cache.encode(program_cache.CacheFile())


EMPTY_CACHE = _empty_cache()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_faults")
    (root / "tiny.onnx").write_bytes(tiny_model("Relu", {"x": [1, 3, 4, 4]}, {"y": [1, 3, 4, 4]}).SerializeToString())
    mace.convert(root / "tiny.onnx", root / "tiny.mace")
    (root / "a_file").write_bytes(b"not a directory")
    return root


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(argv: list[str], capsys: pytest.CaptureFixture[str], *expect: str) -> str:
    code, _out, err = run_cli(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expect:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert ".tmp" not in lines[0], lines[0]  # atomic_write's temp file is never the file named
    return lines[0]


def opencl_platform() -> str:
    try:
        from mace.opencl.device import list_devices

        choices = list_devices()
    except Exception as exc:  # no OpenCL here at all (ImportError, a driver error)
        pytest.skip(f"no OpenCL: {exc}")
    if not choices:
        pytest.skip("OpenCL lists no device")
    return choices[0].platform.name.split()[0]


def read_only_dir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    path.chmod(0o555)
    if os.access(path, os.W_OK):
        path.chmod(0o755)
        pytest.skip("running as root: a read-only directory is writable anyway (see the simulated case)")
    return path


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, filled up (root only)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace').strip()}")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def denied_mkstemp(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a read-only directory does to mace.fileio.atomic_write, for when the tests run as root."""
    def deny(prefix: str = "", suffix: str = "", dir: str | None = None, **_: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(str(dir), f"{prefix}xyz{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", deny)


# -- item 5: device specs, input files, empty ONNX files ----------------------------------------------------------

def test_a_platform_that_is_not_there_fails_in_the_cli_as_in_the_api(root: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from mace.opencl.device import select_device

    opencl_platform()
    with pytest.raises(DeviceError, match="no OpenCL platform or device matches 'nosuchvendor'; available: "):
        select_device("nosuchvendor")
    # the CLI used to build its GPU context without the spec, and so ran on pocl
    error_line(["run", root / "tiny.mace", "--device", "opencl:nosuchvendor"], capsys, "nosuchvendor", "available:")


@pytest.mark.parametrize("index", ["abc", "-1", "1.5", ""])
def test_a_device_index_that_is_no_index_is_an_error(index: str, root: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from mace.opencl.device import select_device

    platform = opencl_platform()
    with pytest.raises(DeviceError, match=f"device index '{index}'"):
        select_device(f"{platform}:{index}")
    error_line(["run", root / "tiny.mace", "--device", f"opencl:{platform}:{index}"], capsys, f"'{index}'")


def test_a_text_file_as_input_is_not_called_pickled(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = root / "numbers.txt"
    text.write_text("1 2 3\n")
    line = error_line(["run", root / "tiny.mace", "--input", f"x={text}"], capsys, "--input x=", "numbers.txt",
                      "not a .npy file")
    assert "pickle" not in line


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "])
def test_an_empty_or_truncated_npy_input(content: bytes, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = root / "bad.npy"
    bad.write_bytes(content)  # an EOFError (exit 3) before
    error_line(["run", root / "tiny.mace", "--input", f"x={bad}"], capsys, "--input x=", "bad.npy")


def test_an_input_of_the_wrong_shape_names_the_file(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(root / "small.npy", np.zeros((0,), np.float32))
    error_line(["run", root / "tiny.mace", "--input", f"x={root / 'small.npy'}"], capsys, "small.npy", "[1, 3, 4, 4]")


@pytest.mark.parametrize(("content", "why"), [(b"", "empty"), (b"\x08\x07", "not an ONNX model"),
                                              (b"hello, this is text\n", "ONNX")])
def test_an_empty_or_non_onnx_file_is_no_model(content: bytes, why: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(ConversionError, match=why):
        mace.convert(bad, tmp_path / "bad.mace")  # a 0-byte file converted to an empty model that "ran"
    error_line(["convert", bad], capsys, "bad.onnx", why)
    assert not (tmp_path / "bad.mace").exists()


# -- item 9: outputs that cannot be written, negative shapes, caches -------------------------------------------

def test_save_outputs_at_a_regular_file(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error_line(["run", root / "tiny.mace", "--save-outputs", root / "a_file"], capsys, "--save-outputs",
               "a_file: is a file, not a directory")


def test_save_outputs_on_a_full_disk_leaves_no_file(root: Path, full_disk: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = full_disk / "outputs"
    error_line(["run", root / "tiny.mace", "--save-outputs", out], capsys, "--save-outputs", "y.npy",
               "no space left")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no 0-byte y.npy, no empty directory


def test_save_outputs_when_the_write_fails_leaves_no_file(root: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)  # where a full disk shows at the latest
    out = tmp_path / "outputs"
    error_line(["run", root / "tiny.mace", "--save-outputs", out], capsys, "--save-outputs", "no space left")
    assert not out.exists()


def test_convert_output_is_a_directory(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error_line(["convert", root / "tiny.onnx", "-o", tmp_path], capsys, f"-o {tmp_path}: is a directory")


def test_convert_output_under_a_regular_file(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error_line(["convert", root / "tiny.onnx", "-o", root / "a_file" / "x.mace"], capsys, "-o ",
               "a_file is a file, not a directory")


def test_convert_output_in_a_read_only_directory(root: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    directory = read_only_dir(tmp_path / "ro")
    error_line(["convert", root / "tiny.onnx", "-o", directory / "x.mace"], capsys, "-o ", "x.mace",
               "permission denied")
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("command", ["convert", "merge"])
def test_writing_into_a_read_only_directory_simulated(command: str, root: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from mace.cachefiles import program_cache

    cache = tmp_path / "empty.bin"
    cache.write_bytes(program_cache.encode(program_cache.CacheFile()))
    target = tmp_path / "out.bin"
    denied_mkstemp(monkeypatch)
    argv = (["convert", root / "tiny.onnx", "-o", target] if command == "convert"
            else ["cache", "merge", cache, "-o", target])
    error_line(argv, capsys, f"-o {target}: cannot write: permission denied")


def test_convert_on_a_full_disk_names_the_output(root: Path, full_disk: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    target = full_disk / "big.mace"
    big = tiny_model("Conv", {"x": [1, 64, 8, 8]}, {"y": [1, 64, 8, 8]}, {"kernel_shape": [3, 3], "pads": [1] * 4},
                     {"w": np.ones((64, 64, 3, 3), np.float32)})
    (full_disk.parent / "big.onnx").write_bytes(big.SerializeToString())
    error_line(["convert", full_disk.parent / "big.onnx", "-o", target], capsys, f"-o {target}", "no space left")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


@pytest.mark.parametrize("shape", ["1,3,-5,4", "1,3,0,4"])
def test_a_non_positive_input_shape(shape: str, root: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    error_line(["convert", root / "tiny.onnx", "-o", tmp_path / "t.mace", "--input-shape", f"x={shape}"], capsys,
               "--input-shape", shape)
    with pytest.raises(ConversionError, match="'x'"):
        mace.convert(root / "tiny.onnx", tmp_path / "t.mace", input_shapes={"x": [1, 3, -5, 4]})
    assert not (tmp_path / "t.mace").exists()


def deployment(tmp_path: Path, model_file: str, shapes: str = "1,3,4,4") -> Path:
    config = tmp_path / "deploy.yml"
    config.write_text(f"models:\n  tiny:\n    platform: onnx\n    model_file_path: {model_file}\n    subgraphs:\n"
                      f"      - input_tensors: [x]\n        input_shapes: [{shapes}]\n        output_tensors: [y]\n")
    return config


def test_negative_input_shapes_in_a_deployment_file(root: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = deployment(tmp_path, str(root / "tiny.onnx"), "1,3,-5,224")
    error_line(["convert", "--config", config], capsys, "models.tiny.subgraphs[0].input_shapes", "-5")


def test_a_deployment_model_file_that_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model_dir").mkdir()
    config = deployment(tmp_path, "model_dir")
    error_line(["convert", "--config", config], capsys, "models.tiny.model_file_path", "is a directory")


def test_cache_clear_of_a_storage_path_that_is_a_file(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error_line(["cache", "clear", "--storage-path", root / "a_file"], capsys, "a_file: is a file, not a directory")


def test_cache_clear_with_a_directory_as_cache_file_removes_nothing(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from mace.cachefiles.stores import PROGRAM_CACHE_NAME, TUNED_PARAMS_NAME

    (tmp_path / PROGRAM_CACHE_NAME).write_bytes(EMPTY_CACHE)
    (tmp_path / TUNED_PARAMS_NAME).mkdir()
    error_line(["cache", "clear", "--storage-path", tmp_path], capsys, TUNED_PARAMS_NAME, "is a directory",
               "nothing was removed")
    assert (tmp_path / PROGRAM_CACHE_NAME).read_bytes() == EMPTY_CACHE  # not half cleared


def test_cache_clear_of_a_read_only_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mace.cachefiles.stores import PROGRAM_CACHE_NAME

    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / PROGRAM_CACHE_NAME).write_bytes(EMPTY_CACHE)
    read_only_dir(directory)
    error_line(["cache", "clear", "--storage-path", directory], capsys, "permission denied", "nothing was removed")


def test_cache_clear_of_a_read_only_directory_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from mace.cachefiles.stores import PROGRAM_CACHE_NAME

    (tmp_path / PROGRAM_CACHE_NAME).write_bytes(EMPTY_CACHE)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == tmp_path else real_access(p, mode))

    def denied(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", denied)
    error_line(["cache", "clear", "--storage-path", tmp_path], capsys, "permission denied", "nothing was removed")


def test_cache_merge_output_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mace.cachefiles import program_cache

    cache = tmp_path / "empty.bin"
    cache.write_bytes(program_cache.encode(program_cache.CacheFile()))
    (tmp_path / "out").mkdir()
    error_line(["cache", "merge", cache, "-o", tmp_path / "out"], capsys, "-o ", "out: is a directory")


def test_cache_merge_into_a_read_only_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mace.cachefiles import program_cache

    cache = tmp_path / "empty.bin"
    cache.write_bytes(program_cache.encode(program_cache.CacheFile()))
    directory = read_only_dir(tmp_path / "ro")
    error_line(["cache", "merge", cache, "-o", directory / "m.bin"], capsys, "-o ", "m.bin", "permission denied")


def test_an_unknown_op_fails_when_the_engine_is_created() -> None:
    x = TensorInfo("x", (1, 2), "float32")
    y = TensorInfo("y", (1, 2), "float32")
    graph = Graph("g", [x], [y], [Node("FancyOp", "fancy_1", ["x"], ["y"])], {}, {"x": x, "y": y})
    with pytest.raises(UnsupportedOpError, match="'FancyOp' \\(node 'fancy_1'"):
        mace.Engine(graph, device="cpu")  # a NotImplementedError at the first run before


# -- item 10: output that misleads ----------------------------------------------------------------------------

def test_run_prints_a_top5_per_batch_item(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "batch4.mace"
    mace.convert(root / "tiny.onnx", model, input_shapes={"x": [4, 3, 4, 4]})
    code, out, err = run_cli(["run", model], capsys)
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines() if "top-5" in line]
    assert [line.split()[0] for line in lines] == ["[0]", "[1]", "[2]", "[3]"], out
    assert all(len(line.split("#")) == 6 for line in lines)  # each of its own item: indices below 3*4*4
    assert all(int(part.split()[0]) < 48 for line in lines for part in line.split("#")[1:])


def program_cache_for_tests() -> object:
    import pyopencl as cl

    from mace.opencl.device import fingerprint, select_device
    from mace.opencl.programs import ProgramCache

    opencl_platform()
    choice = select_device("")
    return ProgramCache(cl.Context([choice.device]), choice.device, fingerprint(choice), None, [])


def test_a_build_log_is_kept_not_warned() -> None:
    import pyopencl as cl

    cache = program_cache_for_tests()
    source = '#warning mace-test-remark\n__kernel void k(__global float *x) { x[0] = 1.0f; }\n'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.build(source, "")  # type: ignore[attr-defined]
    assert not [w for w in caught if issubclass(w.category, cl.CompilerWarning)], [str(w.message) for w in caught]
    stats = cache.stats  # type: ignore[attr-defined]
    if "build_log" not in stats:
        pytest.skip("this OpenCL compiler prints nothing for #warning")
    assert "mace-test-remark" in stats["build_log"]


def test_a_failed_build_shows_the_log() -> None:
    cache = program_cache_for_tests()
    with pytest.raises(DeviceError, match="building the OpenCL program failed") as info:
        cache.build("__kernel void k(__global float *x) { x[0] = undefined_name_42; }\n", "")  # type: ignore
    assert "undefined_name_42" in str(info.value)
    assert isinstance(info.value, MaceError)
