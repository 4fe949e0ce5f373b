"""Every `mace` subcommand, given a bad argument, fails with one line on stderr and a non-zero exit, never a traceback.

The subcommands are listed from the argparse tree itself, so a command added without cases here fails
test_every_subcommand_has_bad_argument_cases."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mace
from mace.cli.main import build_parser, main
from support import tiny_model


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [leaf for name, sub in action.choices.items() for leaf in leaf_commands(sub, (*prefix, name))]
    return [prefix]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A valid tiny model (ONNX and .mace), a directory, a garbage file, a missing path, .npy inputs."""
    root = tmp_path_factory.mktemp("cli_errors")
    onnx_path = root / "tiny.onnx"
    onnx_path.write_bytes(tiny_model("Relu", {"x": [1, 3, 4, 4]}, {"y": [1, 3, 4, 4]}).SerializeToString())
    model = root / "tiny.mace"
    mace.convert(onnx_path, model)
    garbage = root / "garbage.bin"
    garbage.write_bytes(b"\x00\x01 this is not a model, a cache or an ONNX file \xff" * 3)
    (root / "garbage.onnx").write_bytes(garbage.read_bytes())
    (root / "garbage.mace").write_bytes(garbage.read_bytes())
    np.save(root / "good.npy", np.zeros((1, 3, 4, 4), np.float32))
    np.save(root / "wrong_shape.npy", np.zeros((2, 2), np.float32))
    (root / "garbage.npy").write_bytes(garbage.read_bytes())
    (root / "a_directory").mkdir()
    return {"root": root, "onnx": onnx_path, "model": model, "dir": root / "a_directory", "missing": root / "absent",
            "garbage": garbage, "garbage_onnx": root / "garbage.onnx", "garbage_mace": root / "garbage.mace",
            "npy": root / "good.npy", "wrong_shape_npy": root / "wrong_shape.npy",
            "garbage_npy": root / "garbage.npy", "file_as_dir": garbage / "inside"}


# command -> (case id, argv after the command with {placeholders} from `files`, text the error line must contain)
Case = tuple[str, list[str], str]
CASES: dict[tuple[str, ...], list[Case]] = {
    ("convert",): [
        ("missing file", ["{missing}.onnx"], "absent.onnx"),
        ("directory", ["{dir}"], "a_directory"),
        ("garbage file", ["{garbage_onnx}"], "garbage.onnx"),
        ("bad --input-shape", ["{onnx}", "--input-shape", "x=1,three"], "--input-shape"),
        ("unknown --input-shape name", ["{onnx}", "--input-shape", "nope=1,3,4,4"], "nope"),
        ("bad --data-type", ["{onnx}", "--data-type", "fp8"], "--data-type"),
        ("nothing to convert", [], "nothing to convert"),
        ("missing --config", ["--config", "{missing}.yml"], "absent.yml"),
        ("garbage --config", ["--config", "{garbage}"], "garbage.bin"),
        ("output in a file", ["{onnx}", "-o", "{file_as_dir}/out.mace"], "garbage.bin"),
        ("output is a directory", ["{onnx}", "-o", "{dir}"], "-o "),
        ("negative --input-shape", ["{onnx}", "--input-shape", "x=1,3,-5,4"], "-5"),
    ],
    ("run",): [
        ("missing file", ["{missing}.mace"], "absent.mace"),
        ("directory", ["{dir}"], "a_directory"),
        ("garbage file", ["{garbage_mace}"], "garbage.mace"),
        ("bad --device", ["{model}", "--device", "tpu"], "tpu"),
        ("bad --input", ["{model}", "--input", "x"], "--input"),
        ("missing --input file", ["{model}", "--input", "x={missing}.npy"], "absent.npy"),
        ("garbage --input file", ["{model}", "--input", "x={garbage_npy}"], "garbage.npy"),
        ("wrong --input shape", ["{model}", "--input", "x={wrong_shape_npy}"], "shape"),
        ("unknown --input name", ["{model}", "--input", "nope={npy}"], "nope"),
        ("bad --runs", ["{model}", "--runs", "many"], "--runs"),
        ("--save-outputs a file", ["{model}", "--save-outputs", "{garbage}"], "--save-outputs"),
        ("bad device index", ["{model}", "--device", "opencl:portable:-1"], "'-1'"),
    ],
    ("info",): [
        ("missing file", ["{missing}.mace"], "absent.mace"),
        ("directory", ["{dir}"], "a_directory"),
        ("garbage file", ["{garbage_mace}"], "garbage.mace"),
        ("garbage onnx", ["{garbage_onnx}"], "garbage.onnx"),
        ("bad --input-shape", ["{onnx}", "--input-shape", "=1"], "--input-shape"),
    ],
    ("cache", "build"): [
        ("missing model", ["{missing}.mace", "-o", "{root}/c.bin", "--device", "cpu"], ""),
        ("bad --device", ["{model}", "-o", "{root}/c.bin", "--device", "opencl:no-such-platform"], "no-such-platform"),
        ("no -o", ["{model}"], "-o/--output"),
    ],
    ("cache", "inspect"): [
        ("missing file", ["{missing}.bin"], "absent.bin"),
        ("directory", ["{dir}"], "a_directory"),
    ],
    ("cache", "verify"): [
        ("missing file", ["{missing}.bin"], "absent.bin"),
        ("directory", ["{dir}"], "a_directory"),
    ],
    ("cache", "merge"): [
        ("missing input", ["{missing}.bin", "-o", "{root}/m.bin"], "absent.bin"),
        ("garbage input", ["{garbage}", "-o", "{root}/m.bin"], "garbage.bin"),
        ("no -o", ["{garbage}"], "-o/--output"),
        ("-o a directory", ["{garbage}", "-o", "{dir}"], "a_directory: is a directory"),
    ],
    ("cache", "clear"): [
        ("no value for --storage-path", ["--storage-path"], "--storage-path"),
        ("unknown option", ["--everything"], "--everything"),
        ("--storage-path a file", ["--storage-path", "{garbage}"], "garbage.bin: is a file"),
    ],
    ("serve",): [
        ("missing file", ["{missing}.mace"], "absent.mace"),
        ("bad --max-batch", ["{model}", "--max-batch", "0"], "--max-batch"),
        ("bad --batch-sizes", ["{model}", "--batch-sizes", "1,x"], "--batch-sizes"),
        ("bad --port", ["{model}", "--port", "http"], "--port"),
    ],
    ("devices",): [
        ("unknown option", ["--gpu-only"], "--gpu-only"),
    ],
    ("tune",): [
        ("missing file", ["{missing}.mace", "--storage-path", "{root}"], "absent.mace"),
        ("bad --device", ["{model}", "--device", "opencl:no-such-platform", "--storage-path", "{root}"],
         "no-such-platform"),
        ("cpu device", ["{model}", "--device", "cpu", "--storage-path", "{root}"], "cpu"),
        ("bad --repeats", ["{model}", "--repeats", "0.5"], "--repeats"),
    ],
    ("benchmark",): [
        ("missing file", ["{missing}.mace", "--device", "cpu", "--runs", "1"], "absent.mace"),
        ("bad --runs", ["{model}", "--runs", "all"], "--runs"),
    ],
}
# known gaps, strict: the case starts passing (and must be moved out of here) once the message names the file
KNOWN_GAPS: dict[str, str] = {}  # case id -> why it fails today (a strict xfail: fixing it flags the entry)
ALL_CASES = [pytest.param(command, argv, expect, id=(case_id := f"{' '.join(command)}: {name}"),
                          marks=[pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[case_id])]
                          if case_id in KNOWN_GAPS else [])
             for command, cases in CASES.items() for name, argv, expect in cases]


def test_every_subcommand_has_bad_argument_cases() -> None:
    assert sorted(leaf_commands(build_parser())) == sorted(CASES)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's errors
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, err: str, command: tuple[str, ...], expect: str) -> str:
    assert code != 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"stderr is not one line: {err!r}"
    line = lines[0]
    assert line.startswith(f"mace {' '.join(command)}: error: "), line
    assert expect in line, f"{expect!r} not in {line!r}"
    return line


@pytest.mark.parametrize(("command", "argv", "expect"), ALL_CASES)
def test_bad_argument_is_one_error_line(command: tuple[str, ...], argv: list[str], expect: str,
                                        files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACE_STORAGE_PATH", str(files["root"] / "storage"))  # never the user's cache
    args = [*command, *(a.format(**files) for a in argv)]
    code, _out, err = run_main(args, capsys)
    assert code == 2, err
    assert_one_error_line(code, err, command, expect)


@pytest.mark.parametrize("command", [["cache", "inspect"], ["cache", "verify"]])
def test_garbage_cache_file_is_a_verdict_not_a_crash(command: list[str], files: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main([*command, str(files["garbage"])], capsys)
    assert code == 1 and "Traceback" not in out + err
    assert "invalid" in out


def test_a_bug_is_one_internal_error_line_and_mace_debug_shows_the_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from mace.cli import tools_cmd

    def broken(args: argparse.Namespace) -> int:
        raise KeyError("oops")

    monkeypatch.setattr(tools_cmd, "cmd_devices", broken)
    monkeypatch.delenv("MACE_DEBUG", raising=False)
    code, _out, err = run_main(["devices"], capsys)
    assert code == 3 and "Traceback" not in err
    assert err.splitlines() == ["mace devices: internal error: KeyError: 'oops' (run with MACE_DEBUG=1 for the "
                                "traceback)"]
    monkeypatch.setenv("MACE_DEBUG", "1")
    with pytest.raises(KeyError, match="oops"):
        main(["devices"])


def test_errors_from_a_fresh_process_have_no_traceback(files: dict[str, Path]) -> None:
    """The same through `python -m mace.cli.main`: logging, rich and the exit status as a user sees them."""
    for args in (["run", str(files["garbage_mace"])], ["cache", "verify", str(files["dir"])],
                 ["run", str(files["model"]), "--device", "tpu"], ["run"]):
        proc = subprocess.run([sys.executable, "-m", "mace.cli.main", *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
