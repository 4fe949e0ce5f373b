#ifdef LSTM
// LSTM (ONNX: gates i, o, f, c; f = sigmoid, g = h = tanh), the whole recurrence in one launch: a work-group per
// (batch entry, direction), its work items sharing the hidden units (unit j on item j % LH) with h in local memory
// (two buffers: the step reads one, writes the other), c and the step's x too. Each step, each unit's four gates
// are its rows of W . x_t + R . h + Wb + Rb (+ peepholes). Past an entry's sequence length its outputs are zero and
// its states stay; reversed directions start at each entry's own last element.
// Defines: KERNEL_NAME; X_T W_T R_T B_T L_T S_T P_T Y_T; SEQ BATCH IN HID DIRS; REVERSE (direction 0 backward too);
// LAYOUT (1: x [batch][seq][in], y [batch][seq][dirs][hid], states [batch][dirs][hid]); HAS_CLIP and CLIP (each
// activation's input held to [-CLIP, CLIP]); INPUT_FORGET; HAS_Y HAS_YH HAS_YC.
// Global size: (LH, BATCH * DIRS); local size (LH, 1).
#if LAYOUT
#define X_AT(t, b, i) (((b) * SEQ + (t)) * IN + (i))
#define Y_AT(t, d, b, j) ((((b) * SEQ + (t)) * DIRS + (d)) * HID + (j))
#define S_AT(d, b, j) (((b) * DIRS + (d)) * HID + (j))
#else
#define X_AT(t, b, i) (((t) * BATCH + (b)) * IN + (i))
#define Y_AT(t, d, b, j) ((((t) * DIRS + (d)) * BATCH + (b)) * HID + (j))
#define S_AT(d, b, j) (((d) * BATCH + (b)) * HID + (j))
#endif
#if HAS_CLIP
#define GATE(v) clamp((v), -CLIP, CLIP)
#else
#define GATE(v) (v)
#endif

__kernel void KERNEL_NAME(__global const TYPE(X_T)* x, __global const TYPE(W_T)* w, __global const TYPE(R_T)* r,
                          __global const TYPE(B_T)* bias, __global const TYPE(L_T)* lens,
                          __global const TYPE(S_T)* h0, __global const TYPE(S_T)* c0, __global const TYPE(P_T)* peep
#if HAS_Y
                          , __global TYPE(Y_T)* y
#endif
#if HAS_YH
                          , __global TYPE(Y_T)* yh
#endif
#if HAS_YC
                          , __global TYPE(Y_T)* yc
#endif
)
{
    const int lid = get_local_id(0), lh = get_local_size(0);
    const int b = get_group_id(1) % BATCH, d = get_group_id(1) / BATCH;
    const bool backward = REVERSE || d == 1;
    __local float h[2][HID], c[HID], xt[IN];
    for (int j = lid; j < HID; j += lh) {
        h[0][j] = LOAD(S_T, h0, S_AT(d, b, j));
        c[j] = LOAD(S_T, c0, S_AT(d, b, j));
    }
    const int len = (int)LOAD(L_T, lens, b);
    const int wd = d * 4 * HID * IN, rd = d * 4 * HID * HID, bd = d * 8 * HID, pd = d * 3 * HID;
    int cur = 0;
    for (int step = 0; step < SEQ; ++step) {
        const bool live = step < len;
        const int t = backward ? max(len - 1 - step, 0) : step;
        barrier(CLK_LOCAL_MEM_FENCE);  // (h[cur] and c complete; the last step's reads of xt done)
        for (int i = lid; i < IN; i += lh) xt[i] = live ? LOAD(X_T, x, X_AT(t, b, i)) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int j = lid; j < HID; j += lh) {
            float g[4];
            for (int k = 0; k < 4; ++k) {
                const int row = k * HID + j;
                float s = LOAD(B_T, bias, bd + row) + LOAD(B_T, bias, bd + 4 * HID + row);
                for (int i = 0; i < IN; ++i) s = mad(LOAD(W_T, w, wd + row * IN + i), xt[i], s);
                for (int m = 0; m < HID; ++m) s = mad(LOAD(R_T, r, rd + row * HID + m), h[cur][m], s);
                g[k] = s;
            }
            const float cj = c[j];
            const float gi = ACT_SIGMOID(GATE(g[0] + LOAD(P_T, peep, pd + j) * cj));
#if INPUT_FORGET
            const float gf = 1.0f - gi;
#else
            const float gf = ACT_SIGMOID(GATE(g[2] + LOAD(P_T, peep, pd + 2 * HID + j) * cj));
#endif
            const float cn = gf * cj + gi * tanh(GATE(g[3]));
            const float go = ACT_SIGMOID(GATE(g[1] + LOAD(P_T, peep, pd + HID + j) * cn));
            const float hn = go * tanh(cn);
            h[cur ^ 1][j] = live ? hn : h[cur][j];
            c[j] = live ? cn : cj;  // (only this work item reads c[j])
#if HAS_Y
            STORE(Y_T, y, Y_AT(live ? t : step, d, b, j), live ? hn : 0.0f);
#endif
        }
        cur ^= 1;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int j = lid; j < HID; j += lh) {
#if HAS_YH
        STORE(Y_T, yh, S_AT(d, b, j), h[cur][j]);
#endif
#if HAS_YC
        STORE(Y_T, yc, S_AT(d, b, j), c[j]);
#endif
    }
}
#endif
