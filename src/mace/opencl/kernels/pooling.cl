// MaxPool / AveragePool, 1D/2D/3D in the 3D form of conv.cl; one work item per output element.
// The output shape (ceil_mode already applied) comes from the IR. Averages divide by the taps inside the input, or
// with COUNT_INCLUDE_PAD by the taps inside the padded input (input plus both pads), as onnxruntime does.
// Defines: KERNEL_NAME; X_T Y_T; NC; ID IH IW OD OH OW; KD KH KW; SD SH SW; PD PH PW (leading pads); PDE PHE PWE
// (trailing pads); DD DH DW; IS_MAX; COUNT_INCLUDE_PAD.
// Global size: (NC * OD * OH * OW) rounded up to a multiple of 256, an element's index in y: one flat dimension, so
// that the driver's work-groups are full whatever the widths.

__kernel void KERNEL_NAME(__global const TYPE(X_T)* x, __global TYPE(Y_T)* y)
{
    const int index = get_global_id(0);
    if (index >= NC * OD * OH * OW) return;
    const int ow = index % OW, oh = index / OW % OH, od = index / (OW * OH) % OD, nc = index / (OW * OH * OD);
    const int id0 = od * SD - PD, ih0 = oh * SH - PH, iw0 = ow * SW - PW;
    const int xbase = nc * (ID * IH * IW);
#if IS_MAX
    float acc = -INFINITY;
#else
    float acc = 0.0f;
#endif
    int valid = 0, padded = 0;
    for (int kd = 0; kd < KD; ++kd) {
        const int id = id0 + kd * DD;
        const bool din = id >= 0 && id < ID, dpad = id < ID + PDE;
        for (int kh = 0; kh < KH; ++kh) {
            const int ih = ih0 + kh * DH;
            const bool hin = ih >= 0 && ih < IH, hpad = ih < IH + PHE;
            for (int kw = 0; kw < KW; ++kw) {
                const int iw = iw0 + kw * DW;
                if (dpad && hpad && iw < IW + PWE) ++padded;
                if (!(din && hin && iw >= 0 && iw < IW)) continue;
                const float v = LOAD(X_T, x, xbase + (id * IH + ih) * IW + iw);
#if IS_MAX
                acc = MAXNAN(acc, v);  // a NaN in the window gives NaN
#else
                acc += v;
#endif
                ++valid;
            }
        }
    }
#if !IS_MAX
#if COUNT_INCLUDE_PAD
    acc /= (float)padded;
#else
    acc /= (float)valid;
#endif
#endif
    STORE(Y_T, y, index, acc);
}
