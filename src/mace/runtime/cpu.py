"""The numpy reference runtime: the oracle for the OpenCL runtime and the CPU fallback."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mace.model.ir import Graph
from mace.ops.reference import run_node


class CPURuntime:
    name = "cpu"

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        # fp16 storage is widened once, here, not per run
        self.constants = {name: graph.float_constant(name) for name in graph.constants}
        # fp16_fp32 means: stored as half, computed in float. The reference rounds every float tensor to half where
        # a device would store it, so it is the exact oracle of that data type, not just of its weights.
        self.half_storage = graph.data_type == "fp16_fp32"
        self.stats: dict[str, Any] = {"device": "numpy reference (CPU)", "runs": 0, "warnings": []}

    def _stored(self, value: np.ndarray) -> np.ndarray:
        if self.half_storage and value.dtype == np.float32:
            return value.astype(np.float16).astype(np.float32)
        return value

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {**self.constants, **{k: self._stored(v) for k, v in feeds.items()}}
        for node in self.graph.nodes:
            inputs = [values[name] if name else None for name in node.inputs]
            for name, value in zip(node.outputs, run_node(node.op, inputs, node.attrs)):
                if name:
                    values[name] = self._stored(value)
        self.stats["runs"] += 1
        return {t.name: np.asarray(values[t.name]) for t in self.graph.outputs}

    def warm_up(self) -> None:
        start = time.perf_counter()
        self.run({t.name: np.zeros(t.shape, dtype=t.dtype) for t in self.graph.inputs})
        self.stats["warm_up_seconds"] = time.perf_counter() - start


def create_runtime(graph: Graph, device_spec: str, gpu_context: Any = None) -> CPURuntime:
    return CPURuntime(graph)
