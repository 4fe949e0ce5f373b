"""One model, one machine, one run: mace against its peers, numpy in -> numpy out, each in a fresh process.

    python benchmarks/compare.py ../shared/models/mobilenet_v2.onnx [--runs 100] [--json out.json]
    python benchmarks/compare.py vit_b_16 | bert_base | resnet50 [--batch 32]   # exported here (torch_models.py)

Peers (each skipped with the reason when not installed or no device): mace on the GPU (opencl, a GPU platform),
mace on the GPU at TF32 accuracy (mace-gpu-tf32: GPUContextBuilder.set_tf32, products in one TF32 pass on NVIDIA
tensor cores, as PyTorch's cuDNN convolutions round by default; its own ratios last), mace on pocl (CPU OpenCL), the
mace numpy reference (only with --with-reference: it is slow), onnxruntime CPU,
PyTorch eager on CUDA and PyTorch with the model captured once in a CUDA graph (torch-graph:
cudnn.benchmark on, one replay per run, pinned host input copied in, output copied out; torch-graph-fp32: the same
with TF32 off, so its convolutions and products round as mace's fp32 do: by default cuDNN convolves in TF32, 10
mantissa bits) — the same architecture
from torch_models.py with random weights (timing only) — and tinygrad (its ONNX runner under TinyJit). For mace:
cold start (no cache file, POCL_KERNEL_CACHE=0, CUDA_CACHE_DISABLE=1) and warm start (cache file present), both
fresh processes; its launches per run. The last lines give mace (on the GPU, else on pocl) ÷ each peer.

--rounds R measures every peer's steady latency R times, the peers taken in turn each round (mace, torch, ..., mace,
torch, ...), so that a machine whose speed drifts during the run (a GPU lease, a shared CPU) moves every peer alike:
a peer's median is then the median of its rounds' medians (p10 and p90 are its first round's), and each ratio is the
median of the rounds' ratios, with their range.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from torch_models import MODELS, arch_of, export

COLD_ENV = {"POCL_KERNEL_CACHE": "0", "CUDA_CACHE_DISABLE": "1"}

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
peer, model, runs, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
import numpy as np
rng = np.random.default_rng(0)
feeds = {name: (rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind == "f"
                else rng.integers(0, 1000, shape).astype(dtype)) for name, shape, dtype in extra["inputs"]}
stats = {}
if peer.startswith("mace"):
    import mace
    device = extra["device"]
    ctx = None
    if device != "cpu":
        b = mace.GPUContextBuilder().set_device(device.partition(":")[2])
        b = b.set_tf32(bool(extra.get("tf32")))
        ctx = (b.set_storage_path(extra["storage"]) if extra.get("storage") else b.disable_storage()).finalize()
    engine = mace.Engine(model, device=device, gpu_context=ctx)
    fn = lambda: engine.run(feeds)
    getstats = lambda: engine.stats
elif peer == "onnxruntime":
    import onnxruntime as ort
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    fn = lambda: s.run(None, feeds)
    getstats = lambda: {"threads": "default"}
elif peer in ("torch", "torch-graph", "torch-graph-fp32"):
    import torch
    sys.path.insert(0, extra["bench_dir"])
    import torch_models
    net = torch_models.build(extra["arch"]).cuda()
    arrays = list(feeds.values())
    if peer == "torch":
        def fn():
            with torch.inference_mode():
                return net(*(torch.from_numpy(a).cuda() for a in arrays)).cpu().numpy()
    else:
        # captured once in a CUDA graph: one replay per run; pinned host input copied in, output copied out
        torch.backends.cudnn.benchmark = True
        if peer == "torch-graph-fp32":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        pinned = [torch.from_numpy(a).pin_memory() for a in arrays]
        static = [p.cuda() for p in pinned]
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    net(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = net(*static)
        host_out = torch.empty(static_out.shape, dtype=static_out.dtype).pin_memory()
        def fn():
            for p, a, s in zip(pinned, arrays, static):
                p.numpy()[...] = a
                s.copy_(p, non_blocking=True)
            graph.replay()
            host_out.copy_(static_out, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            return host_out.numpy().copy()
    getstats = lambda: {"device": torch.cuda.get_device_name()}
elif peer == "tinygrad":
    from tinygrad import Tensor, TinyJit, Device
    from tinygrad.nn.onnx import OnnxRunner
    runner = OnnxRunner(model)
    jit = TinyJit(lambda **ts: next(iter(runner(ts).values())).realize())
    fn = lambda: jit(**{k: Tensor(v) for k, v in feeds.items()}).numpy()
    getstats = lambda: {"device": Device.DEFAULT}
else:
    raise SystemExit(f"unknown peer {peer}")
fn()
first = time.perf_counter() - t0
for _ in range(3 if runs else 0):
    fn()
samples = []
for _ in range(runs):
    t = time.perf_counter(); fn(); samples.append(time.perf_counter() - t)
a = np.asarray(samples or [float("nan")]) * 1e3
print(json.dumps({"first_result_s": first, "median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
                  "p90_ms": float(np.percentile(a, 90)), "stats": getstats()}, default=str))
'''


def run_child(peer: str, model: str, runs: int, extra: dict[str, Any], env: dict[str, str] | None = None,
              timeout: float = 600) -> dict[str, Any]:
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, peer, model, str(runs), json.dumps(extra)],
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"skipped": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def opencl_platforms() -> list[tuple[str, bool]]:
    try:
        import pyopencl as cl

        return [(p.name, any(d.type & cl.device_type.GPU for d in p.get_devices())) for p in cl.get_platforms()]
    except Exception:
        return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help=f"an ONNX file, or a model name exported here with torch ({', '.join(MODELS)})")
    parser.add_argument("--batch", type=int, default=1, help="batch size of a named model's export (default 1)")
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "mace-bench-models",
                        help="where named models are exported (reused across runs)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1, help="steady-latency rounds, the peers in turn (default 1)")
    parser.add_argument("--data-type", default="fp32_fp32")
    parser.add_argument("--peers", default="mace-gpu,mace-pocl,onnxruntime,torch,torch-graph,tinygrad")
    parser.add_argument("--with-reference", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import onnx

    import mace

    model_path = args.model
    if not Path(model_path).exists() and args.model in MODELS:
        model_path = str(export(args.model, args.batch, args.models_dir))
    proto = onnx.load(model_path)
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [[i.name, [d.dim_value for d in i.type.tensor_type.shape.dim],
               onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name]
              for i in proto.graph.input if i.name not in initializers]
    arch = arch_of(model_path)
    workdir = Path(tempfile.mkdtemp(prefix="mace-compare-"))
    mace_model = workdir / f"{arch}.mace"
    mace.convert(model_path, mace_model, data_type=args.data_type)
    base = {"inputs": inputs, "arch": arch, "bench_dir": str(Path(__file__).resolve().parent)}
    platforms = opencl_platforms()
    results: dict[str, Any] = {}
    peers = args.peers.split(",") + (["mace-reference"] if args.with_reference else [])
    steady: dict[str, tuple[str, int, dict[str, Any]]] = {}  # peer -> the child that measures its steady latency
    for peer in peers:
        if peer in ("mace-gpu", "mace-gpu-tf32", "mace-pocl"):
            want_gpu = peer != "mace-pocl"
            match = next((name for name, gpu in platforms if gpu == want_gpu), None)
            if match is None:
                results[peer] = {"skipped": "no GPU OpenCL platform" if want_gpu else "no pocl platform"}
                continue
            device = f"opencl:{match.split()[0]}"
            storage = workdir / f"storage-{peer}"
            extra = {**base, "device": device, "storage": str(storage), "tf32": peer == "mace-gpu-tf32"}
            cold = run_child(peer, str(mace_model), 0, extra, COLD_ENV)
            steady[peer] = (str(mace_model), args.runs, extra)
            warm = run_child(peer, str(mace_model), args.runs, extra, COLD_ENV)
            run_child(peer, str(mace_model), 0, extra)  # the driver fills its own cache (NVIDIA: PTX -> SASS)
            driver = run_child(peer, str(mace_model), 0, extra)
            results[peer] = {**warm, "cold_first_result_s": cold.get("first_result_s"),
                             "warm_driver_first_result_s": driver.get("first_result_s"),
                             "cold_program_build_s": cold.get("stats", {}).get("program_build_seconds"),
                             "warm_program_build_s": warm.get("stats", {}).get("program_build_seconds"),
                             "warm_driver_program_build_s": driver.get("stats", {}).get("program_build_seconds"),
                             "skipped": warm.get("skipped") or cold.get("skipped")}
            if not results[peer]["skipped"]:
                results[peer].pop("skipped")
        elif peer == "mace-reference":
            results[peer] = run_child(peer, str(mace_model), 5, {**base, "device": "cpu"})
        elif peer in ("torch", "torch-graph", "torch-graph-fp32"):
            if arch not in MODELS:
                results[peer] = {"skipped": f"no PyTorch definition of {arch!r} in torch_models.py"}
                continue
            try:
                import torch

                if not torch.cuda.is_available():
                    results[peer] = {"skipped": "no CUDA device"}
                    continue
            except ImportError:
                results[peer] = {"skipped": "torch not installed"}
                continue
            steady[peer] = (model_path, args.runs, base)
            results[peer] = run_child(peer, model_path, args.runs, base)
        else:
            steady[peer] = (model_path, args.runs, base)
            results[peer] = run_child(peer, model_path, args.runs, base)
    measured = [peer for peer in steady if "skipped" not in results[peer]]
    for peer in measured:
        results[peer]["round_medians_ms"] = [results[peer]["median_ms"]]
    for round_index in range(1, args.rounds):
        for peer in list(measured):
            model, runs, extra = steady[peer]
            again = run_child(peer, model, runs, extra)
            if "skipped" in again:  # its rounds so far stand; its ratios fall back to the medians
                results[peer]["rounds_stopped"] = f"round {round_index + 1}: {again['skipped']}"
                print(f"{peer}: no more rounds ({results[peer]['rounds_stopped']})", file=sys.stderr, flush=True)
                measured.remove(peer)
                continue
            results[peer]["round_medians_ms"].append(again["median_ms"])
        print(f"round {round_index + 1} of {args.rounds} measured", file=sys.stderr, flush=True)
    measured = [peer for peer in steady if "skipped" not in results[peer]]
    for peer in measured:
        results[peer]["median_ms"] = statistics.median(results[peer]["round_medians_ms"])
    report = {"model": model_path, "batch": inputs[0][1][0] if inputs and inputs[0][1] else None,
              "data_type": args.data_type, "machine": platform.node(),
              "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d"), "results": results}
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


def reference_peer(results: dict[str, Any]) -> str | None:
    """The mace peer the ratios are of: on the GPU where it ran, else on pocl."""
    return next((p for p in ("mace-gpu", "mace-pocl") if results.get(p, {}).get("median_ms")), None)


def ratios(results: dict[str, Any], ref: str, peer: str) -> list[float]:
    """mace ÷ peer, round by round (one value without --rounds)."""
    mine, theirs = results[ref].get("round_medians_ms", []), results[peer].get("round_medians_ms", [])
    if len(mine) != len(theirs) or not mine:  # a peer measured once (mace-reference): the medians
        return [results[ref]["median_ms"] / results[peer]["median_ms"]]
    return [a / b for a, b in zip(mine, theirs)]


def print_table(report: dict[str, Any]) -> None:
    results = report["results"]
    ref_peer = reference_peer(results)
    ref = results[ref_peer]["median_ms"] if ref_peer else None
    print(f"\n{report['model']} ({report['data_type']}), batch {report['batch']}, numpy in -> numpy out, "
          f"{report['date']}")
    print(f"{'peer':16} {'median ms':>10} {'p10':>8} {'p90':>8} {'warm first s':>15} {'cold first s':>13} "
          f"{'ratio to ' + (ref_peer or 'mace'):>18}")
    for peer, r in results.items():
        if "skipped" in r:
            print(f"{peer:16} skipped: {r['skipped']}")
            continue
        ratio = f"{r['median_ms'] / ref:.2f}x" if ref else "-"
        cold = f"{r['cold_first_result_s']:.3f}" if r.get("cold_first_result_s") is not None else "-"
        print(f"{peer:16} {r['median_ms']:10.3f} {r['p10_ms']:8.3f} {r['p90_ms']:8.3f} {r['first_result_s']:15.3f} "
              f"{cold:>13} {ratio:>18}")
        if r.get("cold_program_build_s") is not None:
            cold = r["cold_program_build_s"]
            warm = r.get("warm_program_build_s") or 0
            driver = r.get("warm_driver_program_build_s") or 0
            first = r.get("warm_driver_first_result_s") or 0
            print(f"{'':16} program build: cold {cold:.3f} s; warm, driver caches off {warm:.4f} s "
                  f"({cold / warm if warm else 0:.0f}x); warm, driver caches on {driver:.4f} s "
                  f"({cold / driver if driver else 0:.0f}x), first result {first:.3f} s; "
                  f"{r.get('stats', {}).get('launches', '?')} launches per run")
    if ref_peer:
        parts = []
        for peer, r in results.items():
            if peer == ref_peer or "skipped" in r or not r.get("median_ms"):
                continue
            each = ratios(results, ref_peer, peer)
            spread = f" (rounds {min(each):.2f}-{max(each):.2f})" if len(each) > 1 else ""
            parts.append(f"÷ {peer} {statistics.median(each):.2f}{spread}")
        print(f"{ref_peer} " + ", ".join(parts))
    fast = results.get("mace-gpu-tf32", {})
    if fast.get("median_ms") and "skipped" not in fast:  # (torch's defaults: convolutions in TF32, products fp32)
        parts = [f"÷ {peer} {statistics.median(ratios(results, 'mace-gpu-tf32', peer)):.2f}"
                 for peer in ("torch", "torch-graph") if results.get(peer, {}).get("median_ms")]
        if parts:
            print("mace-gpu-tf32 " + ", ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
