// Softmax / LogSoftmax along one axis of a tensor viewed as [OUTER][D][INNER]; one work item per (outer, inner)
// makes three passes (max, sum of exponentials, write).
// Defines: KERNEL_NAME; X_T Y_T; OUTER D INNER; IS_LOG.
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
    const float shift = m + log(s);
    for (int i = 0; i < D; ++i) STORE(Y_T, y, base + i * INNER, LOAD(X_T, x, base + i * INNER) - shift);
#else
    const float r = 1.0f / s;
    for (int i = 0; i < D; ++i) STORE(Y_T, y, base + i * INNER, exp(LOAD(X_T, x, base + i * INNER) - m) * r);
#endif
}
