"""mace devices / benchmark / demo."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from mace.cli.shape_args import parse_shape_args
from mace.errors import MaceError

console = Console()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list OpenCL platforms and devices (and unregistered vendor drivers)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("tune", help="time kernel variants (tilings) per node and work-group sizes per launch, "
                       "keep the fastest (mace_cl_tuned_params.bin)")
    p.add_argument("model", help=".mace model file")
    p.add_argument("--device", default="opencl")
    p.add_argument("--storage-path", help="directory of the caches (the tuned file is written there)")
    p.add_argument("--parameter-path", help="the tuned-parameters file itself")
    p.add_argument("--repeats", type=int, default=5, help="timed launches per candidate (default 5)")
    p.add_argument("--no-variants", action="store_true", help="tune local sizes only, keep the default tilings")
    p.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help="a dynamic model: the shape to tune "
                   "(tuned values are kept per shape)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("benchmark", help="cold/warm time to first result (fresh processes) and steady latency")
    p.add_argument("model", help=".mace model file")
    p.add_argument("--device", default="opencl")
    p.add_argument("--runs", type=int, default=50, help="steady-state runs (default 50)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-profile", action="store_true", help="skip the per-op table (OpenCL profiling events)")
    p.add_argument("--plot", metavar="FILE.png", help="per-op bars and cold/warm start bars (needs matplotlib)")
    p.set_defaults(func=cmd_benchmark)


def cmd_tune(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from mace.opencl.context import GPUContextBuilder
    from mace.runtime.engine import Engine

    builder = GPUContextBuilder().set_device(args.device.partition(":")[2])
    if args.storage_path:
        builder.set_storage_path(args.storage_path)
    if args.parameter_path:
        builder.set_opencl_parameter_path(args.parameter_path)
    engine = Engine(args.model, device=args.device, gpu_context=builder.finalize())
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("tuning", total=None)

        def step(index: int, total: int, what: object) -> None:
            label = what if isinstance(what, str) else f"local sizes of {getattr(what, 'kernel', '')}"
            progress.update(task, completed=index, total=total, description=f"tuning {label}")

        shapes = parse_shape_args(args.input_shape) if args.input_shape else None
        if engine.dynamic and shapes is None:
            specs = ", ".join(f"{name}{spec.describe()}" for name, spec in engine.input_specs.items())
            raise MaceError(f"{args.model} is a dynamic model ({specs}): name the shape to tune with --input-shape")
        summary = engine.tune(repeats=args.repeats, progress=step, variants=not args.no_variants, shapes=shapes)
    if args.json:
        print(json.dumps(summary))
        return 0
    variants = summary.get("variants") or {}
    if variants:
        console.print(f"kernel variants: {variants['nodes_changed']} of {variants['nodes_with_variants']} nodes "
                      f"changed; steady run {variants['steady_ms_default']:.3f} ms with the default tilings -> "
                      f"{variants['steady_ms_tuned']:.3f} ms tuned")
    speedup = summary["device_us_default"] / summary["device_us_tuned"] if summary["device_us_tuned"] else 0
    console.print(f"tuned {summary['launches_tuned']} launches: device time {summary['device_us_default']:.0f} µs "
                  f"with the driver's choices -> {summary['device_us_tuned']:.0f} µs tuned ({speedup:.2f}×); "
                  f"{'saved to' if summary['saved'] else 'NOT saved to'} {summary['file']}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from mace.errors import DeviceError
    from mace.opencl.device import is_gpu, list_devices, registration_commands, unregistered_vendor_libraries

    try:
        choices = list_devices()
    except DeviceError as exc:
        choices = []
        console.print(f"[yellow]{exc}[/yellow]")
    rows = [{"index": f"{c.platform.name.strip()}:{i}", "platform": c.platform.name.strip(),
             "device": c.device.name.strip(), "type": "GPU" if is_gpu(c.device) else "CPU/other",
             "version": c.device.version.strip(), "driver": c.device.driver_version.strip(),
             "compute_units": c.device.max_compute_units, "global_mem_mb": c.device.global_mem_size // 2**20}
            for i, c in enumerate(choices)]
    unregistered = unregistered_vendor_libraries()
    if args.json:
        print(json.dumps({"devices": rows, "unregistered_vendor_libraries": unregistered}))
        return 0
    table = Table(title="OpenCL devices")
    for column in ("platform", "device", "type", "version", "driver", "compute_units", "global_mem_mb"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("platform", "device", "type", "version", "driver", "compute_units",
                                              "global_mem_mb")))
    console.print(table)
    if not any(r["type"] == "GPU" for r in rows):
        console.print("no GPU is listed: device='opencl' uses the first device above (pocl's CPU device).")
        for vendor, lib in unregistered.items():
            console.print(f"{vendor}'s OpenCL driver is installed ({lib}) but not registered with the ICD loader; "
                          f"register it with:\n  {registration_commands(lib)}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from mace.cli.benchmark import benchmark

    result = benchmark(args.model, args.device, args.runs, profile=not args.no_profile)
    if args.plot:
        plot_benchmark(result, args.plot)
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    table = Table(title=f"mace benchmark: {args.model} on {args.device}")
    table.add_column("measure")
    table.add_column("cold (no cache file)")
    table.add_column("warm (cache file)")
    table.add_column("warm + driver cache")
    runs = [result["cold"], result["warm"], result["warm_driver"]]
    table.add_row("time to first result (fresh process)", *(f"{r['time_to_first_result_s']:.3f} s" for r in runs))
    for key in runs[0]["breakdown_s"]:
        table.add_row(f"  {key}", *(f"{r['breakdown_s'][key] * 1e3:.1f} ms" for r in runs))
    for key in ("program_build_seconds", "programs_from_source", "programs_from_cache"):
        if key in runs[0]["stats"]:
            fmt = (lambda v: f"{v * 1e3:.1f} ms") if key.endswith("seconds") else str
            table.add_row(key, *(fmt(r["stats"][key]) for r in runs))
    console.print(table)
    s = result["steady"]
    console.print(f"steady latency over {s['runs']} runs: median {s['median_ms']:.3f} ms, p10 {s['p10_ms']:.3f} ms, "
                  f"p90 {s['p90_ms']:.3f} ms")
    profile = result.get("profile")
    if profile:
        table = Table(title=f"device time per op (OpenCL profiling events), total {profile['device_total_us']:.0f} µs")
        for column in ("op", "launches", "µs", "share"):
            table.add_column(column)
        for row in profile["by_op"]:
            table.add_row(row["op"], str(row["launches"]), f"{row['us']:.1f}",
                          f"{100 * row['us'] / max(profile['device_total_us'], 1e-9):.1f}%")
        console.print(table)
    for name in ("warm", "warm_driver"):
        if result.get(f"program_build_cold_over_{name}"):
            console.print(f"program build cold ÷ {name}: {result[f'program_build_cold_over_{name}']:.0f}×")
    return 0


def plot_benchmark(result: dict, path: str) -> None:
    """Two panels: device time per op type, and time to first result cold / warm / warm with driver caches."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from mace.errors import MaceError

        raise MaceError("--plot needs matplotlib: pip install 'mace-opencl[plot]'") from None
    fig, (ops_ax, start_ax) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    by_op = (result.get("profile") or {}).get("by_op", [])
    ops_ax.barh([r["op"] for r in by_op][::-1], [r["us"] for r in by_op][::-1], color="#4477aa")
    ops_ax.set_xlabel("device time per run (µs)")
    ops_ax.set_title(f"per op: {result['model']} on {result['device']}")
    labels = ["cold", "warm", "warm + driver cache"]
    runs = [result["cold"], result["warm"], result["warm_driver"]]
    bottoms = [0.0] * 3
    for part, color in zip(runs[0]["breakdown_s"], ["#bbbbbb", "#66ccee", "#228833", "#ccbb44", "#ee6677"]):
        values = [r["breakdown_s"][part] for r in runs]
        start_ax.bar(labels, values, bottom=bottoms, label=part, color=color)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    start_ax.set_ylabel("seconds to first result (fresh process)")
    start_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
