// Normalizations. BatchNormalization needs none: codegen folds it into a per-channel multiply-add (elementwise.cl).

#ifdef ROW_NORM
// LayerNormalization, InstanceNormalization, GroupNormalization: normalize each of ROWS contiguous rows of ROW_LEN
// elements, y = (x - mean) * rstd * scale + bias, the scale and bias elements picked by SCALE_INDEX(row, j). With
// HAS_STATS, each row's mean and 1/std are written too (LayerNormalization's optional outputs).
// Defines: KERNEL_NAME; X_T S_T B_T Y_T M_T; ROWS ROW_LEN EPS; HAS_SCALE; HAS_BIAS; HAS_STATS; SCALE_INDEX(row, j).
#ifdef LX
// The work-group form, for GPUs: LX work items share each row, LY rows per work-group. Work item lx holds the
// vectors k = lx, lx + LX, ... (PER of them at most; VEC elements each, NV = ROW_LEN / VEC vectors per row): in
// private registers when CACHED, so the row is read from global memory once, else read again for the output.
// Accuracy: every value is first shifted by the row's first element (exact for values within a factor of 2 of it,
// Sterbenz), so a mean far from zero costs no precision; each work item then takes the mean and the sum of squared
// deviations of its own values (two passes over its registers when CACHED, a second shift by its first value
// otherwise), and the work-group merges those (mean, M2, count) triples in a local-memory tree (Chan et al.), which
// is as stable as two passes over the row. The output is ((x - shift) - mean) * rstd: the mean's rounding error is
// that of a small number. A NaN anywhere in a row makes the row's mean, 1/std and every output NaN (+-inf: NaN too).
// Defines (besides the ones above): LX LY VEC NV PER CACHED; PARAM_BY_ROW (scale and bias are one value per row,
// at SCALE_INDEX(row, 0), else element j of them). VEC > 1 needs ROW_LEN % VEC == 0 (vectors are aligned).
// Global size: (LX, ceil(ROWS / LY) * LY), local (LX, LY).
__kernel __attribute__((reqd_work_group_size(LX, LY, 1)))
void KERNEL_NAME(__global const TYPE(X_T)* x,
#if HAS_SCALE
                 __global const TYPE(S_T)* scale,
#endif
#if HAS_BIAS
                 __global const TYPE(B_T)* bias,
#endif
                 __global TYPE(Y_T)* y
#if HAS_STATS
               , __global TYPE(M_T)* mean_out, __global TYPE(M_T)* rstd_out
#endif
                 )
{
    const int lx = get_local_id(0), ly = get_local_id(1), grow = get_global_id(1);
    const int row = min(grow, ROWS - 1);  // the surplus rows of the last work-group redo the last row, storing nothing
    __global const TYPE(X_T)* xr = x + row * ROW_LEN;
    const float shift = LOAD(X_T, xr, 0);

    // this work item's (mean, M2, count) of x - shift
    int nvec = 0;
    VTYPE(VEC) acc = 0.0f;
#if CACHED
    VTYPE(VEC) xs[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int k = lx + i * LX;
        xs[i] = 0.0f;
        if (k < NV) {
            xs[i] = ROW_VLOAD(X_T, VEC, xr, k) - shift;
            acc += xs[i];
            ++nvec;
        }
    }
    const float cnt = (float)(nvec * VEC);
    float mean = VSUM(VEC, acc) / cnt;
    VTYPE(VEC) acc2 = 0.0f;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        if (lx + i * LX < NV) {
            const VTYPE(VEC) d = xs[i] - mean;
            acc2 = mad(d, d, acc2);
        }
    }
    float m2 = VSUM(VEC, acc2);
#else
    const float first = LOAD(X_T, xr, lx * VEC) - shift;  // a second shift, by this work item's first value
    VTYPE(VEC) acc2 = 0.0f;
    for (int k = lx; k < NV; k += LX) {
        const VTYPE(VEC) d = (ROW_VLOAD(X_T, VEC, xr, k) - shift) - first;
        acc += d;
        acc2 = mad(d, d, acc2);
        ++nvec;
    }
    const float cnt = (float)(nvec * VEC);
    const float s = VSUM(VEC, acc);
    float mean = first + s / cnt;
    float m2 = VSUM(VEC, acc2) - s * (s / cnt);
    m2 = m2 < 0.0f ? 0.0f : m2;  // not fmax: a NaN stays NaN
#endif

    // the work-group's merge, a tree over lx
    __local float lmean[LY][LX], lm2[LY][LX], lcnt[LY][LX];
    lmean[ly][lx] = mean;
    lm2[ly][lx] = m2;
    lcnt[ly][lx] = cnt;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = LX / 2; h > 0; h >>= 1) {
        if (lx < h) {
            const float na = lcnt[ly][lx], nb = lcnt[ly][lx + h], n = na + nb;
            const float delta = lmean[ly][lx + h] - lmean[ly][lx];
            lmean[ly][lx] = mad(delta, nb / n, lmean[ly][lx]);
            lm2[ly][lx] += lm2[ly][lx + h] + delta * delta * (na * (nb / n));
            lcnt[ly][lx] = n;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    mean = lmean[ly][0];
    const float rstd = rsqrt(lm2[ly][0] * (1.0f / ROW_LEN) + EPS);
    if (grow >= ROWS) return;
#if HAS_STATS
    if (lx == 0) {
        STORE(M_T, mean_out, row, shift + mean);
        STORE(M_T, rstd_out, row, rstd);
    }
#endif
#if PARAM_BY_ROW
#if HAS_SCALE
    const float sc = LOAD(S_T, scale, SCALE_INDEX(row, 0));
#endif
#if HAS_BIAS
    const float bi = LOAD(B_T, bias, SCALE_INDEX(row, 0));
#endif
#endif
    __global TYPE(Y_T)* yr = y + row * ROW_LEN;
#if CACHED
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int k = lx + i * LX;
        if (k >= NV) break;
        VTYPE(VEC) v = (xs[i] - mean) * rstd;
#else
    for (int k = lx; k < NV; k += LX) {
        VTYPE(VEC) v = ((ROW_VLOAD(X_T, VEC, xr, k) - shift) - mean) * rstd;
#endif
#if PARAM_BY_ROW
#if HAS_SCALE
        v *= sc;
#endif
#if HAS_BIAS
        v += bi;
#endif
#else
#if HAS_SCALE
        v *= ROW_VLOAD(S_T, VEC, scale, k);
#endif
#if HAS_BIAS
        v += ROW_VLOAD(B_T, VEC, bias, k);
#endif
#endif
        ROW_VSTORE(Y_T, VEC, yr, k, v);
    }
}
#else
// The portable form (no LX): one work item per row, three passes over it (the mean, the variance, the output), all
// on x minus the row's first element, so that a mean far from zero costs no precision.
// Global size: (ROWS).
__kernel void KERNEL_NAME(__global const TYPE(X_T)* x,
#if HAS_SCALE
                          __global const TYPE(S_T)* scale,
#endif
#if HAS_BIAS
                          __global const TYPE(B_T)* bias,
#endif
                          __global TYPE(Y_T)* y
#if HAS_STATS
                        , __global TYPE(M_T)* mean_out, __global TYPE(M_T)* rstd_out
#endif
                          )
{
    const int row = get_global_id(0);
    if (row >= ROWS) return;
    const int base = row * ROW_LEN;
    const float shift = LOAD(X_T, x, base);
    float mean = 0.0f;
    for (int j = 0; j < ROW_LEN; ++j) mean += LOAD(X_T, x, base + j) - shift;
    mean *= 1.0f / ROW_LEN;
    float var = 0.0f;
    for (int j = 0; j < ROW_LEN; ++j) {
        const float d = (LOAD(X_T, x, base + j) - shift) - mean;
        var = mad(d, d, var);
    }
    const float rstd = rsqrt(var * (1.0f / ROW_LEN) + EPS);
#if HAS_STATS
    STORE(M_T, mean_out, row, shift + mean);
    STORE(M_T, rstd_out, row, rstd);
#endif
    for (int j = 0; j < ROW_LEN; ++j) {
        float v = ((LOAD(X_T, x, base + j) - shift) - mean) * rstd;
#if HAS_SCALE
        v *= LOAD(S_T, scale, SCALE_INDEX(row, j));
#endif
#if HAS_BIAS
        v += LOAD(B_T, bias, SCALE_INDEX(row, j));
#endif
        STORE(Y_T, y, base + j, v);
    }
}
#endif  // LX
#endif  // ROW_NORM

#ifdef LRN
// Local response normalization across channels: y = x / (BIAS + ALPHA / SIZE * sum of x^2 over the window)^BETA,
// the window spanning channels [c - (SIZE - 1) / 2, c + SIZE / 2].
// Defines: KERNEL_NAME; X_T Y_T; N C SPATIAL; SIZE ALPHA BETA BIAS.
// Global size: (SPATIAL, C, N).
__kernel void KERNEL_NAME(__global const TYPE(X_T)* x, __global TYPE(Y_T)* y)
{
    const int s = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (s >= SPATIAL || c >= C || n >= N) return;
    const int base = n * C * SPATIAL + s;
    float sum = 0.0f;
    for (int k = max(c - (SIZE - 1) / 2, 0); k <= min(c + SIZE / 2, C - 1); ++k) {
        const float v = LOAD(X_T, x, base + k * SPATIAL);
        sum = mad(v, v, sum);
    }
    const float v = LOAD(X_T, x, base + c * SPATIAL);
    STORE(Y_T, y, base + c * SPATIAL, v * pow(BIAS + (ALPHA / SIZE) * sum, -BETA));
}
#endif
