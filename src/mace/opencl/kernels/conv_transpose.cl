// Transposed convolution as a gather: each output element sums the input taps that scatter onto it. 1D/2D/3D in
// the 3D form of conv.cl. One work item computes OCB output channels of one output element.
// Weights keep the ONNX layout [C][OC/G][KD][KH][KW], so they may be a run-time tensor too.
// Defines: KERNEL_NAME; X_T W_T B_T R_T Y_T; N C OC G; ID IH IW OD OH OW; KD KH KW; SD SH SW; PD PH PW (leading
// pads); DD DH DW; OCB; HAS_BIAS; HAS_RESIDUAL; ACTIVATE(v).
// Global size: (OW, OD * OH, N * OC / OCB).

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
    const int ow = get_global_id(0), odh = get_global_id(1), nob = get_global_id(2);
    if (ow >= OW || odh >= OD * OH || nob >= N * (OC / OCB)) return;
    const int od = odh / OH, oh = odh % OH;
    const int n = nob / (OC / OCB), ob = nob % (OC / OCB), oc0 = ob * OCB;
    const int cg = C / G, g = oc0 / (OC / G);
    const int xbase = (n * C + g * cg) * (ID * IH * IW);
    const int ocg = OC / G, taps = KD * KH * KW;
    const int wbase = (g * cg * ocg + (oc0 - g * ocg)) * taps;  // weight of (c = 0, oc0, tap 0)

    float acc[OCB];
    for (int j = 0; j < OCB; ++j) acc[j] = 0.0f;
    for (int kd = 0; kd < KD; ++kd) {
        const int td = od + PD - kd * DD;
        if (td < 0 || td % SD != 0 || td / SD >= ID) continue;
        for (int kh = 0; kh < KH; ++kh) {
            const int th = oh + PH - kh * DH;
            if (th < 0 || th % SH != 0 || th / SH >= IH) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int tw = ow + PW - kw * DW;
                if (tw < 0 || tw % SW != 0 || tw / SW >= IW) continue;
                const int xo = xbase + ((td / SD) * IH + th / SH) * IW + tw / SW;
                const int wo = wbase + (kd * KH + kh) * KW + kw;
                for (int c = 0; c < cg; ++c) {
                    const float xv = LOAD(X_T, x, xo + c * (ID * IH * IW));
                    for (int j = 0; j < OCB; ++j) acc[j] = mad(xv, LOAD(W_T, w, wo + (c * ocg + j) * taps), acc[j]);
                }
            }
        }
    }

    for (int j = 0; j < OCB; ++j) {
        const int oc = oc0 + j;
        float v = acc[j];
#if HAS_BIAS
        v += LOAD(B_T, bias, oc);
#endif
        const int yo = (((n * OC + oc) * OD + od) * OH + oh) * OW + ow;
#if HAS_RESIDUAL
        v += LOAD(R_T, res, yo);
#endif
        STORE(Y_T, y, yo, ACTIVATE(v));
    }
}
