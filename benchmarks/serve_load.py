"""Load on `mace serve`: closed-loop clients at increasing concurrency, batching on and off, against the same KServe v2
endpoint served by onnxruntime on the CPU; optionally a Ray Serve replica killed under load.

    python benchmarks/serve_load.py [../shared/models/squeezenet1_1.onnx] [--device opencl] [--seconds 5]
        [--concurrency 1,2,4,8,16,32] [--max-batch 8] [--peers mace-batch,mace-single,onnxruntime] [--ray-kill]
        [--json out.json]

Each peer is a fresh server process on 127.0.0.1: `mace serve` on a dynamic-batch copy of the model (converted with
dim 0 = 1..max-batch, its batch sizes precompiled into a shipped cache file, so it starts warm), with `--max-batch N
--batch-sizes 1,2,4,..,N` (mace-batch) or `--max-batch 1` (mace-single); onnxruntime is the same app (protocol, queue,
batcher: mace.serving) over an onnxruntime CPU session, batching as mace-batch does. A client sends one image per
request (binary tensor extension), waits for the answer, sends the next. Per level: requests/s, p50/p99 latency,
errors, and the batch sizes the server ran (from its /metrics). --ray-kill: `mace serve --ray --replicas 2`, load at
the highest concurrency, one replica's process killed (SIGKILL) a third of the way in: requests that failed, and how
long until a new replica answered.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE.parent / "examples" / "models" / "squeezenet1_1.onnx"
MACE = [sys.executable, "-m", "mace.cli.main"]


# -- the onnxruntime peer: mace.serving's app over an onnxruntime session -----------------------------------------
class OrtEngine:
    """What mace.serving's worker needs of an engine, computed by onnxruntime (names, shapes and ranges from the
    .mace model, so the endpoint is the same one)."""

    def __init__(self, onnx_path: str, mace_path: str, threads: int) -> None:
        import onnxruntime as ort

        import mace

        meta = mace.Engine(mace_path)  # the reference runtime: only its metadata is used, nothing runs on it
        self.input_specs, self.inputs, self.outputs, self.dynamic = (meta.input_specs, meta.inputs, meta.outputs,
                                                                     meta.dynamic)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.stats: dict[str, Any] = {"programs_from_source": 0, "programs_from_cache": 0}

    def warm_up(self, shapes: Any = None) -> None:
        for entry in shapes or [{t.name: tuple(t.shape) for t in self.inputs}]:
            self.run({name: np.zeros(shape, np.float32) for name, shape in entry.items()})

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds)))


def serve_onnxruntime(args: argparse.Namespace) -> int:
    import uvicorn

    from mace.serving.app import ServeSettings, create_app
    from mace.serving.batcher import BatchSettings, ModelConfig

    sizes = tuple(int(v) for v in args.batch_sizes.split(",")) if args.batch_sizes else ()
    settings = ServeSettings(BatchSettings(args.max_batch, 2.0, sizes), process_start=time.time())
    config = ModelConfig("model", lambda: OrtEngine(args.onnx, args.mace, args.threads), "onnxruntime CPU")
    app = create_app([config], settings)
    print(f"listening on http://127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, log_level="warning")
    return 0


# -- servers and clients ------------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                                     start_new_session=True)  # its own group: Ray's processes stop with it
        self.lines: list[str] = []
        self.url = ""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        if not self.url:
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr or []), daemon=True).start()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or any("failed to load" in line for line in self.lines):
                self.stop()
                raise RuntimeError("server did not get ready:\n" + "".join(self.lines))
            time.sleep(0.05)
        self.ready_s = time.perf_counter() - self.started

    def log_ready_s(self) -> float | None:
        for line in self.lines:
            found = re.search(r"ready.* ([0-9.]+) s after process start", line)
            if found:
                return float(found.group(1))
        return None

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("mace_batch_size_bucket") or line.startswith(("mace_batch_size_sum",
                                                                            "mace_batch_size_count")):
                key, _, value = line.rpartition(" ")
                name, _, labels = key.partition("{")
                le = re.search(r'le="([^"]+)"', labels)
                values[f'{name}{{le="{le.group(1)}"}}' if le else name] = float(value)
        return values

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(30)


def binary_request(name: str, x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                  "Content-Type": "application/octet-stream"}


def load(url: str, model: str, body: bytes, headers: dict[str, str], clients: int, seconds: float,
         on_tick: Any = None, done: Any = None) -> dict[str, Any]:
    """``clients`` closed loops for ``seconds`` (or until ``done(replicas)``); latencies of answered requests,
    errors by kind, and which replica answered when (Ray)."""
    stop_at = time.monotonic() + seconds
    latencies: list[float] = []
    errors: dict[str, int] = {}
    replicas: list[tuple[float, str]] = []
    lock = threading.Lock()
    start = time.monotonic()

    def loop() -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop_at and not (done is not None and done(replicas)):
                t0 = time.perf_counter()
                try:
                    r = client.post(f"{url}/v2/models/{model}/infer", content=body, headers=headers)
                    kind = None if r.status_code == 200 else f"HTTP {r.status_code}"
                except httpx.TransportError as exc:
                    kind, r = type(exc).__name__, None
                elapsed = time.perf_counter() - t0
                with lock:
                    if kind is None:
                        latencies.append(elapsed)
                        if r is not None and "mace-replica" in r.headers:
                            replicas.append((time.monotonic() - start, r.headers["mace-replica"]))
                    else:
                        errors[kind] = errors.get(kind, 0) + 1

    with concurrent.futures.ThreadPoolExecutor(clients + 1) as pool:
        futures = [pool.submit(loop) for _ in range(clients)]
        if on_tick is not None:
            pool.submit(on_tick)
        for f in futures:
            f.result()
    wall = time.monotonic() - start
    lat = np.asarray(latencies) * 1e3
    return {"clients": clients, "requests": len(latencies), "rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            "errors": sum(errors.values()), "error_kinds": errors, "replicas": replicas}


def batch_sizes_seen(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    runs = delta.get("mace_batch_size_count", 0.0)
    buckets = sorted(((float(re.search(r'le="([^"]+)"', k).group(1)), v)  # type: ignore[union-attr]
                      for k, v in delta.items() if k.startswith("mace_batch_size_bucket")))
    hist, previous = {}, 0.0
    for le, cumulative in buckets:
        if cumulative - previous > 0 and le != float("inf"):
            hist[f"<={le:g}"] = int(cumulative - previous)
        previous = cumulative
    return {"runs": int(runs), "mean_batch": delta.get("mace_batch_size_sum", 0.0) / runs if runs else None,
            "histogram": hist}


# -- the benchmark ------------------------------------------------------------------------------------------------
def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """The batch sizes mace-batch precompiles and pads to: the powers of two up to max_batch, and max_batch."""
    return tuple(sorted({2 ** i for i in range(max_batch.bit_length())} | {max_batch}))


def prepare(onnx_path: Path, device: str, max_batch: int, work: Path) -> tuple[Path, Path, Path, str, tuple[int, ...]]:
    import onnx

    proto = onnx.load(str(onnx_path))
    first = proto.graph.input[0]
    dims = [d.dim_value or 1 for d in first.type.tensor_type.shape.dim]
    for value in [*proto.graph.input, *proto.graph.output]:  # dim 0 a named batch: for onnxruntime too
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    dynamic = work / "model.onnx"
    onnx.save(proto, str(dynamic))
    shape = ",".join([f"1..{max_batch}", *map(str, dims[1:])])
    model = work / "model.mace"
    subprocess.run([*MACE, "convert", str(dynamic), "-o", str(model), "--input-shape", f"{first.name}={shape}"],
                   check=True, capture_output=True)
    sizes = batch_sizes(max_batch)
    shipped = work / "shipped.bin"
    if device != "cpu":
        subprocess.run([*MACE, "cache", "build", str(model), "--device", device, "-o", str(shipped),
                        "--batch-sizes", ",".join(map(str, sizes))], check=True, capture_output=True)
    return dynamic, model, shipped, first.name, (*dims[1:],)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", nargs="?", default=str(DEFAULT_MODEL))
    ap.add_argument("--device", default="opencl")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,2,4,8,16,32")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--peers", default="mace-batch,mace-single,onnxruntime")
    ap.add_argument("--ort-threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    ap.add_argument("--ray-kill", action="store_true")
    ap.add_argument("--ray-replica-cpus", type=float, default=0.5)
    ap.add_argument("--json")
    # the onnxruntime peer's server (this script, as a child)
    ap.add_argument("--serve-onnxruntime", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mace", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--batch-sizes", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_onnxruntime:
        return serve_onnxruntime(args)

    levels = [int(v) for v in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="mace-serve-load-"))
    dynamic, model, shipped, input_name, item_shape = prepare(Path(args.onnx), args.device, args.max_batch, work)
    sizes = ",".join(map(str, batch_sizes(args.max_batch)))
    x = np.random.default_rng(0).standard_normal((1, *item_shape)).astype(np.float32)
    body, headers = binary_request(input_name, x)
    base = [*MACE, "serve", f"{model}:model", "--device", args.device, "--storage-path", str(work / "store"),
            "--max-queue", "1024"]
    if shipped.exists():
        base += ["--binary-path", str(shipped)]
    commands = {
        "mace-batch": [*base, "--max-batch", str(args.max_batch), "--batch-sizes", sizes, "--port", "0"],
        "mace-single": [*base, "--max-batch", "1", "--port", "0"],
        "onnxruntime": [sys.executable, __file__, str(dynamic), "--serve-onnxruntime", "--mace", str(model),
                        "--max-batch", str(args.max_batch), "--batch-sizes", sizes, "--threads",
                        str(args.ort_threads)],
    }
    results: dict[str, Any] = {"model": Path(args.onnx).name, "device": args.device, "seconds": args.seconds,
                               "max_batch": args.max_batch, "peers": {}}
    for peer in [p for p in args.peers.split(",") if p]:
        command = commands[peer]
        if peer == "onnxruntime":
            command = [*command, "--port", str(free_port())]
        server = Server(command)
        entry: dict[str, Any] = {"start_to_ready_s": server.log_ready_s() or server.ready_s, "levels": []}
        for clients in levels:
            load(server.url, "model", body, headers, clients, min(1.0, args.seconds / 4))  # warm the path
            before = server.metrics()
            level = load(server.url, "model", body, headers, clients, args.seconds)
            level.pop("replicas")
            level["batches"] = batch_sizes_seen(before, server.metrics())
            entry["levels"].append(level)
            print(f"{peer:12s} c={clients:3d} {level['rps']:8.1f} req/s  p50 {level['p50_ms']:8.2f} ms  "
                  f"p99 {level['p99_ms']:8.2f} ms  errors {level['errors']}  "
                  f"mean batch {level['batches']['mean_batch'] or 0:.2f}", file=sys.stderr, flush=True)
        entry["exit_code"] = server.stop()
        results["peers"][peer] = entry
    if args.ray_kill:
        results["ray_kill"] = ray_kill(args, base, sizes, body, headers, max(levels))

    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def ray_kill(args: argparse.Namespace, base: list[str], sizes: str, body: bytes, headers: dict[str, str],
             clients: int) -> dict[str, Any]:
    command = [*base, "--ray", "--replicas", "2", "--replica-cpus", str(args.ray_replica_cpus), "--max-batch",
               str(args.max_batch), "--batch-sizes", sizes, "--port", str(free_port())]
    server = Server(command)
    before_kill = max(args.seconds, 5.0)
    seconds = before_kill + 120  # at most: the load stops 3 s after the replacement's first answer
    killed: dict[str, Any] = {}

    def kill_one() -> None:
        time.sleep(before_kill)
        pids = subprocess.run(["pgrep", "-f", "ServeReplica:mace:mace"], capture_output=True, text=True).stdout.split()
        if pids:
            os.kill(int(pids[0]), signal.SIGKILL)
            killed["at_s"] = before_kill
            killed["pid"] = int(pids[0])

    def replaced(replicas: list[tuple[float, str]]) -> bool:
        if "at_s" not in killed:
            return False
        seen = {r for t, r in replicas if t < killed["at_s"]}
        fresh = [t for t, r in replicas if r not in seen]
        return bool(fresh) and replicas[-1][0] > fresh[0] + 3.0

    load(server.url, "model", body, headers, clients, 1.0)
    level = load(server.url, "model", body, headers, clients, seconds, on_tick=kill_one, done=replaced)
    replicas = level.pop("replicas")
    before = {r for t, r in replicas if t < killed.get("at_s", 0)}
    new = [(t, r) for t, r in replicas if r not in before]
    after_kill = [r for t, r in replicas if t >= killed.get("at_s", seconds)]
    result = {"clients": clients, "seconds": replicas[-1][0] if replicas else seconds,
              "start_to_ready_s": server.log_ready_s() or server.ready_s,
              "killed": killed, "answered": level["requests"], "failed": level["errors"],
              "error_kinds": level["error_kinds"], "replicas_before": sorted(before),
              "replacement_first_answer_s": (new[0][0] - killed["at_s"]) if new and killed else None,
              "answered_after_kill": len(after_kill), "p50_ms": level["p50_ms"], "p99_ms": level["p99_ms"]}
    result["exit_code"] = server.stop()
    print(f"ray-kill: {result}", file=sys.stderr, flush=True)
    return result


def print_tables(results: dict[str, Any]) -> None:
    print(f"\n{results['model']} on {results['device']}, {results['seconds']:g} s per level, max batch "
          f"{results['max_batch']}")
    print("| peer | start to ready | clients | req/s | p50 ms | p99 ms | errors | mean batch |")
    print("|---|---|---|---|---|---|---|---|")
    for peer, entry in results["peers"].items():
        for level in entry["levels"]:
            mean = level["batches"]["mean_batch"]
            print(f"| {peer} | {entry['start_to_ready_s']:.2f} s | {level['clients']} | {level['rps']:.1f} | "
                  f"{level['p50_ms']:.2f} | {level['p99_ms']:.2f} | {level['errors']} | "
                  f"{f'{mean:.2f}' if mean else '-'} |")
    kill = results.get("ray_kill")
    if kill:
        print(f"\nRay Serve, 2 replicas, {kill['clients']} clients for {kill['seconds']:g} s, one replica killed at "
              f"{kill.get('killed', {}).get('at_s', float('nan')):.1f} s: {kill['answered']} answered, "
              f"{kill['failed']} failed {kill['error_kinds']}, replacement's first answer "
              f"{kill['replacement_first_answer_s']} s after the kill")


if __name__ == "__main__":
    raise SystemExit(main())
