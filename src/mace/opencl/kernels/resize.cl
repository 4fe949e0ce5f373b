// Resize of the two innermost dims (nearest, linear, cubic). Codegen computes, per output row and column, the input
// indices and weights of its taps (1, 2 or 4) from the mode, coordinate transformation and scales, so the kernel is
// one separable weighted gather: y[o][oh][ow] = sum hw[oh][th] * ww[ow][tw] * x[o][hidx[oh][th]][widx[ow][tw]].
// Defines: KERNEL_NAME; X_T Y_T; OUTER IH IW OH OW; TH TW (taps per output row / column).
// Global size: (OW, OH, OUTER).

__kernel void KERNEL_NAME(__global const TYPE(X_T)* x,
                          __global const int* hidx, __global const float* hw,
                          __global const int* widx, __global const float* ww,
                          __global TYPE(Y_T)* y)
{
    const int ow = get_global_id(0), oh = get_global_id(1), o = get_global_id(2);
    if (ow >= OW || oh >= OH || o >= OUTER) return;
    float acc = 0.0f;
    for (int th = 0; th < TH; ++th) {
        const int row = (o * IH + hidx[oh * TH + th]) * IW;
        float racc = 0.0f;
        for (int tw = 0; tw < TW; ++tw)
            racc = mad(ww[ow * TW + tw], LOAD(X_T, x, row + widx[ow * TW + tw]), racc);
        acc = mad(hw[oh * TH + th], racc, acc);
    }
    STORE(Y_T, y, (o * OH + oh) * OW + ow, acc);
}
