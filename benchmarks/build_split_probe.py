"""Can a model's program build faster in pieces? The planned source is split into balanced groups of its
specializations, and each way of building is timed on one device. The outputs of each linked program are checked
against the one-piece build's.

- **whole**: one clBuildProgram, as the engine builds.
- **separate**: one program per group, built in as many threads (does the driver build programs concurrently?).
- **linked**: clCompileProgram per group in as many threads, then one clLinkProgram. That is still one program per
  model, so it is what the engine could adopt.

Then the linked program's binary is loaded back, as the program cache would load it.

    python3 benchmarks/build_split_probe.py MODEL.onnx ... [--threads 4,8,16] [--any-device] [--json out.json]

Measured on an H200 (benchmarks/RESULTS.md, session 6): the compile steps take 0.26 s of Inception-v3's build and
the link step the rest; separate programs in threads take about as long as one. NVIDIA's OpenCL builds one
program at a time, so neither pays there. Set CUDA_CACHE_DISABLE=1 and PYOPENCL_NO_CACHE=1 (pocl:
POCL_KERNEL_CACHE=0) for builds that start cold.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyopencl as cl
from gpu_kernels import first_input, gpu_device

from mace.converter import convert_onnx
from mace.opencl.executor import Executor
from mace.opencl.plan import DeviceTarget

CHUNK = "// ---- "  # the planner's separator before each specialization (plan/planner.py)


def groups(source: str, n: int) -> list[str]:
    """At most ``n`` sources, each the shared header and whole specializations, balanced by length (largest
    first)."""
    header, *chunks = source.split(CHUNK)
    bins: list[list[int]] = [[] for _ in range(n)]
    sizes = [0] * n
    for i in sorted(range(len(chunks)), key=lambda i: -len(chunks[i])):
        b = sizes.index(min(sizes))
        bins[b].append(i)
        sizes[b] += len(chunks[i])
    return [header + "".join(CHUNK + chunks[i] for i in sorted(b)) for b in bins if b]


def in_threads(work: Callable[[int], None], count: int) -> float:
    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def build_linked(ctx: cl.Context, device: cl.Device, source: str, options: str, n: int,
                 times: dict[str, float]) -> cl.Program:
    parts = groups(source, n)
    objects: list[Any] = [None] * len(parts)

    def compile_part(i: int) -> None:
        program = cl.Program(ctx, parts[i])
        program.compile(options=options, devices=[device])
        objects[i] = program

    times["compile_s"] = in_threads(compile_part, len(parts))
    start = time.perf_counter()
    linked = cl.link_program(ctx, objects, devices=[device])
    times["link_s"] = time.perf_counter() - start
    return linked


def probe(path: str, ctx: cl.Context, queue: cl.CommandQueue, target: DeviceTarget,
          threads: list[int]) -> dict[str, Any]:
    device = queue.device
    graph = convert_onnx(path)
    feeds, out = first_input(graph), graph.outputs[0].name
    planned: dict[str, str] = {}

    def whole(source: str, options: str) -> cl.Program:
        planned.update(source=source, options=options)
        return cl.Program(ctx, source).build(options=options)

    reference = Executor(graph, ctx, queue, whole, target=target).run(feeds)[out]
    source, options = planned["source"], planned["options"]
    row: dict[str, Any] = {"model": Path(path).stem, "specializations": source.count(CHUNK)}
    start = time.perf_counter()
    cl.Program(ctx, source).build(options=options)
    row["whole_s"] = time.perf_counter() - start
    print(f"{row['model']}: {row['specializations']} specializations; whole build {row['whole_s']:.2f} s", flush=True)
    for n in threads:
        parts = groups(source, n)
        separate = in_threads(lambda i, parts=parts: cl.Program(ctx, parts[i]).build(options=options), len(parts))
        times: dict[str, float] = {}
        executor = Executor(graph, ctx, queue, lambda s, o, n=n, times=times: build_linked(ctx, device, s, o, n, times),
                            target=target)
        same = bool(np.array_equal(executor.run(feeds)[out], reference))
        row[f"threads_{n}"] = {"separate_s": separate, **times, "same_outputs": same}
        print(f"  {n:2d} threads: separate programs {separate:.2f} s; compile {times['compile_s']:.2f} s + link "
              f"{times['link_s']:.2f} s; outputs the same: {same}", flush=True)
    times = {}
    binary = bytes(build_linked(ctx, device, source, options, threads[-1], times).get_info(
        cl.program_info.BINARIES)[0])
    start = time.perf_counter()
    cl.Program(ctx, [device], [binary]).build(options=options)
    row["linked_binary_bytes"], row["binary_load_s"] = len(binary), time.perf_counter() - start
    print(f"  the linked binary ({len(binary)} bytes) loads in {row['binary_load_s']:.2f} s", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", default="1,4,8,16", help="comma-separated group counts (a thread each)")
    ap.add_argument("--any-device", action="store_true", help="no GPU: the first device, planned as a GPU")
    ap.add_argument("--json")
    args = ap.parse_args()
    warnings.simplefilter("ignore", cl.CompilerWarning)
    warnings.filterwarnings("ignore", "Pre-build attribute access")  # pyopencl, of Program.compile: no cache here
    device = gpu_device(args.any_device)
    ctx = cl.Context([device])
    queue = cl.CommandQueue(ctx)
    target = DeviceTarget.from_device(device)
    if not target.tiled:
        target = DeviceTarget(True, target.compute_units, 48 << 10, 1024)
    if not device.get_info(cl.device_info.LINKER_AVAILABLE):
        raise SystemExit(f"{device.name}: no linker (clLinkProgram)")
    print(device.name.strip(), device.version, flush=True)
    threads = [int(t) for t in args.threads.split(",")]
    rows = [probe(path, ctx, queue, target, threads) for path in args.models]
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device.name.strip(), "models": rows}, indent=1))


if __name__ == "__main__":
    main()
