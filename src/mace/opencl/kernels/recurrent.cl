// LSTM, GRU and RNN (ONNX; activations sigmoid and tanh), the whole recurrence in one launch: a work-group per (batch
// entry, direction), its work items sharing the hidden units (unit j on item j % LH), h in local memory (two
// buffers: a step reads one and writes the other), and the step's x too. Past an entry's sequence length its outputs
// are zero and its states stay; reversed directions start at each entry's own last element.
// Shared defines: SEQ BATCH IN HID DIRS; REVERSE (direction 0 backward too); LAYOUT (1: x [batch][seq][in],
// y [batch][seq][dirs][hid], states [batch][dirs][hid]); HAS_CLIP and CLIP (each activation's input held to
// [-CLIP, CLIP]); HAS_Y HAS_YH.
// Global size: (LH, BATCH * DIRS); local size (LH, 1).
#if defined(LSTM) || defined(GRU) || defined(RNN)
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
#if defined(LSTM)
#define GATES 4
#elif defined(GRU)
#define GATES 3
#else
#define GATES 1
#endif
// acc plus row ``row`` of direction d's W . xt (IN terms), and of R . v (HID terms), in order
static float CAT(KERNEL_NAME, _wx)(__global const TYPE(W_T)* w, const int d, const int row, __local const float* xt,
                                   float acc)
{
    const int at = (d * GATES * HID + row) * IN;
    for (int i = 0; i < IN; ++i) acc = mad(LOAD(W_T, w, at + i), xt[i], acc);
    return acc;
}
static float CAT(KERNEL_NAME, _rv)(__global const TYPE(R_T)* r, const int d, const int row, __local const float* v,
                                   float acc)
{
    const int at = (d * GATES * HID + row) * HID;
    for (int m = 0; m < HID; ++m) acc = mad(LOAD(R_T, r, at + m), v[m], acc);
    return acc;
}
// a gate's input at ``row``: Wb + Rb + W's row . xt + R's row . h, in that order
static float CAT(KERNEL_NAME, _gate)(__global const TYPE(W_T)* w, __global const TYPE(R_T)* r,
                                     __global const TYPE(B_T)* bias, const int d, const int row,
                                     __local const float* xt, __local const float* h)
{
    const int bd = d * 2 * GATES * HID;
    const float s = LOAD(B_T, bias, bd + row) + LOAD(B_T, bias, bd + GATES * HID + row);
    return CAT(KERNEL_NAME, _rv)(r, d, row, h, CAT(KERNEL_NAME, _wx)(w, d, row, xt, s));
}
#endif

// One kernel for the three, the cell's step apart:
// LSTM: gates i, o, f, c (+ peepholes); c in local memory, each unit's read only by its work item.
//   Defines: X_T W_T R_T B_T L_T S_T P_T Y_T; INPUT_FORGET; HAS_YC.
// GRU: gates z, r, h, a step in two phases: each unit's z and r, then r * h into local memory (LINEAR_BEFORE_RESET
//   0: the candidate's recurrent term is R_h . (r * h), which needs every unit's r), then each unit's candidate.
//   Defines: X_T W_T R_T B_T L_T S_T Y_T; LINEAR_BEFORE_RESET.
// RNN: h = tanh(W . x_t + R . h + Wb + Rb). Defines: X_T W_T R_T B_T L_T S_T Y_T.
#if defined(LSTM) || defined(GRU) || defined(RNN)
__kernel void KERNEL_NAME(__global const TYPE(X_T)* x, __global const TYPE(W_T)* w, __global const TYPE(R_T)* r,
                          __global const TYPE(B_T)* bias, __global const TYPE(L_T)* lens,
                          __global const TYPE(S_T)* h0
#ifdef LSTM
                          , __global const TYPE(S_T)* c0, __global const TYPE(P_T)* peep
#endif
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
    __local float h[2][HID], xt[IN];
#ifdef LSTM
    __local float c[HID];
    const int pd = d * 3 * HID;
#elif defined(GRU)
    __local float rh[HID], z[HID];
    const int bd = d * 6 * HID;
#endif
    for (int j = lid; j < HID; j += lh) {
        h[0][j] = LOAD(S_T, h0, S_AT(d, b, j));
#ifdef LSTM
        c[j] = LOAD(S_T, c0, S_AT(d, b, j));
#endif
    }
    const int len = (int)LOAD(L_T, lens, b);
    int cur = 0;
    for (int step = 0; step < SEQ; ++step) {
        const bool live = step < len;
        const int t = backward ? max(len - 1 - step, 0) : step;
        barrier(CLK_LOCAL_MEM_FENCE);  // (h[cur] complete; the last step's reads of xt, and the GRU's of rh, done)
        for (int i = lid; i < IN; i += lh) xt[i] = live ? LOAD(X_T, x, X_AT(t, b, i)) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
#ifdef GRU
        for (int j = lid; j < HID; j += lh) {
            float g[2];
            for (int k = 0; k < 2; ++k)
                g[k] = ACT_SIGMOID(GATE(CAT(KERNEL_NAME, _gate)(w, r, bias, d, k * HID + j, xt, h[cur])));
            z[j] = g[0];
            rh[j] = LINEAR_BEFORE_RESET ? g[1] : g[1] * h[cur][j];  // (the reset gate itself, or r * h)
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#endif
        for (int j = lid; j < HID; j += lh) {
#ifdef LSTM
            float g[4];
            for (int k = 0; k < 4; ++k) g[k] = CAT(KERNEL_NAME, _gate)(w, r, bias, d, k * HID + j, xt, h[cur]);
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
            c[j] = live ? cn : cj;
#elif defined(GRU)
            const int row = 2 * HID + j;
            const float s = CAT(KERNEL_NAME, _wx)(w, d, row, xt, LOAD(B_T, bias, bd + row));
            const float rb = LOAD(B_T, bias, bd + 3 * HID + row);
#if LINEAR_BEFORE_RESET
            const float rec = CAT(KERNEL_NAME, _rv)(r, d, row, h[cur], rb) * rh[j];
#else
            const float rec = CAT(KERNEL_NAME, _rv)(r, d, row, rh, rb);
#endif
            const float cand = tanh(GATE(s + rec));
            const float hn = (1.0f - z[j]) * cand + z[j] * h[cur][j];
#else
            const float hn = tanh(GATE(CAT(KERNEL_NAME, _gate)(w, r, bias, d, j, xt, h[cur])));
#endif
            h[cur ^ 1][j] = live ? hn : h[cur][j];
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
