"""mace serve: KServe v2 (Open Inference Protocol) over HTTP/REST, on uvicorn — or on Ray Serve with --ray."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mace.errors import MaceError

SERVE_EXTRA = "pip install 'mace-opencl[serve]'"
RAY_EXTRA = "pip install 'mace-opencl[ray]'"


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
    ray = p.add_argument_group("scale-out on Ray Serve (needs the ray extra: pip install 'mace-opencl[ray]')")
    ray.add_argument("--ray", action="store_true", help="serve through Ray Serve: Ray's HTTP proxy on --host/--port, "
                     "the models in every replica")
    ray.add_argument("--replicas", type=int, help="fixed number of replicas (default 1)")
    ray.add_argument("--autoscaling", metavar="JSON", help="Ray Serve autoscaling_config, passed through, e.g. "
                     "'{\"min_replicas\": 1, \"max_replicas\": 4, \"target_ongoing_requests\": 8}'")
    ray.add_argument("--ray-address", help="an existing Ray cluster (e.g. auto); default: start a local one")
    ray.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica (default 1)")
    ray.add_argument("--replica-gpus", type=float, default=0.0, help="GPUs Ray reserves per replica (default 0)")
    p.set_defaults(func=cmd_serve)


def _positive(value: float, option: str) -> None:
    if not value > 0:
        raise MaceError(f"{option}: must be positive, got {value:g}")


def _batch_sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        sizes = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise MaceError(f"--batch-sizes {text!r}: expected integers like 1,2,4,8") from None
    if not sizes or sizes[0] < 1:
        raise MaceError(f"--batch-sizes {text!r}: expected positive integers like 1,2,4,8")
    return sizes


def cmd_serve(args: argparse.Namespace) -> int:
    started = process_start_time()
    try:
        from mace.serving.app import ServeSettings
        from mace.serving.batcher import BatchSettings
        from mace.serving.models import ModelSource
    except ImportError as exc:
        raise MaceError(f"mace serve needs {exc.name or 'its dependencies'}: {SERVE_EXTRA}") from exc

    for option, value in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue),
                          ("--timeout-s", args.timeout_s), ("--max-body-bytes", args.max_body_bytes)):
        _positive(value, option)
    if args.max_delay_ms < 0:
        raise MaceError(f"--max-delay-ms: must not be negative, got {args.max_delay_ms:g}")
    if not args.ray:
        for option in ("replicas", "autoscaling", "ray_address"):
            if getattr(args, option) is not None:
                raise MaceError(f"--{option.replace('_', '-')}: only with --ray")
    storage = str(Path(args.storage_path).expanduser()) if args.storage_path else None
    binaries = tuple(str(Path(p).expanduser()) for p in args.binary_path or ())
    models = [ModelSource.parse(text, device=args.device, storage_path=storage, binary_paths=binaries)
              for text in args.models]
    # absolute: Ray's replicas need not start in this directory
    models = [dataclasses.replace(m, path=str(Path(m.path).resolve())) for m in models]
    for model in models:
        model.check()
    settings = ServeSettings(BatchSettings(args.max_batch, args.max_delay_ms, _batch_sizes(args.batch_sizes),
                                           args.max_queue),
                             args.timeout_s, args.max_body_bytes, process_start=started)
    logging.getLogger("mace.serving").setLevel(min(logging.INFO, logging.getLogger().level))
    if args.ray:
        return _serve_on_ray(args, models, settings)
    return _serve(args, models, settings)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise MaceError(f"--host {host} --port {port}: cannot listen: {exc.strerror or exc}") from exc
    return sock


def _serve(args: argparse.Namespace, models: list[Any], settings: Any) -> int:
    try:
        import uvicorn

        from mace.serving.app import create_app
    except ImportError as exc:
        raise MaceError(f"mace serve needs {exc.name or 'its dependencies'}: {SERVE_EXTRA}") from exc
    app = create_app([m.config() for m in models], settings)
    sock = _listen(args.host, args.port)
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


def _serve_on_ray(args: argparse.Namespace, models: list[Any], settings: Any) -> int:
    try:
        import ray
        from ray import serve

        from mace.serving.ray_serve import mace_app
    except ImportError as exc:
        raise MaceError(f"mace serve --ray needs {exc.name or 'ray'}: {RAY_EXTRA}") from exc
    autoscaling = None
    if args.autoscaling is not None:
        if args.replicas is not None:
            raise MaceError("--replicas and --autoscaling: give one of them")
        try:
            autoscaling = json.loads(args.autoscaling)
        except json.JSONDecodeError as exc:
            raise MaceError(f"--autoscaling: not JSON: {exc}") from None
        if not isinstance(autoscaling, dict):
            raise MaceError(f"--autoscaling: expected a JSON object such as {{\"max_replicas\": 4}}, got "
                            f"{args.autoscaling!r}")
    if args.replicas is not None:
        _positive(args.replicas, "--replicas")
    if args.replica_cpus < 0 or args.replica_gpus < 0:
        raise MaceError("--replica-cpus/--replica-gpus: must not be negative")
    port = args.port
    if port == 0:  # Ray's proxy takes a port number: find a free one
        with _listen(args.host, 0) as sock:
            port = sock.getsockname()[1]
    else:
        _listen(args.host, port).close()  # the same one-line error as without --ray when the port is taken
    # the replicas log through Ray's own files; the driver shows Ray's warnings only
    ray.init(address=args.ray_address, logging_level=logging.WARNING, log_to_driver=False,
             configure_logging=True)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs handlers of its own
        signal.signal(signum, lambda signum, frame: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": port})
        print(f"mace serve: Ray Serve listening on http://{args.host}:{port} ({len(models)} model(s), device "
              f"{args.device}, {'autoscaling' if autoscaling else f'{args.replicas or 1} replica(s)'}); warming",
              file=sys.stderr, flush=True)
        app = mace_app(models, settings, replicas=args.replicas, autoscaling=autoscaling,
                       replica_cpus=args.replica_cpus, replica_gpus=args.replica_gpus)
        try:
            serve.run(app, name="mace", route_prefix="/", blocking=False)  # returns once the replicas are warm
        except RuntimeError as exc:
            raise MaceError(f"Ray Serve could not start the replicas: {_replica_error(serve) or exc}; the "
                            "replicas' logs: <ray session>/logs/serve/replica_*.log (by default under "
                            "/tmp/ray/session_latest)") from None
        if settings.process_start is not None:
            print(f"mace serve: ready {time.time() - settings.process_start:.2f} s after process start",
                  file=sys.stderr, flush=True)
        stop.wait()
        print("mace serve: stopping (Ray Serve drains the replicas)", file=sys.stderr, flush=True)
        serve.shutdown()  # type: ignore[no-untyped-call]
    finally:
        ray.shutdown()
    print("mace serve: stopped", file=sys.stderr, flush=True)
    return 0


def _replica_error(serve: Any) -> str | None:
    """The last line of the replica's error, from Ray Serve's status (its traceback's exception line)."""
    try:
        deployments = serve.status().applications["mace"].deployments
    except Exception:
        return None
    for status in deployments.values():
        lines = [line.strip() for line in (status.message or "").splitlines() if line.strip()]
        errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception):", line)]
        if errors:
            return errors[-1]
    return None
