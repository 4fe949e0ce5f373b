"""mace convert / run / info."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from mace import settings
from mace.cli.files import check_output_dir, check_output_file, os_reason, write_error, write_file
from mace.cli.shape_args import parse_shape_args, parse_shape_specs
from mace.errors import MaceError
from mace.model import modelfile
from mace.model.dynamic import DynamicModel
from mace.model.ir import DATA_TYPES
from mace.model.samples import sample_inputs
from mace.runtime.engine import Engine

console = Console()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an ONNX model (or a deployment .yml) to a .mace model file")
    p.add_argument("model", nargs="?", help="ONNX model file")
    p.add_argument("-o", "--output", help="output .mace file (default: next to the model)")
    p.add_argument("--config", help="MACE-style deployment .yml file (converts every model it lists)")
    p.add_argument("--output-dir", help="where a deployment file's models are written (default: next to it)")
    p.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help="an input's shape: fixed, e.g. "
                   "input=1,3,224,224, or ranges, e.g. input=1..8,3,32..1280,32..1280 (a dynamic model; "
                   "repeatable). Without it, the model's own dims are kept (named or unknown ones vary)")
    p.add_argument("--data-type", default="fp32_fp32", choices=DATA_TYPES, help="storage_compute types")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("run", help="run a .mace model (random input if none is given)")
    p.add_argument("model")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="input from a .npy file (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu | opencl | gpu | opencl:<platform>[:<index>]")
    p.add_argument("--storage-path", help="directory of the writable OpenCL program cache")
    p.add_argument("--binary-path", action="append", help="read-only precompiled program file (repeatable)")
    p.add_argument("--save-outputs", metavar="DIR", help="write NAME.npy for every output")
    p.add_argument("--runs", type=int, default=1, help="timed runs after the first (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("info", help="show a model: inputs/outputs, ops before/after passes, parameters, size")
    p.add_argument("model", help=".mace file, or an ONNX file (converted in memory)")
    p.add_argument("--input-shape", action="append", metavar="NAME=DIMS")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def cmd_convert(args: argparse.Namespace) -> int:
    from mace.converter import convert

    start = time.perf_counter()
    input_shapes = parse_shape_specs(args.input_shape)
    if args.config:
        option, target = "--output-dir", Path(args.output_dir or Path(args.config).parent)
        check_output_dir(target, option)
    elif args.output or args.output_dir:
        option = "-o" if args.output else "--output-dir"
        target = Path(args.output) if args.output else Path(args.output_dir)
        if args.output:
            check_output_file(target, option)
        else:
            check_output_dir(target, option)
    else:
        option, target = "-o", Path(args.model).with_suffix(".mace") if args.model else Path(".")
    try:
        written = convert(args.model, args.output, config=args.config, input_shapes=input_shapes,
                          data_type=args.data_type, output_dir=args.output_dir)
    except OSError as exc:  # reading is ConversionError / DeploymentFileError: an OSError here is the write
        raise write_error(option, target, exc) from exc
    for path in written:
        model = modelfile.load(path)
        if isinstance(model, DynamicModel):
            shapes = ", ".join(f"{s.input}{s.describe()}" for s in model.specs)
            what = f"dynamic: {shapes}, converted per shape when it runs"
        else:
            what = f"{len(model.nodes)} nodes"
        console.print(f"wrote [bold]{path}[/bold] ({path.stat().st_size / 1e6:.2f} MB, {what}, "
                      f"{model.data_type}) in {time.perf_counter() - start:.2f} s")
    return 0


NPY_MAGIC = b"\x93NUMPY"


def _load_npy(name: str, file: str) -> np.ndarray:
    """One .npy array (never pickled objects); a file that is none is one MaceError naming the input and file."""
    where = f"--input {name}={file}"
    try:
        with open(file, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
            if not magic:
                raise MaceError(f"{where}: the file is empty (expected a .npy file written by numpy.save)")
            if magic != NPY_MAGIC:
                kind = "a .npz archive" if magic.startswith(b"PK") else "not a .npy file"
                raise MaceError(f"{where}: {kind}: it does not start with the NumPy header (write one array with "
                                "numpy.save)")
            f.seek(0)
            value = np.load(f, allow_pickle=False)
    except OSError as exc:
        raise MaceError(f"{where}: cannot read: {os_reason(exc)}") from exc
    except EOFError as exc:
        raise MaceError(f"{where}: truncated .npy file ({exc})") from exc
    except ValueError as exc:
        reason = ("holds Python objects (dtype object), which mace does not load" if "pickle" in str(exc)
                  else f"not a readable .npy file: {exc}")
        raise MaceError(f"{where}: {reason}") from exc
    if not isinstance(value, np.ndarray):
        raise MaceError(f"{where}: not a .npy array")
    return value


def _read_inputs(engine: Engine, items: list[str] | None, seed: int) -> dict[str, np.ndarray]:
    feeds = sample_inputs(engine.inputs, seed)
    dtypes = {t.name: t.dtype for t in engine.inputs}
    specs = engine.input_specs
    for item in items or []:
        name, sep, file = item.partition("=")
        if not sep:
            raise MaceError(f"--input {item!r}: expected NAME=FILE.npy")
        value = _load_npy(name, file)
        spec = specs.get(name)  # an unknown name is the engine's error: it lists the model's inputs
        if spec is not None and (spec.check(value.shape) is not None or value.dtype != np.dtype(dtypes[name])):
            raise MaceError(f"--input {name}={file}: the array is {value.dtype}{list(value.shape)}, the model's "
                            f"input {name!r} is {dtypes[name]}{spec.describe()}")
        feeds[name] = value
    return feeds


def make_gpu_context(args: argparse.Namespace) -> Any:
    from mace.opencl.context import context_for

    return context_for(args.device, args.storage_path, args.binary_path or ())


def cmd_run(args: argparse.Namespace) -> int:

    if args.save_outputs:
        check_output_dir(Path(args.save_outputs), "--save-outputs")
    t0 = time.perf_counter()
    engine = Engine(args.model, device=args.device, gpu_context=make_gpu_context(args))
    t_init = time.perf_counter() - t0
    feeds = _read_inputs(engine, args.input, args.seed)
    t1 = time.perf_counter()
    outputs = engine.run(feeds)
    t_first = time.perf_counter() - t1
    steady = []
    for _ in range(max(args.runs, 0)):
        t2 = time.perf_counter()
        outputs = engine.run(feeds)
        steady.append(time.perf_counter() - t2)
    if args.save_outputs:
        out_dir = Path(args.save_outputs)
        created = not out_dir.exists()
        try:
            for name, value in outputs.items():
                buffer = io.BytesIO()
                np.save(buffer, value, allow_pickle=False)
                write_file(out_dir / f"{_file_safe(name)}.npy", buffer.getvalue(), "--save-outputs")
        except MaceError:
            if created:  # a directory this run made and could not fill: leave nothing behind
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
    timings = {"init": t_init, "first_run": t_first, "time_to_first_result": t_init + t_first,
               "steady_median": float(np.median(steady)) if steady else None}
    if args.json:
        print(json.dumps({
            "model": str(args.model), "device": args.device,
            "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()},
            "timings": timings, "stats": engine.stats,
        }, default=str))
        return 0
    for name, value in outputs.items():
        console.print(f"output [bold]{name}[/bold]: shape {list(value.shape)} {value.dtype}")
        for label, flat in _per_item(value):
            if flat.size > 1 and np.issubdtype(flat.dtype, np.floating):
                top = np.argsort(flat, kind="stable")[::-1][:5]
                console.print(f"  {label}top-5: " + ", ".join(f"#{i} {flat[i]:.4f}" for i in top))
        if value.ndim >= 2 and value.shape[0] > MAX_ITEMS_SHOWN:
            console.print(f"  ({value.shape[0] - MAX_ITEMS_SHOWN} more items; --save-outputs writes them all)")
    console.print(" ".join(f"{k} {v * 1e3:.2f} ms" for k, v in timings.items() if v is not None))
    return 0


MAX_ITEMS_SHOWN = 32  # batch items with a top-5 line each


def _per_item(value: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """One flattened row per batch item (the first axis) when there are several, else the whole output."""
    if value.ndim >= 2 and value.shape[0] > 1:
        return [(f"[{i}] ", value[i].reshape(-1)) for i in range(min(value.shape[0], MAX_ITEMS_SHOWN))]
    return [("", value.reshape(-1))]


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if path.suffix == ".onnx":
        from mace.converter import convert_onnx

        graph = convert_onnx(path, parse_shape_args(args.input_shape))
    else:
        loaded = modelfile.load(path)
        if isinstance(loaded, DynamicModel):
            return _info_dynamic(path, loaded, args.json)
        graph = loaded
    info = {
        "name": graph.name, "file": str(path), "file_bytes": path.stat().st_size, "data_type": graph.data_type,
        "inputs": [t.to_json() for t in graph.inputs], "outputs": [t.to_json() for t in graph.outputs],
        "parameters": graph.parameter_count(), "nodes": len(graph.nodes),
        "nodes_before_passes": graph.metadata.get("nodes_before_passes"),
        "ops_in_source": graph.metadata.get("source_op_histogram", {}),
        "ops_before_passes": graph.metadata.get("op_histogram_before_passes", {}),
        "ops_after_passes": graph.op_histogram(), "passes": graph.metadata.get("passes", {}),
        "folded_nodes": graph.metadata.get("folded_nodes"),
    }
    info["launches"], info["launch_errors"] = _planned_launches(graph)
    if args.json:
        print(json.dumps(info))
        return 0
    console.print(f"[bold]{graph.name}[/bold]  {path} ({info['file_bytes'] / 1e6:.2f} MB)  {graph.data_type}  "
                  f"{info['parameters']:,} parameters")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            console.print(f"  {kind[:-1]:6} {t['name']}: {t['dtype']}{t['shape']}")
    table = Table(title="ops: source → imported (constants folded) → after passes")
    table.add_column("source ONNX")
    table.add_column("imported")
    table.add_column("after passes")
    columns = [info["ops_in_source"], info["ops_before_passes"], info["ops_after_passes"]]
    rows = max(len(c) for c in columns)
    cells = [[f"{k} × {v}" for k, v in c.items()] + [""] * (rows - len(c)) for c in columns]
    for row in zip(*cells):
        table.add_row(*row)
    console.print(table)
    console.print(f"folded nodes: {info['folded_nodes']}; passes: {info['passes']}")
    planned = [f"{k} {v}" for k, v in info["launches"].items()]
    planned += [f"{k}: {v}" for k, v in info["launch_errors"].items()]
    console.print("kernel launches per run (as planned, untuned): " + "; ".join(planned))
    return 0


def _planned_launches(graph: Any) -> tuple[dict[str, int], dict[str, str]]:
    """Kernel launches per run as planned, untuned (no program is built): the portable plan's and each OpenCL device's
    here (its device class and tiling); and, for any that has no plan, why."""
    from mace.opencl.plan import plan_graph

    counts: dict[str, int] = {}
    errors: dict[str, str] = {}

    def count(label: str, plan: Any) -> None:
        try:
            counts[label] = len(plan().launches)
        except Exception as exc:  # any lowering's failure is this plan's answer, not info's
            errors[label] = str(exc)

    tf32 = settings.tf32()  # (read here: a bad value is the command's error, not each device's)
    count("portable", lambda: plan_graph(graph))
    try:
        import pyopencl as cl

        from mace.opencl.device import list_devices
        from mace.opencl.runtime import program_plan

        choices = list_devices()
    except (ImportError, MaceError, cl.Error):  # no OpenCL installation, platform or device: the portable plan only
        return counts, errors
    for number, choice in enumerate(choices):
        label = choice.label if [c.label for c in choices].count(choice.label) == 1 else f"{choice.label} #{number}"
        count(label, lambda device=choice.device: program_plan(graph, device, tf32=tf32))
    return counts, errors


def _info_dynamic(path: Path, model: DynamicModel, as_json: bool) -> int:
    info: dict[str, Any] = {
        "name": model.name, "file": str(path), "file_bytes": path.stat().st_size, "data_type": model.data_type,
        "dynamic": True,
        "inputs": [{"name": s.input, "shape": s.describe(), "dtype": model.dtypes[s.input]} for s in model.specs],
        "outputs": model.outputs, "metadata": model.metadata,
    }
    if as_json:
        print(json.dumps(info, default=str))
        return 0
    console.print(f"[bold]{model.name}[/bold]  {path} ({info['file_bytes'] / 1e6:.2f} MB)  {model.data_type}  "
                  "dynamic: converted and compiled per input shape")
    for t in info["inputs"]:
        console.print(f"  input  {t['name']}: {t['dtype']}{t['shape']}")
    for name in model.outputs:
        console.print(f"  output {name}")
    console.print("ops and parameters: mace info MODEL.onnx --input-shape NAME=DIMS shows one specialization")
    return 0
