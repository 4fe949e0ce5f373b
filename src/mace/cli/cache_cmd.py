"""mace cache build / inspect / verify / merge / clear."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mace.cachefiles import program_cache, tuned_params, xiaomi
from mace.cachefiles.stores import PROGRAM_CACHE_NAME, TUNED_PARAMS_NAME, atomic_write
from mace.errors import MaceError

console = Console()


def register(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help="build, inspect, verify, merge or clear compiled-program cache files")
    verbs = cache.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("build", help="ahead of time: compile every program a model needs for a device into FILE")
    p.add_argument("model", nargs="+", help=".mace model file(s)")
    p.add_argument("--device", default="opencl", help="opencl | opencl:<platform>[:<index>]")
    p.add_argument("-o", "--output", required=True, help="cache file to create or extend")
    p.add_argument("--key", help="sign with HMAC-SHA256 under this key (or MACE_CACHE_KEY)")
    p.add_argument("--parameter-path", help="a tuned-parameters file (mace tune): build the tuned kernel variants "
                   "that engines using it will look up")
    p.set_defaults(func=cmd_build)

    p = verbs.add_parser("inspect", help="header, fingerprints, entries, a hex preview and the verdict")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = verbs.add_parser("verify", help="exit 0 when the file is valid, 1 with the reason when not")
    p.add_argument("file")
    p.add_argument("--key", help="also require a valid signature under this key")
    p.set_defaults(func=cmd_verify)

    p = verbs.add_parser("merge", help="merge cache files (e.g. of several devices) into one")
    p.add_argument("inputs", nargs="+", metavar="FILE")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_merge)

    p = verbs.add_parser("clear", help="delete the writable cache (programs and tuned parameters)")
    p.add_argument("--storage-path", help="storage directory (default: $MACE_STORAGE_PATH or ~/.cache/mace)")
    p.set_defaults(func=cmd_clear)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise MaceError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def cmd_build(args: argparse.Namespace) -> int:
    from mace.cachefiles.stores import FileStore
    from mace.model import modelfile
    from mace.opencl.context import GPUContextBuilder
    from mace.opencl.programs import ProgramCache
    from mace.opencl.runtime import program_plan
    from mace.opencl.tuning.params import TunedParamsStore

    output = Path(args.output)
    builder = GPUContextBuilder().set_device(args.device.partition(":")[2]).disable_storage()
    ctx = builder.finalize()
    key = args.key.encode() if args.key else ctx.cache_key
    cache = ProgramCache(ctx.context, ctx.device, ctx.fingerprint, FileStore(output), [], key)
    tuned = TunedParamsStore(args.parameter_path, ctx.fingerprint, key) if args.parameter_path else None
    for model in args.model:
        graph = modelfile.load(model)
        plan = program_plan(graph, ctx.device, tuned)
        cache.build(plan.source, plan.build_options)
    built = cache.stats["programs_from_source"]
    cache.save()
    console.print(f"{output}: {built} program(s) compiled for {ctx.choice.label}, "
                  f"{cache.stats['programs_from_cache']} already present")
    return 0


def _inspect_xiaomi(path: str, data: bytes, as_json: bool) -> int:
    """XiaoMi MACE's own program cache, read-only: platform info, device, programs, CRC verdict."""
    report = xiaomi.describe_mace(data)
    if as_json:
        print(json.dumps(report, default=str))
        return 0 if report["valid"] else 1
    console.print(f"[bold]{path}[/bold]: {report['size']} bytes, XiaoMi MACE program cache ({report['layout']} layout, "
                  "read-only)")
    console.print(f"platform info: {report['platform_info']}")
    console.print(f"device name: {report['device_name']}")
    table = Table(title="programs")
    for column in ("#", "program key", "bytes", "program hash"):
        table.add_column(column)
    for i, program in enumerate(report["programs"]):
        table.add_row(str(i), program["key"], str(program["size"]), str(program.get("program_hash") or ""))
    console.print(table)
    for key in report["other_keys"]:
        console.print(f"other key: {key}")
    console.print(f"crc32: {report['crc']}")
    console.print("first 64 bytes:")
    for line in report["hex_preview"]:
        console.print("  " + line, highlight=False)
    verdict = "[green]valid[/green]" if report["valid"] else f"[red]invalid[/red]: {report['error']}"
    console.print(f"verdict: {verdict}")
    return 0 if report["valid"] else 1


def _inspect_tuned(path: str, data: bytes, as_json: bool) -> int:
    """mace_cl_tuned_params.bin: fingerprints and one row per tuned launch."""
    report = tuned_params.describe(data)
    if as_json:
        print(json.dumps(report, default=str))
        return 0 if report["valid"] else 1
    console.print(f"[bold]{path}[/bold]: {report['size']} bytes, tuned work-group sizes")
    table = Table(title="entries")
    for column in ("#", "kernel", "global size", "local size", "µs", "fingerprint"):
        table.add_column(column)
    for i, entry in enumerate(report["entries"]):
        table.add_row(str(i), str(entry.get("kernel_name", "")), str(entry.get("global_size", "")),
                      str(entry.get("local_size") or "driver"), f"{entry.get('time_us', 0):.1f}",
                      str(entry.get("fingerprint_id", ""))[:12])
    console.print(table)
    for problem in report["problems"]:
        console.print(f"[yellow]problem:[/yellow] {problem}")
    verdict = "[green]valid[/green]" if report["valid"] else f"[red]invalid[/red]: {report['error'] or 'see problems'}"
    console.print(f"verdict: {verdict}")
    return 0 if report["valid"] else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    data = _read(args.file)
    if xiaomi.detect(data) in ("mace-v1.1", "mace-legacy"):
        return _inspect_xiaomi(args.file, data, args.json)
    if data[:4] == tuned_params.MAGIC:
        return _inspect_tuned(args.file, data, args.json)
    report = program_cache.describe(data)
    if args.json:
        print(json.dumps(report, default=str))
        return 0 if report["valid"] else 1
    header = report["header"]
    console.print(f"[bold]{args.file}[/bold]: {report['size']} bytes")
    console.print("header: " + ", ".join(f"{k}={v}" for k, v in header.items()))
    table = Table(title="device fingerprints")
    for column in ("id", "device", "platform", "driver", "engine"):
        table.add_column(column)
    for fp in report["fingerprints"]:
        table.add_row(str(fp.get("id", ""))[:12], str(fp.get("device_name", "")), str(fp.get("platform_name", "")),
                      str(fp.get("driver_version", "")), str(fp.get("engine_version", "")))
    console.print(table)
    table = Table(title="entries")
    for column in ("#", "program key", "fingerprint", "blob bytes", "build options"):
        table.add_column(column)
    for i, entry in enumerate(report["entries"]):
        table.add_row(str(i), str(entry.get("program_key", ""))[:16], str(entry.get("fingerprint_id", ""))[:12],
                      str(entry.get("blob_length", entry.get("blob_size", ""))), str(entry.get("build_options", "")))
    console.print(table)
    console.print("first 64 bytes:")
    for line in report["hex_preview"]:
        console.print("  " + line, highlight=False)
    for problem in report["problems"]:
        console.print(f"[yellow]problem:[/yellow] {problem}")
    verdict = "[green]valid[/green]" if report["valid"] else f"[red]invalid[/red]: {report['error'] or 'see problems'}"
    console.print(f"verdict: {verdict}")
    return 0 if report["valid"] else 1


def cmd_verify(args: argparse.Namespace) -> int:
    data = _read(args.file)
    kind = xiaomi.detect(data)
    if kind in ("mace-v1.1", "mace-legacy"):
        try:
            found = xiaomi.read_mace_file(data)
        except xiaomi.MaceCompatError as exc:
            print(f"{args.file}: invalid XiaoMi MACE program cache: {exc}")
            return 1
        crc = "CRC32 ok" if found.crc_ok else "no CRC (legacy layout)"
        print(f"{args.file}: valid XiaoMi MACE program cache ({found.layout} layout, {len(found.programs)} programs, "
              f"{crc}; device {found.device_name!r})")
        return 0
    if data[:4] == tuned_params.MAGIC:
        problems = tuned_params.validate(data, key=args.key.encode() if args.key else None)
        if problems:
            print(f"{args.file}: invalid: {problems[0]}")
            return 1
        print(f"{args.file}: valid tuned parameters ({len(tuned_params.decode(data).entries)} entries)")
        return 0
    problems = program_cache.validate(data, key=args.key.encode() if args.key else None)
    if problems:
        print(f"{args.file}: invalid: {problems[0]}")
        for extra in problems[1:]:
            print(f"  also: {extra}")
        return 1
    cache = program_cache.decode(data)
    print(f"{args.file}: valid ({len(cache.entries)} entries, {len(cache.fingerprints)} device fingerprints)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    merged = program_cache.CacheFile()
    for path in args.inputs:
        try:
            merged = merged.merged(program_cache.decode(_read(path)))
        except program_cache.CacheFormatError as exc:
            raise MaceError(f"{path}: {exc}") from exc
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, program_cache.encode(merged))
    print(f"{output}: {len(merged.entries)} entries from {len(args.inputs)} files, "
          f"{len(merged.fingerprints)} device fingerprints")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    from mace import settings

    directory = Path(args.storage_path) if args.storage_path else settings.storage_dir()
    if directory is None:
        print("the writable cache is turned off (MACE_STORAGE_PATH); nothing to clear")
        return 0
    removed = []
    for name in (PROGRAM_CACHE_NAME, TUNED_PARAMS_NAME):
        path = directory / name
        if path.exists():
            path.unlink()
            removed.append(str(path))
    print("removed " + ", ".join(removed) if removed else f"nothing to clear in {directory}")
    return 0
