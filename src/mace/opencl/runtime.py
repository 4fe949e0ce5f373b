"""The OpenCL runtime as the engine sees it: a GPUContext, the model's program through the cache, tuned work-group
sizes applied, and the caches saved once the kernels have launched."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pyopencl as cl

from ..errors import DeviceError
from ..ir import Graph
from . import tuned_params
from .backend import OpenCLBackend
from .cachefile import source_sha256
from .context import GPUContext, GPUContextBuilder
from .programs import ProgramCache
from .tuner import KernelLimits, TunedParamsStore, tune_kernel

TUNING_ENV = "MACE_TUNING"  # MACE_TUNING=1: tune every launch when an engine starts, and save the results


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
        self.backend = OpenCLBackend(graph, gpu_context.context, gpu_context.queue, self.programs.build,
                                     target=_target_for(gpu_context.device))
        self.stats["init_seconds"] = time.perf_counter() - start
        self.stats["memory"] = self.backend.memory_report()
        self.broken: str | None = None  # set when a run failed on the device: the engine then refuses to run
        self.tuned = None
        if gpu_context.parameter_path is not None:
            self.tuned = TunedParamsStore(gpu_context.parameter_path, gpu_context.fingerprint, gpu_context.cache_key,
                                          on_warning=self.programs.warn)
            self.stats["tuned_launches"] = self._apply_tuned()
        if os.environ.get(TUNING_ENV, "").strip() not in ("", "0"):
            self.tune()

    # -- tuned work-group sizes ----------------------------------------------------------------------------------
    def _specialization(self) -> str:
        # the tuning key covers the whole program: any change to the model's kernels invalidates its tuned sizes
        return f"{source_sha256(self.backend.plan.source)} {self.backend.plan.build_options}"

    def _limits(self, kernel: cl.Kernel) -> KernelLimits:
        return KernelLimits.of(kernel, self.gpu_context.device, self.backend.plan.build_options)

    def _apply_tuned(self) -> int:
        assert self.tuned is not None
        applied = 0
        spec = self._specialization()
        for index, (kernel, launch) in enumerate(self.backend.kernels):
            if not self.backend.tunable(index):
                continue
            key = tuned_params.tuning_key(launch.kernel, spec, launch.global_size)
            entry = self.tuned.lookup_valid(key, launch.global_size, self._limits(kernel))
            if entry is not None:
                self.backend.set_local_size(index, tuple(entry.local_size) if entry.local_size else None)
                applied += 1
        return applied

    def tune(self, repeats: int = 5, progress: Any = None) -> dict[str, Any]:
        """Time candidate local sizes for every launch whose kernel does not fix its own, keep the fastest, save
        them to the tuned-parameters file. Returns a summary (launches tuned, time before/after)."""
        if self.tuned is None:
            raise RuntimeError("no tuned-parameters path: set a storage path or set_opencl_parameter_path()")
        self.backend.warm_up()
        queue = cl.CommandQueue(self.gpu_context.context, self.gpu_context.device,
                                properties=cl.command_queue_properties.PROFILING_ENABLE)
        spec = self._specialization()
        before = after = 0.0
        tuned = 0
        for index, (kernel, launch) in enumerate(self.backend.kernels):
            if progress is not None:
                progress(index, len(self.backend.kernels), launch)
            if not self.backend.tunable(index):
                continue
            limits = self._limits(kernel)
            best, best_us, trials = tune_kernel(queue, kernel, launch.global_size, limits, repeats=repeats)
            default_us = next((t.time_us for t in trials if t.local_size is None), best_us)
            if best_us == float("inf"):
                continue
            before += default_us
            after += best_us
            self.tuned.record(self.tuned.new_entry(launch.kernel, spec, launch.global_size, best, best_us))
            self.backend.set_local_size(index, tuple(best) if best else None)
            tuned += 1
        saved = self.tuned.save()
        summary = {"launches_tuned": tuned, "device_us_default": before, "device_us_tuned": after, "saved": saved,
                   "file": self.tuned.store.description}
        self.stats["tuning"] = summary
        return summary

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.broken is not None:
            raise DeviceError(f"this engine is no longer usable: an earlier run failed ({self.broken}); "
                              "create a new Engine (and check the device)")
        try:
            outputs = self.backend.run(feeds)
        except DeviceError as exc:
            # after an out-of-resources or lost-device error the queue's state is unknown: say so, once and for all
            self.broken = str(exc)
            raise
        if self.programs.has_pending:  # the first run launched every kernel: binaries are complete now
            self.programs.save()
        for message in self.backend.warnings:
            self.programs.warn(message)
        return outputs

    def warm_up(self) -> None:
        self.backend.warm_up()
        self.programs.save()


def program_plan(graph: Graph, device: cl.Device) -> Any:
    """The plan (program source, launches) the runtime builds for `graph` on `device`; `mace cache build` uses the
    same, so ahead-of-time programs have the keys the runtime looks up."""
    from .codegen import plan_graph

    target = _target_for(device)
    return plan_graph(graph) if target is None else plan_graph(graph, target)


def _target_for(device: cl.Device) -> Any:
    """The device class the kernels are specialized for (tile sizes), when the code generator knows targets."""
    try:
        from .codegen.tiling import DeviceTarget  # type: ignore[attr-defined]
    except ImportError:
        return None
    return DeviceTarget.from_device(device)


def create_backend(graph: Graph, device_spec: str, gpu_context: GPUContext | None = None) -> OpenCLRuntime:
    if gpu_context is None:
        gpu_context = GPUContextBuilder().set_device(device_spec).finalize()
    return OpenCLRuntime(graph, gpu_context)
