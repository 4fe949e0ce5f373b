"""mace: deep-learning inference on OpenCL devices with an instant start.

    import mace, numpy as np
    mace.convert("mobilenet_v2.onnx", "mobilenet_v2.mace")
    engine = mace.Engine("mobilenet_v2.mace", device="opencl")
    outputs = engine.run({"input": np.zeros((1, 3, 224, 224), np.float32)})
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from mace.errors import MaceError
from mace.runtime.engine import Engine
from mace.version import __version__

__all__ = ["Engine", "GPUContextBuilder", "MaceError", "__version__", "convert"]


def convert(*args: Any, **kwargs: Any) -> list[Path]:
    """Convert an ONNX model, or every model of a deployment file, to .mace files (see mace.converter.convert)."""
    from mace.converter import convert as _convert

    return _convert(*args, **kwargs)


def __getattr__(name: str) -> Any:
    # onnx (the converter) and pyopencl load only when asked for: an app that runs a converted model on the GPU
    # never imports onnx, which keeps its start fast.
    if name == "GPUContextBuilder":
        from mace.opencl.context import GPUContextBuilder

        return GPUContextBuilder
    if name in ("converter", "opencl", "onnx_backend", "model", "ops", "cachefiles", "settings"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mace' has no attribute {name!r}")
