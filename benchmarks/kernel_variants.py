"""Text variants of the planned OpenCL source, measured in the engine: which form of a kernel is faster, and at what
error against onnxruntime, or which part of it costs the driver's compiler time (``--build-only``).

    python3 benchmarks/kernel_variants.py MODEL.onnx ... [--variants NAME,...] [--build-only] [--json out.json]

Each variant is the program the GPU plan builds (default policy) with text replaced in its source before the build:
gemm_tiled.cl's tensor-core split and accumulation (the MMA form, NVIDIA sm_80+: what plan/tiling.py and the kernel's
comments cite) and the pieces of its in-kernel split sum (SPLIT_SUM). A variant whose text is not in a model's program
(another device, no such launches) is skipped and says so. The split-sum variants are not correct programs: build
time only. Runs as gpu_kernels.py does: one device, fresh builds (set CUDA_CACHE_DISABLE=1 and PYOPENCL_NO_CACHE=1
for cold builds), device time from profiling events.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyopencl as cl
from gpu_kernels import gpu_device, measure, report

from mace.converter import convert_onnx
from mace.opencl.plan import DeviceTarget, plan_graph

# gemm_tiled.cl's text as this version has it, and what each variant puts there
SPLIT = """        (hi) = TF32_RNA(x);                        \\
        (lo) = as_uint((x) - as_float(hi));        \\"""
SPLIT_LO_ROUNDED = """        (hi) = TF32_RNA(x);                        \\
        (lo) = TF32_RNA((x) - as_float(hi));       \\"""
SPLIT_TRUNCATED = """        (hi) = as_uint(x) & 0xffffe000u;           \\
        (lo) = as_uint((x) - as_float(hi));        \\"""
FENCE = 'asm volatile("membar.gl;" ::: "memory");'
SUMS = "__global volatile const float* sums = part;"
ARRIVAL = "arrived = atomic_inc(counts + block);"


def replaced(old: str, new: str) -> Callable[[str], str | None]:
    return lambda source: source.replace(old, new) if old in source else None


VARIANTS: dict[str, tuple[Callable[[str], str | None], bool]] = {  # name -> (edit or None, a correct program)
    "default": (lambda source: source, True),
    "mma_lo_rounded": (replaced(SPLIT, SPLIT_LO_ROUNDED), True),
    "mma_hi_truncated": (replaced(SPLIT, SPLIT_TRUNCATED), True),
    "sum_no_fence": (replaced(FENCE, "mem_fence(CLK_GLOBAL_MEM_FENCE);"), False),
    "sum_no_volatile": (replaced(SUMS, SUMS.replace("volatile ", "")), False),
    "sum_no_atomic": (replaced(ARRIVAL, "arrived = counts[block];"), False),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--build-only", action="store_true", help="build times only (every variant)")
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
    print(device.name, target, flush=True)
    results: dict[str, dict] = {}
    for path in args.models:
        name = Path(path).stem
        graph = convert_onnx(path)
        source = plan_graph(graph, target).source
        info = graph.inputs[0]
        rng = np.random.default_rng(0)
        feeds = {info.name: rng.integers(0, 1000, info.shape).astype(info.dtype) if info.dtype.startswith("int")
                 else rng.standard_normal(info.shape).astype(np.float32)}
        expected = None
        for variant in chosen:
            edit, correct = VARIANTS[variant]
            edited = edit(source)
            if edited is None:
                print(f"{name:20s} {variant:18s} skipped: its text is not in this program", flush=True)
                continue
            if args.build_only or not correct:
                t0 = time.perf_counter()
                cl.Program(queue.context, edited).build(options=plan_graph(graph, target).build_options)
                seconds = time.perf_counter() - t0
                results[f"{name}:{variant}"] = {"build_s": seconds}
                print(f"{name:20s} {variant:18s} build {seconds:6.2f} s", flush=True)
                continue
            if expected is None:
                expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
            r = measure(graph, queue, target, feeds, expected, args.runs, edit=lambda s, e=edit: e(s) or s)
            report(name, variant, r)
            results[f"{name}:{variant}"] = {k: v for k, v in r.items() if k != "rows"}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
