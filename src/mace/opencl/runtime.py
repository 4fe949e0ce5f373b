"""The OpenCL runtime as the engine sees it: a GPUContext, the model's program through the cache, and saving the
cache once the kernels have launched."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..ir import Graph
from .backend import OpenCLBackend
from .context import GPUContext, GPUContextBuilder
from .programs import ProgramCache


class OpenCLRuntime:
    name = "opencl"

    def __init__(self, graph: Graph, gpu_context: GPUContext) -> None:
        self.gpu_context = gpu_context
        self.programs = ProgramCache(
            gpu_context.context,
            gpu_context.device,
            gpu_context.fingerprint,
            gpu_context.storage,
            gpu_context.binary_stores,
            gpu_context.cache_key,
            gpu_context.max_cache_bytes,
        )
        self.stats: dict[str, Any] = self.programs.stats
        self.stats["device"] = gpu_context.choice.label
        self.stats["data_type"] = graph.data_type
        doubles = sorted(t.name for t in graph.tensors.values() if t.dtype == "float64")
        if doubles:
            # cl_khr_fp64 is missing on most mobile GPUs: float64 models run, in float32, and say so
            self.programs.warn(f"{len(doubles)} float64 tensor(s) (e.g. {doubles[0]!r}) are stored and computed as "
                               "float32 on OpenCL; use device='cpu' for float64 precision")
        start = time.perf_counter()
        self.backend = OpenCLBackend(graph, gpu_context.context, gpu_context.queue, self.programs.build)
        self.stats["init_seconds"] = time.perf_counter() - start

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.backend.run(feeds)
        if self.programs.has_pending:  # the first run launched every kernel: binaries are complete now
            self.programs.save()
        return outputs

    def warm_up(self) -> None:
        self.backend.warm_up()
        self.programs.save()


def create_backend(graph: Graph, device_spec: str, gpu_context: GPUContext | None = None) -> OpenCLRuntime:
    if gpu_context is None:
        gpu_context = GPUContextBuilder().set_device(device_spec).finalize()
    return OpenCLRuntime(graph, gpu_context)
