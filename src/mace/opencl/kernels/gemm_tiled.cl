// Work-group tiled matrix product for GPUs: Gemm, MatMul and every group-1 convolution as an implicit GEMM.
//   y[b][m][n] = ACTIVATE(ALPHA * sum_k A[b][m][k] * B[b][k][n] + BETA * C[b][m][n] + res[b][m][n])
// An LM x LN work-group computes a BM x BN block of y (BM = LM * TM, BN = LN * TN): each step stages a BK-deep slice
// of A and B in local memory, then every work item accumulates its TM x TN outputs from there (see ROW/COL for which
// ones). Loads outside M, N or the split's k range read zero.
//
// A is addressed by strides (AS_M, AS_K); a pass of the loader walks m (A_MFAST, e.g. conv weights relaid as [K][M])
// or k fastest, whichever is contiguous; with A_ROWS (products of one B folded into m: gemm_tiled.gpu_gemm) row m is
// row m % A_ROWS of product m / A_ROWS, whose rows start AS_B apart. B is either strided (CONV 0: BS_K, BS_N; B_NFAST
// as A_MFAST) or, for a convolution (CONV 1), gathered from the NCDHW input: k = ((c * KD + kd) * KH + kh) * KW + kw
// and n = (od * OH + oh) * OW + ow, so y[b] is the [OC][OD * OH * OW] output of image b with no reshaping. CONV 2 is a
// 1x1 convolution of a depthwise convolution's output, computed by the loader from the depthwise input (k = c):
// B[c][n] = DW_ACTIVATE(sum_{kh,kw} dww[c][kh][kw] * x[c][oh * SH - PH + kh * DH][ow * SW - PW + kw * DW] + dwb[c]),
// the window attributes being the depthwise conv's (ID = OD = KD = 1): the depthwise output is never stored.
// C_INNER (CONV 1, C a multiple of BK): k runs over the window positions outer and the channels inner,
// k = ((kd * KH + kh) * KW + kw) * C + c, A's columns relaid to match, so each BK step reads one window position.
// y[b][m][n] is stored at b * Y_BSTRIDE + Y_OFFSET + m * N + n: a slice of a bigger tensor where codegen places the
// output straight into a Concat's (Y_BSTRIDE = M * N and Y_OFFSET = 0 otherwise); res is read at (b * M + m) * N + n.
// FOLD (a convolution of several images): the images lie side by side along n, FOLD = OD * OH * OW positions each
// (N = images * FOLD, BATCH = 1), so small maps fill whole tiles; column n is position n % FOLD of image n / FOLD,
// and y, res and the partial sums keep the [image][m][position] layout.
//
// With SPLITS > 1 the z dimension also splits k into SPLITS ranges of KS, and each work-group writes its raw partial
// sums to part[SPLITS][BATCH][M][N]; SPLIT_K_SUM (below, a second launch) adds them and applies the epilogue.
// SPLIT_SUM (NVIDIA targets, DeviceTarget.nvidia_ptx) instead lays the work-groups in a row (global size (groups *
// LN, LM, 1)): the blocks in order, the first SPLIT_FROM whole and each later one as SPLITS pieces side by side
// (tiling_gpu.gpu_gemm_tile: whole waves of blocks, then pieces that fill the last waves), and the last of a block's
// pieces to finish sums their part[split block][SPLITS][BM][BN] in ksum's order and applies the epilogue
// (common.h's SPLITS_ARRIVE).
// Defines: TILED_GEMM; KERNEL_NAME; A_T B_T C_T R_T Y_T; M N K; LM LN TM TN BK VLDS UNROLL_STEP SPLITS KS
// SPLIT_SUM SPLIT_FROM MMA MMA_PASSES MMA_ASYNC; AS_M AS_K A_MFAST (A_ROWS AS_B); CONV and BS_K BS_N B_NFAST, or C
// ID IH IW OD OH OW KD KH KW SD SH SW PD PH PW DD DH DW, C_INNER, FOLD (CONV 2: DWW_T, DW_BIAS and DWB_T,
// DW_ACTIVATE(v)); BATCH, BATCH_RANK and, when > 0, BATCH_SHAPE A_BSTRIDES B_BSTRIDES C_BSTRIDES; Y_BSTRIDE Y_OFFSET;
// Y_PERMUTE (optional, below); ALPHA BETA; HAS_BIAS CS_M CS_N; HAS_RESIDUAL; ACTIVATE(v).
// Global size: (ceil(N / BN) * LN, ceil(M / BM) * LM, BATCH * SPLITS), or SPLIT_SUM's; local size (LN, LM, 1).
//
// MMA (targets with tensor cores, DeviceTarget.tensor_cores: NVIDIA, sm_80 on): the products run on the tensor cores
// through inline PTX, mma.sync m16n8k8 on TF32 operands, at fp32 accuracy: each operand is split into a high and a
// low TF32 part, x = x_hi + x_lo (MMA_SPLIT), and a_lo b_hi + a_hi b_lo + a_hi b_hi summed (3xTF32: ~2^-21 of a
// product lost, in the dropped a_lo b_lo and the low parts' own last bits; MMA_PASSES 3), or at TF32 accuracy
// (the user's choice, DeviceTarget.tf32: a_hi b_hi alone, ~2^-11 of a product lost; MMA_PASSES 1). The tensor
// cores' accumulation truncates, so each BK step's sums go into the fp32 accumulators with a rounded add. Warp w of
// the NT / 32 computes a 32 x 32 piece of the block (2 x 4 tiles of 16 x 8, the PTX fragment layout); TM, TN only
// size the loaders.
// Needs BM, BN multiples of 32, BK of 8. MMA_ASYNC (float operands, C_INNER): the tiles go from global to local
// memory by cp.async into two stages, the next step's copies in flight while the current one computes, instead of
// through registers (ra, rb) into one.
//
// SPLIT_K_SUM: y = epilogue(sum over splits of part), one work item per output element.
// Defines: SPLIT_K_SUM; KERNEL_NAME; C_T R_T Y_T; M N BATCH SPLITS; Y_BSTRIDE Y_OFFSET; Y_PERMUTE; ALPHA BETA;
// HAS_BIAS CS_M CS_N; HAS_RESIDUAL; ACTIVATE(v). Global size: (BATCH * M * N).

// Y_PERMUTE Q (one product, BATCH 1): output row r * Q + q is stored as row q * (M / Q) + r, and the residual read
// there (a Transpose of [M / Q, Q, N] to [Q, M / Q, N] after the product, folded into its store)
#if defined(Y_PERMUTE) && Y_PERMUTE > 1
#define YROW(m) ((m) % Y_PERMUTE * (M / Y_PERMUTE) + (m) / Y_PERMUTE)
#else
#define YROW(m) (m)
#endif

#if TILED_GEMM
#if MMA && !defined(MMA_HELPERS)
#define MMA_HELPERS
// x = hi + lo: hi is x rounded to TF32 (to nearest, ties away from zero, as cvt.rna.tf32.f32 does, in two integer
// operations) and held to the largest finite TF32, lo = x - hi (exact in fp32, either sign), whose low 13 bits the
// tensor cores ignore. The hold keeps IEEE semantics: an infinite x is hi = +-TF32_MAX, lo = +-inf, so a . b is
// +-inf of the right sign (and NaN for 0 . inf), where hi = inf gave inf - inf = NaN in the cross products; an x
// within a rounding step of FLT_MAX stays finite. Measured on an H200 (ResNet-50 at batch 32, kernels; error against
// onnxruntime): with the hold 10.53-10.62 ms, 2.2e-5; without it 9.99-10.07; lo rounded too 10.49; cvt.rna for both
// 11.82; hi truncated (x & ~0x1fff: lo then always has x's sign, and the lost bits bias every product toward zero)
// 9.63 ms but 5.8e-5; the SIMT tiles 10.61 ms, 2.4e-5. Splitting once at the local-memory store instead (hi and lo
// planes) 10.89 ms, and warp pieces of 64 x 32 14.21: the split is not what bounds this form.
#define TF32_RNA(x) ((as_uint(x) + 0x1000u) & 0xffffe000u)
#define TF32_MAX as_float(0x7f7fe000u)
#define MMA_SPLIT(hi, lo, x)                                                        \
    {                                                                               \
        (hi) = as_uint(fmin(fmax(as_float(TF32_RNA(x)), -TF32_MAX), TF32_MAX));     \
        (lo) = as_uint((x) - as_float(hi));                                         \
    }
// cp.async (sm_80): 4 bytes from global to local memory without a register, or zeros where !ok; then the groups
#define CP_ASYNC(dst, src, ok)                                                                       \
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"((uint)(ulong)(dst)), "l"(src),   \
                 "r"((ok) ? 4 : 0) : "memory")
#define CP_ASYNC_COMMIT() asm volatile("cp.async.commit_group;" ::: "memory")
#define CP_ASYNC_WAIT_ALL_BUT_ONE() asm volatile("cp.async.wait_group 1;" ::: "memory")
// d += a . b for one 16 x 8 x 8 tile (fragments: a 4, b 2, d 4 registers a lane)
#define MMA_TF32(d, a, b)                                                                                     \
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "        \
        "{%0,%1,%2,%3};"                                                                                     \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                     \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))
#endif
#define BM (LM * TM)
#define BN (LN * TN)
#define NT (LM * LN)
#define BLOCKS_N ((N + BN - 1) / BN)
#define BLOCKS_M ((M + BM - 1) / BM)
#if FOLD  // column n's image and position, and y's positions per image (see FOLD above)
#define IMG(n) ((n) / FOLD)
#define POS(n) ((n) % FOLD)
#define YN FOLD
#else
#define IMG(n) batch
#define POS(n) (n)
#define YN N
#endif

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

#if A_ROWS
#define A_ROW(m) ((m) / A_ROWS * AS_B + (m) % A_ROWS * AS_M)
#else
#define A_ROW(m) ((m) * AS_M)
#endif
// The global loads of the tiles at k0 into ra and rb (zero outside M, N and the split's k range). A convolution
// gathers B from the input window of the work item's fixed output column (NT % BN == 0, so B_NN(e) is nn).
#define LOAD_A(k0)                                                                                  \
    for (int r = 0; r < BK * BM / NT; ++r) {                                                        \
        const int m = m0 + A_MM(tid + r * NT), k = (k0) + A_KK(tid + r * NT);                       \
        ra[r] = (inner || (m < M && k < kend)) ? LOAD(A_T, a, aoff + A_ROW(m) + k * AS_K) : 0.0f;   \
    }
#if CONV == 2
// (the depthwise taps in depthwise.cl's order: with float storage its outputs, bit for bit)
#define LOAD_B(k0)                                                                                  \
    for (int r = 0; r < BK * BN / NT; ++r) {                                                        \
        const int ci = (k0) + B_KK(tid + r * NT);                                                   \
        float v = 0.0f;                                                                             \
        if (ncol < N && ci < kend) {                                                                \
            float s = 0.0f;                                                                         \
            for (int kh = 0; kh < KH; ++kh) {                                                       \
                const int ih = ih0 + kh * DH;                                                       \
                if (ih < 0 || ih >= IH) continue;                                                   \
                for (int kw = 0; kw < KW; ++kw) {                                                   \
                    const int iw = iw0 + kw * DW;                                                   \
                    const float xv = (iw >= 0 && iw < IW) ? LOAD(B_T, b, boff + (ci * IH + ih) * IW + iw) : 0.0f; \
                    s = mad(xv, LOAD(DWW_T, dww, (ci * KH + kh) * KW + kw), s);                      \
                }                                                                                   \
            }                                                                                       \
            v = DW_ACTIVATE(s + DW_BIAS_OF(ci));                                                    \
        }                                                                                           \
        rb[r] = v;                                                                                  \
    }
#elif CONV && C_INNER
// k = ((kd * KH + kh) * KW + kw) * C + c (see C_INNER): a BK step's k share one window position, so a work item
// finds its input element and whether it lies inside once a step; its rows are channels C_STEP apart
#define C_STEP (ID * IH * IW)
// the step at k0's window position, where this work item's column reads it (base) and whether that lies inside
#define C_INNER_WINDOW(k0)                                                                          \
    const int at_ = (k0) / C, c0 = (k0) - at_ * C;                                                  \
    const int kw = at_ % KW, kh = (at_ / KW) % KH, kd = at_ / (KW * KH);                            \
    const int id = id0 + kd * DD, ih = ih0 + kh * DH, iw = iw0 + kw * DW;                           \
    const bool inside = ncol < N && id >= 0 && id < ID && ih >= 0 && ih < IH && iw >= 0 && iw < IW; \
    const int base = boff + ((c0 * ID + id) * IH + ih) * IW + iw;
#define LOAD_B(k0)                                                                                  \
    {                                                                                               \
        C_INNER_WINDOW(k0)                                                                          \
        for (int r = 0; r < BK * BN / NT; ++r)                                                      \
            rb[r] = inside ? LOAD(B_T, b, base + B_KK(tid + r * NT) * C_STEP) : 0.0f;               \
    }
#elif CONV
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
        rb[r] = (inner || (n < N && k < kend)) ? LOAD(B_T, b, boff + k * BS_K + n * BS_N) : 0.0f;   \
    }
#endif
#define LOAD_TILES(k0) \
    do {               \
        LOAD_A(k0)     \
        LOAD_B(k0)     \
    } while (0)
#if MMA_ASYNC
// LOAD_A and C_INNER's LOAD_B as copies into stage s (a zero-sized copy from the operand's start where nothing is read)
#define ASYNC_TILES(k0, s)                                                                          \
    {                                                                                               \
        for (int r = 0; r < BK * BM / NT; ++r) {                                                    \
            const int m = m0 + A_MM(tid + r * NT), k = (k0) + A_KK(tid + r * NT);                   \
            const bool ok = m < M && k < kend;                                                      \
            CP_ASYNC(at_stages[s] + A_KK(tid + r * NT) * AROW + A_MM(tid + r * NT),                 \
                     a + (ok ? aoff + A_ROW(m) + k * AS_K : 0), ok);                                \
        }                                                                                           \
        C_INNER_WINDOW(k0)                                                                          \
        for (int r = 0; r < BK * BN / NT; ++r)                                                      \
            CP_ASYNC(bt_stages[s] + B_KK(tid + r * NT) * BROW + B_NN(tid + r * NT),                 \
                     b + (inside ? base + B_KK(tid + r * NT) * C_STEP : 0), inside);                \
    }
#endif

__kernel __attribute__((reqd_work_group_size(LN, LM, 1)))
void KERNEL_NAME(__global const TYPE(A_T)* a,
                 __global const TYPE(B_T)* b,
#if CONV == 2
                 __global const TYPE(DWW_T)* dww,
#if DW_BIAS
                 __global const TYPE(DWB_T)* dwb,
#endif
#endif
#if SPLITS > 1 && !SPLIT_SUM
                 __global float* part)
#else
#if SPLITS > 1
                 __global float* part,
                 __global uint* counts,
#endif
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
#if SPLIT_SUM
    // the work-groups in a row: the blocks in order (n fastest, then m, then the batch), the first SPLIT_FROM whole,
    // each later one as SPLITS pieces side by side (see SPLIT_FROM above)
    const int group = get_group_id(0), whole = group < SPLIT_FROM;
    const int block = whole ? group : SPLIT_FROM + (group - SPLIT_FROM) / SPLITS;
    const int split = whole ? 0 : (group - SPLIT_FROM) % SPLITS;
    const int n0 = block % BLOCKS_N * BN, m0 = block / BLOCKS_N % BLOCKS_M * BM;
    const int batch = block / (BLOCKS_N * BLOCKS_M);
    const int kbeg = split * KS, kend = whole ? K : min(K, kbeg + KS);
#else
    const int n0 = get_group_id(0) * BN, m0 = get_group_id(1) * BM;
    const int batch = get_group_id(2) / SPLITS, split = get_group_id(2) % SPLITS;
    const int kbeg = split * KS, kend = min(K, kbeg + KS);
#endif
    int aoff = 0, boff = 0, coff = 0;
#if BATCH_RANK > 0
    BATCH_OFFSETS(batch);
#endif

    // UNROLL_STEP (tiling.GemmTile.unroll): a block wholly inside M and N, in whole BK steps, loads unchecked
#if UNROLL_STEP && K % BK == 0 && KS % BK == 0
    const bool inner = m0 + BM <= M && n0 + BN <= N;
#else
    const bool inner = false;
#endif
#if CONV == 2 && DW_BIAS
#define DW_BIAS_OF(ci) LOAD(DWB_T, dwb, ci)
#elif CONV == 2
#define DW_BIAS_OF(ci) 0.0f
#endif
#if CONV
    // This work item always loads the same column of B: its output position, and where its window starts.
    const int ncol = n0 + tid % BN, nc = min(ncol, N - 1), pos = POS(nc);
    boff = IMG(nc) * (C * ID * IH * IW);
    const int ow = pos % OW, oh = (pos / OW) % OH, od = pos / (OW * OH);
    const int id0 = od * SD - PD, ih0 = oh * SH - PH, iw0 = ow * SW - PW;
#endif

    // Local tiles: a row of k. Rows that a loader pass writes along k (not m/n) get padded against bank conflicts,
    // by a whole vector where VLDS reads them as vectors.
#if MMA  // the fragment reads (rows k + t, columns g, t < 4, g < 8) fall on 32 banks with 8 floats of padding
#define AROW (BM + 8)
#define BROW (BN + 8)
#elif A_MFAST
#define AROW BM
#else
#define AROW (BM + (VLDS ? TM : 1))
#endif
#if MMA
#elif CONV || B_NFAST
#define BROW BN
#else
#define BROW (BN + (VLDS ? TN : 1))
#endif
#if MMA_ASYNC
    __local float at_stages[2][BK * AROW] __attribute__((aligned(32)));
    __local float bt_stages[2][BK * BROW] __attribute__((aligned(32)));
#else
    __local float at[BK * AROW] __attribute__((aligned(32)));
    __local float bt[BK * BROW] __attribute__((aligned(32)));
#endif
#if SPLITS > 1 && SPLIT_SUM
    __local uint arrived;  // how many of the block's work-groups had finished before this one
#endif
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
#if MMA
    // this lane's place in the PTX fragments (group mg, thread mt) and its warp's 32 x 32 piece of the block
    const int warp = tid / 32, lane = tid % 32, mg = lane / 4, mt = lane % 4;
    const int wm = (warp / (BN / 32)) * 32, wn = (warp % (BN / 32)) * 32;
    float acc[2][4][4];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j)
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;
#else
    float acc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
#endif

    // A software pipeline over the k steps: the global loads of the next tile go to registers (ra, rb) while the
    // work-group computes on the current one in local memory; with MMA_ASYNC they go by cp.async to the other stage,
    // and each step waits for its own copies only. (Barriers stay unconditional: pocl replicates the code after a
    // barrier inside a branch.)
#if MMA_ASYNC
    ASYNC_TILES(kbeg, 0);
    CP_ASYNC_COMMIT();
    int stage = 0;
#else
    float ra[BK * BM / NT], rb[BK * BN / NT];
    LOAD_TILES(kbeg);
#endif
    for (int k0 = kbeg; k0 < kend; k0 += BK) {
#if MMA_ASYNC
        if (k0 + BK < kend) ASYNC_TILES(k0 + BK, stage ^ 1);
        CP_ASYNC_COMMIT();  // (an empty group at the last step: the wait below then covers this step's)
        CP_ASYNC_WAIT_ALL_BUT_ONE();
        barrier(CLK_LOCAL_MEM_FENCE);
        __local const float* at = at_stages[stage];
        __local const float* bt = bt_stages[stage];
        stage ^= 1;
#else
        for (int r = 0; r < BK * BM / NT; ++r) at[A_KK(tid + r * NT) * AROW + A_MM(tid + r * NT)] = ra[r];
        for (int r = 0; r < BK * BN / NT; ++r) bt[B_KK(tid + r * NT) * BROW + B_NN(tid + r * NT)] = rb[r];
        barrier(CLK_LOCAL_MEM_FENCE);
        if (k0 + BK < kend) LOAD_TILES(k0 + BK);
#endif
#if MMA
        // this k step's products in kacc, added to acc rounded after it (per 8 k: 2.2e-5 as well, but 12.72 ms)
        float kacc[2][4][4];
        for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 4; ++j)
                for (int r = 0; r < 4; ++r) kacc[i][j][r] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            uint ah[2][4], al[2][4], bh[4][2], bl[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int r = wm + 16 * i + mg;
                const float x[4] = {at[(kk + mt) * AROW + r], at[(kk + mt) * AROW + r + 8], at[(kk + mt + 4) * AROW + r],
                                    at[(kk + mt + 4) * AROW + r + 8]};
#pragma unroll
                for (int q = 0; q < 4; ++q) MMA_SPLIT(ah[i][q], al[i][q], x[q]);
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int c = wn + 8 * j + mg;
                const float x[2] = {bt[(kk + mt) * BROW + c], bt[(kk + mt + 4) * BROW + c]};
#pragma unroll
                for (int q = 0; q < 2; ++q) MMA_SPLIT(bh[j][q], bl[j][q], x[q]);
            }
#if MMA_PASSES == 3
            // the small products first, each a pass over the 8 tiles (independent accumulators between a tile's three)
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) MMA_TF32(kacc[i][j], al[i], bh[j]);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) MMA_TF32(kacc[i][j], ah[i], bl[j]);
#endif
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) MMA_TF32(kacc[i][j], ah[i], bh[j]);
        }
        for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 4; ++j)
                for (int r = 0; r < 4; ++r) acc[i][j][r] += kacc[i][j][r];
#else
#if UNROLL_STEP  // ... and its k step is unrolled
#pragma unroll
#endif
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
#endif
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    // the outputs: raw partial sums with k split (and then, with SPLIT_SUM, the epilogue of their sum in the last
    // work-group of the block), else the epilogue (bias, residual, activation)
#if HAS_BIAS
#define OUT_BIAS(m, n) (BETA * LOAD(C_T, c, coff + (m) * CS_M + (n) * CS_N))
#else
#define OUT_BIAS(m, n) -0.0f  // x + -0 is x, -0 included: nothing added
#endif
#if HAS_RESIDUAL
#define OUT_RES(m, n) LOAD(R_T, res, (IMG(n) * M + YROW(m)) * YN + POS(n))
#else
#define OUT_RES(m, n) -0.0f
#endif
// (three statements, as before MMA: one expression could contract differently under -cl-mad-enable)
#define OUT(m, n, sum)                                                                                     \
    {                                                                                                      \
        float v = ALPHA * (sum);                                                                           \
        v += OUT_BIAS(m, n);                                                                               \
        v += OUT_RES(m, n);                                                                                \
        STORE(Y_T, y, IMG(n) * Y_BSTRIDE + Y_OFFSET + YROW(m) * YN + POS(n), ACTIVATE(v));                 \
    }
#define PART(s, m, n) ((s) * (BATCH * M * N) + (IMG(n) * M + (m)) * YN + POS(n))
// STMT for each output (m, n) of this work item, its sum in acc_v
#if MMA
#define EACH_OUTPUT(STMT)                                                                                  \
    for (int i = 0; i < 2; ++i)                                                                            \
        for (int j = 0; j < 4; ++j)                                                                        \
            for (int r = 0; r < 4; ++r) {                                                                  \
                const int m = m0 + wm + 16 * i + mg + 8 * (r / 2), n = n0 + wn + 8 * j + 2 * mt + r % 2;   \
                const float acc_v = acc[i][j][r];                                                          \
                if (m < M && n < N) STMT;                                                                  \
            }
#else
#define EACH_OUTPUT(STMT)                                                                                  \
    for (int i = 0; i < TM; ++i) {                                                                         \
        const int m = m0 + ROW(i);                                                                         \
        if (m >= M) break;                                                                                 \
        for (int j = 0; j < TN; ++j) {                                                                     \
            const int n = n0 + COL(j);                                                                     \
            if (n >= N) break;                                                                             \
            const float acc_v = acc[i][j];                                                                 \
            STMT;                                                                                          \
        }                                                                                                  \
    }
#endif
#if SPLIT_SUM
#if SPLIT_FROM
    if (whole) {
        EACH_OUTPUT(OUT(m, n, acc_v));
    } else
#endif
    {
        // a piece's partial sums: its block's BM x BN, row-major, the pieces of a block side by side
        const int split_block = block - SPLIT_FROM;
        __global float* piece = part + (split_block * SPLITS + split) * (BM * BN);
        EACH_OUTPUT(piece[(m - m0) * BN + (n - n0)] = acc_v);
        SPLITS_ARRIVE(counts, split_block, arrived, tid, last);
        if (last) {
            // whole outputs a work item, consecutive across the work-group (coalesced reads), in a rolled loop: few
            // copies of the epilogue in the code, not one for each of the TM x TN accumulators. (Vector loads of 4
            // consecutive outputs, 4 vectors at once, measured slower on an H200: Inception-v3's Mixed_6 convs at
            // batch 32, 396 whole blocks and 6 pieces of the rest, 95-153 -> 102-173 us.)
            __global volatile const float* sums = part + split_block * SPLITS * (BM * BN);
#define SUM_VALID(e) (m0 + (e) / BN < M && n0 + (e) % BN < N)
#define SUM_AT(s, e) ((s) * (BM * BN) + (e))
#define SUM_DONE(e, total) OUT(m0 + (e) / BN, n0 + (e) % BN, total)
#pragma unroll 1
            SPLITS_TOTALS(BM * BN, sums, SUM_VALID, SUM_AT, SUM_DONE)
#undef SUM_VALID
#undef SUM_AT
#undef SUM_DONE
        }
    }
#elif SPLITS > 1
    EACH_OUTPUT(part[PART(split, m, n)] = acc_v);
#else
    EACH_OUTPUT(OUT(m, n, acc_v));
#endif
}

#undef OUT
#undef PART
#undef EACH_OUTPUT
#undef DW_BIAS_OF
#undef OUT_BIAS
#undef OUT_RES
#undef AROW
#undef BROW
#undef ROW
#undef COL
#undef VM
#undef VN
#undef BM
#undef BN
#undef NT
#undef BLOCKS_N
#undef BLOCKS_M
#undef IMG
#undef POS
#undef YN
#undef A_KK
#undef A_MM
#undef A_ROW
#undef B_KK
#undef B_NN
#undef LOAD_A
#undef LOAD_B
#undef LOAD_TILES
#undef ASYNC_TILES
#undef C_STEP
#undef C_INNER_WINDOW
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
    const int m = (yo / N) % M, n = yo % N;  // (the bias does not vary over the batch: codegen checks)
    const int at = batch * M * N + YROW(m) * N + n;  // where y[batch][m][n] and its residual lie
#if HAS_BIAS
    v += BETA * LOAD(C_T, c, m * CS_M + n * CS_N);
#endif
#if HAS_RESIDUAL
    v += LOAD(R_T, res, at);
#endif
    STORE(Y_T, y, batch * Y_BSTRIDE + Y_OFFSET + at % (M * N), ACTIVATE(v));
}
#endif  // SPLIT_K_SUM
#undef YROW

