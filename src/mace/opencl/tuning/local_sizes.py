"""Choosing local work sizes by measurement (the results are kept by ``params.TunedParamsStore``).

Independent of the executor: it takes a built ``cl.Kernel`` with its arguments set, a queue and a global size.
Candidates come from the kernel's and the device's limits (``KernelLimits``); every value loaded from a file is
re-checked against those limits (``validate_local_size``) before use, since the file may come from another build,
another driver or a hand edit (MACE trusted its tuned values without re-checking them).

    >>> limits = KernelLimits(work_group_size=256, max_work_item_sizes=(256, 256, 64), needs_uniform=True)
    >>> candidate_local_sizes((64, 30), limits.work_group_size, limits.max_work_item_sizes,
    ...                       needs_uniform=limits.needs_uniform)[:4]
    [None, (64, 2), (64, 1), (32, 2)]
    >>> validate_local_size((8, 4), (64, 30), 256, (256, 256, 64), needs_uniform=True)
    'global size 30 in dim 1 is not a multiple of local size 4 (the device or program needs uniform work-groups)'
    >>> best, best_us, trials = tune_kernel(queue, kernel, (64, 30), limits)       # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
import operator
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pyopencl as cl

LocalSize = tuple[int, ...] | None  # None: the driver's choice (a NULL local_work_size)
MIN_LOCAL_MEM_SIZE = 32 * 1024  # CL_DEVICE_LOCAL_MEM_SIZE guaranteed by every non-embedded OpenCL 1.2+ device
# The driver's choice wins unless an explicit size is faster by more than this fraction: a NULL local size adapts to
# the device and cannot fail, so an explicit one must earn its place, not win on noise.
DRIVER_CHOICE_TOLERANCE = 0.03


# ---------------------------------------------------------------------------------------------------------------------
# Limits, candidates, validation (pure: no device needed)


@dataclass(frozen=True)
class KernelLimits:
    """What bounds a local size for one kernel on one device."""

    work_group_size: int  # CL_KERNEL_WORK_GROUP_SIZE: the kernel's own limit, often below the device's
    max_work_item_sizes: tuple[int, ...]  # CL_DEVICE_MAX_WORK_ITEM_SIZES
    needs_uniform: bool  # global % local must be 0 in every dim (see needs_uniform_work_groups)
    local_mem_size: int = MIN_LOCAL_MEM_SIZE  # bytes of local memory left for dynamic use by one work-group

    @classmethod
    def of(cls, kernel: cl.Kernel, device: cl.Device, build_options: str) -> KernelLimits:
        """Query the limits of ``kernel`` (built with ``build_options``) on ``device``."""
        info = cl.kernel_work_group_info
        static_local = int(kernel.get_work_group_info(info.LOCAL_MEM_SIZE, device))
        return cls(
            work_group_size=int(kernel.get_work_group_info(info.WORK_GROUP_SIZE, device)),
            max_work_item_sizes=tuple(int(v) for v in device.max_work_item_sizes),
            needs_uniform=needs_uniform_work_groups(device, build_options),
            local_mem_size=max(0, int(device.local_mem_size) - static_local),
        )


def needs_uniform_work_groups(device: cl.Device, build_options: str) -> bool:
    """True when every global size must be a multiple of the local size (else CL_INVALID_WORK_GROUP_SIZE).

    Non-uniform work-groups need both an OpenCL 2.0+ device that supports them (mandatory in 2.x, optional in 3.0:
    CL_DEVICE_NON_UNIFORM_WORK_GROUP_SUPPORT) and a program compiled as OpenCL C 2.0+ (``-cl-std=CL2.0``/``CL3.0``)
    without ``-cl-uniform-work-group-size``. Without ``-cl-std`` the compiler uses OpenCL C 1.x, so uniform too.
    mace builds with ``-cl-std=CL1.2``, so this is True for its kernels on every device.
    """
    options = build_options.split()
    if "-cl-uniform-work-group-size" in options:
        return True
    std = next((o.partition("=")[2] for o in reversed(options) if o.startswith("-cl-std=")), "")
    match = re.fullmatch(r"CL(\d+)\.(\d+)", std)
    if match is None or int(match.group(1)) < 2:
        return True
    version = re.match(r"OpenCL (\d+)\.", str(device.version))
    major = int(version.group(1)) if version else 1
    if major < 2:
        return True
    if major == 2:
        return False
    try:
        return not device.get_info(cl.device_info.NON_UNIFORM_WORK_GROUP_SUPPORT)
    except (cl.Error, AttributeError):  # an old pyopencl or a driver that does not answer: be safe
        return True


def candidate_local_sizes(
    global_size: Sequence[int],
    kernel_work_group_size: int,
    max_work_item_sizes: Sequence[int],
    local_mem_per_item: int = 0,
    local_mem_size: int = MIN_LOCAL_MEM_SIZE,
    *,
    needs_uniform: bool = False,
) -> list[LocalSize]:
    """Every local size worth timing: None (the driver's choice) first, always; then each tuple of powers of two
    with, per dim d, ``local[d] <= max_work_item_sizes[d]`` and ``local[d] <= global_size[d]`` (and
    ``global_size[d] % local[d] == 0`` when ``needs_uniform``), whose product is at most ``kernel_work_group_size``
    and whose local memory (``product * local_mem_per_item`` bytes) fits in ``local_mem_size``.

    Ordered by work-group size, largest first (ties: lexicographically largest first), so a caller that can only
    afford the first few tries the fullest work-groups.
    """
    dims = _dims(global_size, "global_size")
    items = tuple(int(v) for v in max_work_item_sizes)
    if len(items) < len(dims):
        raise ValueError(f"max_work_item_sizes {items} has fewer than the {len(dims)} dims of the global size")
    per_item = max(0, int(local_mem_per_item))
    cap = int(kernel_work_group_size)
    if per_item:
        cap = min(cap, int(local_mem_size) // per_item)
    options = []
    for d, g in enumerate(dims):
        limit = min(items[d], g, cap)
        powers = [1 << k for k in range(limit.bit_length()) if (1 << k) <= limit]
        options.append([p for p in powers if not needs_uniform or g % p == 0])
    found = [c for c in itertools.product(*options) if math.prod(c) <= cap]
    found.sort(key=lambda c: (math.prod(c), c), reverse=True)
    return [None, *found]


def validate_local_size(
    local: Sequence[int] | None,
    global_size: Sequence[int],
    kernel_wg_size: int,
    max_item_sizes: Sequence[int],
    needs_uniform: bool,
    local_mem_per_item: int = 0,
    local_mem_size: int | None = None,
) -> str | None:
    """Why ``local`` cannot be used for this launch (the first violated limit), or None if it can.

    None (the driver's choice) is always valid. Used to re-check a loaded value against the current kernel.
    """
    if local is None:
        return None
    try:
        local = tuple(operator.index(v) for v in local)
        dims = _dims(global_size, "global_size")
    except (TypeError, ValueError) as exc:
        return f"not a sequence of sizes ({exc})"
    if len(local) != len(dims):
        return f"local size {local} has {len(local)} dims, the global size {dims} has {len(dims)}"
    for d, (size, g) in enumerate(zip(local, dims)):
        if size < 1:
            return f"local size {size} in dim {d} is below 1"
        if d >= len(max_item_sizes) or size > max_item_sizes[d]:
            limit = max_item_sizes[d] if d < len(max_item_sizes) else "none (no such dim)"
            return f"local size {size} in dim {d} exceeds CL_DEVICE_MAX_WORK_ITEM_SIZES[{d}] = {limit}"
        if size > g:
            return f"local size {size} in dim {d} exceeds the global size {g}"
        if needs_uniform and g % size:
            return (
                f"global size {g} in dim {d} is not a multiple of local size {size} "
                "(the device or program needs uniform work-groups)"
            )
    product = math.prod(local)
    if product > kernel_wg_size:
        return f"work-group of {product} items exceeds CL_KERNEL_WORK_GROUP_SIZE = {kernel_wg_size}"
    if local_mem_per_item and local_mem_size is not None and product * local_mem_per_item > local_mem_size:
        return (
            f"work-group of {product} items needs {product * local_mem_per_item} bytes of local memory, "
            f"{local_mem_size} are available"
        )
    return None


def _dims(global_size: Sequence[int], what: str) -> tuple[int, ...]:
    dims = tuple(int(g) for g in global_size)
    if not 1 <= len(dims) <= 3 or min(dims) < 1:
        raise ValueError(f"{what} {dims} is not 1 to 3 sizes >= 1")
    return dims


# ---------------------------------------------------------------------------------------------------------------------
# Timing (needs a device)


class Trial(NamedTuple):
    local_size: LocalSize
    time_us: float  # math.inf when the launch failed
    error: str | None = None


def time_launch(
    queue: cl.CommandQueue,
    kernel: cl.Kernel,
    global_size: Sequence[int],
    local_size: Sequence[int] | None,
    repeats: int = 5,
    warmup: int = 1,
) -> float:
    """The kernel's time in microseconds for this local size: the minimum over ``repeats`` launches, after
    ``warmup`` untimed ones (pocl compiles a work-group function per local size on its first launch).

    With a profiling queue (CL_QUEUE_PROFILING_ENABLE) the time is the event's END - START; otherwise the wall clock
    around one enqueue and ``finish()``, which adds the launch overhead (the same for every candidate). The minimum,
    not the mean: noise on a shared machine only ever adds time. Raises cl.Error if the launch fails.
    """
    gsize = tuple(int(g) for g in global_size)
    lsize = None if local_size is None else tuple(int(v) for v in local_size)
    profiling = bool(queue.properties & cl.command_queue_properties.PROFILING_ENABLE)
    queue.finish()  # start from an idle queue: earlier work must not be counted
    for _ in range(max(0, warmup)):
        cl.enqueue_nd_range_kernel(queue, kernel, gsize, lsize)
    queue.finish()
    best = math.inf
    for _ in range(max(1, repeats)):
        if profiling:
            event = cl.enqueue_nd_range_kernel(queue, kernel, gsize, lsize)
            event.wait()
            elapsed = (event.profile.end - event.profile.start) / 1e3  # ns -> µs
        else:
            start = time.perf_counter()
            cl.enqueue_nd_range_kernel(queue, kernel, gsize, lsize)
            queue.finish()
            elapsed = (time.perf_counter() - start) * 1e6
        best = min(best, elapsed)
    return best


def tune_kernel(
    queue: cl.CommandQueue,
    kernel: cl.Kernel,
    global_size: Sequence[int],
    limits: KernelLimits,
    candidates: Sequence[LocalSize] | None = None,
    *,
    repeats: int = 5,
    local_mem_per_item: int = 0,
    max_candidates: int | None = None,
    tolerance: float = DRIVER_CHOICE_TOLERANCE,
) -> tuple[LocalSize, float, list[Trial]]:
    """Time every candidate (by default ``candidate_local_sizes`` for ``limits``; at most ``max_candidates`` of them,
    None included) and return ``(best_local, best_us, trials)``.

    Candidates that fail ``validate_local_size`` or whose launch raises cl.Error (CL_INVALID_WORK_GROUP_SIZE,
    CL_OUT_OF_RESOURCES) are kept in ``trials`` with time inf and the reason. None wins unless an explicit size is
    faster by more than ``tolerance`` (a fraction); ``best_us`` is inf only when every launch failed. The kernel's
    arguments must be set; its outputs are overwritten by every timed launch, so tune before the results matter (or
    re-run afterwards).
    """
    gsize = tuple(int(g) for g in global_size)
    if candidates is None:
        candidates = candidate_local_sizes(
            gsize,
            limits.work_group_size,
            limits.max_work_item_sizes,
            local_mem_per_item,
            limits.local_mem_size,
            needs_uniform=limits.needs_uniform,
        )
    chosen = list(dict.fromkeys(None if c is None else tuple(int(v) for v in c) for c in candidates))
    if None not in chosen:
        chosen.insert(0, None)
    if max_candidates is not None:
        chosen = [None, *[c for c in chosen if c is not None][: max(0, max_candidates - 1)]]
    trials: list[Trial] = []
    for local in chosen:
        reason = validate_local_size(
            local,
            gsize,
            limits.work_group_size,
            limits.max_work_item_sizes,
            limits.needs_uniform,
            local_mem_per_item,
            limits.local_mem_size,
        )
        if reason is not None:
            trials.append(Trial(local, math.inf, reason))
            continue
        try:
            trials.append(Trial(local, time_launch(queue, kernel, gsize, local, repeats)))
        except cl.Error as exc:
            trials.append(Trial(local, math.inf, f"launch failed: {exc}"))
    driver = next(t for t in trials if t.local_size is None)
    best = min(trials, key=lambda t: t.time_us)
    if best.time_us == math.inf or driver.time_us <= best.time_us * (1 + tolerance):
        best = driver
    return best.local_size, best.time_us, trials
