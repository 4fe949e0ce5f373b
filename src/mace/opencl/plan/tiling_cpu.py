"""CPU targets' blocking (DeviceTarget with is_gpu False: pocl): the *_cpu.cl kernels' vectors and rows per work
item, sized to the device's SIMD width (Planner.cpu_vector), and the work-group every launch gets there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mace.opencl.plan.templates import prod
from mace.opencl.plan.tiling import DEFAULT_POLICY, DeviceTarget, TilingPolicy  # noqa: F401 (the doctests')


def cpu_vector_width(n: int, widest: int, most: int = 16) -> int:
    """The widest vector of at most ``widest`` (Planner.cpu_vector) and ``most`` floats, of 4, 8 or 16, that fits
    ``n`` elements; 0 where n < 4 (the portable kernels then serve)."""
    return next((v for v in (16, 8, 4) if v <= min(widest, most) and v <= n), 0)


def cpu_gemm_blocking(m: int, n: int, rows: int, widest: int) -> tuple[int, int]:
    """(TM, VW) for gemm_cpu.cl: ``rows`` (``policy.cpu_gemm_rows``, or a variant's: variant_rows) rows, fewer
    where M is smaller, of one vector each of at most ``widest`` floats. 8 x 16 reaches 60-100 GFLOP/s on
    MobileNet-v2's 1x1 convs on 2 AVX-512 cores; 16 rows are no faster, and 8 columns half as fast. With AVX2 (16
    registers of 8 floats: 8 x 16 spills its accumulators) 8 x 8 is faster, whole models on 2 cores of an AMD EPYC
    (pocl 3.0): MobileNet-v2 12.89 -> 9.10 ms, SqueezeNet 1.1 11.12 -> 7.98, ShuffleNet-v2 9.90 -> 8.34 (4 x 16:
    9.37, 9.40, 7.95). VW is 0 where N < 4."""
    tm = next(r for r in (16, 8, 4, 2, 1) if r <= rows and (r <= m or r == 1))
    return tm, cpu_vector_width(n, widest)


def cpu_depthwise_blocking(oh: int, ow: int, sw: int, rows: int, widest: int) -> tuple[int, int]:
    """(RB, VW) for depthwise_cpu.cl: ``rows`` (``policy.cpu_depthwise_rows`` or a variant's) output rows, fewer
    where OH is smaller, of one vector each, its stride-2 loads 2 * VW <= 16 floats wide. VW is 0 where OW < 4."""
    rb = next(r for r in (8, 4, 2, 1) if r <= rows and (r <= oh or r == 1))
    return rb, _cpu_row_width(ow, sw, widest)


def cpu_conv_blocking(oc_per_group: int, ow: int, sw: int, rows: int, widest: int) -> tuple[int, int]:
    """(TM, VW) for conv_cpu.cl: ``rows`` (``policy.cpu_gemm_rows`` or a variant's) output channels, a power of two
    dividing the group's, of one vector of output columns each, as cpu_depthwise_blocking's. VW is 0 where OW < 4."""
    tm = next(r for r in (16, 8, 4, 2, 1) if r <= rows and oc_per_group % r == 0)
    return tm, _cpu_row_width(ow, sw, widest)


def _cpu_row_width(ow: int, sw: int, widest: int) -> int:
    """VW of a kernel that reads its inputs with cpu.h's CPU_ROW, whose stride-2 loads are 2 * VW <= 16 wide."""
    return cpu_vector_width(ow, widest, 16 // sw if sw <= 2 else 16)


def cpu_gemm_local_size(
    global_size: Sequence[int], k: int, vw: int, target: DeviceTarget, policy: TilingPolicy
) -> tuple[int, ...]:
    """The work-group of a gemm_cpu.cl launch (global size (column blocks, row blocks, batch)) whose B is bigger
    than ``policy.cpu_gemm_panel_bytes``: every row block of the most column blocks whose B panel (K x VW floats
    each) fits that, fewer where that leaves less than ``policy.cpu_groups_per_core`` work-groups per compute unit.
    cpu_local_size's choice (one row block and all columns, so each work-group reads the whole of B) where B fits,
    or no such panel does: a [197, 384] x [384, 1536] MatMul read its 2.4 MB of B 25 times from L3 (5.5 ms on 2
    cores; 7.5 ms before).

        >>> cpu = DeviceTarget(is_gpu=False, compute_units=2, local_mem_bytes=1 << 21, max_work_group_size=4096)
        >>> cpu_gemm_local_size((96, 25, 1), 384, 16, cpu, DEFAULT_POLICY)
        (12, 25, 1)
    """
    cols, rows, batch = (int(g) for g in global_size)
    if cols * k * vw * 4 <= policy.cpu_gemm_panel_bytes:
        return cpu_local_size(global_size, target, policy)
    want = policy.cpu_groups_per_core * target.compute_units
    fits = [v for v in divisors(cols) if v * rows <= target.max_work_group_size]
    panel = [v for v in fits if v * k * vw * 4 <= policy.cpu_gemm_panel_bytes and (cols // v) * batch >= want]
    if not panel:
        return cpu_local_size(global_size, target, policy)
    return panel[0], rows, 1


def divisors(n: int) -> list[int]:
    """The divisors of ``n`` >= 1, biggest first, by trial division up to its square root: a local size is a divisor
    of its global size, and global sizes run to billions of work items (a walk down from n took minutes).

        >>> divisors(12), divisors(1), divisors(2_147_483_647)[:2]
        ([12, 6, 4, 3, 2, 1], [1], [2147483647, 1])
    """
    small = [v for v in range(1, math.isqrt(n) + 1) if n % v == 0]
    return sorted({*small, *(n // v for v in small)}, reverse=True)


def cpu_local_size(global_size: Sequence[int], target: DeviceTarget, policy: TilingPolicy) -> tuple[int, ...]:
    """The work-group of a launch on a CPU target: at least ``policy.cpu_groups_per_core`` work-groups per compute
    unit where the grid has them, splitting the outer dims first (pocl vectorizes a work-group's loop along dim 0),
    each local size a divisor of its global size (-cl-std=CL1.2: uniform work-groups), within the device's limit.

        >>> cpu = DeviceTarget(is_gpu=False, compute_units=2, local_mem_bytes=1 << 21, max_work_group_size=4096)
        >>> cpu_local_size((196, 18, 4), cpu, DEFAULT_POLICY), cpu_local_size((3, 5), cpu, DEFAULT_POLICY)
        ((196, 9, 1), (1, 1))
    """
    dims = [int(g) for g in global_size]
    local = list(dims)
    want = policy.cpu_groups_per_core * target.compute_units
    for d in reversed(range(len(dims))):
        others = prod([g // v for g, v in zip(dims, local)]) // (dims[d] // local[d])
        local[d] = next((v for v in divisors(dims[d]) if others * (dims[d] // v) >= want), 1)
        if others * (dims[d] // local[d]) >= want:
            break
    for d in reversed(range(len(dims))):  # within the device's work-group size
        while prod(local) > target.max_work_group_size and local[d] > 1:
            local[d] = next(v for v in divisors(dims[d]) if v < local[d])
    return tuple(local)
