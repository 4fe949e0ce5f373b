#ifdef REDUCE
// Reduction over any set of axes (Reduce*, GlobalAveragePool, GlobalMaxPool); one work item per output element,
// looping over the reduced elements. Codegen collapses adjacent kept/reduced dims, so the usual cases (spatial dims,
// last axis) reduce over one contiguous run.
// Defines: KERNEL_NAME; X_T Y_T; OUT_SIZE; KEEP_RANK and, when > 0, KEEP_SHAPE KEEP_STRIDES (input strides of the kept
// dims); RED_RANK RED_SHAPE RED_STRIDES RED_SIZE; INIT; ACC(a, v); FINAL(a).
// Global size: (OUT_SIZE).

__kernel void KERNEL_NAME(__global const TYPE(X_T)* x, __global TYPE(Y_T)* y)
{
    const int gid = get_global_id(0);
    if (gid >= OUT_SIZE) return;
    int base = 0;
#if KEEP_RANK > 0
    {
        const int kshape[KEEP_RANK] = {KEEP_SHAPE};
        const int kstride[KEEP_RANK] = {KEEP_STRIDES};
        int rem = gid;
        for (int d = KEEP_RANK - 1; d >= 0; --d) {
            const int idx = d > 0 ? rem % kshape[d] : rem;
            rem /= kshape[d];
            base += idx * kstride[d];
        }
    }
#endif
    const int rshape[RED_RANK] = {RED_SHAPE};
    const int rstride[RED_RANK] = {RED_STRIDES};
    float a = INIT;
    for (int r = 0; r < RED_SIZE; ++r) {
        int off = base, rem = r;
        for (int d = RED_RANK - 1; d >= 0; --d) {
            const int idx = d > 0 ? rem % rshape[d] : rem;
            rem /= rshape[d];
            off += idx * rstride[d];
        }
        const float v = LOAD(X_T, x, off);
        a = ACC(a, v);
    }
    STORE(Y_T, y, gid, FINAL(a));
}
#endif

#ifdef ARG_REDUCE
// ArgMax / ArgMin along one axis of x viewed as [OUTER][D][INNER]; ties go to the first index, or the last with
// SELECT_LAST. The output holds int64 indices.
// Defines: KERNEL_NAME; X_T Y_T; OUTER D INNER; IS_MAX; SELECT_LAST.
// Global size: (INNER, OUTER).
__kernel void KERNEL_NAME(__global const TYPE(X_T)* x, __global TYPE(Y_T)* y)
{
    const int inner = get_global_id(0), outer = get_global_id(1);
    if (inner >= INNER || outer >= OUTER) return;
    const int base = outer * D * INNER + inner;
    float best = LOAD(X_T, x, base);
    int arg = 0;
    for (int i = 1; i < D; ++i) {
        const float v = LOAD(X_T, x, base + i * INNER);
#if IS_MAX && SELECT_LAST
        const bool better = v >= best;
#elif IS_MAX
        const bool better = v > best;
#elif SELECT_LAST
        const bool better = v <= best;
#else
        const bool better = v < best;
#endif
        if (better) {
            best = v;
            arg = i;
        }
    }
    STORE(Y_T, y, outer * INNER + inner, arg);
}
#endif

#ifdef CUM_SUM
// CumSum along one axis of x viewed as [OUTER][D][INNER]: a work item per line, the running sum in float; EXCLUSIVE
// leaves each element out of its own sum, REVERSE runs from the end.
// Defines: KERNEL_NAME; X_T Y_T; OUTER D INNER; EXCLUSIVE; REVERSE.
// Global size: (INNER, OUTER).
__kernel void KERNEL_NAME(__global const TYPE(X_T)* x, __global TYPE(Y_T)* y)
{
    const int inner = get_global_id(0), outer = get_global_id(1);
    if (inner >= INNER || outer >= OUTER) return;
    const int base = outer * D * INNER + inner;
    float sum = 0.0f;
    for (int j = 0; j < D; ++j) {
        const int at = base + (REVERSE ? D - 1 - j : j) * INNER;
        const float v = LOAD(X_T, x, at);
#if EXCLUSIVE
        STORE(Y_T, y, at, sum);
        sum += v;
#else
        sum += v;
        STORE(Y_T, y, at, sum);
#endif
    }
}
#endif

#ifdef TOP_K
// TopK along one axis of x viewed as [OUTER][D][INNER]: a work item per element, which counts the elements ranked
// before it (better: greater, or smaller without LARGEST; equal ones by index; NaNs after every number) and, where
// that rank is below K, writes itself there: the K best in order.
// Defines: KERNEL_NAME; X_T Y_T I_T; OUTER D INNER K; LARGEST.
// Global size: (D, OUTER * INNER).
__kernel void KERNEL_NAME(__global const TYPE(X_T)* x, __global TYPE(Y_T)* values, __global TYPE(I_T)* indices)
{
    const int i = get_global_id(0), line = get_global_id(1);
    if (i >= D || line >= OUTER * INNER) return;
    const int outer = line / INNER, inner = line % INNER, base = outer * D * INNER + inner;
    const float v = LOAD(X_T, x, base + i * INNER);
    const bool vnan = isnan(v);
    int rank = 0;
    for (int j = 0; j < D && rank < K; ++j) {
        const float u = LOAD(X_T, x, base + j * INNER);
        const bool unan = isnan(u);
#if LARGEST
        const bool better = !unan && (vnan || u > v);
#else
        const bool better = !unan && (vnan || u < v);
#endif
        const bool tie = j < i && (unan ? vnan : (!vnan && u == v));
        rank += better || tie;
    }
    if (rank < K) {
        const int at = (outer * K + rank) * INNER + inner;
        STORE(Y_T, values, at, v);
        STORE(I_T, indices, at, i);
    }
}
#endif
