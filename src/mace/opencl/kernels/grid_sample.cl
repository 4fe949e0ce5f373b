// GridSample, 2-D: y[n][c][oh][ow] = x[n][c] sampled at grid[n][oh][ow] (x then y, normalized: [-1, 1] spans the
// input), as ops/resize.py's grid_sample: the coordinate unnormalized (ALIGN: -1 and 1 at the corner pixels'
// centers, else at their outer edges), held inside (PADDING 1) or reflected at the edges, then held (2); nearest
// (MODE 0, half to even) or bilinear (1) taps, a tap outside reading zero (PADDING 0).
// Defines: KERNEL_NAME; X_T G_T Y_T; N C H W OH OW; MODE PADDING ALIGN.
// Global size: (OW, OH, N * C).
static float CAT(KERNEL_NAME, _coordinate)(const float g, const int size)
{
#if ALIGN
    float x = (g + 1.0f) / 2.0f * (float)(size - 1);
#else
    float x = ((g + 1.0f) * (float)size - 1.0f) / 2.0f;
#endif
#if PADDING == 2
#if ALIGN
    const float low = 0.0f, high = (float)(size - 1);
#else
    const float low = -0.5f, high = (float)size - 0.5f;
#endif
    const float span = high - low;
    if (span <= 0.0f) return 0.0f;
    const float d = fabs(x - low), flips = floor(d / span), extra = fmod(d, span);
    x = fmod(flips, 2.0f) == 0.0f ? low + extra : high - extra;
#endif
#if PADDING >= 1
    x = clamp(x, 0.0f, (float)(size - 1));
#endif
    return x;
}

static float CAT(KERNEL_NAME, _tap)(__global const TYPE(X_T)* plane, const int yy, const int xx)
{
    return (yy >= 0 && yy < H && xx >= 0 && xx < W) ? LOAD(X_T, plane, yy * W + xx) : 0.0f;
}

__kernel void KERNEL_NAME(__global const TYPE(X_T)* x, __global const TYPE(G_T)* grid, __global TYPE(Y_T)* y)
{
    const int ow = get_global_id(0), oh = get_global_id(1), nc = get_global_id(2);
    if (ow >= OW || oh >= OH || nc >= N * C) return;
    const int n = nc / C;
    const int g = ((n * OH + oh) * OW + ow) * 2;
    const float ix = CAT(KERNEL_NAME, _coordinate)(LOAD(G_T, grid, g), W);
    const float iy = CAT(KERNEL_NAME, _coordinate)(LOAD(G_T, grid, g + 1), H);
    __global const TYPE(X_T)* plane = x + nc * H * W;
#if MODE == 0
    const float v = CAT(KERNEL_NAME, _tap)(plane, (int)rint(iy), (int)rint(ix));
#else
    const float x0 = floor(ix), y0 = floor(iy), fx = ix - x0, fy = iy - y0;
    const int xi = (int)x0, yi = (int)y0;
    const float v = (1.0f - fy) * ((1.0f - fx) * CAT(KERNEL_NAME, _tap)(plane, yi, xi)
                                   + fx * CAT(KERNEL_NAME, _tap)(plane, yi, xi + 1))
                    + fy * ((1.0f - fx) * CAT(KERNEL_NAME, _tap)(plane, yi + 1, xi)
                            + fx * CAT(KERNEL_NAME, _tap)(plane, yi + 1, xi + 1));
#endif
    STORE(Y_T, y, (nc * OH + oh) * OW + ow, v);
}
