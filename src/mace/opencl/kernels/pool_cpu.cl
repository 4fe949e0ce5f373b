// MaxPool / AveragePool on a CPU target, fp32, 1D/2D (1D as 2D): pooling.cl's contract, written for pocl (cpu.h).
// One work item computes RB output rows x VW consecutive output columns of one (n, c) plane, a vector accumulator per
// row; per tap a row's inputs are one vector (cpu.h: CPU_ROW_FILL, -INFINITY outside the input for a max, 0 for a
// sum). The last row and column blocks are shifted back to end at OH and OW (RB <= OH, VW <= OW), as in
// depthwise_cpu.cl. Averages divide by the taps inside the input, or with COUNT_INCLUDE_PAD inside the padded input
// (input plus both pads): a window is a box, so that count is (taps along h) x (taps along w), the w counts one
// vector per work item.
// Defines: KERNEL_NAME; NC; IH IW OH OW; KH KW; SH SW; PH PW (leading pads); PHE PWE (trailing pads); DH DW; RB VW;
// IS_MAX; COUNT_INCLUDE_PAD.
// Global size: (ceil(OW / VW), ceil(OH / RB), N * C).

#ifndef POOL_CPU_HELPERS
#define POOL_CPU_HELPERS
// How many of the n taps i0 + t * step fall in [lo, hi).
static inline int pool_cpu_taps(int i0, int n, int step, int lo, int hi)
{
    int count = 0;
    for (int t = 0; t < n; ++t) count += (i0 + t * step >= lo && i0 + t * step < hi) ? 1 : 0;
    return count;
}
#endif

__kernel void KERNEL_NAME(__global const float* x, __global float* y)
{
    const int owb = get_global_id(0) * VW, ohb = get_global_id(1) * RB, nc = get_global_id(2);
    const int ow0 = owb < OW - VW ? owb : OW - VW, oh0 = ohb < OH - RB ? ohb : OH - RB;
    const int xc = nc * (IH * IW);
    const int iw0 = ow0 * SW - PW;
#if IS_MAX
#define POOL_CPU_FILL (-INFINITY)
#else
#define POOL_CPU_FILL 0.0f
#endif

#define POOL_CPU_INIT(r) CPU_VTYPE(VW) acc##r = POOL_CPU_FILL;
    CPU_ROWS(RB, POOL_CPU_INIT)
    for (int kh = 0; kh < KH; ++kh) {
        for (int kw = 0; kw < KW; ++kw) {
            const int iw = iw0 + kw * DW;
#if IS_MAX  // a NaN in the window gives NaN, as MAXNAN
#define POOL_CPU_ACC(r, v) acc##r = ((acc##r > v) | (acc##r != acc##r)) ? acc##r : v;
#else
#define POOL_CPU_ACC(r, v) acc##r += v;
#endif
#define POOL_CPU_TAP(r)                                                                 \
            {                                                                           \
                const int ih = (oh0 + (r)) * SH - PH + kh * DH;                         \
                if (ih >= 0 && ih < IH) {                                               \
                    const CPU_VTYPE(VW) v = CPU_ROW_FILL(VW, x, xc + ih * IW, iw, SW, IW, NC * IH * IW, POOL_CPU_FILL); \
                    POOL_CPU_ACC(r, v)                                                  \
                }                                                                       \
            }
            CPU_ROWS(RB, POOL_CPU_TAP)
        }
    }

#if IS_MAX
#define POOL_CPU_STORE(r) CPU_VSTORE(VW, y, (nc * OH + oh0 + (r)) * OW + ow0, acc##r);
#else
#if COUNT_INCLUDE_PAD
#define POOL_CPU_LO(p) (-(p))
#define POOL_CPU_HI(n, pe) ((n) + (pe))
#else
#define POOL_CPU_LO(p) 0
#define POOL_CPU_HI(n, pe) (n)
#endif
#define POOL_CPU_WTAPS(j) (float)pool_cpu_taps(iw0 + (j) * SW, KW, DW, POOL_CPU_LO(PW), POOL_CPU_HI(IW, PWE))
    const CPU_VTYPE(VW) wtaps = (CPU_VTYPE(VW))(CPU_LANES(VW, POOL_CPU_WTAPS));
#define POOL_CPU_STORE(r)                                                                                       \
    {                                                                                                           \
        const float htaps = (float)pool_cpu_taps((oh0 + (r)) * SH - PH, KH, DH, POOL_CPU_LO(PH), POOL_CPU_HI(IH, PHE)); \
        CPU_VSTORE(VW, y, (nc * OH + oh0 + (r)) * OW + ow0, acc##r / (htaps * wtaps));                         \
    }
#endif
    CPU_ROWS(RB, POOL_CPU_STORE)
#undef POOL_CPU_FILL
#undef POOL_CPU_INIT
#undef POOL_CPU_ACC
#undef POOL_CPU_TAP
#undef POOL_CPU_STORE
#undef POOL_CPU_LO
#undef POOL_CPU_HI
#undef POOL_CPU_WTAPS
}
