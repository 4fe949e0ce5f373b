"""mace serve: KServe v2 (Open Inference Protocol) over HTTP/REST, on uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mace.errors import MaceError

SERVE_EXTRA = "pip install 'mace-opencl[serve]'"


def process_start_time() -> float:
    """When this process started (wall clock), from /proc where there is one; else now."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        ticks = int(fields[19])  # field 22 of stat(5): starttime, clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve .mace models over HTTP: KServe v2 / Open Inference Protocol, "
                       "with dynamic batching and Prometheus metrics")
    p.add_argument("models", nargs="+", metavar="MODEL.mace[:NAME]",
                   help="a model to serve, named NAME (default: the file's stem)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one, logged)")
    p.add_argument("--device", default="cpu", help="cpu | opencl | gpu | opencl:<platform>[:<index>]")
    p.add_argument("--storage-path", help="directory of the writable OpenCL program cache")
    p.add_argument("--binary-path", action="append", metavar="FILE",
                   help="read-only precompiled program file (repeatable)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="most rows run as one batch (models whose dim 0 is a varying batch); 1: no batching")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="how long a batch waits to fill (default 2)")
    p.add_argument("--batch-sizes", help="precompiled batch sizes, e.g. 1,2,4,8: warmed at start, batches padded "
                   "up to the nearest (default: exact batches, batch 1 warmed)")
    p.add_argument("--max-queue", type=int, default=256, help="queued requests per model before 503 (default 256)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request timeout, then 504 (default 30)")
    p.add_argument("--max-body-bytes", type=int, default=64 << 20, help="largest request body (default 64 MiB)")
    p.set_defaults(func=cmd_serve)


def _model_arg(text: str) -> tuple[Path, str]:
    path, sep, name = text.rpartition(":")
    if not sep or not name or "/" in name or not path:
        path, name = text, Path(text).stem
    return Path(path), name


def _positive(value: float, option: str) -> None:
    if not value > 0:
        raise MaceError(f"{option}: must be positive, got {value:g}")


def cmd_serve(args: argparse.Namespace) -> int:
    started = process_start_time()
    try:
        import uvicorn

        from mace.serving.app import ServeSettings, create_app
        from mace.serving.batcher import BatchSettings, ModelConfig
    except ImportError as exc:
        raise MaceError(f"mace serve needs {exc.name or 'its dependencies'}: {SERVE_EXTRA}") from exc
    from mace.cli.model_cmd import make_gpu_context
    from mace.runtime.engine import Engine

    for option, value in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue),
                          ("--timeout-s", args.timeout_s), ("--max-body-bytes", args.max_body_bytes)):
        _positive(value, option)
    if args.max_delay_ms < 0:
        raise MaceError(f"--max-delay-ms: must not be negative, got {args.max_delay_ms:g}")
    sizes: tuple[int, ...] = ()
    if args.batch_sizes:
        try:
            sizes = tuple(sorted({int(v) for v in args.batch_sizes.split(",") if v.strip()}))
        except ValueError:
            raise MaceError(f"--batch-sizes {args.batch_sizes!r}: expected integers like 1,2,4,8") from None
        if not sizes or sizes[0] < 1:
            raise MaceError(f"--batch-sizes {args.batch_sizes!r}: expected positive integers like 1,2,4,8")

    models = []
    for text in args.models:
        path, name = _model_arg(text)
        if not path.is_file():
            raise MaceError(f"model {text!r}: no such file {str(path)!r}")

        def load(path: Path = path) -> Any:
            return Engine(path, device=args.device, gpu_context=make_gpu_context(args))

        models.append(ModelConfig(name, load, f"{path} on {args.device}"))
    settings = ServeSettings(BatchSettings(args.max_batch, args.max_delay_ms, sizes, args.max_queue),
                             args.timeout_s, args.max_body_bytes, process_start=started)
    app = create_app(models, settings)

    logging.getLogger("mace.serving").setLevel(min(logging.INFO, logging.getLogger().level))
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        raise MaceError(f"--host {args.host} --port {args.port}: cannot listen: {exc.strerror or exc}") from exc
    host, port = sock.getsockname()[:2]
    print(f"mace serve: listening on http://{host}:{port} ({len(models)} model(s), device {args.device})",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_config=None, log_level="warning", lifespan="on", access_log=False,
                            timeout_graceful_shutdown=int(args.timeout_s) + 5)
    server = uvicorn.Server(config)
    # uvicorn re-raises a caught SIGTERM once it has shut down gracefully; with this handler in place that ends
    # in a return, and so in exit status 0, not in death by the signal
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run(sockets=[sock])
    print("mace serve: stopped", file=sys.stderr, flush=True)
    return 0
