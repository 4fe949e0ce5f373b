"""`mace benchmark`: cold and warm time to first result, each in a fresh process, and steady latency.

Cold = no cache file and the drivers' own caches off (POCL_KERNEL_CACHE=0, CUDA_CACHE_DISABLE=1); warm = the cache
file the cold run wrote is present. Each measurement runs `python -m mace.benchmark --child ...` in a new process so
imports, context creation and program loading are all counted, numpy in -> numpy out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

COLD_ENV = {"POCL_KERNEL_CACHE": "0", "CUDA_CACHE_DISABLE": "1"}


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    a = np.asarray(samples) * 1e3
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "runs": len(samples)}


def child(model: str, device: str, storage: str | None, runs: int) -> dict[str, Any]:
    """Runs inside the fresh process: everything from `import mace` to the first result is timed."""
    t0 = time.perf_counter()
    import mace

    t_import = time.perf_counter() - t0
    ctx = None
    if device != "cpu":
        builder = mace.GPUContextBuilder().set_device(device.partition(":")[2])
        ctx = (builder.set_storage_path(storage) if storage else builder.disable_storage()).finalize()
    t_context = time.perf_counter() - t0 - t_import
    engine = mace.Engine(model, device=device, gpu_context=ctx)
    t_engine = time.perf_counter() - t0 - t_import - t_context
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in engine.inputs}
    t1 = time.perf_counter()
    engine.run(feeds)
    t_first_run = time.perf_counter() - t1
    first_result = time.perf_counter() - t0
    steady = []
    for _ in range(runs):
        t2 = time.perf_counter()
        engine.run(feeds)
        steady.append(time.perf_counter() - t2)
    return {
        "time_to_first_result_s": first_result,
        "breakdown_s": {"import": t_import, "context": t_context, "engine_init": t_engine, "first_run": t_first_run},
        "stats": engine.stats,
        "steady": _percentiles(steady),
    }


def _run_child(model: str, device: str, storage: str | None, runs: int, extra_env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "mace.benchmark", "--child", model, "--device", device, "--runs", str(runs)]
    if storage:
        cmd += ["--storage", storage]
    env = {**os.environ, **extra_env}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def benchmark(model: str, device: str = "opencl", runs: int = 50) -> dict[str, Any]:
    """Cold start, warm start (fresh processes) and steady latency; returns one JSON-able dict."""
    with tempfile.TemporaryDirectory(prefix="mace-bench-") as storage:
        use_storage = storage if device != "cpu" else None
        cold = _run_child(model, device, use_storage, 0, COLD_ENV)
        warm = _run_child(model, device, use_storage, runs, COLD_ENV)
    result = {"model": model, "device": device, "cold": cold, "warm": warm, "steady": warm["steady"]}
    if device != "cpu":
        cold_build = cold["stats"].get("program_build_seconds", 0.0)
        warm_build = warm["stats"].get("program_build_seconds", 0.0)
        result["program_build_cold_over_warm"] = cold_build / warm_build if warm_build else None
    return result


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--device", default="opencl")
    parser.add_argument("--storage")
    parser.add_argument("--runs", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(child(args.child, args.device, args.storage, args.runs), default=str))


if __name__ == "__main__":
    _main()
