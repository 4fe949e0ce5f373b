// Softmax / LogSoftmax over the last axis on a CPU target, fp32: softmax.cl's contract for INNER == 1, written for
// pocl (cpu.h). One work item per row of D makes three passes over it, VW floats a vector (the D % VW tail
// scalar): the max, exp(x - max) (stored, for a Softmax) and their sum, then the output; one exp per element, the
// builtin on a whole vector. The max skips NaNs as fmax does and starts at -INFINITY, as the portable form: a NaN
// in a row makes the sum, and so the whole row, NaN.
// NAN_TO_ZERO as softmax.cl's.
// Defines: KERNEL_NAME; OUTER D VW; IS_LOG; NAN_TO_ZERO.
// Global size: (OUTER).

__kernel void KERNEL_NAME(__global const float* x, __global float* y)
{
    const int row = get_global_id(0);
    __global const float* xr = x + row * D;
    __global float* yr = y + row * D;
    const int full = D - D % VW;

    CPU_VTYPE(VW) vmax = -INFINITY;
    for (int k = 0; k < full; k += VW) {
        const CPU_VTYPE(VW) v = CPU_VLOAD(VW, xr, k);
        vmax = v > vmax ? v : vmax;
    }
    float m = CPU_HMAX(VW, vmax);
    for (int k = full; k < D; ++k) m = xr[k] > m ? xr[k] : m;

    CPU_VTYPE(VW) vsum = 0.0f;
    for (int k = 0; k < full; k += VW) {
        const CPU_VTYPE(VW) e = exp(CPU_VLOAD(VW, xr, k) - m);
#if !IS_LOG
        CPU_VSTORE(VW, yr, k, e);
#endif
        vsum += e;
    }
    float s = CPU_HSUM(VW, vsum);
    for (int k = full; k < D; ++k) {
        const float e = exp(xr[k] - m);
#if !IS_LOG
        yr[k] = e;
#endif
        s += e;
    }

#if IS_LOG
    const float shift = m + log(s);
    for (int k = 0; k < full; k += VW) CPU_VSTORE(VW, yr, k, CPU_VLOAD(VW, xr, k) - shift);
    for (int k = full; k < D; ++k) yr[k] = xr[k] - shift;
#else
#if NAN_TO_ZERO
    if (!(s > 0.0f)) {
        for (int k = 0; k < full; k += VW) CPU_VSTORE(VW, yr, k, (CPU_VTYPE(VW))(0.0f));
        for (int k = full; k < D; ++k) yr[k] = 0.0f;
        return;
    }
#endif
    const float r = 1.0f / s;
    for (int k = 0; k < full; k += VW) CPU_VSTORE(VW, yr, k, CPU_VLOAD(VW, yr, k) * r);
    for (int k = full; k < D; ++k) yr[k] *= r;
#endif
}
