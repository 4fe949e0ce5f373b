"""Correctness on a device: convert each ONNX model (fp32_fp32 and fp16_fp32), run it on the OpenCL runtime and
compare with onnxruntime on the same random input, and for fp16_fp32 also with the numpy reference of the same data
type (half storage, float compute), which is what the 1e-2 tolerance applies to. Prints a table; exit 1 if any model
is out of tolerance.

    python benchmarks/check_models.py ../shared/models/*.onnx [--device opencl] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

import mace

TOLERANCE = {"fp32_fp32": 1e-4, "fp16_fp32": 1e-2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--device", default="opencl")
    parser.add_argument("--data-types", default="fp32_fp32,fp16_fp32")
    parser.add_argument("--json")
    parser.add_argument("--deadline", type=float, default=0.0, help="seconds: start no model after that (0: none)")
    args = parser.parse_args()
    rows, ok = [], True
    ctx = mace.GPUContextBuilder().set_device(args.device.partition(":")[2]).disable_storage().finalize()
    print(f"device: {ctx.choice.label}")
    start = time.perf_counter()
    for path in args.models:
        if args.deadline and time.perf_counter() - start > args.deadline:
            print(f"deadline: {path} and later not checked", flush=True)
            ok = False
            break
        try:
            ok &= _check(path, args, ctx, rows)
        except Exception as e:  # one row for a model that does not convert or run, and on to the next
            ok = False
            rows.append({"model": Path(path).stem, "passed": False, "error": f"{type(e).__name__}: {e}"[:500]})
            print(f"{Path(path).stem:20} FAIL {rows[-1]['error']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


def _check(path: str, args: argparse.Namespace, ctx: Any, rows: list[dict[str, Any]]) -> bool:
    ok = True
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        rng = np.random.default_rng(0)
        kind = i.type.removeprefix("tensor(").removesuffix(")")
        if kind.startswith(("int", "uint")):  # token ids below 100 (masks and token types 0 or 1), else floats
            high = 2 if any(word in i.name.lower() for word in ("mask", "type")) else 100
            feeds[i.name] = rng.integers(0, high, shape).astype(kind)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    expected = session.run(None, feeds)
    for data_type in args.data_types.split(","):
        graph = mace.converter.convert_onnx(path, data_type=data_type)
        start = time.perf_counter()
        engine = mace.Engine(graph, device=args.device, gpu_context=ctx)
        got = engine.run(feeds)
        first = time.perf_counter() - start
        errors = [float(np.max(np.abs(g - e)) / (np.max(np.abs(e)) or 1))
                  for g, e in zip(got.values(), expected)]
        oracle = max(errors)
        if data_type == "fp16_fp32":
            reference = mace.Engine(graph, device="cpu").run(feeds)
            oracle = max(float(np.max(np.abs(got[k] - reference[k])) / (np.max(np.abs(reference[k])) or 1))
                         for k in got)
        passed = oracle <= TOLERANCE[data_type]
        ok &= passed
        rows.append({"model": Path(path).stem, "data_type": data_type, "rel_error_vs_onnxruntime": max(errors),
                     "rel_error_vs_reference_same_type": oracle, "passed": passed, "nodes": len(graph.nodes),
                     "first_result_s": first, "build_s": engine.stats.get("program_build_seconds")})
        r = rows[-1]
        print(f"{r['model']:20} {data_type:10} vs onnxruntime {max(errors):.2e}, vs reference {oracle:.2e} "
              f"{'ok' if passed else 'FAIL':4} nodes {r['nodes']:4} build {r['build_s'] or 0:.2f} s "
              f"first result {first:.2f} s", flush=True)
    return ok


if __name__ == "__main__":
    sys.exit(main())
