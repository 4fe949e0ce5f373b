// Depthwise convolution on a CPU target, fp32 (group == input channels, OC = C * MULT, 1D as 2D): depthwise.cl's
// contract, written for pocl (cpu.h). One work item computes RB output rows x VW consecutive output columns of one
// channel, a vector accumulator per row (RB independent FMA chains; stride 1 rows share their loads once unrolled).
// Per tap a row's inputs are one vector (cpu.h: CPU_ROW). The last row and column blocks are shifted back to end at
// OH and OW (RB <= OH, VW <= OW), as in gemm_cpu.cl. Weights keep the ONNX layout [OC][1][KH][KW].
// Defines: KERNEL_NAME; N C MULT; IH IW OH OW; KH KW; SH SW; PH PW; DH DW; RB VW (SW * VW <= 16 for SW <= 2);
// HAS_BIAS; HAS_RESIDUAL; ACTIVATE(v).
// Global size: (ceil(OW / VW), ceil(OH / RB), N * C * MULT).

__kernel void KERNEL_NAME(__global const float* x,
                          __global const float* w,
#if HAS_BIAS
                          __global const float* bias,
#endif
#if HAS_RESIDUAL
                          __global const float* res,
#endif
                          __global float* y)
{
    const int owb = get_global_id(0) * VW, ohb = get_global_id(1) * RB, noc = get_global_id(2);
    const int ow0 = owb < OW - VW ? owb : OW - VW, oh0 = ohb < OH - RB ? ohb : OH - RB;
    const int oc = noc % (C * MULT), n = noc / (C * MULT);
    const int xc = (n * C + oc / MULT) * (IH * IW);
    __global const float* wc = w + oc * (KH * KW);
    const int iw0 = ow0 * SW - PW;

#define DW_CPU_ZERO(r) CPU_VTYPE(VW) acc##r = 0.0f;
    CPU_ROWS(RB, DW_CPU_ZERO)
    for (int kh = 0; kh < KH; ++kh) {
        for (int kw = 0; kw < KW; ++kw) {
            const float wv = wc[kh * KW + kw];
            const int iw = iw0 + kw * DW;
#define DW_CPU_TAP(r)                                                  \
            {                                                          \
                const int ih = (oh0 + (r)) * SH - PH + kh * DH;        \
                if (ih >= 0 && ih < IH) {                              \
                    const int xrow = xc + ih * IW;                     \
                    acc##r += wv * CPU_ROW(VW, x, xrow, iw, SW, IW, N * C * IH * IW); \
                }                                                      \
            }
            CPU_ROWS(RB, DW_CPU_TAP)
        }
    }

#if HAS_BIAS
#define DW_CPU_BIAS + bias[oc]
#else
#define DW_CPU_BIAS
#endif
#if HAS_RESIDUAL
#define DW_CPU_RES(yo) + CPU_VLOAD(VW, res, yo)
#else
#define DW_CPU_RES(yo)
#endif
#define DW_CPU_STORE(r)                                                 \
    {                                                                   \
        const int yo = (noc * OH + oh0 + (r)) * OW + ow0;               \
        const CPU_VTYPE(VW) v = acc##r DW_CPU_BIAS DW_CPU_RES(yo);      \
        CPU_VSTORE(VW, y, yo, ACTIVATE(v));                             \
    }
    CPU_ROWS(RB, DW_CPU_STORE)
#undef DW_CPU_ZERO
#undef DW_CPU_TAP
#undef DW_CPU_BIAS
#undef DW_CPU_RES
#undef DW_CPU_STORE
}
