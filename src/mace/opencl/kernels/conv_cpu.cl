// Direct convolution on a CPU target, fp32, 1D/2D (1D as 2D), any group count: conv.cl's contract, written for pocl
// (cpu.h). One work item computes TM output channels (of one group) x VW consecutive output columns of one output
// row: per input channel and tap, one vector of inputs (cpu.h: CPU_ROW) and TM broadcast weights feed TM vector
// FMAs. The last column block is shifted back to end at OW (VW <= OW), as in gemm_cpu.cl.
// Weights are relaid on the host to [OC/TM][C/G][KH][KW][TM] (conv.cl's layout with OCB = TM). Image n is stored
// from n * Y_BSTRIDE + Y_OFFSET: a slice of a Concat's output where codegen places it there (else OC * OH * OW, 0).
// Defines: KERNEL_NAME; N C OC G; IH IW OH OW; KH KW; SH SW; PH PW; DH DW; TM VW; HAS_BIAS; HAS_RESIDUAL;
// ACTIVATE(v); Y_BSTRIDE Y_OFFSET.
// Global size: (ceil(OW / VW), OH, N * OC / TM).

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
    const int owb = get_global_id(0) * VW, oh = get_global_id(1), nob = get_global_id(2);
    const int ow0 = owb < OW - VW ? owb : OW - VW;
    const int n = nob / (OC / TM), ob = nob % (OC / TM), oc0 = ob * TM;
    const int cg = C / G, g = oc0 / (OC / G);
    const int xg = (n * C + g * cg) * (IH * IW);
    __global const float* wb = w + ob * (cg * KH * KW * TM);
    const int ih0 = oh * SH - PH, iw0 = ow0 * SW - PW;

#define CONV_CPU_ZERO(i) CPU_VTYPE(VW) acc##i = 0.0f;
    CPU_ROWS(TM, CONV_CPU_ZERO)
    for (int c = 0; c < cg; ++c) {
        for (int kh = 0; kh < KH; ++kh) {
            const int ih = ih0 + kh * DH;
            if (ih < 0 || ih >= IH) continue;
            const int xrow = xg + (c * IH + ih) * IW;
            __global const float* wt = wb + ((c * KH + kh) * KW) * TM;
            for (int kw = 0; kw < KW; ++kw) {
                const CPU_VTYPE(VW) xv = CPU_ROW(VW, x, xrow, iw0 + kw * DW, SW, IW, N * C * IH * IW);
#define CONV_CPU_FMA(i) acc##i += wt[kw * TM + (i)] * xv;
                CPU_ROWS(TM, CONV_CPU_FMA)
            }
        }
    }

#if HAS_BIAS
#define CONV_CPU_BIAS(oc) + bias[oc]
#else
#define CONV_CPU_BIAS(oc)
#endif
#if HAS_RESIDUAL
#define CONV_CPU_RES(yo) + CPU_VLOAD(VW, res, yo)
#else
#define CONV_CPU_RES(yo)
#endif
#define CONV_CPU_STORE(i)                                                              \
    {                                                                                  \
        const int yo = ((n * OC + oc0 + (i)) * OH + oh) * OW + ow0;                    \
        const CPU_VTYPE(VW) v = acc##i CONV_CPU_BIAS(oc0 + (i)) CONV_CPU_RES(yo);      \
        CPU_VSTORE(VW, y, n * Y_BSTRIDE + Y_OFFSET + ((oc0 + (i)) * OH + oh) * OW + ow0, ACTIVATE(v)); \
    }
    CPU_ROWS(TM, CONV_CPU_STORE)
#undef CONV_CPU_ZERO
#undef CONV_CPU_FMA
#undef CONV_CPU_BIAS
#undef CONV_CPU_RES
#undef CONV_CPU_STORE
}
