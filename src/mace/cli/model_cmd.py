"""mace convert / run / info."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from mace.errors import MaceError
from mace.model import modelfile
from mace.model.ir import DATA_TYPES, Graph

console = Console()


def parse_shape_args(items: list[str] | None) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for item in items or []:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            raise MaceError(f"--input-shape {item!r}: expected NAME=1,3,224,224") from None
    return shapes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an ONNX model (or a deployment .yml) to a .mace model file")
    p.add_argument("model", nargs="?", help="ONNX model file")
    p.add_argument("-o", "--output", help="output .mace file (default: next to the model)")
    p.add_argument("--config", help="MACE-style deployment .yml file (converts every model it lists)")
    p.add_argument("--output-dir", help="where a deployment file's models are written (default: next to it)")
    p.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help="fix an input's shape, e.g. "
                   "input=1,3,224,224 (repeatable)")
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
    written = convert(args.model, args.output, config=args.config, input_shapes=parse_shape_args(args.input_shape),
                      data_type=args.data_type, output_dir=args.output_dir)
    for path in written:
        graph = modelfile.load(path)
        console.print(f"wrote [bold]{path}[/bold] ({path.stat().st_size / 1e6:.2f} MB, {len(graph.nodes)} nodes, "
                      f"{graph.data_type}) in {time.perf_counter() - start:.2f} s")
    return 0


def _random_inputs(graph: Graph, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in graph.inputs:
        if np.issubdtype(np.dtype(t.dtype), np.floating):
            feeds[t.name] = rng.standard_normal(t.shape).astype(t.dtype)
        else:
            feeds[t.name] = np.zeros(t.shape, dtype=t.dtype)
    return feeds


def _read_inputs(graph: Graph, items: list[str] | None, seed: int) -> dict[str, np.ndarray]:
    feeds = _random_inputs(graph, seed)
    for item in items or []:
        name, sep, file = item.partition("=")
        if not sep:
            raise MaceError(f"--input {item!r}: expected NAME=FILE.npy")
        try:
            feeds[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise MaceError(f"--input {name}: cannot read {file}: {exc}") from exc
    return feeds


def make_gpu_context(args: argparse.Namespace) -> Any:
    if not (args.device.startswith(("opencl", "gpu"))):
        return None
    from mace.opencl.context import GPUContextBuilder

    builder = GPUContextBuilder()
    if args.storage_path:
        builder.set_storage_path(args.storage_path)
    if args.binary_path:
        builder.set_opencl_binary_paths(args.binary_path)
    return builder.finalize()


def cmd_run(args: argparse.Namespace) -> int:
    from mace.runtime.engine import Engine

    t0 = time.perf_counter()
    engine = Engine(args.model, device=args.device, gpu_context=make_gpu_context(args))
    t_init = time.perf_counter() - t0
    feeds = _read_inputs(engine.graph, args.input, args.seed)
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
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, value in outputs.items():
            np.save(out_dir / f"{_file_safe(name)}.npy", value)
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
        flat = value.reshape(-1)
        if flat.size > 1 and np.issubdtype(flat.dtype, np.floating):
            top = np.argsort(flat)[::-1][:5]
            console.print("  top-5: " + ", ".join(f"#{i} {flat[i]:.4f}" for i in top))
    console.print(" ".join(f"{k} {v * 1e3:.2f} ms" for k, v in timings.items() if v is not None))
    return 0


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if path.suffix == ".onnx":
        from mace.converter import convert_onnx

        graph = convert_onnx(path, parse_shape_args(args.input_shape))
    else:
        graph = modelfile.load(path)
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
    return 0
