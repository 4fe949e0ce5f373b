"""The OpenCL runtime as the engine sees it: a GPUContext, the model's program through the program cache, the tuned
kernel variants and work-group sizes applied, the caches saved once the kernels have launched; tuning and profiling
on request (Engine.tune(), Engine.profile())."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyopencl as cl

from mace.cachefiles import tuned_params
from mace.cachefiles.program_cache import source_sha256
from mace.errors import DeviceError, TuningError
from mace.model.ir import Graph
from mace.model.samples import sample_inputs
from mace.opencl.context import GPUContext, GPUContextBuilder
from mace.opencl.executor import Executor
from mace.opencl.plan import DeviceTarget, ProgramPlan, plan_graph
from mace.opencl.profiling import profile_launches
from mace.opencl.programs import ProgramCache
from mace.opencl.tuning.local_sizes import KernelLimits, candidate_local_sizes, tune_kernel
from mace.opencl.tuning.params import TunedParamsStore
from mace.opencl.tuning.variants import (
    VARIANT_TOLERANCE,
    load_variants,
    outputs_agree,
    record_variants,
    steady_seconds,
    tune_variants,
)


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
        self.graph = graph
        self.target = DeviceTarget.from_device(gpu_context.device, tf32=gpu_context.tf32)
        self.stats["tf32"] = self.target.tf32
        self.tuned = None
        variants: dict[str, int] = {}
        start = time.perf_counter()
        if gpu_context.parameter_path is not None:
            self.tuned = TunedParamsStore(gpu_context.parameter_path, gpu_context.fingerprint, gpu_context.cache_key,
                                          on_warning=self.programs.warn)
            variants = load_variants(self.tuned, graph, self.target)
        self.executor = self._build(variants)
        self.stats["tuned_variants"] = len(self.executor.plan.variants)
        self.stats["variants"] = dict(self.executor.plan.variants)
        self.stats["launches"] = len(self.executor.kernels)  # kernel launches per run
        self.stats["init_seconds"] = time.perf_counter() - start
        self.stats["memory"] = self.executor.memory_report()
        self.broken: str | None = None  # set when a run failed on the device: the engine then refuses to run
        if self.tuned is not None:
            self.stats["tuned_launches"] = self._apply_tuned()

    def _build(self, variants: dict[str, int]) -> Executor:
        executor = Executor(self.graph, self.gpu_context.context, self.gpu_context.queue, self.programs.build,
                                target=self.target, variants=variants)
        # (a node that another's launch computes, a fused depthwise conv, has no kernel of its own to vary)
        launched = {launch.node for launch in executor.plan.launches}
        for name in sorted(set(variants) - set(executor.plan.variants) & launched):
            self.programs.warn(f"tuned kernel variant {variants[name]} of node {name} is not offered by this "
                               "version's kernels; the default tiling is used (re-run mace tune)")
        return executor

    # -- tuned kernel variants and work-group sizes ----------------------------------------------------------------
    def _specialization(self) -> str:
        # the tuning key covers the whole program: any change to the model's kernels invalidates its tuned sizes
        return f"{source_sha256(self.executor.plan.source)} {self.executor.plan.build_options}"

    def _limits(self, kernel: cl.Kernel) -> KernelLimits:
        return KernelLimits.of(kernel, self.gpu_context.device, self.executor.plan.build_options)

    def _apply_tuned(self) -> int:
        assert self.tuned is not None
        applied = 0
        spec = self._specialization()
        for index, (kernel, launch) in enumerate(self.executor.kernels):
            if not self.executor.tunable(index):
                continue
            key = tuned_params.tuning_key(launch.kernel, spec, launch.global_size)
            entry = self.tuned.lookup_valid(key, launch.global_size, self._limits(kernel))
            if entry is not None:
                self.executor.set_local_size(index, tuple(entry.local_size) if entry.local_size else None)
                applied += 1
        return applied

    def tune(self, repeats: int = 5, progress: Any = None, variants: bool = True) -> dict[str, Any]:
        """Choose kernel variants (tilings) per node (``variants``), then time candidate local sizes for every
        launch whose kernel does not fix its own; keep the fastest, save them to the tuned-parameters file. Returns
        a summary (variants chosen, launches tuned, time before/after). ``progress(index, total, what)``."""
        if self.tuned is None:
            raise TuningError("tuning needs a tuned-parameters file to write: set a storage path "
                              "(GPUContextBuilder.set_storage_path, --storage-path) or set_opencl_parameter_path()")
        variant_summary = self._tune_variants(repeats, progress) if variants else {}
        self.executor.warm_up()
        queue = cl.CommandQueue(self.gpu_context.context, self.gpu_context.device,
                                properties=cl.command_queue_properties.PROFILING_ENABLE)
        spec = self._specialization()
        before = after = 0.0
        tuned = 0
        for index, (kernel, launch) in enumerate(self.executor.kernels):
            if progress is not None:
                progress(index, len(self.executor.kernels), launch)
            if not self.executor.tunable(index):
                continue
            limits = self._limits(kernel)
            # the plan's default work-group (CPU targets) is a candidate too, and the baseline
            default = self.executor.plan.launches[index].local_size
            candidates = None if default is None else [default, *candidate_local_sizes(
                launch.global_size, limits.work_group_size, limits.max_work_item_sizes,
                local_mem_size=limits.local_mem_size, needs_uniform=limits.needs_uniform)]
            best, best_us, trials = tune_kernel(queue, kernel, launch.global_size, limits, candidates, repeats=repeats)
            default_us = next((t.time_us for t in trials if t.local_size == default), best_us)
            if best_us == float("inf"):
                continue
            before += default_us
            after += best_us
            self.tuned.record(self.tuned.new_entry(launch.kernel, spec, launch.global_size, best, best_us))
            self.executor.set_local_size(index, tuple(best) if best else None)
            tuned += 1
        saved = self.tuned.save()
        if self.programs.has_pending:  # the program of the chosen variants, complete now that it has run
            self.programs.save()
        summary = {"launches_tuned": tuned, "device_us_default": before, "device_us_tuned": after, "saved": saved,
                   "file": self.tuned.store.description, "variants": variant_summary}
        self.stats["tuning"] = summary
        return summary

    def _tune_variants(self, repeats: int, progress: Any) -> dict[str, Any]:
        """Per-node kernel variants by measurement (variants.py); the combination is kept only when it gives the
        default plan's outputs and runs faster end to end. Rebuilds self.executor with it (via the program cache)."""
        assert self.tuned is not None
        default = self.executor if not self.executor.plan.variants else self._build({})
        feeds = sample_inputs(self.graph.inputs)
        reference = default.run(feeds)
        result = tune_variants(self.graph, self.gpu_context.context, self.gpu_context.queue, self.target, default,
                               feeds, reference, repeats, progress)
        chosen = {name: v for name, v in result.choice.items() if v}
        default_s = steady_seconds(default, feeds, 10 * repeats)
        tuned_s = default_s
        self.executor = default
        if chosen:
            candidate = self._build(chosen)
            agree = outputs_agree(self.graph, candidate.run(feeds), reference)
            tuned_s = steady_seconds(candidate, feeds, 10 * repeats) if agree else default_s
            if agree and tuned_s < default_s * (1 - VARIANT_TOLERANCE):
                self.executor = candidate
            else:  # the parts were faster, the whole was not (or disagreed): the defaults stay
                chosen, tuned_s = {}, default_s
        self.stats["tuned_variants"] = len(self.executor.plan.variants)
        self.stats["variants"] = dict(self.executor.plan.variants)
        self.stats["launches"] = len(self.executor.kernels)  # kernel launches per run
        choice = {name: chosen.get(name, 0) for name in result.choice}
        times = {name: result.times[name] if chosen.get(name) else result.default_times[name] for name in choice}
        record_variants(self.tuned, self.graph, self.target, choice, times)
        return {"nodes_with_variants": len(choice), "nodes_changed": len(chosen), "rejected_variants": result.rejected,
                "device_us_per_variant": result.totals_us, "steady_ms_default": default_s * 1e3,
                "steady_ms_tuned": tuned_s * 1e3}

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.broken is not None:
            raise DeviceError(f"this engine is no longer usable: an earlier run failed ({self.broken}); "
                              "create a new Engine (and check the device)")
        try:
            outputs = self.executor.run(feeds)
        except DeviceError as exc:
            # after an out-of-resources or lost-device error the queue's state is unknown: say so, once and for all
            self.broken = str(exc)
            raise
        if self.programs.has_pending:  # the first run launched every kernel: binaries are complete now
            self.programs.save()
        if self.tuned is not None and self.tuned.has_pending:  # a damaged tuned file: rewritten once, valid part kept
            self.tuned.save()
        for message in self.executor.warnings:
            self.programs.warn(message)
        return outputs

    def warm_up(self) -> None:
        self.executor.warm_up()
        self.programs.save()
        if self.tuned is not None and self.tuned.has_pending:
            self.tuned.save()

    def profile(self, feeds: dict[str, np.ndarray], repeats: int = 10) -> list[dict[str, Any]]:
        """Median device time of every launch (OpenCL profiling events on a second queue): node, op, kernel, sizes,
        microseconds."""
        return profile_launches(self.executor, feeds, repeats)


def program_plan(graph: Graph, device: cl.Device, tuned: TunedParamsStore | None = None, *,
                 tf32: bool) -> ProgramPlan:
    """The plan (program source, launches) the runtime builds for `graph` on `device`, with the kernel variants
    `tuned` holds (and at TF32 accuracy, GPUContext.tf32); `mace cache build` uses the same, so ahead-of-time
    programs have the keys the runtime looks up."""
    target = DeviceTarget.from_device(device, tf32=tf32)
    return plan_graph(graph, target, load_variants(tuned, graph, target) if tuned is not None else None)


def create_runtime(graph: Graph, device_spec: str, gpu_context: GPUContext | None = None) -> OpenCLRuntime:
    if gpu_context is None:
        gpu_context = GPUContextBuilder().set_device(device_spec).finalize()
    return OpenCLRuntime(graph, gpu_context)
