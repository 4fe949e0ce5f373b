"""Every error mace raises on purpose derives from MaceError, so callers (and the CLI) can tell bad input from bugs."""

from __future__ import annotations


class MaceError(Exception):
    """Base class: the message names the bad thing (file, tensor, op, key path or byte offset)."""


class ModelFormatError(MaceError):
    """A .mace model file is corrupt, truncated, or of an unknown version. Carries the path and byte offset."""

    def __init__(self, path: str, offset: int | None, reason: str) -> None:
        where = f" at byte offset {offset}" if offset is not None else ""
        super().__init__(f"{path}: invalid mace model file{where}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class UnsupportedOpError(MaceError):
    """An ONNX node whose op type or attribute mace cannot run."""

    def __init__(self, op_type: str, node_name: str, opset: int, detail: str, supported: list[str]) -> None:
        super().__init__(
            f"unsupported op {op_type!r} (node {node_name!r}, opset {opset}): {detail}. "
            f"Supported ops: {', '.join(sorted(supported))}"
        )
        self.op_type = op_type
        self.node_name = node_name
        self.opset = opset


class ConversionError(MaceError):
    """The ONNX model cannot be converted (bad shapes, missing tensors, invalid graph)."""


class DeploymentFileError(MaceError):
    """A deployment .yml file is invalid. The message names the key path (e.g. models.mobilenet.subgraphs[0])."""


class ChecksumMismatchError(DeploymentFileError):
    """The model file's sha256 differs from the one the deployment file declares."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(f"{path}: sha256 mismatch: expected {expected}, actual {actual}")
        self.expected = expected
        self.actual = actual


class InputError(MaceError, ValueError):
    """A wrong input name, shape or dtype passed to Engine.run."""


class DeviceError(MaceError):
    """No usable device, or a device step (context, build, upload, launch) failed."""


class SettingError(MaceError, ValueError):
    """An environment variable or option has a value mace cannot use. The message names the variable and the value."""


class TuningError(MaceError):
    """Tuning cannot run here (no tuned-parameters file to write, a device without OpenCL)."""
