// An inverted residual block (MobileNet-v2's bottleneck) in one kernel: a 1x1 expand conv, a depthwise conv and a 1x1
// project conv, with their fused activations and the project's epilogue (bias, residual, activation):
//   e[c][i]  = E_ACTIVATE(sum_ci we[ci][c] * x[ci][i] + eb[c])                  CIN -> CE channels, at IH x IW
//   d[c][o]  = DW_ACTIVATE(sum_{kh,kw} dww[c][kh][kw] * e[c][window(o; kh, kw)] + dwb[c])   OH x OW, e padded with 0
//   y[co][o] = ACTIVATE(sum_c wp[c][co] * d[c][o] + c[co] + res[co][o])        CE -> COUT
// e and d never leave local memory. A work-group computes a TH x TW tile of output positions and BCO output channels
// of one image, over the KS expanded channels of its split (SPLITS ranges of CE), CK at a time: e on the tile's input
// window (HH x HW positions: neighbouring tiles compute the rows they share each), from x and we staged BKI input
// channels at a time (x's window once for all chunks where BKI >= CIN); then d from there; then the chunk's share of
// the projection. The weights come relaid, we as [CIN][CE] and wp as [CE][COUT], so a chunk's are rows; the chunk's
// wp and dww are staged with its first x. Outside the image e is 0 (the depthwise conv's padding).
// With SPLITS > 1 the partial sums go to part[SPLITS][N][COUT][OH * OW] and the last work-group of a tile to finish
// sums them (SPLIT_SUM, as gemm_tiled.cl's: NVIDIA targets), or gemm_tiled.cl's SPLIT_K_SUM does in a second launch.
// Each product has its own layout of the NT work items: the expand's CK x HP outputs as LAC x LAP (TAC channels x TAP
// window positions each), the projection's BCO x P as LCO x LCP (TCO x TCP each); the depthwise outputs go one by one.
// Defines: KERNEL_NAME; X_T WE_T EB_T DWW_T DWB_T WP_T C_T R_T Y_T; N CIN CE COUT IH IW OH OW KH KW SH SW PH PW DH DW;
// TH TW CK BKI BCO SPLITS KS SPLIT_SUM; NT LAC LAP TAC TAP LCO LCP TCO TCP; E_BIAS DW_BIAS HAS_BIAS HAS_RESIDUAL;
// E_ACTIVATE(v) DW_ACTIVATE(v) ACTIVATE(v); Y_BSTRIDE Y_OFFSET.
// Global size: (ceil(OH / TH) * ceil(OW / TW) * ceil(COUT / BCO) * NT, 1, N * SPLITS); local size (NT, 1, 1).

#define HH ((TH - 1) * SH + (KH - 1) * DH + 1)
#define HW ((TW - 1) * SW + (KW - 1) * DW + 1)
#define HP (HH * HW)
#define P (TH * TW)
#define TILES_W ((OW + TW - 1) / TW)
#define TILES (((OH + TH - 1) / TH) * TILES_W)
#define OHW (OH * OW)

__kernel __attribute__((reqd_work_group_size(NT, 1, 1)))
void KERNEL_NAME(__global const TYPE(X_T)* x,
                 __global const TYPE(WE_T)* we,
#if E_BIAS
                 __global const TYPE(EB_T)* eb,
#endif
                 __global const TYPE(DWW_T)* dww,
#if DW_BIAS
                 __global const TYPE(DWB_T)* dwb,
#endif
#if SPLITS > 1 && !SPLIT_SUM
                 __global const TYPE(WP_T)* wp,
                 __global float* part)
#else
                 __global const TYPE(WP_T)* wp,
#if SPLITS > 1
                 __global float* part,
                 __global uint* counts,
#endif
#if HAS_BIAS
                 __global const TYPE(C_T)* c,
#endif
#if HAS_RESIDUAL
                 __global const TYPE(R_T)* res,
#endif
                 __global TYPE(Y_T)* y)
#endif
{
    const int tid = get_local_id(0);
    const int tile = get_group_id(0) % TILES, co0 = (get_group_id(0) / TILES) * BCO;
    const int img = get_group_id(2) / SPLITS, split = get_group_id(2) % SPLITS;
    const int oh0 = (tile / TILES_W) * TH, ow0 = (tile % TILES_W) * TW;
    const int ih0 = oh0 * SH - PH, iw0 = ow0 * SW - PW;  // the window's first input position (maybe padding)
    const int cbeg = split * KS, cend = min(CE, cbeg + KS);

    __local float xs[BKI * HP];   // x on the window, BKI input channels
    __local float ws[BKI * CK];   // we, those input channels x the chunk
    __local float es[CK * HP];    // e on the window
    __local float ds[CK * P];     // d on the tile
    __local float wps[CK * BCO];  // wp, the chunk x the work-group's output channels
    __local float dws[CK * KH * KW];  // dww, the chunk's
#if SPLITS > 1 && SPLIT_SUM
    __local uint arrived;  // how many of the tile's work-groups had finished before this one
#endif

    // this work item's outputs: expand channels ac + i * LAC at window positions ap + j * LAP, project channels
    // pc + i * LCO at tile positions pp + j * LCP (consecutive work items take consecutive positions)
    const int ac = tid / LAP, ap = tid % LAP, pc = tid / LCP, pp = tid % LCP;
    float acc[TCO][TCP];
    for (int i = 0; i < TCO; ++i)
        for (int j = 0; j < TCP; ++j) acc[i][j] = 0.0f;

    for (int c0 = cbeg; c0 < cend; c0 += CK) {
        float eacc[TAC][TAP];
        for (int i = 0; i < TAC; ++i)
            for (int j = 0; j < TAP; ++j) eacc[i][j] = 0.0f;
        for (int ci0 = 0; ci0 < CIN; ci0 += BKI) {
            // x on the window: once for every chunk where all input channels are staged at once (BKI >= CIN)
            if (BKI < CIN || c0 == cbeg) {
                for (int e = tid; e < BKI * HP; e += NT) {
                    const int ci = ci0 + e / HP, ih = ih0 + (e % HP) / HW, iw = iw0 + (e % HP) % HW;
                    const bool inside = ci < CIN && ih >= 0 && ih < IH && iw >= 0 && iw < IW;
                    xs[e] = inside ? LOAD(X_T, x, ((img * CIN + ci) * IH + ih) * IW + iw) : 0.0f;
                }
            }
            for (int e = tid; e < BKI * CK; e += NT) {
                const int ci = ci0 + e / CK, ce = c0 + e % CK;
                ws[e] = (ci < CIN && ce < cend) ? LOAD(WE_T, we, ci * CE + ce) : 0.0f;
            }
            if (ci0 == 0) {  // (the chunk's other weights, loaded in the same round trip)
                for (int e = tid; e < CK * BCO; e += NT) {
                    const int ce = c0 + e / BCO, co = co0 + e % BCO;
                    wps[e] = (ce < cend && co < COUT) ? LOAD(WP_T, wp, ce * COUT + co) : 0.0f;
                }
                for (int e = tid; e < CK * KH * KW; e += NT)
                    dws[e] = c0 * KH * KW + e < cend * KH * KW ? LOAD(DWW_T, dww, c0 * KH * KW + e) : 0.0f;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int kk = 0; kk < BKI; ++kk) {
                float av[TAC], bv[TAP];
                for (int i = 0; i < TAC; ++i) av[i] = ws[kk * CK + ac + i * LAC];
                for (int j = 0; j < TAP; ++j) bv[j] = xs[kk * HP + min(ap + j * LAP, HP - 1)];
                for (int i = 0; i < TAC; ++i)
                    for (int j = 0; j < TAP; ++j) eacc[i][j] = mad(av[i], bv[j], eacc[i][j]);
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        for (int i = 0; i < TAC; ++i) {
            const int ck = ac + i * LAC, ce = c0 + ck;
            for (int j = 0; j < TAP; ++j) {
                const int hp = ap + j * LAP, ih = ih0 + hp / HW, iw = iw0 + hp % HW;
                if (hp >= HP) break;
                const bool inside = ce < cend && ih >= 0 && ih < IH && iw >= 0 && iw < IW;
#if E_BIAS
                const float v = eacc[i][j] + LOAD(EB_T, eb, inside ? ce : 0);
#else
                const float v = eacc[i][j];
#endif
                es[ck * HP + hp] = inside ? E_ACTIVATE(v) : 0.0f;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = tid; e < CK * P; e += NT) {
            const int ck = e / P, th = (e % P) / TW, tw = (e % P) % TW, ce = c0 + ck;
            float s = 0.0f;
            if (ce < cend) {
                for (int kh = 0; kh < KH; ++kh)
                    for (int kw = 0; kw < KW; ++kw)
                        s = mad(es[ck * HP + (th * SH + kh * DH) * HW + tw * SW + kw * DW],
                                dws[(ck * KH + kh) * KW + kw], s);
#if DW_BIAS
                s += LOAD(DWB_T, dwb, ce);
#endif
                s = DW_ACTIVATE(s);
            }
            ds[e] = s;  // 0 past the split's channels, whose wps rows are 0 too
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < CK; ++kk) {
            float av[TCO], bv[TCP];
            for (int i = 0; i < TCO; ++i) av[i] = wps[kk * BCO + min(pc + i * LCO, BCO - 1)];
            for (int j = 0; j < TCP; ++j) bv[j] = ds[kk * P + min(pp + j * LCP, P - 1)];
            for (int i = 0; i < TCO; ++i)
                for (int j = 0; j < TCP; ++j) acc[i][j] = mad(av[i], bv[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    // the outputs: raw partial sums with CE split (and then, with SPLIT_SUM, the epilogue of their sum in the last
    // work-group of the tile), else the epilogue
#if HAS_BIAS
#define OUT_BIAS(co) LOAD(C_T, c, co)
#else
#define OUT_BIAS(co) -0.0f  // x + -0 is x, -0 included: nothing added
#endif
#if HAS_RESIDUAL
#define OUT_RES(co, o) LOAD(R_T, res, (img * COUT + (co)) * OHW + (o))
#else
#define OUT_RES(co, o) -0.0f
#endif
// (as gemm_tiled.cl's OUT with ALPHA = BETA = 1, so SPLIT_K_SUM's epilogue gives the same bits)
#define OUT(co, o, sum)                                                                  \
    {                                                                                    \
        float v = (sum);                                                                 \
        v += OUT_BIAS(co);                                                               \
        v += OUT_RES(co, o);                                                             \
        STORE(Y_T, y, img * Y_BSTRIDE + Y_OFFSET + (co) * OHW + (o), ACTIVATE(v));       \
    }
#define PART(s, co, o) ((((s) * N + img) * COUT + (co)) * OHW + (o))
// STMT for each output (co, o) of this work item in the image, its sum in acc_v
#define EACH_OUTPUT(STMT)                                                                \
    for (int i = 0; i < TCO; ++i) {                                                      \
        const int co = co0 + pc + i * LCO;                                               \
        if (pc + i * LCO >= BCO || co >= COUT) break;                                    \
        for (int j = 0; j < TCP; ++j) {                                                  \
            const int q = pp + j * LCP, oh = oh0 + q / TW, ow = ow0 + q % TW;            \
            if (q >= P) break;                                                           \
            const int o = oh * OW + ow;                                                  \
            const float acc_v = acc[i][j];                                               \
            if (oh < OH && ow < OW) STMT;                                                \
        }                                                                                \
    }
#if SPLITS > 1
    EACH_OUTPUT(part[PART(split, co, o)] = acc_v);
#if SPLIT_SUM
    SPLITS_ARRIVE(counts, img * get_num_groups(0) + get_group_id(0), arrived, tid, last);
    if (last) {
        __global volatile const float* sums = part;  // (past this compute unit's L1: see SPLITS_ARRIVE)
#define SUM_CO(e) (co0 + (e) / P)
#define SUM_OH(e) (oh0 + ((e) % P) / TW)
#define SUM_OW(e) (ow0 + ((e) % P) % TW)
#define SUM_VALID(e) (SUM_CO(e) < COUT && SUM_OH(e) < OH && SUM_OW(e) < OW)
#define SUM_AT(s, e) PART(s, SUM_CO(e), SUM_OH(e) * OW + SUM_OW(e))
#define SUM_DONE(e, total) OUT(SUM_CO(e), SUM_OH(e) * OW + SUM_OW(e), total)
#pragma unroll 1
        SPLITS_TOTALS(BCO * P, sums, SUM_VALID, SUM_AT, SUM_DONE)
#undef SUM_CO
#undef SUM_OH
#undef SUM_OW
#undef SUM_VALID
#undef SUM_AT
#undef SUM_DONE
    }
#endif
#else
    EACH_OUTPUT(OUT(co, o, acc_v));
#endif
}

#undef OUT
#undef OUT_BIAS
#undef OUT_RES
#undef PART
#undef EACH_OUTPUT
#undef HH
#undef HW
#undef HP
#undef P
#undef TILES_W
#undef TILES
#undef OHW
