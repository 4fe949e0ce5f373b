// ScaledDotProductAttention (mace.model.ir): y = softmax(SCALE * q . kt + mask) . v for each batch-head and query
// row, the softmax online (one pass over the keys; the running max and sum are rescaled as the max grows), so the
// scores are never stored. Every operand is read through strides (plan/views.py: ViT's qkv split and head moves cost
// no copies): element (bh, i, d) of q is q[Q_OFF + Q_BH(bh) + i * QS_I + d * QS_D], likewise kt (bh, d, j), v (bh,
// j, e), mask (bh, i, j; zero strides where it broadcasts) and y (bh, i, e).
// SPLITS work items share a query row, each taking every SPLITS-th block of KB keys; a work-group holds ROWS rows and
// merges each row's SPLITS partial (max, sum, accumulator) in local memory (SPLITS 1: no merge, any work-group).
// The running max starts at -FLT_MAX, not -inf, so masked (-inf) keys weigh exp(-inf) = 0, never exp(-inf - -inf).
// As the unfused Softmax: a row of only -inf scores gives 0 / 0, a NaN or +inf score makes its row NaN; with
// NAN_TO_ZERO (transformers' Where(IsNaN(p), 0, p)) such rows are 0.
// KVEC / VVEC 4: kt rows contiguous along d (v along e), read as aligned vectors; else 1.
// Defines: KERNEL_NAME; Q_T K_T V_T Y_T (M_T); SQ SK D DV; SCALE; HAS_MASK NAN_TO_ZERO; SPLITS ROWS KB KVEC VVEC;
// Q_OFF Q_BH(r) QS_I QS_D; K_OFF K_BH(r) KS_D KS_J; V_OFF V_BH(r) VS_J VS_E; M_OFF M_BH(r) MS_I MS_J;
// Y_OFF Y_BH(r) YS_I YS_E.
// Global size (SPLITS, ceil(SQ / ROWS) * ROWS, batch-heads); local (SPLITS, ROWS, 1) when SPLITS > 1.

#if SPLITS > 1
__kernel __attribute__((reqd_work_group_size(SPLITS, ROWS, 1)))
#else
__kernel
#endif
void KERNEL_NAME(__global const TYPE(Q_T)* q, __global const TYPE(K_T)* kt, __global const TYPE(V_T)* v,
#if HAS_MASK
                 __global const TYPE(M_T)* mask,
#endif
                 __global TYPE(Y_T)* y)
{
    const int split = get_local_id(0), gi = get_global_id(1), bh = get_global_id(2);
    const int i = min(gi, SQ - 1);  // surplus rows of the last work-group redo the last row, storing nothing

    float qr[D];
    const int qo = Q_OFF + (Q_BH(bh)) + i * QS_I;
#pragma unroll
    for (int d = 0; d < D; ++d) qr[d] = LOAD(Q_T, q, qo + d * QS_D) * SCALE;
    float acc[DV];
#pragma unroll
    for (int e = 0; e < DV; ++e) acc[e] = 0.0f;
    float m = -FLT_MAX, l = 0.0f;
    const int ko = K_OFF + (K_BH(bh)), vo = V_OFF + (V_BH(bh));
#if HAS_MASK
    const int mo = M_OFF + (M_BH(bh)) + i * MS_I;
#endif

    for (int j0 = split * KB; j0 < SK; j0 += SPLITS * KB) {
        float s[KB];
        float bm = m;
#pragma unroll
        for (int t = 0; t < KB; ++t) {
            const int j = j0 + t;
            float dot = -INFINITY;
            if (j < SK) {
                dot = 0.0f;
#if KVEC == 4
                __global const TYPE(K_T)* kr = kt + ko + j * KS_J;
#pragma unroll
                for (int c = 0; c < D / 4; ++c) {
                    const float4 k4 = ROW_VLOAD(K_T, 4, kr, c);
                    dot = mad(qr[4 * c], k4.s0, dot);
                    dot = mad(qr[4 * c + 1], k4.s1, dot);
                    dot = mad(qr[4 * c + 2], k4.s2, dot);
                    dot = mad(qr[4 * c + 3], k4.s3, dot);
                }
#else
#pragma unroll
                for (int d = 0; d < D; ++d) dot = mad(qr[d], LOAD(K_T, kt, ko + d * KS_D + j * KS_J), dot);
#endif
#if HAS_MASK
                dot += LOAD(M_T, mask, mo + j * MS_J);
#endif
            }
            s[t] = dot;
            bm = fmax(bm, dot);
        }
        const float corr = exp(m - bm);
        l *= corr;
#pragma unroll
        for (int e = 0; e < DV; ++e) acc[e] *= corr;
#pragma unroll
        for (int t = 0; t < KB; ++t) {
            const int j = j0 + t;
            if (j < SK) {
                const float p = exp(s[t] - bm);
                l += p;
#if VVEC == 4
                __global const TYPE(V_T)* vr = v + vo + j * VS_J;
#pragma unroll
                for (int c = 0; c < DV / 4; ++c) {
                    const float4 v4 = ROW_VLOAD(V_T, 4, vr, c);
                    acc[4 * c] = mad(p, v4.s0, acc[4 * c]);
                    acc[4 * c + 1] = mad(p, v4.s1, acc[4 * c + 1]);
                    acc[4 * c + 2] = mad(p, v4.s2, acc[4 * c + 2]);
                    acc[4 * c + 3] = mad(p, v4.s3, acc[4 * c + 3]);
                }
#else
#pragma unroll
                for (int e = 0; e < DV; ++e) acc[e] = mad(p, LOAD(V_T, v, vo + j * VS_J + e * VS_E), acc[e]);
#endif
            }
        }
        m = bm;
    }

    const int yo = Y_OFF + (Y_BH(bh)) + i * YS_I;
#if SPLITS > 1
    // the row's SPLITS partials, each rescaled to the row's max; the accumulators padded by one float per slot so
    // the work items of a warp write different banks
    __local float lmax[ROWS * SPLITS], lsum[ROWS * SPLITS], lacc[ROWS * SPLITS * (DV + 1)];
    const int row0 = get_local_id(1) * SPLITS, slot = row0 + split;
    lmax[slot] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
    float mx = -FLT_MAX;
    for (int t = 0; t < SPLITS; ++t) mx = fmax(mx, lmax[row0 + t]);
    const float f = exp(m - mx);
    lsum[slot] = l * f;
#pragma unroll
    for (int e = 0; e < DV; ++e) lacc[slot * (DV + 1) + e] = acc[e] * f;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (gi >= SQ) return;
    float total = 0.0f;
    for (int t = 0; t < SPLITS; ++t) total += lsum[row0 + t];
    for (int e = split; e < DV; e += SPLITS) {
        float a = 0.0f;
        for (int t = 0; t < SPLITS; ++t) a += lacc[(row0 + t) * (DV + 1) + e];
#if NAN_TO_ZERO
        STORE(Y_T, y, yo + e * YS_E, total > 0.0f ? a / total : 0.0f);
#else
        STORE(Y_T, y, yo + e * YS_E, a / total);
#endif
    }
#else
    if (gi >= SQ) return;
#pragma unroll
    for (int e = 0; e < DV; ++e) {
#if NAN_TO_ZERO
        STORE(Y_T, y, yo + e * YS_E, l > 0.0f ? acc[e] / l : 0.0f);
#else
        STORE(Y_T, y, yo + e * YS_E, acc[e] / l);
#endif
    }
#endif
}
