"""Per-launch device times from OpenCL profiling events, for `mace benchmark`'s per-op table and for tuning.

The engine's own queue has profiling off (it costs a little on some drivers); this module replays the executor's
preset kernels on a second, profiling queue of the same context, so the figures are the same kernels with the same
arguments and work-group sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyopencl as cl

from mace.opencl.executor import Executor


def profile_launches(executor: Executor, feeds: dict[str, np.ndarray], repeats: int = 10) -> list[dict[str, Any]]:
    """Median device time of every launch over `repeats` runs: node, op, kernel, sizes and microseconds."""
    executor.run(feeds)  # inputs are in the device buffers now; every kernel has launched once
    queue = cl.CommandQueue(executor.context, executor.queue.device,
                            properties=cl.command_queue_properties.PROFILING_ENABLE)
    samples: list[list[float]] = [[] for _ in executor.kernels]
    for _ in range(max(repeats, 1)):
        events = [cl.enqueue_nd_range_kernel(queue, kernel, launch.global_size, launch.local_size)
                  for kernel, launch in executor.kernels]
        queue.finish()
        for i, event in enumerate(events):
            samples[i].append((event.profile.end - event.profile.start) * 1e-3)
    rows = []
    for (_, launch), times in zip(executor.kernels, samples):
        rows.append({"node": launch.node, "op": launch.op, "kernel": launch.kernel,
                     "global_size": list(launch.global_size),
                     "local_size": list(launch.local_size) if launch.local_size else None,
                     "us": float(np.median(times))})
    return rows


def summarize_by_op(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Total device time per op type (fused epilogues count with their producer), largest first."""
    totals: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = totals.setdefault(row["op"], {"op": row["op"], "launches": 0, "us": 0.0})
        entry["launches"] += 1
        entry["us"] += row["us"]
    return sorted(totals.values(), key=lambda e: -e["us"])
