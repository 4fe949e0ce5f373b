"""Layer by layer against cuDNN / cuBLAS: where mace's GPU plan loses its time, per convolution and matrix product.

    python3 benchmarks/layer_peers.py MODEL.onnx ... --out layers.json [--top 20] [--tf32]

For each model: mace's device time per node (the GPU plan, OpenCL profiling events, a node's launches summed: its
k-split sum included), and for each Conv, Gemm and MatMul the same operation alone in PyTorch on the same GPU (its
input shapes, weights and attributes; cudnn.benchmark on; 20 calls captured in one CUDA graph, replayed, timed by
CUDA events), with TF32 on (torch's default for convolutions) and off (fp32, mace's default accuracy). Epilogues
mace fuses (bias, activation, residual) are not in torch's figure. Prints the layers where mace loses most against
torch fp32, then totals per op; --tf32 also plans mace at TF32 accuracy (DeviceTarget.tf32).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyopencl as cl
from gpu_kernels import first_input, gpu_device

from mace.converter import convert_onnx
from mace.model.ir import Graph, Node
from mace.opencl.executor import Executor
from mace.opencl.plan import DeviceTarget
from mace.opencl.profiling import profile_launches

OPS = ("Conv", "Gemm", "MatMul")


def mace_node_us(graph: Graph, queue: cl.CommandQueue, target: DeviceTarget) -> dict[str, float]:
    """node name -> device time of its launches (median of 10 replays each)."""
    ctx = queue.context
    executor = Executor(graph, ctx, queue, lambda s, o: cl.Program(ctx, s).build(options=o), target=target)
    feeds = first_input(graph)
    for _ in range(3):
        executor.run(feeds)
    out: dict[str, float] = {}
    for row in profile_launches(executor, feeds, repeats=10):
        out[row["node"]] = out.get(row["node"], 0.0) + row["us"]
    return out


def torch_call(graph: Graph, node: Node) -> tuple[Any, str] | None:
    """A zero-argument torch callable computing ``node`` on device tensors of its shapes, and the shape in words."""
    import torch
    import torch.nn.functional as F

    def tensor(name: str) -> Any:
        if name in graph.constants:
            return torch.from_numpy(np.ascontiguousarray(graph.constants[name], dtype=np.float32)).cuda()
        return torch.randn(graph.tensors[name].shape, device="cuda")

    if node.op == "Conv":
        x, w = tensor(node.inputs[0]), tensor(node.inputs[1])
        spatial = w.dim() - 2
        if spatial != 2:
            return None
        pads = list(node.attrs.get("pads", [0] * 2 * spatial))
        strides = node.attrs.get("strides", [1] * spatial)
        dilations = node.attrs.get("dilations", [1] * spatial)
        group = int(node.attrs.get("group", 1))
        if pads[:spatial] != pads[spatial:]:  # asymmetric: pad first (not timed apart)
            x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
            pads = [0] * 2 * spatial
        call = lambda: F.conv2d(x, w, None, strides, pads[:spatial], dilations, group)  # noqa: E731
        words = f"x {list(x.shape)} w {list(w.shape)} s {list(strides)} g {group}"
        return call, words
    if node.op in ("Gemm", "MatMul"):
        a, b = tensor(node.inputs[0]), tensor(node.inputs[1])
        if node.op == "Gemm":
            if node.attrs.get("transA", 0):
                a = a.t()
            if node.attrs.get("transB", 0):
                b = b.t()
        return (lambda: torch.matmul(a, b)), f"{list(a.shape)} @ {list(b.shape)}"
    return None


def torch_us(call: Any, tf32: bool, calls: int = 20, replays: int = 10) -> float:
    """Median device time of one ``call`` (µs): ``calls`` captured in one CUDA graph, replayed."""
    import torch

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # cudnn.benchmark picks its algorithm here
                call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                call()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return float(np.median(times))


def compare_model(path: str, queue: cl.CommandQueue, target: DeviceTarget, tf32: bool) -> dict[str, Any]:
    graph = convert_onnx(path)
    mace = mace_node_us(graph, queue, target)
    mace_tf32 = mace_node_us(graph, queue, replace(target, tf32=True)) if tf32 and target.tensor_cores else {}
    layers = []
    for node in graph.nodes:
        if node.op not in OPS or node.name not in mace:
            continue
        made = torch_call(graph, node)
        if made is None:
            continue
        call, words = made
        layers.append({"node": node.name, "op": node.op, "shape": words, "mace_us": mace[node.name],
                       "mace_tf32_us": mace_tf32.get(node.name), "torch_tf32_us": torch_us(call, True),
                       "torch_fp32_us": torch_us(call, False)})
    return {"total_mace_us": sum(mace.values()), "total_mace_tf32_us": sum(mace_tf32.values()) or None,
            "layers": layers}


def print_model(name: str, res: dict[str, Any], top: int) -> None:
    layers = res["layers"]
    print(f"\n{name}: mace {res['total_mace_us']:.0f} us of kernels in all; per op (mace / torch TF32 / torch fp32):")
    for op in OPS:
        mine = [r for r in layers if r["op"] == op]
        if mine:
            print(f"  {op:7s} {len(mine):3d} layers  {sum(r['mace_us'] for r in mine):9.0f} / "
                  f"{sum(r['torch_tf32_us'] for r in mine):9.0f} / {sum(r['torch_fp32_us'] for r in mine):9.0f} us")
    print(f"  the {top} layers losing most against torch fp32 (µs):")
    print(f"  {'mace':>8s} {'tf32':>8s} {'torch32':>8s} {'torchtf':>8s}  layer")
    for r in sorted(layers, key=lambda r: r["torch_fp32_us"] - r["mace_us"])[:top]:
        tf = f"{r['mace_tf32_us']:8.1f}" if r["mace_tf32_us"] is not None else f"{'':8s}"
        print(f"  {r['mace_us']:8.1f} {tf} {r['torch_fp32_us']:8.1f} {r['torch_tf32_us']:8.1f}  "
              f"{r['node'][-40:]}  {r['shape']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--tf32", action="store_true", help="also mace at TF32 accuracy")
    args = ap.parse_args()
    device = gpu_device(False)
    queue = cl.CommandQueue(cl.Context([device]))
    target = DeviceTarget.from_device(device)
    results: dict[str, Any] = {"device": device.name, "models": {}}
    for path in args.models:
        name = Path(path).stem
        results["models"][name] = compare_model(path, queue, target, args.tf32)
        Path(args.out).write_text(json.dumps(results))
        print_model(name, results["models"][name], args.top)


if __name__ == "__main__":
    main()
