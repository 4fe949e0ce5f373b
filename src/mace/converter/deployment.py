"""MACE-style deployment files (.yml): which models to convert, their shapes, runtime and data type.

    models:
      mobilenet_v2:
        platform: onnx
        model_file_path: mobilenet_v2.onnx          # relative to the .yml file
        model_sha256_checksum: 9f2c...               # optional but recommended
        subgraphs:
          - input_tensors: [input]
            input_shapes: [1,3,224,224]
            output_tensors: [output]
            output_shapes: [1,1000]
        runtime: gpu                                 # gpu | cpu
        data_type: fp16_fp32                         # fp32_fp32 | fp16_fp32
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mace.errors import ChecksumMismatchError, DeploymentFileError
from mace.model.ir import DATA_TYPES

# MACE keys accepted for compatibility; those marked False are read and ignored (they concern MACE's build system).
TOP_KEYS = {"library_name": False, "target_abis": False, "target_socs": False, "model_graph_format": False,
            "model_data_format": False, "build_type": False, "linkshared": False, "models": True}
MODEL_KEYS = {"platform": True, "model_file_path": True, "model_sha256_checksum": True, "subgraphs": True,
              "runtime": True, "data_type": True, "weight_file_path": False, "weight_sha256_checksum": False,
              "limit_opencl_kernel_time": False, "nnlib_graph_mode": False, "obfuscate": False, "winograd": False,
              "quantize": False, "quantize_range_file": False, "change_concat_ranges": False,
              "input_data_formats": False, "output_data_formats": False, "cl_mem_type": False}
SUBGRAPH_KEYS = {"input_tensors": True, "input_shapes": True, "output_tensors": True, "output_shapes": True,
                 "input_data_formats": False, "output_data_formats": False, "input_ranges": False,
                 "validation_inputs_data": False, "check_tensors": False, "check_shapes": False,
                 "validation_threshold": False, "backend": False}
RUNTIMES = ("gpu", "cpu", "opencl")


@dataclass
class ModelSpec:
    name: str
    model_file: Path
    sha256: str | None
    input_shapes: dict[str, list[int]]
    output_tensors: list[str]
    output_shapes: dict[str, list[int]]
    runtime: str = "gpu"
    data_type: str = "fp32_fp32"
    ignored_keys: list[str] = field(default_factory=list)


def _as_list(value: Any, where: str) -> list[Any]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return value
    raise DeploymentFileError(f"{where}: expected a list or a comma-separated string, got {type(value).__name__}")


def _shape_list(value: Any, count: int, where: str) -> list[list[int]]:
    """Shapes come as "1,3,224,224", [1,3,224,224] (one tensor) or a list of either (several tensors)."""
    if isinstance(value, str):
        value = [v for v in value.split(":")] if ":" in value else [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        value = [value]
    if not isinstance(value, list) or len(value) != count:
        raise DeploymentFileError(f"{where}: expected {count} shape(s), got {value!r}")
    shapes = []
    for i, shape in enumerate(value):
        dims = _as_list(shape, f"{where}[{i}]")
        try:
            shapes.append([int(d) for d in dims])
        except (TypeError, ValueError) as exc:
            raise DeploymentFileError(f"{where}[{i}]: not a list of integers: {shape!r}") from exc
        bad = [d for d in shapes[-1] if d < 1]
        if bad or not shapes[-1]:
            what = f"dimension {bad[0]} is not a positive integer" if bad else "no dimensions"
            raise DeploymentFileError(f"{where}[{i}]: {what} in {shape!r}")
    return shapes


def _check_keys(mapping: Any, allowed: dict[str, bool], where: str, ignored: list[str]) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise DeploymentFileError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in allowed:
            raise DeploymentFileError(f"{where}.{key}: unknown key (known: {', '.join(sorted(allowed))})")
        if not allowed[key]:
            ignored.append(f"{where}.{key}")
    return mapping


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_deployment(path: str | Path) -> list[ModelSpec]:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeploymentFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DeploymentFileError(f"{path}: not a text file (byte {exc.start} is not UTF-8): a deployment file is "
                                  "YAML") from None
    except yaml.YAMLError as exc:
        raise DeploymentFileError(f"{path}: not valid YAML: {exc}") from exc
    ignored: list[str] = []
    top = _check_keys(document, TOP_KEYS, str(path.name), ignored)
    if "models" not in top:
        raise DeploymentFileError(f"{path.name}.models: missing (the deployment file lists its models there)")
    models = _check_keys(top["models"], {k: True for k in (top["models"] or {})}, f"{path.name}.models", ignored)
    if not models:
        raise DeploymentFileError(f"{path.name}.models: no models listed")
    return [_read_model(path, name, spec, ignored) for name, spec in models.items()]


def _read_model(path: Path, name: str, spec: Any, ignored: list[str]) -> ModelSpec:
    where = f"models.{name}"
    spec = _check_keys(spec, MODEL_KEYS, where, ignored)
    platform = str(spec.get("platform", "onnx")).lower()
    if platform != "onnx":
        raise DeploymentFileError(f"{where}.platform: {platform!r} is not supported (only onnx)")
    if "model_file_path" not in spec:
        raise DeploymentFileError(f"{where}.model_file_path: missing")
    file_text = str(spec["model_file_path"])
    if "://" in file_text:
        raise DeploymentFileError(f"{where}.model_file_path: {file_text!r} is a URL; mace reads local files only")
    model_file = (path.parent / file_text).resolve()
    if not model_file.exists():
        raise DeploymentFileError(f"{where}.model_file_path: {model_file} does not exist")
    if not model_file.is_file():
        raise DeploymentFileError(f"{where}.model_file_path: {model_file} is a directory, not an ONNX file")
    checksum = spec.get("model_sha256_checksum")
    if checksum is not None:
        if not isinstance(checksum, str) or len(checksum) != 64 or any(c not in "0123456789abcdefABCDEF"
                                                                       for c in checksum):
            raise DeploymentFileError(f"{where}.model_sha256_checksum: {checksum!r} is not 64 hex digits "
                                      "(quote it in YAML if it could read as a number)")
        try:
            actual = sha256_of(model_file)
        except OSError as exc:
            raise DeploymentFileError(f"{where}.model_file_path: cannot read {model_file}: "
                                      f"{exc.strerror or exc}") from exc
        if str(checksum).lower() != actual:
            raise ChecksumMismatchError(f"{where}.model_sha256_checksum ({model_file.name})", str(checksum), actual)
    runtime = str(spec.get("runtime", "gpu")).lower()
    if runtime not in RUNTIMES:
        raise DeploymentFileError(f"{where}.runtime: {runtime!r} is not one of {', '.join(RUNTIMES)}")
    data_type = str(spec.get("data_type", "fp32_fp32")).lower()
    if data_type not in DATA_TYPES:
        raise DeploymentFileError(f"{where}.data_type: {data_type!r} is not one of {', '.join(DATA_TYPES)}")
    subgraphs = spec.get("subgraphs", [])
    if not isinstance(subgraphs, list) or len(subgraphs) > 1:
        raise DeploymentFileError(f"{where}.subgraphs: expected a list with one subgraph")
    input_shapes: dict[str, list[int]] = {}
    output_tensors: list[str] = []
    output_shapes: dict[str, list[int]] = {}
    for i, sub in enumerate(subgraphs):
        sub_where = f"{where}.subgraphs[{i}]"
        sub = _check_keys(sub, SUBGRAPH_KEYS, sub_where, ignored)
        inputs = [str(t) for t in _as_list(sub.get("input_tensors", []), f"{sub_where}.input_tensors")]
        if "input_shapes" in sub:
            shapes = _shape_list(sub["input_shapes"], len(inputs), f"{sub_where}.input_shapes")
            input_shapes = dict(zip(inputs, shapes))
        output_tensors = [str(t) for t in _as_list(sub.get("output_tensors", []), f"{sub_where}.output_tensors")]
        if "output_shapes" in sub:
            shapes = _shape_list(sub["output_shapes"], len(output_tensors), f"{sub_where}.output_shapes")
            output_shapes = dict(zip(output_tensors, shapes))
    return ModelSpec(name, model_file, checksum, input_shapes, output_tensors, output_shapes, runtime, data_type,
                     ignored)
