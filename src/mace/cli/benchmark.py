"""`mace benchmark`: cold and warm time to first result, each in a fresh process, and steady latency.

Cold = no cache file and the drivers' own caches off (POCL_KERNEL_CACHE=0, CUDA_CACHE_DISABLE=1); warm = the cache
file the cold run wrote is present, driver caches still off (what mace's file alone gives); warm_driver = the same
with the driver caches on, second start (what an app sees on its next launch: on NVIDIA the cached binary is PTX,
and the driver's ComputeCache keeps its translation to machine code). Each measurement runs
`python -m mace.cli.benchmark --child ...` in a new process so imports, context creation and program loading are all
counted, numpy in -> numpy out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from mace.errors import MaceError
from mace.model.samples import sample_inputs

COLD_ENV = {"POCL_KERNEL_CACHE": "0", "CUDA_CACHE_DISABLE": "1"}


def percentiles(samples: list[float]) -> dict[str, float]:
    """Median, p10 and p90 in milliseconds of ``samples`` in seconds, and their count."""
    if not samples:
        return {}
    a = np.asarray(samples) * 1e3
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "runs": len(samples)}


# The child starts with `python -c`, so that `import mace` itself is timed; argv[1] is the parent's time.time() at
# spawn, so the time to first result also counts the interpreter's start.
CHILD_CODE = """
import sys, time
wall0, t0 = time.time(), time.perf_counter()
import mace
from mace.cli.benchmark import child
child(float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), wall0, time.perf_counter() - t0)
"""


def child(spawned: float, model: str, device: str, storage: str, runs: int, wall0: float, t_import: float) -> None:
    """Runs inside the fresh process; prints one JSON line."""
    import mace

    t1 = time.perf_counter()
    ctx = None
    if device != "cpu":
        builder = mace.GPUContextBuilder().set_device(device.partition(":")[2])
        ctx = (builder.set_storage_path(storage) if storage else builder.disable_storage()).finalize()
    t_context = time.perf_counter() - t1
    t2 = time.perf_counter()
    engine = mace.Engine(model, device=device, gpu_context=ctx)
    t_engine = time.perf_counter() - t2
    feeds = sample_inputs(engine.inputs)
    t3 = time.perf_counter()
    engine.run(feeds)
    t_first_run = time.perf_counter() - t3
    first_result = time.time() - spawned
    steady = []
    for _ in range(runs):
        t4 = time.perf_counter()
        engine.run(feeds)
        steady.append(time.perf_counter() - t4)
    print(json.dumps({
        "time_to_first_result_s": first_result,
        "breakdown_s": {"interpreter_start": wall0 - spawned, "import": t_import, "context": t_context,
                        "engine_init": t_engine, "first_run": t_first_run},
        "stats": engine.stats,
        "steady": percentiles(steady),
    }, default=str))


def _run_child(model: str, device: str, storage: str | None, runs: int, extra_env: dict[str, str]) -> dict[str, Any]:
    env = {**os.environ, **extra_env}
    cmd = [sys.executable, "-c", CHILD_CODE, repr(time.time()), model, device, storage or "", str(runs), "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]  # the error that stopped it, not its traceback
        raise MaceError(f"the benchmark's child process failed (exit {proc.returncode}): {last[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def per_op_profile(model: str, device: str, repeats: int = 20) -> dict[str, Any]:
    """Device time per launch and per op type from OpenCL profiling events (in this process, warm)."""
    import mace
    from mace.opencl.profiling import summarize_by_op

    ctx = mace.GPUContextBuilder().set_device(device.partition(":")[2]).disable_storage().finalize()
    engine = mace.Engine(model, device=device, gpu_context=ctx)
    rows = engine.profile(repeats=repeats)
    return {"launches": rows, "by_op": summarize_by_op(rows), "device_total_us": sum(r["us"] for r in rows),
            "memory": engine.stats.get("memory")}


def benchmark(model: str, device: str = "opencl", runs: int = 50, profile: bool = True) -> dict[str, Any]:
    """Cold start, warm start (fresh processes) and steady latency; returns one JSON-able dict."""
    with tempfile.TemporaryDirectory(prefix="mace-bench-") as storage:
        use_storage = storage if device != "cpu" else None
        cold = _run_child(model, device, use_storage, 0, COLD_ENV)
        warm = _run_child(model, device, use_storage, runs, COLD_ENV)
        _run_child(model, device, use_storage, 0, {})  # lets the driver fill its own cache
        warm_driver = _run_child(model, device, use_storage, 0, {})
    result = {"model": model, "device": device, "cold": cold, "warm": warm, "warm_driver": warm_driver,
              "steady": warm["steady"]}
    if device != "cpu" and profile:
        result["profile"] = per_op_profile(model, device)
    if device != "cpu":
        cold_build = cold["stats"].get("program_build_seconds", 0.0)
        for name in ("warm", "warm_driver"):
            build = result[name]["stats"].get("program_build_seconds", 0.0)
            result[f"program_build_cold_over_{name}"] = cold_build / build if build else None
    return result


