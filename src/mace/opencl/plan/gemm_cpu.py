"""Matrix products for CPU targets (Planner.cpu): gemm_cpu.cl for Gemm, MatMul and 1x1 convolutions, fp32.

The portable gemm.cl is written for drivers that inline builtins and keep private arrays in registers; pocl does
neither (kernels/cpu.h), so on 2 AVX-512 cores it ran MobileNet-v2's 1x1 convs at 1-7 GFLOP/s. gemm_cpu.cl gives each
work item a TM x VW register block of named vector accumulators, its B row one vector load (a constant B that is not
n-contiguous is transposed here, once) and its A column adjacent (a constant A is packed here as [M/TM][K][TM]):
60-100 GFLOP/s on the same layers. Products it does not cover (half storage, N < 4, a strided run-time B, a bias
strided along n) keep gemm.cl.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mace.model.ir import Node
from mace.opencl.plan.gemm_shape import GemmShape
from mace.opencl.plan.planner import Arg, Planner
from mace.opencl.plan.templates import collapse, prod
from mace.opencl.plan.tiling import CPU_ROW_VARIANTS, variant_rows
from mace.opencl.plan.tiling_cpu import cpu_gemm_blocking, cpu_gemm_local_size


def cpu_gemm_applies(p: Planner, a: str, b: str, bias: str | None, residual: str | None, out: str,
                     g: GemmShape) -> bool:
    """Whether cpu_gemm plans this product (else gemm.cl does): fp32 throughout, N of at least a vector, a bias along
    m or contiguous along n, B n-contiguous or a constant the planner can transpose."""
    values = [a, b, out, *(v for v in (bias, residual) if v is not None)]
    if not cpu_gemm_blocking(g.m, g.n, 1, p.cpu_vector)[1] or any(p.tag(v) != "F32" for v in values):
        return False
    if bias is not None and g.c_strides[1] not in (0, 1):
        return False
    b_bs = collapse(g.batch, g.a_batch, g.b_batch, g.c_batch)[1][1]
    return g.b_strides[1] == 1 or (p.is_const(b) and not any(b_bs))


def cpu_gemm(
    p: Planner, node: Node, a: str, b: str, bias: str | None, residual: str | None, out: str, g: GemmShape
) -> bool:
    """gemm.gemm on gemm_cpu.cl for CPU targets, the same contract; False (nothing planned) where it does not apply
    (cpu_gemm_applies). ``out`` may be placed in a slice of a Concat's output (placement.py)."""
    if not cpu_gemm_applies(p, a, b, bias, residual, out, g):
        return False
    rows = variant_rows(p.variant(node, CPU_ROW_VARIANTS), p.policy.cpu_gemm_rows)
    tm, vw = cpu_gemm_blocking(g.m, g.n, rows, p.cpu_vector)
    bshape, (a_bs, b_bs, c_bs) = collapse(g.batch, g.a_batch, g.b_batch, g.c_batch)
    nbatch = prod(bshape)
    b_buf, bs_k = p.use(b), g.b_strides[0]
    if g.b_strides[1] != 1:
        b_kn = _gather(p.graph.float_constant(b), g.k, g.n, g.b_strides)
        b_buf, bs_k = p.derived(f"{b}@kn{g.b_strides[0]}x{g.b_strides[1]}", b_kn, "F32"), g.n
    packed = p.is_const(a) and not any(a_bs)
    if packed:
        blocks = -(-g.m // tm)
        a_mk = np.zeros((blocks * tm, g.k), np.float32)
        a_mk[: g.m] = _gather(p.graph.float_constant(a), g.m, g.k, g.a_strides)
        panel = a_mk.reshape(blocks, tm, g.k).transpose(0, 2, 1)
        a_buf = p.derived(f"{a}@tm{tm}s{g.a_strides[0]}x{g.a_strides[1]}", panel, "F32")
    else:
        a_buf = p.use(a)
    defines: dict[str, Any] = {"M": g.m, "N": g.n, "K": g.k, "TM": tm, "VW": vw, "A_PACKED": packed}
    defines.update({"AS_M": g.a_strides[0], "AS_K": g.a_strides[1], "BS_K": bs_k})
    defines.update({"CS_M": g.c_strides[0], "CS_N": g.c_strides[1]})
    defines.update({"BATCH": nbatch, "BATCH_RANK": len(bshape) if nbatch > 1 else 0})
    if nbatch > 1:
        defines.update({"BATCH_SHAPE": bshape, "A_BSTRIDES": a_bs, "B_BSTRIDES": b_bs, "C_BSTRIDES": c_bs})
    defines.update({"ALPHA": g.alpha, "BETA": g.beta, "HAS_BIAS": bias is not None})
    args: list[Arg] = [a_buf, b_buf, *([p.use(bias)] if bias is not None else [])]
    p.epilogue(node, defines, args, residual)
    root, offset, bstride = p.placement.get(out, (out, 0, g.m * g.n))  # a slice of a Concat's output (placement.py)
    defines.update({"Y_BSTRIDE": bstride, "Y_OFFSET": offset})
    args.append(p.define(root))
    grid = [-(-g.n // vw), -(-g.m // tm), nbatch]
    assert p.target is not None
    local = cpu_gemm_local_size(grid, g.k, vw, p.target, p.policy)
    p.launch(node, p.kernel("gemm_cpu", defines), grid, args, cpu_local=local)
    return True


def _gather(data: np.ndarray, rows: int, cols: int, strides: tuple[int, int]) -> np.ndarray:
    """The rows x cols matrix a constant operand holds at element ``strides`` (from its first element)."""
    index = np.arange(rows)[:, None] * strides[0] + np.arange(cols)[None, :] * strides[1]
    return np.ascontiguousarray(data.reshape(-1)[index], dtype=np.float32)
