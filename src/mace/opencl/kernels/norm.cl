// Normalizations. BatchNormalization needs none: codegen folds it into a per-channel multiply-add (elementwise.cl).

#ifdef ROW_NORM
// LayerNormalization, InstanceNormalization, GroupNormalization: normalize each of ROWS contiguous rows of ROW_LEN
// elements (two passes for the statistics, for accuracy), then y = (x - mean) * rstd * scale + bias, the scale and
// bias elements picked by SCALE_INDEX(row, j). With HAS_STATS, each row's mean and 1/std are written too
// (LayerNormalization's optional outputs).
// Defines: KERNEL_NAME; X_T S_T B_T Y_T M_T; ROWS ROW_LEN EPS; HAS_SCALE; HAS_BIAS; HAS_STATS; SCALE_INDEX(row, j).
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
    float mean = 0.0f;
    for (int j = 0; j < ROW_LEN; ++j) mean += LOAD(X_T, x, base + j);
    mean *= 1.0f / ROW_LEN;
    float var = 0.0f;
    for (int j = 0; j < ROW_LEN; ++j) {
        const float d = LOAD(X_T, x, base + j) - mean;
        var = mad(d, d, var);
    }
    const float rstd = rsqrt(var * (1.0f / ROW_LEN) + EPS);
#if HAS_STATS
    STORE(M_T, mean_out, row, mean);
    STORE(M_T, rstd_out, row, rstd);
#endif
    for (int j = 0; j < ROW_LEN; ++j) {
        float v = (LOAD(X_T, x, base + j) - mean) * rstd;
#if HAS_SCALE
        v *= LOAD(S_T, scale, SCALE_INDEX(row, j));
#endif
#if HAS_BIAS
        v += LOAD(B_T, bias, SCALE_INDEX(row, j));
#endif
        STORE(Y_T, y, base + j, v);
    }
}
#endif

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
