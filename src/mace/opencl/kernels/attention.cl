// ScaledDotProductAttention (mace.model.ir): y = softmax(SCALE * q . kt + mask) . v for each batch-head and query
// row, the softmax online (one pass over the keys; the running max and sum are rescaled as the max grows), so the
// scores are never stored. Every operand is read through strides (plan/views.py: ViT's qkv split and head moves cost
// no copies): element (bh, i, d) of q is q[Q_OFF + Q_BH(bh) + i * QS_I + d * QS_D], likewise kt (bh, d, j), v (bh,
// j, e), mask (bh, i, j; zero strides where it broadcasts) and y (bh, i, e).
// The running max starts at -FLT_MAX, not -inf, so masked (-inf) keys weigh exp(-inf) = 0, never exp(-inf - -inf).
// As the unfused Softmax: a row of only -inf scores gives 0 / 0, a NaN or +inf score makes its row NaN; with
// NAN_TO_ZERO (transformers' Where(IsNaN(p), 0, p)) such rows are 0.
// Defines: KERNEL_NAME; Q_T K_T V_T Y_T (M_T); SQ SK D DV; SCALE; HAS_MASK NAN_TO_ZERO;
// Q_OFF Q_BH(r) QS_I QS_D; K_OFF K_BH(r) KS_D KS_J; V_OFF V_BH(r) VS_J VS_E; M_OFF M_BH(r) MS_I MS_J;
// Y_OFF Y_BH(r) YS_I YS_E; KVEC VVEC; and BQ for the tiled form, KB for the per-row one.

#if NAN_TO_ZERO
#define ATT_OUT(a, l) ((l) > 0.0f ? (a) / (l) : 0.0f)
#else
#define ATT_OUT(a, l) ((a) / (l))
#endif

#ifdef BQ
// The tiled form, for GPUs: a work-group of 64 work items takes BQ query rows of one batch-head and walks the keys
// in blocks of 32, the block's K and V in local memory. For the scores, 4 work items share a row (tid / 4, and + 16
// for BQ 32), each taking 8 of the block's keys (tid % 4 + 4 k) from float4s of Q and K; the row's max is merged
// through local memory, and each of the 4 keeps its own running sum (rescaled alike), summed at the end. For the
// output, work item (ty, tx) = (tid / 8, tid % 8) adds P.V to its BQ / 8 rows x DV / 8 columns (tx * 4 + 32 h + w),
// kept in registers. Local rows of Q and K are D + 4 floats apart, so float4 rows read at once start on different
// banks. KVEC / VVEC 4: the blocks are read from global memory as aligned float4s. Needs D % 4 == 0, DV % 4 == 0.
// Global size (64, ceil(SQ / BQ), batch-heads); local (64, 1, 1).
#define ATT_BK 32
#define SR (BQ / 16)
#define OR (BQ / 8)
#define DP (D + 4)
#define SP (ATT_BK + 4)  // the rows of 4 work items' scores, written at once, on different banks
#define NH ((DV + 31) / 32)
#define VP (NH * 32)  // V's local rows: whole groups of 32 columns (past DV: never stored)

// The block of keys j0 .. j0 + ATT_BK - 1 of K or V (element (j, x) of src at off + j * JS + x * XS, x < W) into
// local rows PITCH floats apart, zero past SK; with VEC 4 (XS == 1) as aligned float4s.
#define ATT_BLOCK(VEC, T, dst4, dst, PITCH, src, off, JS, XS, W)                                         \
    if (VEC == 4) {                                                                                      \
        for (int e = tid; e < ATT_BK * (W) / 4; e += 64) {                                               \
            const int c = e / ((W) / 4), x4 = e % ((W) / 4), j = j0 + c;                                 \
            dst4[c * ((PITCH) / 4) + x4] = j < SK ? ROW_VLOAD(T, 4, src + (off) + j * (JS), x4) : (float4)(0.0f); \
        }                                                                                                \
    } else {                                                                                             \
        for (int e = tid; e < ATT_BK * (W); e += 64) {                                                   \
            const int c = e / (W), x = e % (W), j = j0 + c;                                              \
            dst[c * (PITCH) + x] = j < SK ? LOAD(T, src, (off) + j * (JS) + x * (XS)) : 0.0f;            \
        }                                                                                                \
    }

__kernel __attribute__((reqd_work_group_size(64, 1, 1)))
void KERNEL_NAME(__global const TYPE(Q_T)* q, __global const TYPE(K_T)* kt, __global const TYPE(V_T)* v,
#if HAS_MASK
                 __global const TYPE(M_T)* mask,
#endif
                 __global TYPE(Y_T)* y)
{
    const int tid = get_local_id(0), sr = tid / 4, sub = tid % 4, ty = tid / 8, tx = tid % 8;
    const int i0 = get_group_id(1) * BQ, bh = get_group_id(2);
    __local float4 qs4[BQ * DP / 4], ks4[ATT_BK * DP / 4], vs4[ATT_BK * VP / 4];
    __local float* qs = (__local float*)qs4;
    __local float* ks = (__local float*)ks4;
    __local float* vs = (__local float*)vs4;
    __local float ss[BQ * SP], part[BQ * 4], row_corr[BQ];

    const int qo = Q_OFF + (Q_BH(bh)), ko = K_OFF + (K_BH(bh)), vo = V_OFF + (V_BH(bh));
    for (int e = tid; e < BQ * D; e += 64) {
        const int r = e / D, d = e % D, i = i0 + r;
        qs[r * DP + d] = i < SQ ? LOAD(Q_T, q, qo + i * QS_I + d * QS_D) * SCALE : 0.0f;
    }
    float m[SR], l[SR];
#pragma unroll
    for (int a = 0; a < SR; ++a) {
        m[a] = -FLT_MAX;
        l[a] = 0.0f;
    }
    float4 o[OR][NH];
#pragma unroll
    for (int a = 0; a < OR; ++a)
#pragma unroll
        for (int h = 0; h < NH; ++h) o[a][h] = 0.0f;

    for (int j0 = 0; j0 < SK; j0 += ATT_BK) {
        barrier(CLK_LOCAL_MEM_FENCE);  // the previous block's readers are done with ks, vs and ss
        ATT_BLOCK(KVEC, K_T, ks4, ks, DP, kt, ko, KS_J, KS_D, D);
        ATT_BLOCK(VVEC, V_T, vs4, vs, VP, v, vo, VS_J, VS_E, DV);
        barrier(CLK_LOCAL_MEM_FENCE);

        // scores of rows sr + 16 a, keys sub + 4 b
        float s[SR][8];
#pragma unroll
        for (int a = 0; a < SR; ++a)
#pragma unroll
            for (int b = 0; b < 8; ++b) s[a][b] = 0.0f;
#pragma unroll 4
        for (int d4 = 0; d4 < D / 4; ++d4) {
            float4 qv[SR];
#pragma unroll
            for (int a = 0; a < SR; ++a) qv[a] = qs4[(sr + 16 * a) * (DP / 4) + d4];
#pragma unroll
            for (int b = 0; b < 8; ++b) {
                const float4 kv = ks4[(sub + 4 * b) * (DP / 4) + d4];
#pragma unroll
                for (int a = 0; a < SR; ++a) {
                    s[a][b] = mad(qv[a].s0, kv.s0, s[a][b]);
                    s[a][b] = mad(qv[a].s1, kv.s1, s[a][b]);
                    s[a][b] = mad(qv[a].s2, kv.s2, s[a][b]);
                    s[a][b] = mad(qv[a].s3, kv.s3, s[a][b]);
                }
            }
        }
        float bm[SR];
#pragma unroll
        for (int a = 0; a < SR; ++a) {
            bm[a] = m[a];
#pragma unroll
            for (int b = 0; b < 8; ++b) {
                const int i = i0 + sr + 16 * a, j = j0 + sub + 4 * b;
#if HAS_MASK
                if (i < SQ && j < SK) s[a][b] += LOAD(M_T, mask, M_OFF + (M_BH(bh)) + i * MS_I + j * MS_J);
#endif
                s[a][b] = j < SK ? s[a][b] : -INFINITY;
                bm[a] = fmax(bm[a], s[a][b]);
            }
            part[(sr + 16 * a) * 4 + sub] = bm[a];
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        // the row's new max, the weights of this block (into ss), the running sums rescaled
#pragma unroll
        for (int a = 0; a < SR; ++a) {
            const int r = sr + 16 * a;
            const float m1 = fmax(fmax(part[r * 4], part[r * 4 + 1]), fmax(part[r * 4 + 2], part[r * 4 + 3]));
            const float corr = exp(m[a] - m1);
            float sum = 0.0f;
#pragma unroll
            for (int b = 0; b < 8; ++b) {
                const float p = exp(s[a][b] - m1);
                ss[r * SP + sub + 4 * b] = p;
                sum += p;
            }
            l[a] = mad(l[a], corr, sum);
            m[a] = m1;
            if (sub == 0) row_corr[r] = corr;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

#pragma unroll
        for (int a = 0; a < OR; ++a) {
            const float corr = row_corr[ty * OR + a];
#pragma unroll
            for (int h = 0; h < NH; ++h) o[a][h] *= corr;
        }
#pragma unroll 4
        for (int c = 0; c < ATT_BK; ++c) {
            float p[OR];
#pragma unroll
            for (int a = 0; a < OR; ++a) p[a] = ss[(ty * OR + a) * SP + c];
#pragma unroll
            for (int h = 0; h < NH; ++h) {
                const float4 vv = vs4[c * (VP / 4) + tx + 8 * h];
#pragma unroll
                for (int a = 0; a < OR; ++a) o[a][h] = mad((float4)(p[a]), vv, o[a][h]);
            }
        }
    }

    barrier(CLK_LOCAL_MEM_FENCE);  // the last block's readers of part are done
#pragma unroll
    for (int a = 0; a < SR; ++a) part[(sr + 16 * a) * 4 + sub] = l[a];
    barrier(CLK_LOCAL_MEM_FENCE);
    const int yo = Y_OFF + (Y_BH(bh));
#pragma unroll
    for (int a = 0; a < OR; ++a) {
        const int r = ty * OR + a, i = i0 + r;
        if (i >= SQ) continue;
        const float total = (part[r * 4] + part[r * 4 + 1]) + (part[r * 4 + 2] + part[r * 4 + 3]);
#pragma unroll
        for (int h = 0; h < NH; ++h) {
            const int e = tx * 4 + 32 * h;
            if (e >= DV) break;
            STORE(Y_T, y, yo + i * YS_I + e * YS_E, ATT_OUT(o[a][h].s0, total));
            STORE(Y_T, y, yo + i * YS_I + (e + 1) * YS_E, ATT_OUT(o[a][h].s1, total));
            STORE(Y_T, y, yo + i * YS_I + (e + 2) * YS_E, ATT_OUT(o[a][h].s2, total));
            STORE(Y_T, y, yo + i * YS_I + (e + 3) * YS_E, ATT_OUT(o[a][h].s3, total));
        }
    }
}
#undef ATT_BLOCK
#undef ATT_BK
#undef SR
#undef OR
#undef DP
#undef SP
#undef NH
#undef VP

#else
// The per-row form (CPUs, the portable plan, shapes the tiled form does not take): one work item per query row,
// keys in blocks of KB: KB scores, one rescale, KB accumulations. KVEC / VVEC 4: kt rows contiguous along d (v
// along e), read as aligned float4s; else 1.
// Global size (SQ, batch-heads).
__kernel void KERNEL_NAME(__global const TYPE(Q_T)* q, __global const TYPE(K_T)* kt, __global const TYPE(V_T)* v,
#if HAS_MASK
                 __global const TYPE(M_T)* mask,
#endif
                 __global TYPE(Y_T)* y)
{
    const int i = get_global_id(0), bh = get_global_id(1);
    if (i >= SQ) return;

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

    for (int j0 = 0; j0 < SK; j0 += KB) {
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
#pragma unroll
    for (int e = 0; e < DV; ++e) STORE(Y_T, y, yo + e * YS_E, ATT_OUT(acc[e], l));
}
#endif
#undef ATT_OUT
