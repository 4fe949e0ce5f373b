"""Dynamic shapes: the first run on a new shape (specialize + compile), on a shape whose program is in the cache file
(a fresh process), and on a resident shape (same engine, steady state).

    python benchmarks/dynamic_shapes.py ../shared/models/mobilenet_v2.onnx --device opencl \\
        --shapes 1,3,224,224 1,3,160,160 2,3,192,192 [--json out.json]

The model's first input gets symbolic batch, height and width (the ONNX file may fix them); each shape is measured
in fresh processes: "new" with an empty cache directory, "cached" with the directory the new run filled (driver
caches off in both: POCL_KERNEL_CACHE=0, CUDA_CACHE_DISABLE=1), then the same engine's steady latency ("resident").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COLD_ENV = {"POCL_KERNEL_CACHE": "0", "CUDA_CACHE_DISABLE": "1"}

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
model, device, storage, shape, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
import numpy as np
import onnx
import mace
from mace.converter.dynamic import dynamic_model, model_specs
from mace.model.shapes import ShapeSpec

proto = onnx.load(model)
first = proto.graph.input[0]
dims = first.type.tensor_type.shape.dim
for i, label in ((0, "batch"), (2, "height"), (3, "width")):
    dims[i].dim_param = label
spec = ShapeSpec.parse(first.name, "1..64,3,32..1024,32..1024", names=["batch", "", "height", "width"])
dm = dynamic_model(proto, model_specs(proto, {first.name: spec}))
ctx = None
if device != "cpu":
    ctx = mace.GPUContextBuilder().set_device(device.partition(":")[2]).set_storage_path(storage).finalize()
engine = mace.Engine(dm, device=device, gpu_context=ctx)
t_ready = time.perf_counter() - t0
x = np.random.default_rng(0).standard_normal([int(v) for v in shape.split(",")]).astype(np.float32)
t1 = time.perf_counter()
engine.run({first.name: x})
t_first = time.perf_counter() - t1
samples = []
for _ in range(runs):
    t2 = time.perf_counter(); engine.run({first.name: x}); samples.append(time.perf_counter() - t2)
a = np.asarray(samples or [float("nan")]) * 1e3
s = engine.stats
print(json.dumps({"process_to_engine_s": t_ready, "first_run_s": t_first, "total_s": t_ready + t_first,
                  "programs_from_source": s.get("programs_from_source"),
                  "programs_from_cache": s.get("programs_from_cache"),
                  "program_build_s": s.get("program_build_seconds"), "median_ms": float(np.median(a)),
                  "p10_ms": float(np.percentile(a, 10)), "p90_ms": float(np.percentile(a, 90))}))
'''


def child(model: str, device: str, storage: str, shape: str, runs: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CHILD, model, device, storage, shape, str(runs)],
                          capture_output=True, text=True, env={**os.environ, **COLD_ENV}, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed for {shape}: {proc.stderr.strip()[-1500:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--device", default="opencl")
    parser.add_argument("--shapes", nargs="+", default=["1,3,224,224", "1,3,160,160", "2,3,192,192"])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for shape in args.shapes:
        with tempfile.TemporaryDirectory(prefix="mace-dyn-") as storage:
            new = child(args.model, args.device, storage, shape, 0)
            cached = child(args.model, args.device, storage, shape, args.runs)
        rows.append({"shape": shape, "new": new, "cached": cached})
    print(f"\n{args.model} on {args.device}, {time.strftime('%Y-%m-%d')} (fresh processes, driver caches off)")
    print(f"{'shape':16} {'new: first result':>18} {'from source':>12} {'cached: first result':>21} "
          f"{'from cache':>11} {'resident median ms':>19} {'p10':>7} {'p90':>7}")
    for r in rows:
        n, c = r["new"], r["cached"]
        print(f"{r['shape']:16} {n['total_s']:16.3f} s {n['programs_from_source']:>12} {c['total_s']:19.3f} s "
              f"{c['programs_from_cache']:>11} {c['median_ms']:19.3f} {c['p10_ms']:7.3f} {c['p90_ms']:7.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
