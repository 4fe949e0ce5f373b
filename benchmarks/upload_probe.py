"""Moving a model's input and output between numpy and an OpenCL device: straight from the (pageable) numpy array, as
the executor does, or through a pinned staging buffer (CL_MEM_ALLOC_HOST_PTR, mapped once: np.copyto into it, then
the transfer from there), as PyTorch's CUDA-graph peer in compare.py does. Median of --runs, each finished.

    python3 benchmarks/upload_probe.py [--device nvidia] [--shapes 1x3x224x224,32x3x224x224,32x1000] [--json out.json]
    python3 benchmarks/upload_probe.py --models MODEL.onnx ... [--rounds 3]
    python3 benchmarks/upload_probe.py --pieces 32x3x224x224

--pieces SHAPE: one float input of SHAPE copied from numpy into pinned memory on 4 or 8 threads in pieces of 1, 2 or
4 MB and uploaded (one upload after the copies, each piece's enqueued in order as its copy ends, or by the thread
that copied it), against one thread and one upload: what opencl/staging.py's PIECE_BYTES and COPY_THREADS trade.

--models: whole runs of each model in the executor, numpy in -> numpy out, its inputs and outputs through pinned
memory in pieces (opencl/staging.py, the default on discrete GPUs), in one piece on the caller's thread, and
straight from pageable memory, the forms taken in turn --rounds times (a median of medians), then the kernels alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyopencl as cl


def median_ms(fn: Callable[[], None], runs: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def measure_shape(queue: cl.CommandQueue, shape: tuple[int, ...], runs: int) -> dict:
    ctx, mf = queue.context, cl.mem_flags
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    buffer = cl.Buffer(ctx, mf.READ_WRITE, data.nbytes)
    pinned = cl.Buffer(ctx, mf.READ_WRITE | mf.ALLOC_HOST_PTR, data.nbytes)
    staging, _ = cl.enqueue_map_buffer(queue, pinned, cl.map_flags.READ | cl.map_flags.WRITE, 0, shape, np.float32)
    host = np.empty_like(data)

    def write() -> None:
        cl.enqueue_copy(queue, buffer, data, is_blocking=False)
        queue.finish()

    def write_staged() -> None:
        np.copyto(staging, data)
        cl.enqueue_copy(queue, buffer, staging, is_blocking=False)  # the mapped pointer is pinned host memory
        queue.finish()

    def read() -> None:
        cl.enqueue_copy(queue, host, buffer, is_blocking=False)
        queue.finish()

    def read_staged() -> None:
        cl.enqueue_copy(queue, staging, buffer, is_blocking=False)
        queue.finish()
        np.copyto(host, staging)

    row = {"shape": list(shape), "mb": data.nbytes / 1e6}
    for name, fn in (("write", write), ("write_staged", write_staged), ("read", read), ("read_staged", read_staged)):
        host[...] = 0
        row[name] = median_ms(fn, runs)
        if name.startswith("read") and not np.array_equal(host, data):
            raise SystemExit(f"{shape}: what {name} gave back differs from what was written")
    row["copyto"] = median_ms(lambda: np.copyto(staging, data), runs)
    return row


def measure_model(queue: cl.CommandQueue, path: str, runs: int, rounds: int) -> dict:
    from mace.converter import convert_onnx
    from mace.opencl import staging
    from mace.opencl.executor import Executor
    from mace.opencl.plan import DeviceTarget

    ctx = queue.context
    graph = convert_onnx(path)
    target = DeviceTarget.from_device(queue.device)
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in graph.inputs}

    def executor(staged: bool) -> Executor:
        return Executor(graph, ctx, queue, lambda s, o: cl.Program(ctx, s).build(options=o), target=target,
                        host_staging=staged)

    pinned, pageable = executor(True), executor(False)
    pieces = staging.PIECE_BYTES
    forms: dict[str, tuple[Executor, int]] = {"pinned_pieces": (pinned, pieces), "pinned_one_piece": (pinned, 1 << 62),
                                              "pageable": (pageable, pieces)}
    medians: dict[str, list[float]] = {form: [] for form in forms}
    for _ in range(rounds):
        for form, (ex, piece_bytes) in forms.items():
            staging.PIECE_BYTES = piece_bytes
            medians[form].append(median_ms(lambda ex=ex: ex.run(feeds), runs))
    staging.PIECE_BYTES = pieces
    got, want = pinned.run(feeds), pageable.run(feeds)
    if any(not np.array_equal(got[name], want[name]) for name in want):
        raise SystemExit(f"{path}: the staged run's outputs differ from the pageable run's")

    def kernels() -> None:
        pageable._enqueue_kernels()  # (the launches alone: what the transfers add to)
        queue.finish()

    row = {"model": path, "input_mb": sum(a.nbytes for a in feeds.values()) / 1e6}
    row.update({form: float(np.median(values)) for form, values in medians.items()})
    row["kernels"] = median_ms(kernels, runs)
    return row


def measure_pieces(queue: cl.CommandQueue, shape: tuple[int, ...], runs: int) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    from mace.opencl.staging import HostStaging

    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    stage = HostStaging(queue.context, queue, {"x": (shape, np.dtype(np.float32))}).arrays["x"]
    buffer = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE, data.nbytes)

    def one_thread() -> None:
        np.copyto(stage, data)
        cl.enqueue_copy(queue, buffer, stage, is_blocking=False)
        queue.finish()

    rows = {"1 thread, one upload": median_ms(one_thread, runs)}
    for threads in (4, 8):
        with ThreadPoolExecutor(threads) as pool:
            for mb in (1, 2, 4):
                count = max(1, data.nbytes // (mb << 20))
                spans = list(itertools.pairwise([data.size * i // count for i in range(count + 1)]))
                for form, fn in _piece_forms(queue, buffer, stage, data, pool, spans).items():
                    rows[f"{threads} threads, {mb} MB: {form}"] = median_ms(fn, runs)
    return rows


def _piece_forms(queue: cl.CommandQueue, buffer: cl.Buffer, stage: np.ndarray, data: np.ndarray, pool: Any,
                 spans: list[tuple[int, int]]) -> dict[str, Callable[[], None]]:
    """data copied into stage in ``spans`` on ``pool`` and uploaded to ``buffer``, three ways, each finished."""
    flat, source = stage.reshape(-1), data.reshape(-1)

    def upload(a: int, b: int) -> None:
        cl.enqueue_copy(queue, buffer, flat[a:b], dst_offset=a * flat.itemsize, is_blocking=False)

    def copy(a: int, b: int, then_upload: bool) -> None:
        np.copyto(flat[a:b], source[a:b])
        if then_upload:
            upload(a, b)

    def then_one() -> None:
        for done in [pool.submit(copy, a, b, False) for a, b in spans]:
            done.result()
        cl.enqueue_copy(queue, buffer, stage, is_blocking=False)
        queue.finish()

    def in_order() -> None:
        for (a, b), done in zip(spans, [pool.submit(copy, a, b, False) for a, b in spans]):
            done.result()
            upload(a, b)
        queue.finish()

    def by_copier() -> None:
        for done in [pool.submit(copy, a, b, True) for a, b in spans]:
            done.result()
        queue.finish()

    return {"copies, one upload": then_one, "each upload in order": in_order, "each upload by its copier": by_copier}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="", help="part of the platform or device name (default: the first GPU)")
    ap.add_argument("--shapes", default="1x3x224x224,32x3x224x224,32x1000")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--models", nargs="+", help="ONNX files: whole runs instead of --shapes")
    ap.add_argument("--rounds", type=int, default=3, help="--models: the forms taken in turn this many times")
    ap.add_argument("--pieces", help="SHAPE: the staging's piece sizes and threads for one input of SHAPE")
    ap.add_argument("--json")
    args = ap.parse_args()
    devices = [d for p in cl.get_platforms() for d in p.get_devices()
               if args.device.lower() in f"{p.name} {d.name}".lower()]
    gpus = [d for d in devices if d.type & cl.device_type.GPU]
    if not devices:
        raise SystemExit(f"no OpenCL device matches {args.device!r}")
    device = (gpus or devices)[0]
    ctx = cl.Context([device])
    queue = cl.CommandQueue(ctx)
    rows = []
    if args.pieces:
        shape = tuple(int(d) for d in args.pieces.split("x"))
        print(f"{device.name}: ms, median of {args.runs}, {4 * np.prod(shape) / 1e6:.1f} MB copied and uploaded")
        times = measure_pieces(queue, shape, args.runs)
        for form, ms in times.items():
            print(f"  {form:48s} {ms:8.3f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"device": device.name, "shape": shape, "ms": times}, indent=1))
        return
    if args.models:
        print(f"{device.name}: ms, median of {args.rounds} rounds' medians of {args.runs} runs")
        print(f"{'model':>24s} {'MB in':>6s} {'pieces':>8s} {'1 piece':>8s} {'pageable':>8s} {'kernels':>8s}")
        for path in args.models:
            row = measure_model(queue, path, args.runs, args.rounds)
            rows.append(row)
            print(f"{Path(path).stem:>24s} {row['input_mb']:6.1f} {row['pinned_pieces']:8.3f} "
                  f"{row['pinned_one_piece']:8.3f} {row['pageable']:8.3f} {row['kernels']:8.3f}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"device": device.name, "rows": rows}, indent=1))
        return
    print(f"{device.name}: ms, median of {args.runs}")
    print(f"{'shape':>16s} {'MB':>6s} {'write':>8s} {'staged':>8s} {'copyto':>8s} {'read':>8s} {'staged':>8s}")
    for text in args.shapes.split(","):
        row = measure_shape(queue, tuple(int(d) for d in text.split("x")), args.runs)
        rows.append(row)
        print(f"{text:>16s} {row['mb']:6.1f} {row['write']:8.3f} {row['write_staged']:8.3f} {row['copyto']:8.3f} "
              f"{row['read']:8.3f} {row['read_staged']:8.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device.name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
