"""mace as an ONNX backend (onnx.backend.base.Backend), so ONNX's own test runner can drive it.

    import onnx.backend.test
    import mace.onnx_backend
    tests = onnx.backend.test.BackendTest(mace.onnx_backend.MaceBackend, __name__)

prepare() converts the model in memory and builds an Engine. The device is "CPU" (the numpy reference runtime);
setting MACE_BACKEND_DEVICE=opencl (or any Engine device string) runs the same suites on the OpenCL runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from mace import settings
from mace.converter import convert_onnx
from mace.runtime.engine import Engine


class MaceBackendRep(BackendRep):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            feeds = {t.name: np.asarray(v) for t, v in zip(self.engine.inputs, inputs)}
        outputs = self.engine.run(feeds)
        return tuple(outputs[t.name] for t in self.engine.outputs)


class MaceBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return True

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> MaceBackendRep:
        graph = convert_onnx(model, input_shapes=kwargs.get("input_shapes"), data_type=kwargs.get("data_type",
                                                                                                     "fp32_fp32"))
        return MaceBackendRep(Engine(graph, device=engine_device(device)))

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"


def engine_device(onnx_device: str) -> str:
    return settings.onnx_backend_device() if onnx_device.upper() == "CPU" else onnx_device.lower()


def run_node(node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU") -> tuple[Any, ...] | None:
    """ONNX's ``Backend.run_node``, which MaceBackend does not override: it checks the node and returns None.

    mace runs whole models; run a single node with prepare/run_model on a one-node model.
    """
    return MaceBackend.run_node(node, inputs, device)


prepare = MaceBackend.prepare
run_model = MaceBackend.run_model
supports_device = MaceBackend.supports_device
