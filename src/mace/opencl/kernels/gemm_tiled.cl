// Work-group tiled matrix product for GPUs: Gemm, MatMul and every group-1 convolution as an implicit GEMM.
//   y[b][m][n] = ACTIVATE(ALPHA * sum_k A[b][m][k] * B[b][k][n] + BETA * C[b][m][n] + res[b][m][n])
// An LM x LN work-group computes a BM x BN block of y (BM = LM * TM, BN = LN * TN): each step stages a BK-deep slice
// of A and B in local memory, then every work item accumulates its TM x TN outputs from there (see ROW/COL for which
// ones). Loads outside M, N or the split's k range read zero.
//
// A is addressed by strides (AS_M, AS_K); a pass of the loader walks m (A_MFAST, e.g. conv weights relaid as [K][M])
// or k fastest, whichever is contiguous. B is either strided (CONV 0: BS_K, BS_N; B_NFAST as A_MFAST) or, for a
// convolution (CONV 1), gathered from the NCDHW input: k = ((c * KD + kd) * KH + kh) * KW + kw and
// n = (od * OH + oh) * OW + ow, so y[b] is the [OC][OD * OH * OW] output of image b with no reshaping.
// y[b][m][n] is stored at b * Y_BSTRIDE + Y_OFFSET + m * N + n: a slice of a bigger tensor where codegen places the
// output straight into a Concat's (Y_BSTRIDE = M * N and Y_OFFSET = 0 otherwise); res is read at (b * M + m) * N + n.
//
// With SPLITS > 1 the z dimension also splits k into SPLITS ranges of KS, each work-group writes its raw partial
// sums to part[SPLITS][BATCH][M][N], and SPLIT_K_SUM (below, a second launch) adds them and applies the epilogue.
// (Letting the last work-group of a block do that, counted with atomic_inc, saves the launch but is not safe in
// OpenCL 1.2: NVIDIA compiles mem_fence(CLK_GLOBAL_MEM_FENCE) to membar.cta, and on an H200 that version read stale
// partial sums in a few runs out of hundreds.)
// Defines: TILED_GEMM; KERNEL_NAME; A_T B_T C_T R_T Y_T; M N K; LM LN TM TN BK VLDS SPLITS KS; AS_M AS_K A_MFAST;
// CONV and BS_K BS_N B_NFAST, or C ID IH IW OD OH OW KD KH KW SD SH SW PD PH PW DD DH DW; BATCH, BATCH_RANK
// and, when > 0, BATCH_SHAPE A_BSTRIDES B_BSTRIDES C_BSTRIDES; Y_BSTRIDE Y_OFFSET; ALPHA BETA; HAS_BIAS CS_M CS_N;
// HAS_RESIDUAL; ACTIVATE(v).
// Global size: (ceil(N / BN) * LN, ceil(M / BM) * LM, BATCH * SPLITS); local size (LN, LM, 1).
//
// SPLIT_K_SUM: y = epilogue(sum over splits of part), one work item per output element.
// Defines: SPLIT_K_SUM; KERNEL_NAME; C_T R_T Y_T; M N BATCH SPLITS; Y_BSTRIDE Y_OFFSET; ALPHA BETA; HAS_BIAS CS_M
// CS_N; HAS_RESIDUAL; ACTIVATE(v). Global size: (BATCH * M * N).

#if TILED_GEMM
#define BM (LM * TM)
#define BN (LN * TN)
#define NT (LM * LN)

// Element e of a tile (0 <= e < BK * BM): which (kk, mm) a loader pass gives it. Consecutive work items take
// consecutive addresses in global memory: along m where A is m-contiguous, else along k. Likewise for B.
#if A_MFAST
#define A_KK(e) ((e) / BM)
#define A_MM(e) ((e) % BM)
#else
#define A_KK(e) ((e) % BK)
#define A_MM(e) ((e) / BK)
#endif
#if CONV || B_NFAST
#define B_KK(e) ((e) / BN)
#define B_NN(e) ((e) % BN)
#else
#define B_KK(e) ((e) % BK)
#define B_NN(e) ((e) / BK)
#endif

// The global loads of the tiles at k0 into ra and rb (zero outside M, N and the split's k range). A convolution
// gathers B from the input window of the work item's fixed output column (NT % BN == 0, so B_NN(e) is nn).
#define LOAD_A(k0)                                                                                  \
    for (int r = 0; r < BK * BM / NT; ++r) {                                                        \
        const int m = m0 + A_MM(tid + r * NT), k = (k0) + A_KK(tid + r * NT);                       \
        ra[r] = (m < M && k < kend) ? LOAD(A_T, a, aoff + m * AS_M + k * AS_K) : 0.0f;              \
    }
#if CONV
#define LOAD_B(k0)                                                                                  \
    for (int r = 0; r < BK * BN / NT; ++r) {                                                        \
        const int k = (k0) + B_KK(tid + r * NT);                                                    \
        const int kw = k % KW, kh = (k / KW) % KH, kd = (k / (KW * KH)) % KD, ci = k / (KW * KH * KD); \
        const int id = id0 + kd * DD, ih = ih0 + kh * DH, iw = iw0 + kw * DW;                       \
        const bool inside = ncol < N && k < kend && id >= 0 && id < ID && ih >= 0 && ih < IH && iw >= 0 \
                            && iw < IW;                                                             \
        rb[r] = inside ? LOAD(B_T, b, boff + ((ci * ID + id) * IH + ih) * IW + iw) : 0.0f;          \
    }
#else
#define LOAD_B(k0)                                                                                  \
    for (int r = 0; r < BK * BN / NT; ++r) {                                                        \
        const int n = n0 + B_NN(tid + r * NT), k = (k0) + B_KK(tid + r * NT);                       \
        rb[r] = (n < N && k < kend) ? LOAD(B_T, b, boff + k * BS_K + n * BS_N) : 0.0f;              \
    }
#endif
#define LOAD_TILES(k0) \
    do {               \
        LOAD_A(k0)     \
        LOAD_B(k0)     \
    } while (0)

__kernel __attribute__((reqd_work_group_size(LN, LM, 1)))
void KERNEL_NAME(__global const TYPE(A_T)* a,
                 __global const TYPE(B_T)* b,
#if SPLITS > 1
                 __global float* part)
#else
#if HAS_BIAS
                 __global const TYPE(C_T)* c,
#endif
#if HAS_RESIDUAL
                 __global const TYPE(R_T)* res,
#endif
                 __global TYPE(Y_T)* y)
#endif
{
    const int lx = get_local_id(0), ly = get_local_id(1), tid = ly * LN + lx;
    const int n0 = get_group_id(0) * BN, m0 = get_group_id(1) * BM;
    const int batch = get_group_id(2) / SPLITS, split = get_group_id(2) % SPLITS;
    const int kbeg = split * KS, kend = min(K, kbeg + KS);
    int aoff = 0, boff = 0, coff = 0;
#if BATCH_RANK > 0
    BATCH_OFFSETS(batch);
#endif

#if CONV
    // This work item always loads the same column of B: its output position, and where its window starts.
    boff = batch * (C * ID * IH * IW);
    const int ncol = n0 + tid % BN, nc = min(ncol, N - 1);
    const int ow = nc % OW, oh = (nc / OW) % OH, od = nc / (OW * OH);
    const int id0 = od * SD - PD, ih0 = oh * SH - PH, iw0 = ow * SW - PW;
#endif

    // Local tiles: a row of k. Rows that a loader pass writes along k (not m/n) get padded against bank conflicts,
    // by a whole vector where VLDS reads them as vectors.
#if A_MFAST
#define AROW BM
#else
#define AROW (BM + (VLDS ? TM : 1))
#endif
#if CONV || B_NFAST
#define BROW BN
#else
#define BROW (BN + (VLDS ? TN : 1))
#endif
    __local float at[BK * AROW] __attribute__((aligned(32)));
    __local float bt[BK * BROW] __attribute__((aligned(32)));
    // VLDS: a work item reads its rows (columns) from local memory as vectors of VM = min(TM, 4) (VN = min(TN, 4)):
    // TM / VM groups of VM consecutive rows, the groups LM * VM apart (TM <= 4: TM consecutive rows), so a warp's
    // float4 reads of one group cover consecutive addresses; otherwise rows ly + i * LM and columns lx + j * LN
    // (scalar reads, consecutive banks across a warp).
#if VLDS
#if TM > 4
#define VM 4
#else
#define VM TM
#endif
#if TN > 4
#define VN 4
#else
#define VN TN
#endif
#define ROW(i) (((i) / VM) * (LM * VM) + ly * VM + (i) % VM)
#define COL(j) (((j) / VN) * (LN * VN) + lx * VN + (j) % VN)
#else
#define ROW(i) (ly + (i) * LM)
#define COL(j) (lx + (j) * LN)
#endif
    float acc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;

    // A software pipeline over the k steps: the global loads of the next tile go to registers (ra, rb) while the
    // work-group computes on the current one in local memory. (Barriers stay unconditional: pocl replicates the code
    // after a barrier inside a branch.)
    float ra[BK * BM / NT], rb[BK * BN / NT];
    LOAD_TILES(kbeg);
    for (int k0 = kbeg; k0 < kend; k0 += BK) {
        for (int r = 0; r < BK * BM / NT; ++r) at[A_KK(tid + r * NT) * AROW + A_MM(tid + r * NT)] = ra[r];
        for (int r = 0; r < BK * BN / NT; ++r) bt[B_KK(tid + r * NT) * BROW + B_NN(tid + r * NT)] = rb[r];
        barrier(CLK_LOCAL_MEM_FENCE);
        if (k0 + BK < kend) LOAD_TILES(k0 + BK);
        for (int kk = 0; kk < BK; ++kk) {
            float av[TM], bv[TN];
#if VLDS
            for (int i = 0; i < TM; i += VM) VSPILL(VM, *(__local const VTYPE(VM)*)(at + kk * AROW + ROW(i)), av + i);
            for (int j = 0; j < TN; j += VN) VSPILL(VN, *(__local const VTYPE(VN)*)(bt + kk * BROW + COL(j)), bv + j);
#else
            for (int i = 0; i < TM; ++i) av[i] = at[kk * AROW + ROW(i)];
            for (int j = 0; j < TN; ++j) bv[j] = bt[kk * BROW + COL(j)];
#endif
            for (int i = 0; i < TM; ++i)
                for (int j = 0; j < TN; ++j) acc[i][j] = mad(av[i], bv[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

#if SPLITS > 1
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ROW(i);
        if (m >= M) break;
        for (int j = 0; j < TN; ++j) {
            const int n = n0 + COL(j);
            if (n >= N) break;
            part[split * (BATCH * M * N) + (batch * M + m) * N + n] = acc[i][j];
        }
    }
#endif
#if SPLITS == 1
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ROW(i);
        if (m >= M) break;
        for (int j = 0; j < TN; ++j) {
            const int n = n0 + COL(j);
            if (n >= N) break;
            float v = ALPHA * acc[i][j];
#if HAS_BIAS
            v += BETA * LOAD(C_T, c, coff + m * CS_M + n * CS_N);
#endif
#if HAS_RESIDUAL
            v += LOAD(R_T, res, (batch * M + m) * N + n);
#endif
            STORE(Y_T, y, batch * Y_BSTRIDE + Y_OFFSET + m * N + n, ACTIVATE(v));
        }
    }
#endif
}

#undef AROW
#undef BROW
#undef ROW
#undef COL
#undef VM
#undef VN
#undef BM
#undef BN
#undef NT
#undef A_KK
#undef A_MM
#undef B_KK
#undef B_NN
#undef LOAD_A
#undef LOAD_B
#undef LOAD_TILES
#endif  // TILED_GEMM

#if SPLIT_K_SUM
__kernel void KERNEL_NAME(__global const float* part,
#if HAS_BIAS
                          __global const TYPE(C_T)* c,
#endif
#if HAS_RESIDUAL
                          __global const TYPE(R_T)* res,
#endif
                          __global TYPE(Y_T)* y)
{
    const int yo = get_global_id(0), batch = yo / (M * N);
    if (yo >= BATCH * M * N) return;
    float sum = 0.0f;
    for (int s = 0; s < SPLITS; ++s) sum += part[s * (BATCH * M * N) + yo];
    float v = ALPHA * sum;
#if HAS_BIAS
    const int m = (yo / N) % M, n = yo % N;  // the bias does not vary over the batch (codegen checks)
    v += BETA * LOAD(C_T, c, m * CS_M + n * CS_N);
#endif
#if HAS_RESIDUAL
    v += LOAD(R_T, res, yo);
#endif
    STORE(Y_T, y, batch * Y_BSTRIDE + Y_OFFSET + yo % (M * N), ACTIVATE(v));
}
#endif  // SPLIT_K_SUM

