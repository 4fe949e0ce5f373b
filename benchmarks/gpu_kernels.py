"""The GPU plan (plan DeviceTarget) against the portable plan, per model: steady latency (numpy in -> numpy out,
median), device time per launch (OpenCL profiling events), and the error against onnxruntime on CPU.

    python3 benchmarks/gpu_kernels.py MODEL.onnx ... --out gpu.json [--runs 100] [--sweep] [--deadline 240]

--sweep also plans each model once per tiling policy in SWEEP (the default TilingPolicy of plan/tiling.py with some
knobs changed), so the per-layer device times show which tile and k split each layer shape wants; sweeps stop at
--deadline seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyopencl as cl

from mace.converter import convert_onnx
from mace.opencl.executor import Executor
from mace.opencl.plan import DEFAULT_POLICY, DeviceTarget, GemmTile, TilingPolicy
from mace.opencl.plan.tiling import MMA_TILES
from mace.opencl.profiling import profile_launches

P = DEFAULT_POLICY
SMALL = tuple(t for t in P.gpu_tiles if t.bm * t.bn <= 64 * 64)  # the tiles before the 8x8 register blocks
BIG = GemmTile(16, 16, 8, 8, bk=8, max_splits=4, per_cu=2, unroll=True)


def _big(*tiles: GemmTile) -> TilingPolicy:
    return replace(P, gpu_tiles=(*tiles, *SMALL))


SWEEP: dict[str, TilingPolicy] = {
    "small": replace(P, gpu_tiles=SMALL),  # the policy before the 8x8 register blocks
    "t128k16": _big(replace(BIG, bk=16)),
    "t128s2": _big(replace(BIG, max_splits=2)),
    "t128any": _big(replace(BIG, max_splits=0)),
    "t128x64": _big(BIG, GemmTile(16, 16, 8, 4, bk=16, max_splits=4)),
    "t64x128": _big(BIG, GemmTile(16, 16, 4, 8, bk=16, max_splits=4)),
    "ceil": replace(P, gpu_split_round_up=True),
    "nowaves": replace(P, gpu_product_resident_items_per_cu=0),  # products' k splits rounded down, as before
    "g4": replace(P, gpu_groups_per_cu=4),
    "g3": replace(P, gpu_groups_per_cu=3),
    "noplace": replace(P, gpu_concat_in_place=False),
    "nooutperm": replace(P, gpu_fold_output_transposes=False),  # the Transpose after a product a copy kernel
    "kt2": replace(P, gpu_split_min_ktiles=2),
    "kt8": replace(P, gpu_split_min_ktiles=8),
    "g1": replace(P, gpu_groups_per_cu=1),
    "scalar": replace(P, gpu_tiles=tuple(replace(t, vlds=False) for t in P.gpu_tiles)),
    # 8x8 register blocks on smaller work-groups: 64x128, 128x64 and 64x64 blocks (transformer layers: M ~ 200)
    "x64x128": replace(P, gpu_tiles=(*P.gpu_tiles, GemmTile(8, 16, 8, 8, bk=8, max_splits=4))),
    "x128x64": replace(P, gpu_tiles=(*P.gpu_tiles, GemmTile(16, 8, 8, 8, bk=8, max_splits=4))),
    "x64r8": replace(P, gpu_tiles=(*P.gpu_tiles, GemmTile(8, 8, 8, 8, bk=8, max_splits=4))),
    "x64x128k16": replace(P, gpu_tiles=(*P.gpu_tiles, GemmTile(8, 16, 8, 8, bk=16, max_splits=4))),
    # the tensor cores (DeviceTarget.tensor_cores targets: gemm_tiled.cl's MMA form, 3xTF32): on (convolutions of
    # K >= gpu_mma_min_k), BK 32, 128 x 64 blocks on 8 warps first, on convolutions of any k, on matrix products too
    "mma": replace(P, gpu_mma_tiles=MMA_TILES),
    "mmak32": replace(P, gpu_mma_tiles=(GemmTile(8, 16, 8, 4, bk=32, max_splits=4, mma=True),)),
    "mma128": replace(P, gpu_mma_tiles=(GemmTile(16, 16, 8, 4, bk=16, max_splits=4, mma=True), *MMA_TILES)),
    "mmaallk": replace(P, gpu_mma_tiles=MMA_TILES, gpu_mma_min_k=0),
    "mmaprod": replace(P, gpu_mma_tiles=MMA_TILES, gpu_mma_products=True),
    # attention.cl: 32 query rows per work-group wherever there are this many work-groups per CU (else 16)
    "a0": replace(P, gpu_attention_groups_per_cu=0),
    "a4": replace(P, gpu_attention_groups_per_cu=4),
    # k splits summed by a second launch (not the last work-group: gemm_tiled.cl SPLIT_SUM, NVIDIA), depthwise convs
    # launched (not computed in their 1x1 reader's loader), and both: the policy before either
    "ksum": replace(P, gpu_split_sum_most=0),
    "sumall": replace(P, gpu_split_sum_most=1 << 30),
    "sum256": replace(P, gpu_split_sum_most=256),
    "nodw": replace(P, gpu_fuse_depthwise=False),
    "before": replace(P, gpu_split_sum_most=0, gpu_fuse_depthwise=False),
    # the products with a depthwise conv in their loader wanting 2, 8, 16 work-groups per CU, or k split as others
    "dwg2": replace(P, gpu_fused_groups_per_cu=2, gpu_fused_split_min_ktiles=4),
    "dwg8": replace(P, gpu_fused_groups_per_cu=8),
    "dwg16": replace(P, gpu_fused_groups_per_cu=16),
    "dwk4": replace(P, gpu_fused_split_min_ktiles=4),
    # inverted residual blocks as one launch of block.cl (conv.fuse_blocks) or not; their work-groups per CU
    # (splits of the expanded channels) and positions a tile
    "noblk": replace(P, gpu_fuse_blocks=False),
    "nofold": replace(P, gpu_fold_images=False),  # a product per image, not the images side by side along n
    "noci": replace(P, gpu_channels_inner=False),  # k with the window inner, as the weights lie
    "allci": replace(P, gpu_channels_inner_simt=True),  # ... channels inner on the SIMT tiles too
    "nomma": replace(P, gpu_mma_tiles=()),
    "async": replace(P, gpu_mma_async=True),  # the tensor-core tiles' copies by cp.async, two stages
    "mmaany": replace(P, gpu_mma_min_groups_per_cu=0),  # the tensor cores however few blocks
    "nofloor": replace(P, gpu_mma_min_macs=0),  # ... however few multiply-adds
    "mmag4": replace(P, gpu_groups_per_cu=4),
    "mmaceil": replace(P, gpu_split_round_up=True),
    "blkall": replace(P, gpu_block_most_chunks=1 << 30, gpu_block_most_sums=1 << 30),  # every block with a tile
    "blkg2": replace(P, gpu_block_groups_per_cu=2),
    "blkg4": replace(P, gpu_block_groups_per_cu=4),
    "blkp32": replace(P, gpu_block_most_positions=32),
    # whole waves of blocks, then the rest split into pieces (tiling_gpu._tail_split): off, the lone work-group's time
    # 0.8 or 0.4 of a wave's, at most 4 pieces, wherever the model says so (below a quarter wave too), and that with
    # every k split summed in the kernel
    "notail": replace(P, gpu_tail_split=False),
    "lone8": replace(P, gpu_lone_time=0.8),
    "lone4": replace(P, gpu_lone_time=0.4),
    "tail4": replace(P, gpu_tail_most_splits=4),
    "tail0": replace(P, gpu_tail_min_waves=0.0),
    "tail0sum": replace(P, gpu_tail_min_waves=0.0, gpu_split_sum_most=1 << 30),
    # gemm_tiled.cl UNROLL_STEP (GemmTile.unroll) on no SIMT tile, on every one, off the tensor-core tiles
    "nounroll": replace(P, gpu_tiles=tuple(replace(t, unroll=False) for t in P.gpu_tiles)),
    "allunroll": replace(P, gpu_tiles=tuple(replace(t, unroll=True) for t in P.gpu_tiles)),
    "mmanounroll": replace(P, gpu_mma_tiles=tuple(replace(t, unroll=False) for t in P.gpu_mma_tiles)),
    # the tensor-core tiles without the 32 x 128 block (convolutions of 32 or 96 output channels), or with 32 x 64
    "nomma32": replace(P, gpu_mma_tiles=MMA_TILES[:1]),
    "mma32x64": replace(P, gpu_mma_tiles=(*MMA_TILES[:1], GemmTile(4, 16, 8, 4, bk=16, max_splits=4, per_cu=6,
                                                                   unroll=True, mma=True))),
    "xall": replace(P, gpu_tiles=(*P.gpu_tiles, GemmTile(8, 16, 8, 8, bk=8, max_splits=4),
                                  GemmTile(16, 8, 8, 8, bk=8, max_splits=4), GemmTile(8, 8, 8, 8, bk=8, max_splits=4))),
}
KEYS = ("M", "N", "K", "BATCH", "MMA", "C_INNER", "FOLD", "LM", "LN", "TM", "TN", "SPLITS", "SPLIT_FROM", "KH", "KW",
        "SH", "LK", "VEC", "CIN", "CE", "COUT", "OH", "TH", "TW", "CK", "BCO")


def gpu_device(any_device: bool) -> cl.Device:
    devices = [d for p in cl.get_platforms() for d in p.get_devices()]
    gpus = [d for d in devices if d.type & cl.device_type.GPU]
    if gpus or (any_device and devices):
        return (gpus or devices)[0]
    raise SystemExit("no OpenCL GPU")


def kernel_defines(source: str) -> dict[str, dict[str, str]]:
    """kernel name -> its #defines (the plan's source is one chunk per specialization)."""
    out: dict[str, dict[str, str]] = {}
    for chunk in source.split("// ---- ")[1:]:
        name = chunk.split(" ", 1)[0]
        out[name] = dict(re.findall(r"^#define (\w+) (.*)$", chunk, re.M))
    return out


def first_input(graph: Any) -> dict[str, np.ndarray]:
    """Feeds for the model's first input (the only one these models have): token ids for an int input, else
    standard-normal floats, seed 0."""
    info = graph.inputs[0]
    rng = np.random.default_rng(0)
    value = (rng.integers(0, 1000, info.shape).astype(info.dtype) if info.dtype.startswith("int")
             else rng.standard_normal(info.shape).astype(np.float32))
    return {info.name: value}


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12))


def measure(graph: Any, queue: cl.CommandQueue, target: Any, feeds: dict, expected: np.ndarray, runs: int,
            edit: Callable[[str], str] = lambda source: source) -> dict:
    """One plan of ``graph`` built (``edit``: what is done to its source first, kernel_variants.py) and run."""
    ctx = queue.context
    t0 = time.perf_counter()
    executor = Executor(graph, ctx, queue, lambda s, o: cl.Program(ctx, edit(s)).build(options=o), target=target)
    build_s = time.perf_counter() - t0
    out_name = graph.outputs[0].name
    first = executor.run(feeds)[out_name]
    err = relative_error(first, expected)
    for _ in range(5):
        executor.run(feeds)
    wall, differing = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        out = executor.run(feeds)[out_name]
        wall.append(time.perf_counter() - t)
        differing += not np.array_equal(out, first)  # every kernel sums in a fixed order: runs agree bit for bit
    fences = sorted(
        set(re.findall(rb"(?:membar|fence)[.a-z_]*", b"".join(executor.program.get_info(cl.program_info.BINARIES))))
    )
    rows = profile_launches(executor, feeds, repeats=10)
    defines = kernel_defines(executor.plan.source)
    for row in rows:
        row["defines"] = {k: v for k, v in defines.get(row["kernel"], {}).items() if k in KEYS}
    return {
        "median_ms": 1e3 * float(np.median(wall)),
        "p10_ms": 1e3 * float(np.percentile(wall, 10)),
        "device_us": float(sum(r["us"] for r in rows)),
        "launches": len(rows),
        "rel_err": err,
        "runs_differing": differing,
        "fences": [f.decode() for f in fences],
        "build_s": build_s,
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--policies", help="sweep only these SWEEP policies (comma-separated; implies --sweep)")
    ap.add_argument("--sweep-runs", type=int, default=20)
    ap.add_argument("--portable", action="store_true", help="also the portable plan (no target)")
    ap.add_argument("--fp16", action="store_true", help="also the GPU plan with fp16 storage")
    ap.add_argument("--tf32", action="store_true", help="also the GPU plan at TF32 accuracy (tensor cores)")
    ap.add_argument("--deadline", type=float, default=240.0)
    ap.add_argument("--any-device", action="store_true", help="no GPU: plan for one anyway on the first device")
    args = ap.parse_args()
    start = time.perf_counter()
    import onnxruntime as ort

    device = gpu_device(args.any_device)
    queue = cl.CommandQueue(cl.Context([device]))
    target = DeviceTarget.from_device(device)
    if not target.tiled:
        target = DeviceTarget(True, target.compute_units, 48 << 10, 1024)
    print(device.name, target, flush=True)
    results: dict[str, Any] = {"device": device.name, "target": str(target), "models": {}}
    graphs = {}
    for path in args.models:
        name = Path(path).stem
        graph = convert_onnx(path)
        feeds = first_input(graph)
        expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        graphs[name] = (path, graph, feeds, expected)
        res = results["models"][name] = {}
        for variant, tgt in (("portable", None), ("gpu", target))[0 if args.portable else 1 :]:
            res[variant] = measure(graph, queue, tgt, graphs[name][2], expected, args.runs)
            report(name, variant, res[variant])
        if args.fp16:
            g16 = convert_onnx(path, data_type="fp16_fp32")
            res["gpu_fp16"] = measure(g16, queue, target, graphs[name][2], expected, args.runs)
            report(name, "gpu_fp16", res["gpu_fp16"])
        if args.tf32:
            fast = replace(target, tf32=target.tensor_cores)
            res["gpu_tf32"] = measure(graph, queue, fast, feeds, expected, args.runs)
            report(name, "gpu_tf32", res["gpu_tf32"])
        dump(args.out, results)
    chosen = [s for s in args.policies.split(",") if s] if args.policies else list(SWEEP) if args.sweep else []
    unknown = [name for name in chosen if name not in SWEEP]
    if unknown:
        raise SystemExit(f"unknown policies {unknown}; known: {', '.join(SWEEP)}")
    if chosen:
        for variant in chosen:
            policy = SWEEP[variant]
            for name, (_, graph, feeds, expected) in graphs.items():
                if time.perf_counter() - start > args.deadline:
                    print("deadline: sweep stopped at", variant, name)
                    dump(args.out, results)
                    return
                r = measure(graph, queue, replace(target, policy=policy), feeds, expected, args.sweep_runs)
                r["rows"] = [row for row in r["rows"]
                             if row["op"] in ("Conv", "Gemm", "MatMul", "ScaledDotProductAttention")]
                results["models"][name][variant] = r
                report(name, variant, r)
            dump(args.out, results)
    dump(args.out, results)


def report(name: str, variant: str, r: dict) -> None:
    print(
        f"{name:20s} {variant:10s} median {r['median_ms']:8.3f} ms  device {r['device_us']:9.1f} us  "
        f"launches {r['launches']:4d}  err {r['rel_err']:.1e}  differing {r['runs_differing']}  "
        f"build {r['build_s']:.1f} s  {' '.join(r['fences'])}",
        flush=True,
    )
    per_op: dict[str, list[float]] = {}
    for row in r["rows"]:
        per_op.setdefault(row["op"], []).append(row["us"])
    top = sorted(per_op.items(), key=lambda kv: -sum(kv[1]))[:8]
    print("    " + "  ".join(f"{op} {sum(us):.0f} us/{len(us)}" for op, us in top), flush=True)


def dump(path: str, results: dict) -> None:
    Path(path).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
