"""The mace demo: convert a shipped model, start it cold (no program cache), start it warm (cache file present),
each in a fresh process, check the outputs agree with the numpy reference, print top-5 and the timings.

    python examples/demo.py [--device opencl] [--out demo-out]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import mace
from mace.cli.benchmark import COLD_ENV, _run_child

HERE = Path(__file__).resolve().parent
console = Console()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="opencl")
    parser.add_argument("--out", default="demo-out")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    storage = out / "storage"
    shutil.rmtree(storage, ignore_errors=True)

    console.rule("1. convert (deployment file examples/deploy.yml)")
    [model] = mace.convert(config=HERE / "deploy.yml", output_dir=out)
    console.print(f"{model} ({model.stat().st_size / 1e6:.1f} MB)")

    console.rule(f"2. cold start on {args.device}: no program cache, driver caches off (fresh process)")
    cold = _run_child(str(model), args.device, str(storage), 0, COLD_ENV)
    console.print(f"programs built from source: {cold['stats'].get('programs_from_source')}, "
                  f"build {cold['stats'].get('program_build_seconds', 0):.2f} s, "
                  f"cache file written: {cold['stats'].get('cache_files_written')}")
    console.rule("3. warm start: the cache file is present (fresh process)")
    warm = _run_child(str(model), args.device, str(storage), args.runs, COLD_ENV)
    stats = warm["stats"]
    console.print(f"programs from cache: {stats.get('programs_from_cache')}, from source: "
                  f"{stats.get('programs_from_source')}, build {stats.get('program_build_seconds', 0):.3f} s")

    console.rule("4. output")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    device_out = mace.Engine(model, device=args.device, gpu_context=mace.GPUContextBuilder()
                             .set_storage_path(storage).finalize()).run({"input": x})["output"]
    reference = mace.Engine(model, device="cpu").run({"input": x})["output"]
    error = float(np.max(np.abs(device_out - reference)) / np.max(np.abs(reference)))
    top5 = np.argsort(device_out[0])[::-1][:5]
    console.print("top-5 classes: " + ", ".join(f"#{i} ({device_out[0, i]:.3f})" for i in top5))
    console.print(f"max |{args.device} - numpy reference| / max |reference| = {error:.2e}")

    table = Table(title=f"squeezenet1_1 on {cold['stats'].get('device', args.device)}")
    table.add_column("")
    table.add_column("cold")
    table.add_column("warm")
    table.add_row("time to first result (fresh process)", f"{cold['time_to_first_result_s']:.3f} s",
                  f"{warm['time_to_first_result_s']:.3f} s")
    table.add_row("program build", f"{cold['stats'].get('program_build_seconds', 0):.3f} s",
                  f"{warm['stats'].get('program_build_seconds', 0):.3f} s")
    console.print(table)
    s = warm["steady"]
    console.print(f"steady latency ({s['runs']} runs): median {s['median_ms']:.2f} ms, p10 {s['p10_ms']:.2f} ms, "
                  f"p90 {s['p90_ms']:.2f} ms")
    return 0 if error <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
