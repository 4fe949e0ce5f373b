"""Can an OpenCL kernel on NVIDIA use the tensor cores, at fp32 accuracy? A probe, not part of the engine.

    python benchmarks/mma_probe.py [--sizes 1024,2048,4096] [--runs 20]

NVIDIA's OpenCL compiler takes inline PTX (``asm``), so a kernel can issue ``mma.sync.aligned.m16n8k8`` on TF32
operands. TF32 keeps 10 mantissa bits (torch's default for cuDNN convolutions, ~1e-3 relative error); split into a
high and a low TF32 part, a = a_hi + a_lo, three products a_hi b_hi + a_hi b_lo + a_lo b_hi recover fp32 accuracy
(the 3xTF32 scheme of CUTLASS). This prints, per size: whether the single-mma fragment layout checks out, the error of
TF32 and 3xTF32 products against float64, and their TFLOP/s, next to the peak of a plain fp32 FMA loop.
The kernel: 64 x 64 blocks of C on 4 warps (32 x 32 each: 2 x 4 mma tiles), BK 32 slices of A and B in local memory;
M, N multiples of 64 and K of 32.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from functools import partial

import numpy as np
import pyopencl as cl

SOURCE = r"""
#define BM 64
#define BN 64
#define BK 32
#define AP (BK + 4)   // A rows in local memory: lanes (g, t) read 36 g + t, all banks
#define BP (BN + 8)   // B rows: 72 t + g, all banks

static inline uint tf32(float x) { uint r; asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x)); return r; }

#define MMA(d, a, b)                                                                                   \
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, " \
                 "{%0,%1,%2,%3};"                                                                      \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                      \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))

// One 16 x 8 x 8 product by one warp: A row-major [16][8], B [8][8] (k, n), C [16][8].
__kernel void one_mma(__global const float* A, __global const float* B, __global float* C)
{
    const int lane = get_local_id(0), g = lane / 4, t = lane % 4;
    uint a[4] = {tf32(A[g * 8 + t]), tf32(A[(g + 8) * 8 + t]), tf32(A[g * 8 + t + 4]), tf32(A[(g + 8) * 8 + t + 4])};
    uint b[2] = {tf32(B[t * 8 + g]), tf32(B[(t + 4) * 8 + g])};
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    MMA(d, a, b);
    C[g * 8 + 2 * t] = d[0];
    C[g * 8 + 2 * t + 1] = d[1];
    C[(g + 8) * 8 + 2 * t] = d[2];
    C[(g + 8) * 8 + 2 * t + 1] = d[3];
}

__kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void gemm(__global const float* A, __global const float* B, __global float* C, const int M, const int N,
          const int K)
{
    __local float As[BM * AP], Bs[BK * BP];
    const int tid = get_local_id(0), warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    const int m0 = get_group_id(1) * BM, n0 = get_group_id(0) * BN;
    float acc[2][4][4];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j)
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int e = tid; e < BM * BK; e += 128) As[(e / BK) * AP + e % BK] = A[(m0 + e / BK) * K + k0 + e % BK];
        for (int e = tid; e < BK * BN; e += 128) Bs[(e / BN) * BP + e % BN] = B[(k0 + e / BN) * N + n0 + e % BN];
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            uint ah[2][4], bh[4][2];
#if SPLIT
            uint al[2][4], bl[4][2];
#endif
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int r = wm + i * 16 + g;
                const float x[4] = {As[r * AP + kk + t], As[(r + 8) * AP + kk + t], As[r * AP + kk + t + 4],
                                    As[(r + 8) * AP + kk + t + 4]};
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    ah[i][q] = tf32(x[q]);
#if SPLIT
                    al[i][q] = tf32(x[q] - as_float(ah[i][q]));
#endif
                }
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int c = wn + j * 8 + g;
                const float y[2] = {Bs[(kk + t) * BP + c], Bs[(kk + t + 4) * BP + c]};
#pragma unroll
                for (int q = 0; q < 2; ++q) {
                    bh[j][q] = tf32(y[q]);
#if SPLIT
                    bl[j][q] = tf32(y[q] - as_float(bh[j][q]));
#endif
                }
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
#if SPLIT
                    MMA(acc[i][j], al[i], bh[j]);
                    MMA(acc[i][j], ah[i], bl[j]);
#endif
                    MMA(acc[i][j], ah[i], bh[j]);
                }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j) {
            const int r = m0 + wm + i * 16 + g, c = n0 + wn + j * 8 + 2 * t;
            C[r * N + c] = acc[i][j][0];
            C[r * N + c + 1] = acc[i][j][1];
            C[(r + 8) * N + c] = acc[i][j][2];
            C[(r + 8) * N + c + 1] = acc[i][j][3];
        }
}

// The fp32 FMA peak: every work item runs independent FMA chains.
__kernel void fma_peak(__global float* out, const int iters)
{
    float a = get_global_id(0) * 1e-9f, b = 1.0f - a, c = 0.5f + a, d = 0.25f - a;
    float e = a + 1.0f, f = b + 1.0f, g = c + 1.0f, h = d + 1.0f;
    const float m = 0.999f, k = 1e-6f;
    for (int i = 0; i < iters; ++i) {
        a = mad(a, m, k); b = mad(b, m, k); c = mad(c, m, k); d = mad(d, m, k);
        e = mad(e, m, k); f = mad(f, m, k); g = mad(g, m, k); h = mad(h, m, k);
    }
    out[get_global_id(0)] = a + b + c + d + e + f + g + h;
}
"""


def timed(launch: Callable[[], cl.Event], runs: int) -> float:
    """The median device time of ``launch`` (profiling events), in seconds."""
    launch().wait()
    times = []
    for _ in range(runs):
        event = launch()
        event.wait()
        times.append((event.profile.end - event.profile.start) * 1e-9)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1024,2048,4096")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    devices = [d for p in cl.get_platforms() for d in p.get_devices() if "NVIDIA" in p.name]
    if not devices:
        raise SystemExit("no NVIDIA OpenCL device")
    ctx = cl.Context(devices[:1])
    queue = cl.CommandQueue(ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
    progs = {split: cl.Program(ctx, SOURCE).build(options=f"-DSPLIT={split}") for split in (0, 1)}
    mf = cl.mem_flags
    rng = np.random.default_rng(0)
    out: dict = {"device": devices[0].name}

    a = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float32)
    c = np.empty((16, 8), np.float32)
    bufs = [cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=x) for x in (a, b)]
    cbuf = cl.Buffer(ctx, mf.WRITE_ONLY, c.nbytes)
    progs[0].one_mma(queue, (32,), (32,), *bufs, cbuf)
    cl.enqueue_copy(queue, c, cbuf)
    ref = a.astype(np.float64) @ b
    out["one_mma_rel_err"] = float(np.abs(c - ref).max() / np.abs(ref).max())
    print(f"one m16n8k8 tf32 mma: rel err {out['one_mma_rel_err']:.1e} (TF32 rounding: ~1e-3; a layout error: ~1)")

    peak_buf = cl.Buffer(ctx, mf.WRITE_ONLY, 4 * 132 * 2048 * 8)
    items, iters = 132 * 2048 * 8, 4096
    s = timed(partial(progs[0].fma_peak, queue, (items,), (256,), peak_buf, np.int32(iters)), 5)
    out["fma_peak_tflops"] = 2 * 8 * items * iters / s / 1e12
    print(f"fp32 FMA loop: {out['fma_peak_tflops']:.1f} TFLOP/s")

    for n in (int(v) for v in args.sizes.split(",")):
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        abuf, bbuf = (cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=x) for x in (a, b))
        cbuf = cl.Buffer(ctx, mf.WRITE_ONLY, 4 * n * n)
        row = {}
        for split, label in ((0, "tf32"), (1, "3xtf32")):
            sizes = [np.int32(n)] * 3
            sec = timed(partial(progs[split].gemm, queue, (n // 64 * 128, n // 64), (128, 1), abuf, bbuf, cbuf,
                                *sizes), args.runs)
            got = np.empty((n, n), np.float32)
            cl.enqueue_copy(queue, got, cbuf)
            err = float(np.abs(got - ref).max() / np.abs(ref).max())
            row[label] = {"tflops": 2 * n**3 / sec / 1e12, "rel_err": err, "ms": sec * 1e3}
        f32_err = float(np.abs((a @ b) - ref).max() / np.abs(ref).max())
        out[str(n)] = {**row, "numpy_fp32_rel_err": f32_err}
        print(f"n {n:5d}: tf32 {row['tf32']['tflops']:6.1f} TFLOP/s err {row['tf32']['rel_err']:.1e}   "
              f"3xtf32 {row['3xtf32']['tflops']:6.1f} TFLOP/s err {row['3xtf32']['rel_err']:.1e}   "
              f"(numpy fp32 err {f32_err:.1e})", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
