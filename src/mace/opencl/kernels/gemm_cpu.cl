// Batched matrix product on a CPU target, fp32, with gemm.cl's fused epilogue (Gemm, MatMul, 1x1 convolutions):
//   y[b][m][n] = ACTIVATE(ALPHA * sum_k A[b][m][k] * B[b][k][n] + BETA * C[b][m][n] + res[b][m][n])
// B's rows are contiguous (B[k][n0 .. n0 + VW) is one vector load; the planner transposes a constant B that is not).
// One work item computes a TM x VW register block: per k, one vector of B and TM broadcasts of A feed TM vector
// FMAs. A_PACKED: A is constant, laid out by the planner as [ceil(M / TM)][K][TM] (zero rows past M), so the TM
// values of one k are adjacent; otherwise A is read through its strides, rows past M clamped to M - 1.
// The last column block is shifted left to end at N (VW <= N): it recomputes columns of its neighbour, the same
// values from the same inputs (a kernel's inputs never share memory with its output), instead of a masked tail.
// y[b][m][n] is stored at b * Y_BSTRIDE + Y_OFFSET + m * N + n: a slice of a bigger tensor where codegen places the
// output straight into a Concat's (Y_BSTRIDE = M * N and Y_OFFSET = 0 otherwise); res is read at (b * M + m) * N + n.
// Defines: KERNEL_NAME; M N K TM VW; A_PACKED; AS_M AS_K BS_K CS_M CS_N (CS_N 0 or 1); BATCH; BATCH_RANK and, when
// > 0, BATCH_SHAPE A_BSTRIDES B_BSTRIDES C_BSTRIDES; ALPHA BETA; HAS_BIAS; HAS_RESIDUAL; ACTIVATE(v); Y_BSTRIDE
// Y_OFFSET.
// Global size: (ceil(N / VW), ceil(M / TM), BATCH).

__kernel void KERNEL_NAME(__global const float* a,
                          __global const float* b,
#if HAS_BIAS
                          __global const float* c,
#endif
#if HAS_RESIDUAL
                          __global const float* res,
#endif
                          __global float* y)
{
    const int nb = get_global_id(0), mb = get_global_id(1), batch = get_global_id(2);
    const int n0 = nb * VW < N - VW ? nb * VW : N - VW, m0 = mb * TM;  // (min() is a call in pocl)
    int aoff = 0, boff = 0, coff = 0;
#if BATCH_RANK > 0
    BATCH_OFFSETS(batch);
#endif
#if A_PACKED
    __global const float* ap = a + mb * (K * TM);
#define GEMM_CPU_A(i, k) ap[(k) * TM + (i)]
#else
#define GEMM_CPU_AROW(i) const int arow##i = aoff + (m0 + (i) < M ? m0 + (i) : M - 1) * AS_M;
    CPU_ROWS(TM, GEMM_CPU_AROW)
#define GEMM_CPU_A(i, k) a[arow##i + (k) * AS_K]
#endif
#define GEMM_CPU_ZERO(i) CPU_VTYPE(VW) acc##i = 0.0f;
    CPU_ROWS(TM, GEMM_CPU_ZERO)
    __global const float* bp = b + boff + n0;
    for (int k = 0; k < K; ++k) {
        const CPU_VTYPE(VW) bv = CPU_VLOAD(VW, bp, k * BS_K);
#define GEMM_CPU_FMA(i) acc##i += GEMM_CPU_A(i, k) * bv;
        CPU_ROWS(TM, GEMM_CPU_FMA)
    }

#if HAS_BIAS && CS_N == 0
#define GEMM_CPU_BIAS(m) + BETA * c[coff + (m) * CS_M]
#elif HAS_BIAS
#define GEMM_CPU_BIAS(m) + BETA * CPU_VLOAD(VW, c, coff + (m) * CS_M + n0)
#else
#define GEMM_CPU_BIAS(m)
#endif
#if HAS_RESIDUAL
#define GEMM_CPU_RES(yo) + CPU_VLOAD(VW, res, yo)
#else
#define GEMM_CPU_RES(yo)
#endif
#define GEMM_CPU_STORE(i)                                                                   \
    if (m0 + (i) < M) {                                                                     \
        const int yo = (batch * M + m0 + (i)) * N + n0;                                     \
        const CPU_VTYPE(VW) v = ALPHA * acc##i GEMM_CPU_BIAS(m0 + (i)) GEMM_CPU_RES(yo);    \
        CPU_VSTORE(VW, y, batch * Y_BSTRIDE + Y_OFFSET + (m0 + (i)) * N + n0, ACTIVATE(v));  \
    }
    CPU_ROWS(TM, GEMM_CPU_STORE)
#undef GEMM_CPU_A
#undef GEMM_CPU_AROW
#undef GEMM_CPU_ZERO
#undef GEMM_CPU_FMA
#undef GEMM_CPU_BIAS
#undef GEMM_CPU_RES
#undef GEMM_CPU_STORE
}
