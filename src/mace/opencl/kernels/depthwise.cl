// Depthwise convolution (group == input channels, OC = C * MULT), 1D as 2D. One work item computes PB (1, 2, 4 or 8)
// consecutive output columns of one channel, with the channel's KH*KW taps held in registers.
// Weights keep the ONNX layout [OC][1][KH][KW].
// Defines: KERNEL_NAME; X_T W_T B_T R_T Y_T; N C MULT; IH IW OH OW; KH KW; SH SW; PH PW; DH DW; PB; HAS_BIAS;
// HAS_RESIDUAL; ACTIVATE(v).
// Global size: (ceil(OW / PB), OH, N * C * MULT).

__kernel void KERNEL_NAME(__global const TYPE(X_T)* x,
                          __global const TYPE(W_T)* w,
#if HAS_BIAS
                          __global const TYPE(B_T)* bias,
#endif
#if HAS_RESIDUAL
                          __global const TYPE(R_T)* res,
#endif
                          __global TYPE(Y_T)* y)
{
    const int owb = get_global_id(0), oh = get_global_id(1), noc = get_global_id(2);
    if (owb * PB >= OW || oh >= OH || noc >= N * C * MULT) return;
    const int ow0 = owb * PB, oc = noc % (C * MULT), n = noc / (C * MULT);
    const int xbase = (n * C + oc / MULT) * (IH * IW);
    const int ih0 = oh * SH - PH, iw0 = ow0 * SW - PW;

    float wk[KH * KW];
    for (int k = 0; k < KH * KW; ++k) wk[k] = LOAD(W_T, w, oc * (KH * KW) + k);

    // The PB output columns are the lanes of one vector; with stride 1, interior taps are one vector load.
    VTYPE(PB) acc = 0.0f;
    for (int kh = 0; kh < KH; ++kh) {
        const int ih = ih0 + kh * DH;
        if (ih < 0 || ih >= IH) continue;
        const int xrow = xbase + ih * IW;
        for (int kw = 0; kw < KW; ++kw) {
            const int iw = iw0 + kw * DW;
            VTYPE(PB) xv;
            if (SW == 1 && iw >= 0 && iw + PB <= IW) {
                xv = VLOADN(X_T, PB, x, xrow + iw);
            } else {
                float xs[PB];
                for (int p = 0; p < PB; ++p) {
                    const int iwp = iw + p * SW;
                    xs[p] = (iwp >= 0 && iwp < IW) ? LOAD(X_T, x, xrow + iwp) : 0.0f;
                }
                xv = VLOADN(F32, PB, xs, 0);
            }
            acc = mad(xv, (VTYPE(PB))(wk[kh * KW + kw]), acc);
        }
    }

#if HAS_BIAS
    const float b = LOAD(B_T, bias, oc);
#else
    const float b = 0.0f;
#endif
    float lanes[PB];
    VSPILL(PB, acc, lanes);
    for (int p = 0; p < PB; ++p) {
        const int ow = ow0 + p;
        if (ow >= OW) break;
        const int yo = (noc * OH + oh) * OW + ow;
        float v = lanes[p] + b;
#if HAS_RESIDUAL
        v += LOAD(R_T, res, yo);
#endif
        STORE(Y_T, y, yo, ACTIVATE(v));
    }
}
