// Batched matrix product with a fused epilogue: Gemm, MatMul (broadcast batch dims) and 1x1 convolutions.
//   y[b][m][n] = ACTIVATE(ALPHA * sum_k A[b][m][k] * B[b][k][n] + BETA * C[b][m][n] + res[b][m][n])
// A, B and C are addressed through compile-time strides, which covers transA/transB, NCHW activations as the B
// operand of a 1x1 conv, and bias broadcasting. y is contiguous [BATCH][M][N]. One work item computes a TM x TN tile,
// by one of three paths:
//   VEC_N > 1: B's rows are contiguous (BS_N == 1): the TN == VEC_N columns are one vector per k;
//   VEC_K > 1: A's rows and B's columns are contiguous along k (AS_K == BS_K == 1, e.g. Gemm with transB): each
//              dot product runs VEC_K lanes wide;
//   otherwise scalar. Edge tiles clamp their loads and skip the stores.
// Defines: KERNEL_NAME; A_T B_T C_T R_T Y_T; M N K TM TN VEC_N VEC_K; AS_M AS_K BS_K BS_N CS_M CS_N; BATCH;
// BATCH_RANK and, when > 0, BATCH_SHAPE A_BSTRIDES B_BSTRIDES C_BSTRIDES; ALPHA BETA; HAS_BIAS; HAS_RESIDUAL;
// ACTIVATE(v).
// Global size: (ceil(N / TN), ceil(M / TM), BATCH).

__kernel void KERNEL_NAME(__global const TYPE(A_T)* a,
                          __global const TYPE(B_T)* b,
#if HAS_BIAS
                          __global const TYPE(C_T)* c,
#endif
#if HAS_RESIDUAL
                          __global const TYPE(R_T)* res,
#endif
                          __global TYPE(Y_T)* y)
{
    const int nb = get_global_id(0), mb = get_global_id(1), batch = get_global_id(2);
    if (nb * TN >= N || mb * TM >= M || batch >= BATCH) return;
    const int m0 = mb * TM, n0 = nb * TN;
    int aoff = 0, boff = 0, coff = 0;
#if BATCH_RANK > 0
    BATCH_OFFSETS(batch);
#endif
    int arow[TM];
    for (int i = 0; i < TM; ++i) arow[i] = aoff + min(m0 + i, M - 1) * AS_M;
    float acc[TM][TN];

#if VEC_N > 1
    VTYPE(VEC_N) vacc[TM];
    for (int i = 0; i < TM; ++i) vacc[i] = 0.0f;
    if (n0 + VEC_N <= N) {
        for (int k = 0; k < K; ++k) {
            const VTYPE(VEC_N) bv = VLOADN(B_T, VEC_N, b, boff + k * BS_K + n0);
            for (int i = 0; i < TM; ++i) vacc[i] = mad((VTYPE(VEC_N))(LOAD(A_T, a, arow[i] + k * AS_K)), bv, vacc[i]);
        }
    } else {  // the last, partial column tile
        for (int k = 0; k < K; ++k) {
            float bt[VEC_N];
            for (int j = 0; j < VEC_N; ++j) bt[j] = LOAD(B_T, b, boff + k * BS_K + min(n0 + j, N - 1));
            const VTYPE(VEC_N) bv = CAT(vload, VEC_N)(0, bt);
            for (int i = 0; i < TM; ++i) vacc[i] = mad((VTYPE(VEC_N))(LOAD(A_T, a, arow[i] + k * AS_K)), bv, vacc[i]);
        }
    }
    for (int i = 0; i < TM; ++i) VSPILL(VEC_N, vacc[i], acc[i]);

#elif VEC_K > 1
    int bcol[TN];
    for (int j = 0; j < TN; ++j) bcol[j] = boff + min(n0 + j, N - 1) * BS_N;
    VTYPE(VEC_K) vacc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) vacc[i][j] = 0.0f;
    for (int k = 0; k + VEC_K <= K; k += VEC_K) {
        VTYPE(VEC_K) av[TM];
        for (int i = 0; i < TM; ++i) av[i] = VLOADN(A_T, VEC_K, a, arow[i] + k);
        for (int j = 0; j < TN; ++j) {
            const VTYPE(VEC_K) bv = VLOADN(B_T, VEC_K, b, bcol[j] + k);
            for (int i = 0; i < TM; ++i) vacc[i][j] = mad(av[i], bv, vacc[i][j]);
        }
    }
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) {
            acc[i][j] = VSUM(VEC_K, vacc[i][j]);
            for (int k = K - K % VEC_K; k < K; ++k)
                acc[i][j] = mad(LOAD(A_T, a, arow[i] + k), LOAD(B_T, b, bcol[j] + k), acc[i][j]);
        }

#else
    int bcol[TN];
    for (int j = 0; j < TN; ++j) bcol[j] = boff + min(n0 + j, N - 1) * BS_N;
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
    for (int k = 0; k < K; ++k) {
        float av[TM], bv[TN];
        for (int i = 0; i < TM; ++i) av[i] = LOAD(A_T, a, arow[i] + k * AS_K);
        for (int j = 0; j < TN; ++j) bv[j] = LOAD(B_T, b, bcol[j] + k * BS_K);
        for (int i = 0; i < TM; ++i)
            for (int j = 0; j < TN; ++j) acc[i][j] = mad(av[i], bv[j], acc[i][j]);
    }
#endif

    for (int i = 0; i < TM; ++i) {
        const int m = m0 + i;
        if (m >= M) break;
        for (int j = 0; j < TN; ++j) {
            const int n = n0 + j;
            if (n >= N) break;
            float v = ALPHA * acc[i][j];
#if HAS_BIAS
            v += BETA * LOAD(C_T, c, coff + m * CS_M + n * CS_N);
#endif
            const int yo = (batch * M + m) * N + n;
#if HAS_RESIDUAL
            v += LOAD(R_T, res, yo);
#endif
            STORE(Y_T, y, yo, ACTIVATE(v));
        }
    }
}
