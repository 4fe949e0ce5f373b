// Vector-matrix product for GPUs: a Gemm/MatMul with one row (M == 1; codegen transposes N == 1 into this form).
//   y[b][n] = ACTIVATE(ALPHA * sum_k a[b][k] * B[b][k][n] + BETA * C[b][n] + res[b][n])
// One output has too little work for a work item of its own (a 1 x 2048 . 2048 x 1000 classifier would be 1000
// serial loops), so LK work items share each output column, each summing every LK-th k (VEC wide), and a work-group
// reduces their sums in local memory. An LN x LK work-group covers LN columns. KFAST: B's columns are contiguous
// along k (BS_K == 1, e.g. Gemm with transB), so the LK lanes of a column are the fast local dimension and read
// consecutive k; otherwise the LN columns are, and read consecutive n.
// Defines: KERNEL_NAME; A_T B_T C_T R_T Y_T; N K; LN LK VEC KFAST; AS_K BS_K BS_N; BATCH, BATCH_RANK and, when > 0,
// BATCH_SHAPE A_BSTRIDES B_BSTRIDES C_BSTRIDES; ALPHA BETA; HAS_BIAS CS_N; HAS_RESIDUAL; ACTIVATE(v).
// VEC > 1 needs AS_K == BS_K == 1.
// Global size: (LK, ceil(N / LN) * LN, BATCH) with local (LK, LN, 1) if KFAST, else (ceil(N / LN) * LN, LK, BATCH)
// with local (LN, LK, 1).

#if KFAST
__kernel __attribute__((reqd_work_group_size(LK, LN, 1)))
#else
__kernel __attribute__((reqd_work_group_size(LN, LK, 1)))
#endif
void KERNEL_NAME(__global const TYPE(A_T)* a,
                 __global const TYPE(B_T)* b,
#if HAS_BIAS
                 __global const TYPE(C_T)* c,
#endif
#if HAS_RESIDUAL
                 __global const TYPE(R_T)* res,
#endif
                 __global TYPE(Y_T)* y)
{
#if KFAST
    const int lk = get_local_id(0), ln = get_local_id(1), n = get_global_id(1);
#else
    const int ln = get_local_id(0), lk = get_local_id(1), n = get_global_id(0);
#endif
    const int batch = get_global_id(2);
    int aoff = 0, boff = 0, coff = 0;
#if BATCH_RANK > 0
    BATCH_OFFSETS(batch);
#endif
    const int bcol = boff + min(n, N - 1) * BS_N;

    float acc = 0.0f;
#if VEC > 1
    VTYPE(VEC) vacc = 0.0f;
    for (int k = lk * VEC; k + VEC <= K; k += LK * VEC)
        vacc = mad(VLOADN(A_T, VEC, a, aoff + k), VLOADN(B_T, VEC, b, bcol + k), vacc);
    acc = VSUM(VEC, vacc);
    for (int k = K - K % VEC + lk; k < K; k += LK) acc = mad(LOAD(A_T, a, aoff + k), LOAD(B_T, b, bcol + k), acc);
#else
    for (int k = lk; k < K; k += LK) acc = mad(LOAD(A_T, a, aoff + k * AS_K), LOAD(B_T, b, bcol + k * BS_K), acc);
#endif

    __local float sums[LN][LK + 1];
    sums[ln][lk] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = LK / 2; s > 0; s >>= 1) {
        if (lk < s) sums[ln][lk] += sums[ln][lk + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lk != 0 || n >= N) return;
    float v = ALPHA * sums[ln][0];
#if HAS_BIAS
    v += BETA * LOAD(C_T, c, coff + n * CS_N);
#endif
    const int yo = batch * N + n;
#if HAS_RESIDUAL
    v += LOAD(R_T, res, yo);
#endif
    STORE(Y_T, y, yo, ACTIVATE(v));
}
