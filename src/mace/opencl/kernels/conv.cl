// Direct convolution, 1D/2D/3D in one 3D form (missing leading spatial dims have size 1), any group count.
// One work item computes OCB (1, 2, 4 or 8) output channels x PB consecutive output columns, so each weight load
// feeds PB multiply-adds and each input load feeds OCB.
// Weights are relaid on the host to [OC/OCB][C/G][KD][KH][KW][OCB]; an OCB block never straddles two groups.
// Defines: KERNEL_NAME; X_T W_T B_T R_T Y_T; N C OC G; ID IH IW OD OH OW; KD KH KW; SD SH SW; PD PH PW (leading pads);
// DD DH DW; OCB PB; HAS_BIAS; HAS_RESIDUAL; ACTIVATE(v).
// Global size: (ceil(OW / PB), OD * OH, N * OC / OCB).

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
    const int owb = get_global_id(0), odh = get_global_id(1), nob = get_global_id(2);
    if (owb * PB >= OW || odh >= OD * OH || nob >= N * (OC / OCB)) return;
    const int ow0 = owb * PB, od = odh / OH, oh = odh % OH;
    const int n = nob / (OC / OCB), ob = nob % (OC / OCB), oc0 = ob * OCB;
    const int cg = C / G, g = oc0 / (OC / G);
    const int id0 = od * SD - PD, ih0 = oh * SH - PH, iw0 = ow0 * SW - PW;
    const int xbase = (n * C + g * cg) * (ID * IH * IW);
    const int wbase = ob * (cg * KD * KH * KW * OCB);

    // The OCB output channels are the lanes of one vector: a tap is one vector load of weights and PB vector mads.
    VTYPE(OCB) acc[PB];
    for (int p = 0; p < PB; ++p) acc[p] = 0.0f;

    for (int c = 0; c < cg; ++c) {
        for (int kd = 0; kd < KD; ++kd) {
            const int id = id0 + kd * DD;
            if (id < 0 || id >= ID) continue;
            for (int kh = 0; kh < KH; ++kh) {
                const int ih = ih0 + kh * DH;
                if (ih < 0 || ih >= IH) continue;
                const int xrow = xbase + ((c * ID + id) * IH + ih) * IW;
                const int wrow = wbase + (((c * KD + kd) * KH + kh) * KW) * OCB;
                for (int kw = 0; kw < KW; ++kw) {
                    const VTYPE(OCB) wv = VLOADN(W_T, OCB, w, wrow + kw * OCB);
                    for (int p = 0; p < PB; ++p) {
                        const int iw = iw0 + p * SW + kw * DW;
                        const float xv = (iw >= 0 && iw < IW) ? LOAD(X_T, x, xrow + iw) : 0.0f;
                        acc[p] = mad((VTYPE(OCB))(xv), wv, acc[p]);
                    }
                }
            }
        }
    }

    for (int p = 0; p < PB; ++p) {
        const int ow = ow0 + p;
        if (ow >= OW) break;
        float lanes[OCB];
        VSPILL(OCB, acc[p], lanes);
        for (int j = 0; j < OCB; ++j) {
            const int oc = oc0 + j;
            float v = lanes[j];
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
}
