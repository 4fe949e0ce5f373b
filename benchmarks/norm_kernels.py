"""LayerNormalization and Softmax kernels, the portable plan (one work item per row) against the GPU plan (a
work-group per row, plan/reduce.py row_blocking): device time per launch (OpenCL profiling events, median) and the
error against numpy in float64, on the transformer shapes (ViT-B/16: 197 tokens, BERT-base: 128, width 768; an MLP
row of 3072; attention softmax over 12 heads).

    python benchmarks/norm_kernels.py [--device opencl:nvidia] [--repeats 50] [--fp16] [--json out.json]

The device is the first GPU where there is one (else pocl), or the one ``--device`` names as `mace` does
(opencl:<platform substring>[:<index>]). On a device that is no GPU the "new" column plans for a GPU target anyway
(the kernels are portable OpenCL C), which is what shows whether the CPU plan should keep the old kernels.
LayerNorm inputs are 1000 + randn (a mean far from zero: a naive E[x^2] - E[x]^2 loses every digit there).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import pyopencl as cl

from mace.model.ir import Graph, Node, TensorInfo
from mace.opencl.device import select_device
from mace.opencl.executor import Executor
from mace.opencl.plan import DeviceTarget, reduce
from mace.opencl.profiling import profile_launches

CASES: list[tuple[str, tuple[int, ...]]] = [
    ("LayerNormalization", (197, 768)),
    ("LayerNormalization", (128, 768)),
    ("LayerNormalization", (1, 3072)),
    ("Softmax", (12, 197, 197)),
    ("Softmax", (12, 128, 128)),
    ("LogSoftmax", (12, 128, 128)),
]


def case_graph(op: str, shape: tuple[int, ...], data_type: str, rng: np.random.Generator) -> tuple[Graph, dict, Any]:
    """A one-node graph, its feeds and the float64 reference."""
    if op == "LayerNormalization":
        x = (1000.0 + rng.standard_normal(shape)).astype(np.float32)
    else:
        x = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    if data_type == "fp16_fp32":
        x = x.astype(np.float16).astype(np.float32)
    tensors = {"x": TensorInfo("x", shape, "float32"), "y": TensorInfo("y", shape, "float32")}
    inputs, constants = ["x"], {}
    x64 = x.astype(np.float64)
    if op == "LayerNormalization":
        width = shape[-1]
        scale = rng.uniform(0.5, 1.5, width).astype(np.float32)
        bias = rng.uniform(-0.5, 0.5, width).astype(np.float32)
        if data_type == "fp16_fp32":
            scale, bias = scale.astype(np.float16), bias.astype(np.float16)
        constants = {"scale": scale, "bias": bias}
        for name, value in constants.items():
            tensors[name] = TensorInfo(name, value.shape, str(value.dtype))
        inputs += ["scale", "bias"]
        mean = x64.mean(-1, keepdims=True)
        ref = (x64 - mean) / np.sqrt(((x64 - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
        ref = ref * scale.astype(np.float64) + bias.astype(np.float64)
    else:
        shifted = x64 - x64.max(-1, keepdims=True)
        log_sum = np.log(np.exp(shifted).sum(-1, keepdims=True))
        ref = shifted - log_sum if op == "LogSoftmax" else np.exp(shifted - log_sum)
    node = Node(op, "node", inputs, ["y"], {"axis": -1, "epsilon": 1e-5} if op == "LayerNormalization" else {})
    graph = Graph(op, [tensors["x"]], [tensors["y"]], [node], constants, tensors, data_type)
    return graph, {"x": x}, ref


def measure(graph: Graph, feeds: dict, ref: np.ndarray, queue: cl.CommandQueue, target: Any, repeats: int) -> dict:
    ctx = queue.context
    executor = Executor(graph, ctx, queue, lambda s, o: cl.Program(ctx, s).build(options=o), target=target)
    got = executor.run(feeds)["y"]
    err = float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())
    rows = profile_launches(executor, feeds, repeats=repeats)
    return {
        "us": sum(r["us"] for r in rows),
        "rel_err": err,
        "launches": len(rows),
        "global": rows[0]["global_size"],
        "local": rows[0]["local_size"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="", help="opencl:<platform substring>[:<index>] (default: a GPU, else pocl)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--fp16", action="store_true", help="also fp16 storage (fp16_fp32)")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--lanes", default="", help="also the new kernels with LX forced to each of these, e.g. 64,128,256")
    args = ap.parse_args()
    spec = args.device.split(":", 1)[1] if args.device.startswith("opencl:") else args.device
    choice = select_device(spec)
    queue = cl.CommandQueue(cl.Context([choice.device]))
    target = DeviceTarget.from_device(choice.device)
    if not target.tiled:  # pocl: plan the GPU kernels anyway
        target = DeviceTarget(True, target.compute_units, 48 << 10, 1024)
    print(f"{choice.label}; new = {target}", flush=True)
    data_types = ["fp32_fp32", "fp16_fp32"] if args.fp16 else ["fp32_fp32"]
    header = f"{'op':<20}{'shape':<16}{'data':<11}{'old us':>10}{'new us':>10}{'speedup':>9}"
    header += f"{'old err':>10}{'new err':>10}  new local"
    print(header)
    results = []
    for data_type in data_types:
        for op, shape in CASES:
            graph, feeds, ref = case_graph(op, shape, data_type, np.random.default_rng(0))
            old = measure(graph, feeds, ref, queue, None, args.repeats)
            new = measure(graph, feeds, ref, queue, target, args.repeats)
            forced = {}
            for lanes in [int(v) for v in args.lanes.split(",") if v]:  # a sweep: the module's bounds, for a moment
                saved = reduce.ROW_LANES_MAX, reduce.ROW_LANES_MIN
                reduce.ROW_LANES_MAX = reduce.ROW_LANES_MIN = lanes
                try:
                    forced[lanes] = measure(graph, feeds, ref, queue, target, args.repeats)
                finally:
                    reduce.ROW_LANES_MAX, reduce.ROW_LANES_MIN = saved
            result = {"op": op, "shape": list(shape), "data_type": data_type, "old": old, "new": new}
            results.append({**result, "lanes": {str(k): v for k, v in forced.items()}})
            print(
                f"{op:<20}{'x'.join(map(str, shape)):<16}{data_type[:4]:<11}{old['us']:>10.1f}{new['us']:>10.1f}"
                f"{old['us'] / new['us']:>8.2f}x{old['rel_err']:>10.1e}{new['rel_err']:>10.1e}  {new['local']}",
                flush=True,
            )
            for lanes, row in forced.items():
                print(f"{'  LX=' + str(lanes):<47}{row['us']:>10.1f}{'':>29}{row['rel_err']:>10.1e}  {row['local']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": choice.label, "target": str(target), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
