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

#ifdef GATHER_ND
// GatherND: y viewed as [BATCHES][ROWS][INNER] is x[batch][the row's K coordinates into the dims DIMS, of element
// strides STRIDES][INNER] (negative coordinates count from the end, out-of-range ones are clamped).
// Defines: KERNEL_NAME; T I_T; BATCHES ROWS INNER BATCH_STRIDE; K DIMS STRIDES.
// Global size: (BATCHES * ROWS * INNER).
__kernel void KERNEL_NAME(__global const BITS(T)* x, __global const TYPE(I_T)* indices, __global BITS(T)* y)
{
    const int gid = get_global_id(0);
    if (gid >= BATCHES * ROWS * INNER) return;
    const int row = gid / INNER;
    const int dims[K > 0 ? K : 1] = {DIMS};
    const int strides[K > 0 ? K : 1] = {STRIDES};
    int off = (row / ROWS) * BATCH_STRIDE + gid % INNER;
    for (int d = 0; d < K; ++d) {
        long c = LOAD(I_T, indices, row * K + d);
        if (c < 0) c += dims[d];
        off += (int)clamp(c, 0L, (long)(dims[d] - 1)) * strides[d];
    }
    y[gid] = x[off];
}
#endif

#if defined(SCATTER_ND) || defined(SCATTER_ELEMENTS)
// the scatters' reductions: what is at a position combined with an update (REDUCTION 1 add, 2 mul, 3 max, 4 min)
#if REDUCTION == 1
#define SCATTER_COMBINE(v, u) ((v) + (u))
#elif REDUCTION == 2
#define SCATTER_COMBINE(v, u) ((v) * (u))
#elif REDUCTION == 3
#define SCATTER_COMBINE(v, u) max((v), (u))
#else
#define SCATTER_COMBINE(v, u) min((v), (u))
#endif
#endif

#ifdef SCATTER_ND
// ScatterND, after y has been written with a copy of data: the NUPD index rows (K coordinates each into data's first
// K dims DIMS, negative ones counting from the end) pick slices of SLICE elements of y, which take the updates
// (REDUCTION 0, raw bits; repeated positions: any one of them) or are combined with them: 1 add, 2 mul, 3 max, 4 min,
// computed in ACC (float, or long for integer tensors), in the order of the rows, so repeated positions combine the
// same way at every run. A row with a coordinate outside is skipped (the reference op raises).
// Defines: KERNEL_NAME; T I_T; NUPD K SLICE DIMS; REDUCTION ACC.
// Global size: REDUCTION 0, (NUPD * SLICE): one work item an element of an update; else (SLICE): one work item an
// element of the slice, walking the rows (one work item in all where the slices are single elements).
static inline int CAT(KERNEL_NAME, _position)(__global const TYPE(I_T)* indices, const int row)
{
    const int dims[K > 0 ? K : 1] = {DIMS};
    int position = 0;
    for (int d = 0; d < K; ++d) {
        long c = LOAD(I_T, indices, row * K + d);
        if (c < 0) c += dims[d];
        if (c < 0 || c >= dims[d]) return -1;
        position = position * dims[d] + (int)c;
    }
    return position;
}
#if REDUCTION == 0
__kernel void KERNEL_NAME(__global const TYPE(I_T)* indices, __global const BITS(T)* updates, __global BITS(T)* y)
{
    const int gid = get_global_id(0);
    if (gid >= NUPD * SLICE) return;
    const int position = CAT(KERNEL_NAME, _position)(indices, gid / SLICE);
    if (position >= 0) y[position * SLICE + gid % SLICE] = updates[gid];
}
#else
__kernel void KERNEL_NAME(__global const TYPE(I_T)* indices, __global const TYPE(T)* updates, __global TYPE(T)* y)
{
    const int i = get_global_id(0);
    if (i >= SLICE) return;
    for (int row = 0; row < NUPD; ++row) {
        const int position = CAT(KERNEL_NAME, _position)(indices, row);
        if (position < 0) continue;
        const int at = position * SLICE + i;
        const ACC v = LOAD(T, y, at), u = LOAD(T, updates, row * SLICE + i);
        STORE(T, y, at, SCATTER_COMBINE(v, u));
    }
}
#endif
#endif

#ifdef TRILU
// Trilu: y = x where column - row of the two innermost dims is >= K (UPPER) or <= K (lower), else zero (bits).
// Defines: KERNEL_NAME; T; SIZE; ROWS COLS (the two innermost dims); K; UPPER.
// Global size: (SIZE).
__kernel void KERNEL_NAME(__global const BITS(T)* x, __global BITS(T)* y)
{
    const int gid = get_global_id(0);
    if (gid >= SIZE) return;
    const int col = gid % COLS, row = gid / COLS % ROWS;
#if UPPER
    const bool keep = col - row >= K;
#else
    const bool keep = col - row <= K;
#endif
    y[gid] = keep ? x[gid] : 0;
}
#endif

#ifdef SCATTER_ELEMENTS
// ScatterElements, after y has been written with a copy of data: element i of updates (indices' shape SHAPE) goes to
// its own position in y with the AXIS coordinate replaced by indices[i] (negative ones counting from the end; one
// outside is skipped, the reference op raises), raw bits (REDUCTION 0; repeated positions: any one of them), or is
// combined with what is there (1 add, 2 mul, 3 max, 4 min, in ACC) by one work item in index order.
// Defines: KERNEL_NAME; T I_T; SIZE RANK SHAPE (of indices); Y_STRIDES; AXIS AXIS_DIM; REDUCTION ACC.
// Global size: (SIZE) for REDUCTION 0, else (1).
static inline int CAT(KERNEL_NAME, _at)(__global const TYPE(I_T)* indices, const int gid)
{
    const int shape[RANK] = {SHAPE};
    const int ys[RANK] = {Y_STRIDES};
    long idx = LOAD(I_T, indices, gid);
    if (idx < 0) idx += AXIS_DIM;
    if (idx < 0 || idx >= AXIS_DIM) return -1;
    int off = 0, rem = gid;
    for (int d = RANK - 1; d >= 0; --d) {
        const int c = d > 0 ? rem % shape[d] : rem;
        rem /= shape[d];
        off += (d == AXIS ? (int)idx : c) * ys[d];
    }
    return off;
}
#if REDUCTION == 0
__kernel void KERNEL_NAME(__global const TYPE(I_T)* indices, __global const BITS(T)* updates, __global BITS(T)* y)
{
    const int gid = get_global_id(0);
    if (gid >= SIZE) return;
    const int at = CAT(KERNEL_NAME, _at)(indices, gid);
    if (at >= 0) y[at] = updates[gid];
}
#else
__kernel void KERNEL_NAME(__global const TYPE(I_T)* indices, __global const TYPE(T)* updates, __global TYPE(T)* y)
{
    if (get_global_id(0) != 0) return;
    for (int gid = 0; gid < SIZE; ++gid) {
        const int at = CAT(KERNEL_NAME, _at)(indices, gid);
        if (at < 0) continue;
        const ACC v = LOAD(T, y, at), u = LOAD(T, updates, gid);
        STORE(T, y, at, SCATTER_COMBINE(v, u));
    }
}
#endif
#endif

#ifdef ONE_HOT
// OneHot: y (SIZE elements, the new axis of DEPTH classes at AXIS, with OUTER elements before it and INNER after it
// in indices' order) is values[1] where its class equals indices there (negative ones counting from the end), else
// values[0]; raw bits.
// Defines: KERNEL_NAME; T I_T; SIZE DEPTH INNER.
// Global size: (SIZE).
__kernel void KERNEL_NAME(__global const TYPE(I_T)* indices, __global const BITS(T)* values, __global BITS(T)* y)
{
    const int gid = get_global_id(0);
    if (gid >= SIZE) return;
    const int inner = gid % INNER, c = gid / INNER % DEPTH, outer = gid / (INNER * DEPTH);
    long idx = LOAD(I_T, indices, outer * INNER + inner);
    if (idx < 0) idx += DEPTH;
    y[gid] = values[idx == c ? 1 : 0];
}
#endif
