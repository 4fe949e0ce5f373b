"""The numpy reference runtime: the oracle for the OpenCL runtime and the CPU fallback."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mace.errors import UnsupportedOpError
from mace.model.ir import Graph, Node
from mace.ops.reference import REFERENCE_OPS, SUPPORTED_OPS, run_node


def _unsupported(graph: Graph, node: Node, detail: str) -> UnsupportedOpError:
    opset = graph.metadata.get("opset", 0)
    return UnsupportedOpError(node.op, node.name, opset if isinstance(opset, int) else 0, detail, list(SUPPORTED_OPS))


class CPURuntime:
    name = "cpu"

    def __init__(self, graph: Graph) -> None:
        for node in graph.nodes:  # an op this mace does not know fails here, naming the node, not in the first run
            if node.op not in REFERENCE_OPS:
                raise _unsupported(graph, node, "the op is not one of the reference ops")
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
            try:
                results = run_node(node.op, inputs, node.attrs)
            except NotImplementedError as exc:  # the ops' signal for an attribute value they do not support
                raise _unsupported(self.graph, node, str(exc)) from exc
            for name, value in zip(node.outputs, results):
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
