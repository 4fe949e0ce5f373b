"""mace: deep-learning inference on OpenCL devices with an instant start.

    import mace, numpy as np
    mace.convert("mobilenet_v2.onnx", "mobilenet_v2.mace")
    engine = mace.Engine("mobilenet_v2.mace", device="opencl")
    outputs = engine.run({"input": np.zeros((1, 3, 224, 224), np.float32)})
"""

from __future__ import annotations

from typing import Any

from .converter import convert
from .errors import MaceError
from .runtime.engine import Engine

__version__ = "0.1.0"
__all__ = ["Engine", "GPUContextBuilder", "MaceError", "__version__", "convert"]


def __getattr__(name: str) -> Any:
    # The OpenCL side imports pyopencl; load it only when asked for, so CPU-only use stays light.
    if name == "GPUContextBuilder":
        from .opencl.context import GPUContextBuilder

        return GPUContextBuilder
    raise AttributeError(f"module 'mace' has no attribute {name!r}")
