"""GemmShape: how a matrix product addresses its operands. Its own module because the portable lowering (gemm.py), the
GPU one (gemm_tiled.py) and the tiling policy (tiling.py) all read it, and none of them should import another for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GemmShape:
    """How gemm.cl addresses its operands: element strides of A over (m, k), B over (k, n), the bias over (m, n), and
    of each operand over the batch dims. ``y_permute`` Q > 1 (one 2-D product, GPU targets only): output row
    r * Q + q is stored as row q * (M / Q) + r, a Transpose of [M / Q, Q, N] to [Q, M / Q, N] folded into the store
    (gemm.fold_output_transposes), the residual read at the same place."""

    m: int
    n: int
    k: int
    a_strides: tuple[int, int]
    b_strides: tuple[int, int]
    c_strides: tuple[int, int] = (0, 0)
    batch: tuple[int, ...] = ()
    a_batch: tuple[int, ...] = ()
    b_batch: tuple[int, ...] = ()
    c_batch: tuple[int, ...] = ()
    alpha: float = 1.0
    beta: float = 1.0
    y_permute: int = 1
