"""Runs a planned graph on an OpenCL device: one program, buffers and kernel arguments set up once, then each run is
input writes, every kernel, output reads and a single finish.

    >>> ctx = cl.create_some_context(); queue = cl.CommandQueue(ctx)      # doctest: +SKIP
    >>> executor = Executor(graph, ctx, queue, lambda s, o: cl.Program(ctx, s).build(options=o))  # doctest: +SKIP
    >>> executor.run({"input": image})["output"]                           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

import numpy as np
import pyopencl as cl

from mace.errors import DeviceError, InputError
from mace.model.ir import Graph, TensorInfo
from mace.opencl.device import device_step
from mace.opencl.memory import MemoryPlan, program_memory
from mace.opencl.plan import Launch, ProgramPlan, TilingPolicy, plan_graph
from mace.opencl.staging import HostStaging

log = logging.getLogger("mace.opencl")


def allocate_buffers(context: cl.Context, memory: MemoryPlan) -> dict[str, cl.Buffer]:
    """One device buffer per slot of the memory plan, bound to every value the slot holds."""
    held: dict[int, list[str]] = {}
    for name, slot in memory.slot_of.items():
        held.setdefault(slot, []).append(name)
    slots = []
    for index, nbytes in enumerate(memory.slot_bytes):
        with device_step(f"allocating {nbytes / 1e6:.1f} MB for tensor(s) {', '.join(held[index][:3])}"):
            # OpenCL rejects zero-size buffers; empty tensors get a token allocation that no kernel touches.
            slots.append(cl.Buffer(context, cl.mem_flags.READ_WRITE, max(nbytes, 4)))
    return {name: slots[slot] for name, slot in memory.slot_of.items()}


def upload_constants(context: cl.Context, queue: cl.CommandQueue, plan: ProgramPlan) -> dict[str, cl.Buffer]:
    buffers = {}
    for name, data in plan.constants.items():
        with device_step(f"uploading weights ({data.nbytes / 1e6:.1f} MB for tensor {name})"):
            flags = cl.mem_flags.READ_WRITE if name in plan.writable else cl.mem_flags.READ_ONLY
            buffers[name] = cl.Buffer(context, flags, max(data.nbytes, 4))
            if data.nbytes:
                cl.enqueue_copy(queue, buffers[name], data, is_blocking=False)
    with device_step("uploading weights"):
        queue.finish()  # the host arrays may be freed once init returns
    return buffers


class Executor:
    """Executes ``graph`` on ``queue``'s device. ``build_program(source, options)`` returns a built program (the
    engine passes one that goes through the compiled-program cache). Activations share device memory where their
    lifetimes allow (memory.py); ``reuse_memory=False`` gives each its own buffer. ``target``, ``variants`` and
    ``policy`` are plan_graph's. ``host_staging`` copies inputs and outputs through page-locked host memory
    (HostStaging); by default only on devices whose memory is not the host's (discrete GPUs)."""

    name = "opencl"

    def __init__(
        self,
        graph: Graph,
        context: cl.Context,
        queue: cl.CommandQueue,
        build_program: Callable[[str, str], cl.Program],
        reuse_memory: bool = True,
        target: Any = None,
        variants: Mapping[str, int] | None = None,
        policy: TilingPolicy | None = None,
        host_staging: bool | None = None,
    ) -> None:
        self.graph = graph
        self.context = context
        self.queue = queue
        self.plan = plan_graph(graph, target, variants, policy)
        self.warnings: list[str] = []
        with device_step("building the program"):
            self.program = build_program(self.plan.source, self.plan.build_options)
        self.buffers = upload_constants(context, queue, self.plan)
        outputs = [self.plan.buffer_of(t.name) for t in graph.outputs]
        self.memory_plan = program_memory(self.plan, [t.name for t in graph.inputs], outputs, reuse_memory)
        self.memory = self.memory_plan.report()
        self.buffers.update(allocate_buffers(context, self.memory_plan))
        self.kernels = [self._kernel(launch) for launch in self.plan.launches]
        self._inputs = [(t.name, t.shape, self._host_dtype(t.name)) for t in graph.inputs]
        self._outputs = [(t, self.plan.buffers[self.plan.buffer_of(t.name)]) for t in graph.outputs]
        self.staging: HostStaging | None = None
        if host_staging if host_staging is not None else not queue.device.host_unified_memory:
            staged = {name: (tuple(shape), dtype) for name, shape, dtype in self._inputs}
            staged.update({t.name: (tuple(t.shape), buf.dtype) for t, buf in self._outputs})
            self.staging = HostStaging(context, queue, staged)
        self.stats: dict[str, Any] = {
            "kernels": len(self.kernels),
            "specializations": self.plan.source.count("#define KERNEL_NAME"),
            "source_bytes": len(self.plan.source),
            "buffer_bytes": sum(b.nbytes for b in self.plan.buffers.values()),
        }

    def memory_report(self) -> dict[str, int]:
        """Device bytes for activations: ``peak_bytes`` allocated, ``lower_bound_bytes`` the most live at once,
        ``naive_bytes`` with one buffer per value; and the number of ``allocations`` and of ``values`` in them."""
        return dict(self.memory)

    def _host_dtype(self, value: str) -> np.dtype:
        return self.plan.buffers[self.plan.buffer_of(value)].dtype

    def _kernel(self, launch: Launch) -> tuple[cl.Kernel, Launch]:
        with device_step(f"setting up node {launch.node} ({launch.op}), kernel {launch.kernel}"):
            kernel = cl.Kernel(self.program, launch.kernel)
            kernel.set_args(*(self.buffers[a] if isinstance(a, str) else a for a in launch.args))
        return kernel, launch

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = set(feeds) - {name for name, _, _ in self._inputs}
        if unknown:
            raise InputError(f"unknown input(s) {sorted(unknown)}; the model takes {[n for n, _, _ in self._inputs]}")
        staged = self.staging.arrays if self.staging else {}
        inputs = []  # every input checked before any is written
        for name, shape, dtype in self._inputs:
            if name not in feeds:
                raise InputError(f"missing input {name!r} of shape {shape}")
            # (a staged input is cast and made contiguous by its copy into the staging array)
            data = np.asarray(feeds[name]) if name in staged else np.ascontiguousarray(feeds[name], dtype=dtype)
            if data.shape != tuple(shape):
                if [d for d in data.shape if d != 1] != [d for d in shape if d != 1]:  # (1,) for () is fine
                    raise InputError(f"input {name!r} has shape {data.shape}, the model expects {tuple(shape)}")
                data = data.reshape(shape)
            inputs.append((name, data))
        pending = []  # keeps the host copies alive until the non-blocking writes complete
        for name, data in inputs:
            buffer = self.buffers[self.plan.buffer_of(name)]
            with device_step(f"writing input {name}"):
                if self.staging and name in staged:
                    self.staging.write(self.queue, buffer, name, data)
                elif data.nbytes:
                    cl.enqueue_copy(self.queue, buffer, data, is_blocking=False)
                    pending.append(data)
        results: list[tuple[TensorInfo, np.ndarray]] = []
        try:
            self._enqueue_kernels()
            for info, buf in self._outputs:
                # (an alias's buffer may have another shape: Flatten, Reshape)
                host = staged.get(info.name)
                host = np.empty(info.shape, buf.dtype) if host is None else host
                with device_step(f"reading output {info.name}"):
                    if host.nbytes:
                        cl.enqueue_copy(self.queue, host, self.buffers[buf.name], is_blocking=False)
                results.append((info, host))
            with device_step("running the graph"):
                self.queue.finish()
        except DeviceError:
            self._after_failure()
            raise
        del pending
        return {info.name: self.staging.read(info.name, info.dtype) if self.staging and info.name in staged
                else _to_host(host, info.dtype) for info, host in results}

    def _after_failure(self) -> None:
        """After a failed run: waits for what was enqueued (the host arrays of pending reads are then released), and
        sets the constants the launches write (split-sum counters) back to their uploaded values, in case a launch
        stopped before leaving them so. Best effort: the device may refuse any further command."""
        with suppress(cl.Error):  # the error the run raises already says what failed
            self.queue.finish()
        try:
            for name in sorted(self.plan.writable):
                cl.enqueue_copy(self.queue, self.buffers[name], self.plan.constants[name], is_blocking=True)
        except cl.Error as exc:
            message = f"could not reset the split-sum counters after a failed run ({exc}): later runs may be wrong"
            self.warnings.append(message)
            log.warning(message)

    def tunable(self, index: int) -> bool:
        """Launches whose kernel fixes its work-group (local-memory tiles) keep it; the others may be tuned."""
        launch = self.plan.launches[index]
        return launch.local_size is None or launch.tunable_local

    def set_local_size(self, index: int, local_size: tuple[int, ...] | None) -> None:
        """Use `local_size` for launch `index` from now on (a tuned value, or None for the driver's choice)."""
        if not self.tunable(index):
            raise ValueError(f"launch {index} ({self.plan.launches[index].kernel}) has a fixed work-group size")
        kernel, launch = self.kernels[index]
        self.kernels[index] = (kernel, dataclasses.replace(launch, local_size=local_size))

    def _enqueue_kernels(self, start: int = 0) -> None:
        # One try around the loop, not one per launch: this loop is the host overhead of every run.
        index, launch = start, None
        try:
            for index in range(start, len(self.kernels)):
                kernel, launch = self.kernels[index]
                cl.enqueue_nd_range_kernel(self.queue, kernel, launch.global_size, launch.local_size)
        except cl.Error as exc:
            refused = exc.code == cl.status_code.INVALID_WORK_GROUP_SIZE
            if refused and launch is not None and launch.local_size is not None and self.tunable(index):
                # a tuned size the driver refuses never reaches the user: the driver chooses instead
                message = (f"local size {launch.local_size} of node {launch.node} ({launch.kernel}) was refused "
                           f"by the driver ({exc.what}); using the driver's choice")
                self.warnings.append(message)
                log.warning(message)
                self.set_local_size(index, None)
                self._enqueue_kernels(index)
                return
            where = f"launching node {launch.node} ({launch.op})" if launch else "launching"
            raise DeviceError(f"OpenCL error while {where}: {exc}") from exc

    def warm_up(self) -> None:
        """One run on zeros: the first launch of each kernel is where some drivers (pocl) finish compiling it."""
        self.run({name: np.zeros(shape, dtype) for name, shape, dtype in self._inputs})


def _to_host(data: np.ndarray, dtype: str) -> np.ndarray:
    """Device storage -> the output's IR dtype (float32 for float outputs stored as half under fp16_fp32)."""
    return data.astype(dtype, copy=False)
