"""Text variants of the planned OpenCL source, measured in the engine: which form of a kernel is faster, and at what
error against onnxruntime, or which part of it costs the driver's compiler time (``--build-only``).

    python3 benchmarks/kernel_variants.py MODEL.onnx ... [--policy mma] [--variants NAME,...] [--build-only] [--json F]
    python3 benchmarks/kernel_variants.py MODEL.onnx ... --per-kernel [--top 15] [--policy before]

Each variant is the program the GPU plan builds (default policy) with text replaced in its source before the build:
gemm_tiled.cl's tensor-core split and accumulation (the MMA form, NVIDIA sm_80+: what plan/tiling.py and the kernel's
comments cite) and the pieces of its in-kernel split sum (SPLIT_SUM). A variant whose text is not in a model's program
(another device, no such launches) is skipped and says so. The split-sum variants are not correct programs: build time
only. --per-kernel builds each specialization of the default program alone (the shared header and its chunk) and lists
the slowest to compile, with what distinguishes them. Runs as gpu_kernels.py does: one device, fresh builds (set
CUDA_CACHE_DISABLE=1 and PYOPENCL_NO_CACHE=1 for cold builds), device time from profiling events.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pyopencl as cl
from gpu_kernels import SWEEP, first_input, gpu_device, measure, report

from mace.converter import convert_onnx
from mace.opencl.plan import DeviceTarget, plan_graph

# gemm_tiled.cl's (and common.h's) text as this version has it, and what each variant puts there
SPLIT = """        (hi) = as_uint(fmin(fmax(as_float(TF32_RNA(x)), -TF32_MAX), TF32_MAX));     \\
        (lo) = as_uint((x) - as_float(hi));                                         \\"""
SPLIT_UNHELD = """        (hi) = TF32_RNA(x);                                                         \\
        (lo) = as_uint((x) - as_float(hi));                                         \\"""
SPLIT_LO_ROUNDED = """        (hi) = TF32_RNA(x);                                                         \\
        (lo) = TF32_RNA((x) - as_float(hi));                                        \\"""
SPLIT_TRUNCATED = """        (hi) = as_uint(x) & 0xffffe000u;                                            \\
        (lo) = as_uint((x) - as_float(hi));                                         \\"""
FENCE = 'asm volatile("membar.gl;" ::: "memory");'
SUMS = "__global volatile const float* sums = part + split_block * SPLITS * (BM * BN);"
ARRIVAL = "(arrived) = atomic_inc((counts) + (block));"  # common.h SPLITS_ARRIVE


def replaced(old: str, new: str) -> Callable[[str], str | None]:
    return lambda source: source.replace(old, new) if old in source else None


# the SIMT tiles' work items placed so that a warp covers 8 columns x 4 rows of the LN x LM grid, not 32 x 1 (or
# 16 x 2): its vector reads of a k row then fall on 128 bytes of B and 64 of A
LOCAL_IDS = "const int lx = get_local_id(0), ly = get_local_id(1), tid = ly * LN + lx;"
WARP_8X4 = LOCAL_IDS + """
#if !MMA && LN % 8 == 0 && LM % 4 == 0 && LM * LN % 32 == 0
    const int wx_ = (tid / 32) % (LN / 8) * 8 + tid % 8, wy_ = (tid / 32) / (LN / 8) * 4 + tid % 32 / 8;
#else
    const int wx_ = lx, wy_ = ly;
#endif"""


def warp_8x4(source: str) -> str | None:
    if LOCAL_IDS not in source:
        return None
    source = source.replace(LOCAL_IDS, WARP_8X4)
    for old, new in (("+ ly * VM +", "+ wy_ * VM +"), ("+ lx * VN +", "+ wx_ * VN +"),
                     ("(ly + (i) * LM)", "(wy_ + (i) * LM)"), ("(lx + (j) * LN)", "(wx_ + (j) * LN)")):
        source = source.replace(old, new)
    return source


VARIANTS: dict[str, tuple[Callable[[str], str | None], bool]] = {  # name -> (edit or None, a correct program)
    "default": (lambda source: source, True),
    "mma_unheld": (replaced(SPLIT, SPLIT_UNHELD), True),  # NaN for an infinite operand
    "mma_lo_rounded": (replaced(SPLIT, SPLIT_LO_ROUNDED), True),
    "mma_hi_truncated": (replaced(SPLIT, SPLIT_TRUNCATED), True),
    "warp8x4": (warp_8x4, True),
    "sum_no_fence": (replaced(FENCE, "mem_fence(CLK_GLOBAL_MEM_FENCE);"), False),
    "sum_no_volatile": (replaced(SUMS, SUMS.replace("volatile ", "")), False),
    "sum_no_atomic": (replaced(ARRIVAL, "(arrived) = (counts)[block];"), False),
}


def _edited(edit: Callable[[str], str | None], source: str) -> str:
    """The executor's source edited (it plans as plan_graph did above, so the text must be there)."""
    edited = edit(source)
    if edited is None:
        raise SystemExit("a variant's text is not in the program the executor built: plans differ")
    return edited


SHOWN = ("M", "N", "K", "CONV", "KH", "KW", "TM", "TN", "SPLITS", "SPLIT_SUM", "MMA")


def per_kernel(queue: cl.CommandQueue, source: str, options: str, top: int) -> list[dict]:
    """Each specialization of ``source`` built alone: its name, build seconds and the defines in SHOWN, slowest
    first (the header alone is built once first, so its share is not counted against the first kernel)."""
    header, *chunks = source.split("// ---- ")
    cl.Program(queue.context, header + "__kernel void mace_header_only(void) {}\n").build(options=options)
    rows = []
    for chunk in chunks:
        t0 = time.perf_counter()
        cl.Program(queue.context, header + "// ---- " + chunk).build(options=options)
        defines = dict(re.findall(r"^#define (\w+) (.*)$", chunk, re.M))
        rows.append({"kernel": chunk.split(" ", 1)[0], "build_s": time.perf_counter() - t0,
                     **{k: defines[k] for k in SHOWN if k in defines}})
    rows.sort(key=lambda r: -r["build_s"])
    print(f"  {len(rows)} specializations, {sum(r['build_s'] for r in rows):.2f} s built one at a time; slowest:")
    for r in rows[:top]:
        print(f"  {r['kernel']:12s} {r['build_s']:6.3f} s  " + " ".join(f"{k}={r[k]}" for k in SHOWN if k in r))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--build-only", action="store_true", help="build times only (every variant)")
    ap.add_argument("--per-kernel", action="store_true", help="build times of each specialization alone")
    ap.add_argument("--policy", help="plan with this gpu_kernels.py SWEEP policy, not the default")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json")
    args = ap.parse_args()
    chosen = [v for v in args.variants.split(",") if v]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    import onnxruntime as ort

    device = gpu_device(any_device=True)
    queue = cl.CommandQueue(cl.Context([device]))
    target = DeviceTarget.from_device(device)
    if args.policy:
        if args.policy not in SWEEP:
            raise SystemExit(f"unknown policy {args.policy!r}; known: {', '.join(SWEEP)}")
        target = replace(target, policy=SWEEP[args.policy])
    print(device.name, f"tensor cores {target.tensor_cores}, NVIDIA PTX {target.nvidia_ptx}", flush=True)
    results: dict[str, dict] = {}
    for path in args.models:
        name = Path(path).stem
        graph = convert_onnx(path)
        plan = plan_graph(graph, target)
        if args.per_kernel:
            print(name, flush=True)
            results[name] = {"kernels": per_kernel(queue, plan.source, plan.build_options, args.top)}
            continue
        feeds = first_input(graph)
        expected = None
        for variant in chosen:
            edit, correct = VARIANTS[variant]
            edited = edit(plan.source)
            if edited is None:
                print(f"{name:20s} {variant:18s} skipped: its text is not in this program", flush=True)
                continue
            if args.build_only or not correct:
                t0 = time.perf_counter()
                cl.Program(queue.context, edited).build(options=plan.build_options)
                seconds = time.perf_counter() - t0
                results[f"{name}:{variant}"] = {"build_s": seconds}
                print(f"{name:20s} {variant:18s} build {seconds:6.2f} s", flush=True)
                continue
            if expected is None:
                expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
            r = measure(graph, queue, target, feeds, expected, args.runs, edit=lambda s, e=edit: _edited(e, s))
            report(name, variant, r)
            results[f"{name}:{variant}"] = {k: v for k, v in r.items() if k != "rows"}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
