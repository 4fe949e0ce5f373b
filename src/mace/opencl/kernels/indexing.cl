// Data movement: kernels that only copy elements, moving raw bits (BITS(T)) whatever the storage type.

#ifdef STRIDED_COPY
// The generic index mapping behind Transpose, Slice, Expand, Tile, Concat, Split, DepthToSpace and SpaceToDepth:
// for every index of a RANK-dim view, dst[DST_BASE + idx . DST_STRIDES] = src[SRC_BASE + idx . SRC_STRIDES].
// Defines: KERNEL_NAME; T; SIZE; RANK SHAPE; SRC_BASE SRC_STRIDES; DST_BASE DST_STRIDES.
// Global size: (SIZE).
__kernel void KERNEL_NAME(__global const BITS(T)* src, __global BITS(T)* dst)
{
    const int gid = get_global_id(0);
    if (gid >= SIZE) return;
    const int shape[RANK] = {SHAPE};
    const int ss[RANK] = {SRC_STRIDES};
    const int ds[RANK] = {DST_STRIDES};
    int so = SRC_BASE, dof = DST_BASE, rem = gid;
    for (int d = RANK - 1; d >= 0; --d) {
        const int idx = d > 0 ? rem % shape[d] : rem;
        rem /= shape[d];
        so += idx * ss[d];
        dof += idx * ds[d];
    }
    dst[dof] = src[so];
}
#endif

#ifdef GATHER
// Gather along one axis of x viewed as [OUTER][AXIS_DIM][INNER], with NIDX (flattened) indices, negative ones
// counting from the end: y[o][j][i] = x[o][indices[j]][i]. Out-of-range indices are clamped rather than read
// outside the buffer.
// Defines: KERNEL_NAME; T; I_T; OUTER NIDX AXIS_DIM INNER.
// Global size: (OUTER * NIDX * INNER).
__kernel void KERNEL_NAME(__global const BITS(T)* x, __global const TYPE(I_T)* indices, __global BITS(T)* y)
{
    const int gid = get_global_id(0);
    if (gid >= OUTER * NIDX * INNER) return;
    const int i = gid % INNER, j = (gid / INNER) % NIDX, o = gid / (INNER * NIDX);
    long idx = LOAD(I_T, indices, j);
    if (idx < 0) idx += AXIS_DIM;
    idx = clamp(idx, 0L, (long)(AXIS_DIM - 1));
    y[gid] = x[(o * AXIS_DIM + (int)idx) * INNER + i];
}
#endif

#ifdef PAD
// Pad with MODE 0 (constant VALUE, given as raw bits), 1 (reflect), 2 (edge) or 3 (wrap). Negative pads crop.
// Defines: KERNEL_NAME; T; SIZE; RANK OUT_SHAPE IN_SHAPE IN_STRIDES PAD_BEGIN; MODE; VALUE.
// Global size: (SIZE).
__kernel void KERNEL_NAME(__global const BITS(T)* x, __global BITS(T)* y)
{
    const int gid = get_global_id(0);
    if (gid >= SIZE) return;
    const int oshape[RANK] = {OUT_SHAPE};
    const int ishape[RANK] = {IN_SHAPE};
    const int istride[RANK] = {IN_STRIDES};
    const int pad[RANK] = {PAD_BEGIN};
    int off = 0, rem = gid;
    bool outside = false;
    for (int d = RANK - 1; d >= 0; --d) {
        const int n = ishape[d];
        int i = (d > 0 ? rem % oshape[d] : rem) - pad[d];
        rem /= oshape[d];
#if MODE == 0
        outside = outside || i < 0 || i >= n;
#elif MODE == 1
        if (n == 1) {
            i = 0;
        } else {
            while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
        }
#elif MODE == 2
        i = clamp(i, 0, n - 1);
#else
        i = ((i % n) + n) % n;
#endif
        off += i * istride[d];
    }
    y[gid] = outside ? (BITS(T))(VALUE) : x[off];
}
#endif

#ifdef GATHER_ELEMENTS
// GatherElements: y has the shape of indices; y[i] = x[i with its AXIS coordinate replaced by indices[i]]
// (negative indices count from the end, out-of-range ones are clamped).
// Defines: KERNEL_NAME; T; I_T; SIZE; RANK SHAPE (of indices / y); X_STRIDES; AXIS; AXIS_DIM.
// Global size: (SIZE).
__kernel void KERNEL_NAME(__global const BITS(T)* x, __global const TYPE(I_T)* indices, __global BITS(T)* y)
{
    const int gid = get_global_id(0);
    if (gid >= SIZE) return;
    const int shape[RANK] = {SHAPE};
    const int xs[RANK] = {X_STRIDES};
    long idx = LOAD(I_T, indices, gid);
    if (idx < 0) idx += AXIS_DIM;
    idx = clamp(idx, 0L, (long)(AXIS_DIM - 1));
    int off = 0, rem = gid;
    for (int d = RANK - 1; d >= 0; --d) {
        const int i = d > 0 ? rem % shape[d] : rem;
        rem /= shape[d];
        off += (d == AXIS ? (int)idx : i) * xs[d];
    }
    y[gid] = x[off];
}
#endif
