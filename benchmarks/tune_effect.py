"""What `mace tune` buys: steady latency of a model with the default kernels and after tuning, same process.

    python benchmarks/tune_effect.py MODEL.onnx [--device opencl:nvidia] [--data-type fp32_fp32] [--runs 200]

Converts the model, tunes it (kernel variants per node, then work-group sizes per launch) into a temporary storage
directory, then times an engine without tuned parameters and one with them, alternating batches of runs so drift
hits both alike. Prints a line and one JSON object (median, p10, p90 in ms, the tuning summary, max error between
the two engines' outputs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import mace
from mace.cli.benchmark import percentiles
from mace.model.samples import sample_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--device", default="opencl")
    parser.add_argument("--data-type", default="fp32_fp32")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5, help="timed launches per tuning candidate")
    args = parser.parse_args()
    spec = args.device.partition(":")[2]
    with tempfile.TemporaryDirectory(prefix="mace-tune-") as tmp:
        model = Path(tmp) / "model.mace"
        mace.convert(args.model, model, data_type=args.data_type)
        tuned_dir = Path(tmp) / "tuned"
        engine = mace.Engine(model, device=args.device,
                             gpu_context=mace.GPUContextBuilder().set_device(spec).set_storage_path(tuned_dir).finalize())
        start = time.perf_counter()
        summary = engine.tune(repeats=args.repeats)
        tune_s = time.perf_counter() - start
        plain = mace.Engine(model, device=args.device,
                            gpu_context=mace.GPUContextBuilder().set_device(spec).disable_storage().finalize())
        tuned = mace.Engine(model, device=args.device,
                            gpu_context=mace.GPUContextBuilder().set_device(spec).set_storage_path(tuned_dir).finalize())
        feeds = sample_inputs(plain.inputs)
        outs = [plain.run(feeds), tuned.run(feeds)]
        err = max(float(np.abs(outs[0][k] - outs[1][k]).max() / max(np.abs(outs[0][k]).max(), 1e-12)) for k in outs[0])
        samples: dict[str, list[float]] = {"default": [], "tuned": []}
        for _ in range(max(args.runs // 20, 1)):
            for name, eng in (("default", plain), ("tuned", tuned)):
                for _ in range(20):
                    t0 = time.perf_counter()
                    eng.run(feeds)
                    samples[name].append(time.perf_counter() - t0)
        result = {name: percentiles(s) for name, s in samples.items()}
        report = {"model": args.model, "device": engine.stats["device"], "data_type": args.data_type,
                  "tune_seconds": tune_s, "tuned_variants": tuned.stats.get("tuned_variants"),
                  "tuned_launches": tuned.stats.get("tuned_launches"), "max_rel_diff": err, **result,
                  "summary": summary}
    d, t = result["default"]["median_ms"], result["tuned"]["median_ms"]
    print(f"{Path(args.model).stem} {args.data_type} on {report['device']}: default {d:.3f} ms, tuned {t:.3f} ms "
          f"({d / t:.2f}x), {report['tuned_variants']} nodes with another tiling, {report['tuned_launches']} tuned "
          f"local sizes; tuning took {tune_s:.0f} s; outputs differ by {err:.1e}")
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
