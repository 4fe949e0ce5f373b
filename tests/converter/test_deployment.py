"""MACE-style deployment files: conversion, and each kind of error naming its key path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import mace
from mace.converter.deployment import sha256_of
from mace.errors import ChecksumMismatchError, ConversionError, DeploymentFileError
from mace.model import modelfile

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "examples" / "models" / "squeezenet1_1.onnx"


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    shutil.copy(MODEL, tmp_path / "sq.onnx")
    return tmp_path


def _write(workdir: Path, text: str) -> Path:
    path = workdir / "deploy.yml"
    path.write_text(text)
    return path


def _valid(checksum: str, extra: str = "", sub_extra: str = "") -> str:
    return f"""
library_name: demo
target_abis: [arm64-v8a]
models:
  sq:
    platform: onnx
    model_file_path: sq.onnx
    model_sha256_checksum: "{checksum}"
    subgraphs:
      - input_tensors: input
        input_shapes: 1,3,224,224
        output_tensors: [output]
        output_shapes: [1, 1000]{sub_extra}
    runtime: gpu
    data_type: fp16_fp32{extra}
"""


def test_deployment_converts_every_model(workdir: Path) -> None:
    config = _write(workdir, _valid(sha256_of(workdir / "sq.onnx")))
    [path] = mace.convert(config=config, output_dir=workdir / "out")
    assert path == workdir / "out" / "sq.mace"
    graph = modelfile.load(path)
    assert graph.data_type == "fp16_fp32" and graph.metadata["runtime"] == "gpu"
    assert graph.inputs[0].shape == (1, 3, 224, 224) and graph.outputs[0].shape == (1, 1000)


def test_sha256_mismatch_names_expected_and_actual(workdir: Path) -> None:
    config = _write(workdir, _valid("0" * 64))
    with pytest.raises(ChecksumMismatchError) as info:
        mace.convert(config=config)
    assert info.value.expected == "0" * 64
    assert info.value.actual == sha256_of(workdir / "sq.onnx")
    assert "0" * 64 in str(info.value) and info.value.actual in str(info.value)


def test_unknown_key_names_its_path(workdir: Path) -> None:
    config = _write(workdir, _valid(sha256_of(workdir / "sq.onnx"), sub_extra="\n        input_tensor_typo: x"))
    with pytest.raises(DeploymentFileError, match=r"models\.sq\.subgraphs\[0\]\.input_tensor_typo: unknown key"):
        mace.convert(config=config)
    config = _write(workdir, _valid(sha256_of(workdir / "sq.onnx"), extra="\n    runtimes: gpu"))
    with pytest.raises(DeploymentFileError, match=r"models\.sq\.runtimes: unknown key"):
        mace.convert(config=config)


@pytest.mark.parametrize(("old", "new", "pattern"), [
    ("data_type: fp16_fp32", "data_type: int8", r"models\.sq\.data_type: 'int8' is not one of"),
    ("runtime: gpu", "runtime: dsp", r"models\.sq\.runtime: 'dsp'"),
    ("platform: onnx", "platform: tensorflow", r"models\.sq\.platform: 'tensorflow' is not supported"),
    ("model_file_path: sq.onnx", "model_file_path: https://x/y.onnx", r"model_file_path: .* is a URL"),
    ("model_file_path: sq.onnx", "model_file_path: missing.onnx", r"model_file_path: .*missing.onnx does not exist"),
    ("input_shapes: 1,3,224,224", "input_shapes: 1,3,a,224", r"subgraphs\[0\]\.input_shapes\[0\]: not a list"),
])
def test_bad_values_name_their_key(workdir: Path, old: str, new: str, pattern: str) -> None:
    config = _write(workdir, _valid(sha256_of(workdir / "sq.onnx")).replace(old, new))
    with pytest.raises(DeploymentFileError, match=pattern):
        mace.convert(config=config)


def test_declared_output_shape_must_match(workdir: Path) -> None:
    config = _write(workdir, _valid(sha256_of(workdir / "sq.onnx")).replace("[1, 1000]", "[1, 10]"))
    with pytest.raises(ConversionError, match=r"output_shapes: 'output' is declared \[1, 10\], the model produces "
                                              r"\[1, 1000\]"):
        mace.convert(config=config)


def test_unquoted_numeric_checksum_is_rejected(workdir: Path) -> None:
    config = _write(workdir, _valid("0" * 64).replace('"' + "0" * 64 + '"', "0" * 64))
    with pytest.raises(DeploymentFileError, match=r"models\.sq\.model_sha256_checksum: .*64 hex digits"):
        mace.convert(config=config)


def test_not_yaml_and_no_models(workdir: Path) -> None:
    with pytest.raises(DeploymentFileError, match="not valid YAML"):
        mace.convert(config=_write(workdir, "models: [unclosed"))
    with pytest.raises(DeploymentFileError, match=r"deploy\.yml\.models: missing"):
        mace.convert(config=_write(workdir, "library_name: x\n"))
