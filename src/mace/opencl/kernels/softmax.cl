// Softmax / LogSoftmax along one axis of a tensor viewed as [OUTER][D][INNER].
// NAN_TO_ZERO (Softmax only; an attention's decomposition on CPU targets, plan/attention.py): a row whose sum is not
// positive (a NaN, a +inf or only -inf in it) is 0 wherever the softmax is NaN, which is then everywhere: the
// transformers guard Where(IsNaN(p), 0, p).
// Defines: KERNEL_NAME; X_T Y_T; OUTER D INNER; IS_LOG; NAN_TO_ZERO.

#ifdef LX
// The work-group form, for GPUs, on the last axis (INNER == 1: OUTER rows of D): LX work items share each row, LY
// rows per work-group. Work item lx holds the vectors k = lx, lx + LX, ... of its row (PER of them at most; VEC
// elements each, NV = D / VEC vectors): in private registers when CACHED, so the row is read from global memory
// once, else read again for the output. Each work item takes its (max, sum of exp(x - max)) (online, rescaling the
// sum as the max grows, when not CACHED) and a local-memory tree merges the pairs. The running max starts at -FLT_MAX,
// not -inf, so leading -inf values give exp(-inf) = 0, never exp(-inf - -inf); a NaN in a row makes the sum, and so
// the whole row, NaN (fmax skips NaNs, the sum does not); a +inf makes it NaN (inf - inf), a row of -inf gives 0 / 0:
// what onnxruntime and numpy give.
// VEC > 1 needs D % VEC == 0 (vectors are aligned).
// Global size: (LX, ceil(OUTER / LY) * LY), local (LX, LY).
#ifndef SOFTMAX_GROUP_HELPERS
#define SOFTMAX_GROUP_HELPERS
// The largest lane of a vector.
#define SM_VMAX(n, v) CAT(SM_VMAX_, n)(v)
#define SM_VMAX_1(v) (v)
#define SM_VMAX_2(v) fmax((v).s0, (v).s1)
#define SM_VMAX_4(v) fmax(fmax((v).s0, (v).s1), fmax((v).s2, (v).s3))
#endif

__kernel __attribute__((reqd_work_group_size(LX, LY, 1)))
void KERNEL_NAME(__global const TYPE(X_T)* x, __global TYPE(Y_T)* y)
{
    const int lx = get_local_id(0), ly = get_local_id(1), grow = get_global_id(1);
    const int row = min(grow, OUTER - 1);  // the surplus rows of the last work-group redo the last row, storing nothing
    __global const TYPE(X_T)* xr = x + row * D;

    // this work item's max and sum of exp(x - max)
#if CACHED
    VTYPE(VEC) xs[PER];
    VTYPE(VEC) vmax = -FLT_MAX;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int k = lx + i * LX;
        xs[i] = -INFINITY;
        if (k < NV) {
            xs[i] = ROW_VLOAD(X_T, VEC, xr, k);
            vmax = fmax(vmax, xs[i]);
        }
    }
    const float m = SM_VMAX(VEC, vmax);
    VTYPE(VEC) vsum = 0.0f;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        if (lx + i * LX < NV) {
#if IS_LOG
            vsum += exp(xs[i] - m);
#else
            xs[i] = exp(xs[i] - m);  // kept: the output is xs[i] * exp(m - row max) / row sum
            vsum += xs[i];
#endif
        }
    }
    const float s = VSUM(VEC, vsum);
#else
    VTYPE(VEC) vmax = -FLT_MAX, vsum = 0.0f;
    for (int k = lx; k < NV; k += LX) {
        const VTYPE(VEC) v = ROW_VLOAD(X_T, VEC, xr, k);
        const VTYPE(VEC) next = fmax(vmax, v);
        vsum = mad(vsum, exp(vmax - next), exp(v - next));
        vmax = next;
    }
    const float m = SM_VMAX(VEC, vmax);
    const float s = VSUM(VEC, vsum * exp(vmax - m));
#endif

    // the work-group's merge, a tree over lx
    __local float lmax[LY][LX], lsum[LY][LX];
    lmax[ly][lx] = m;
    lsum[ly][lx] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = LX / 2; h > 0; h >>= 1) {
        if (lx < h) {
            const float ma = lmax[ly][lx], mb = lmax[ly][lx + h], mm = fmax(ma, mb);
            lsum[ly][lx] = mad(lsum[ly][lx], exp(ma - mm), lsum[ly][lx + h] * exp(mb - mm));
            lmax[ly][lx] = mm;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float row_max = lmax[ly][0], row_sum = lsum[ly][0];
    if (grow >= OUTER) return;
    __global TYPE(Y_T)* yr = y + row * D;
#if NAN_TO_ZERO
    if (!(row_sum > 0.0f)) {
        for (int k = lx; k < NV; k += LX) ROW_VSTORE(Y_T, VEC, yr, k, (VTYPE(VEC))(0.0f));
        return;
    }
#endif
#if IS_LOG
    const float log_sum = log(row_sum);
#elif CACHED
    const float r = exp(m - row_max) / row_sum;
#else
    const float r = 1.0f / row_sum;
#endif
#if CACHED
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int k = lx + i * LX;
        if (k >= NV) break;
#if IS_LOG
        ROW_VSTORE(Y_T, VEC, yr, k, (xs[i] - row_max) - log_sum);
#else
        ROW_VSTORE(Y_T, VEC, yr, k, xs[i] * r);
#endif
    }
#else
    for (int k = lx; k < NV; k += LX) {
        const VTYPE(VEC) v = ROW_VLOAD(X_T, VEC, xr, k);
#if IS_LOG
        ROW_VSTORE(Y_T, VEC, yr, k, (v - row_max) - log_sum);
#else
        ROW_VSTORE(Y_T, VEC, yr, k, exp(v - row_max) * r);
#endif
    }
#endif
}

#else
// The portable form (no LX): one work item per (outer, inner) makes three passes (max, sum of exponentials, write).
// Global size: (INNER, OUTER).

__kernel void KERNEL_NAME(__global const TYPE(X_T)* x, __global TYPE(Y_T)* y)
{
    const int inner = get_global_id(0), outer = get_global_id(1);
    if (inner >= INNER || outer >= OUTER) return;
    const int base = outer * D * INNER + inner;
    float m = -INFINITY;
    for (int i = 0; i < D; ++i) m = fmax(m, LOAD(X_T, x, base + i * INNER));
    float s = 0.0f;
    for (int i = 0; i < D; ++i) s += exp(LOAD(X_T, x, base + i * INNER) - m);
#if IS_LOG
    const float log_sum = log(s);
    for (int i = 0; i < D; ++i) STORE(Y_T, y, base + i * INNER, (LOAD(X_T, x, base + i * INNER) - m) - log_sum);
#else
#if NAN_TO_ZERO
    if (!(s > 0.0f)) {
        for (int i = 0; i < D; ++i) STORE(Y_T, y, base + i * INNER, 0.0f);
        return;
    }
#endif
    const float r = 1.0f / s;
    for (int i = 0; i < D; ++i) STORE(Y_T, y, base + i * INNER, exp(LOAD(X_T, x, base + i * INNER) - m) * r);
#endif
}
#endif
