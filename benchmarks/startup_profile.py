"""Where a warm start goes: phase times of a fresh process that loads a model from a warm program cache.

    python benchmarks/startup_profile.py MODEL.onnx|MODEL.mace [--device opencl:nvidia] [--repeats 5] [--profile]

The first child fills the cache (and the driver's cache); the next `--repeats` children are timed phase by phase:
interpreter start, `import numpy`, `import pyopencl`, `import mace`, OpenCL platform listing, device choice, context,
queue, engine construction, first run. `--profile` prints the engine construction's top functions (cProfile).
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, time, json
t_spawn = float(sys.argv[1])
model, device, storage, profile = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
marks = [("interpreter", time.time() - t_spawn)]
t = time.perf_counter()
def mark(name):
    global t
    now = time.perf_counter(); marks.append((name, now - t)); t = now
import numpy as np; mark("import numpy")
import pyopencl as cl; mark("import pyopencl")
import mace; mark("import mace")
from mace.opencl.device import select_device
platforms = cl.get_platforms(); mark("get_platforms")
choice = select_device(device.partition(":")[2]); mark("select_device")
ctx = mace.GPUContextBuilder().set_device(device.partition(":")[2]).set_storage_path(storage).finalize()
mark("context+queue (finalize)")
if profile:
    import cProfile, pstats, io
    prof = cProfile.Profile(); prof.enable()
engine = mace.Engine(model, device=device, gpu_context=ctx); mark("engine")
if profile:
    prof.disable(); s = io.StringIO(); pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(25)
    print(s.getvalue(), file=sys.stderr)
feeds = {i.name: np.zeros(i.shape, i.dtype) for i in engine.inputs}
engine.run(feeds); mark("first run")
print(json.dumps({"marks": marks, "total": time.time() - t_spawn, "stats": engine.stats}, default=str))
"""


def run_child(model: str, device: str, storage: str, profile: bool) -> dict:
    cmd = [sys.executable, "-c", CHILD, repr(time.time()), model, device, storage, "1" if profile else "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {proc.stderr[-3000:]}")
    if profile:
        print(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--device", default="opencl")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mace-startup-") as tmp:
        model = args.model
        if model.endswith(".onnx"):
            import mace

            model = str(Path(tmp) / "model.mace")
            mace.convert(args.model, model)
        storage = str(Path(tmp) / "storage")
        os.makedirs(storage)
        run_child(model, args.device, storage, False)  # fills the program cache and the driver's cache
        runs = [run_child(model, args.device, storage, args.profile and i == 0) for i in range(args.repeats)]
    names = [name for name, _ in runs[0]["marks"]]
    medians = {n: statistics.median(dict(r["marks"])[n] for r in runs) for n in names}
    total = statistics.median(r["total"] for r in runs)
    print(f"warm start, {args.repeats} fresh processes, median seconds  ({runs[0]['stats'].get('device')})")
    for name in names:
        print(f"  {name:26s} {medians[name]:8.4f}")
    print(f"  {'time to first result':26s} {total:8.4f}")
    print(json.dumps({"device": runs[0]["stats"].get("device"), "phases_s": medians, "first_result_s": total}))


if __name__ == "__main__":
    main()
