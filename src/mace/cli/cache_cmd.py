"""mace cache build / inspect / verify / merge / clear."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mace.cachefiles import binary_checks, program_cache, stores, tuned_params, xiaomi
from mace.cachefiles.stores import PROGRAM_CACHE_NAME, TUNED_PARAMS_NAME
from mace.cli.files import check_output_file, os_reason, write_file
from mace.cli.shape_args import specializations
from mace.errors import MaceError
from mace.fileio import UnreadableFileError, read_bounded, read_head
from mace.model.dynamic import DynamicModel

console = Console()
CLI_LOCK_TIMEOUT_SECONDS = 30.0  # a command whose job is the file may wait for another writer (an engine: 2 s)


def register(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help="build, inspect, verify, merge or clear compiled-program cache files")
    verbs = cache.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("build", help="ahead of time: compile every program a model needs for a device into FILE")
    p.add_argument("model", nargs="+", help=".mace model file(s)")
    p.add_argument("--device", default="opencl", help="opencl | opencl:<platform>[:<index>]")
    p.add_argument("-o", "--output", required=True, help="cache file to create or extend")
    p.add_argument("--key", help="sign with HMAC-SHA256 under this key (or MACE_CACHE_KEY)")
    p.add_argument("--force", action="store_true", help="replace -o even when it is not a mace program cache")
    p.add_argument("--parameter-path", help="a tuned-parameters file (mace tune): build the tuned kernel variants "
                   "that engines using it will look up")
    p.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help="a dynamic model's shape to build "
                   "(repeatable: naming an input again starts the next specialization)")
    p.add_argument("--batch-sizes", metavar="N,N,...", help="a dynamic model: build each shape at these batch sizes")
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
    p.add_argument("--key", help="check signed inputs and sign the output with HMAC-SHA256 under this key "
                   "(or MACE_CACHE_KEY); needed when an input is signed")
    p.add_argument("--force", action="store_true", help="replace -o even when it is not a mace program cache")
    p.set_defaults(func=cmd_merge)

    p = verbs.add_parser("clear", help="delete the writable cache (programs and tuned parameters)")
    p.add_argument("--storage-path", help="storage directory (default: $MACE_STORAGE_PATH or ~/.cache/mace)")
    p.set_defaults(func=cmd_clear)


def _read(path: str) -> bytes:
    """The whole file, bounded (MAX_FILE_BYTES) and without blocking (a FIFO is an error, not a wait)."""
    try:
        return read_bounded(path, stores.MAX_FILE_BYTES, "a mace cache file (mace.cachefiles.stores.MAX_FILE_BYTES)")
    except OSError as exc:
        raise MaceError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _check_replaceable(path: Path, option: str, key: bytes | None, force: bool) -> None:
    """Before any work: an existing ``path`` is replaced only when it is a mace program cache (never a model, a
    XiaoMi MACE cache or any other file, unless ``force``), and a signed one only with a key (never downgraded)."""
    try:
        data = read_bounded(path, stores.MAX_FILE_BYTES, "a mace cache file (mace.cachefiles.stores.MAX_FILE_BYTES)")
    except FileNotFoundError:
        return
    except UnreadableFileError as exc:
        if force and "-byte limit" in str(exc):
            return
        raise MaceError(f"{option} {exc}; not overwritten") from exc
    except OSError:
        return  # a directory, a permission problem: the write names it
    foreign = stores.foreign_content(data, program_cache.MAGIC, "mace program cache",
                                     program_cache.ProgramCacheFormat.fmt.header.size)
    if foreign is not None and not force:
        raise MaceError(f"{option} {path}: is {foreign}; not overwritten (--force replaces it)")
    if foreign is None and key is None and stores.is_signed(data, program_cache.MAGIC):
        raise MaceError(f"{option} {path}: is signed; rewriting it needs its key (--key or MACE_CACHE_KEY), or it "
                        "would lose its signature")


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
    _check_replaceable(output, "-o", key, args.force)
    store = FileStore(output, lock_timeout=CLI_LOCK_TIMEOUT_SECONDS)
    cache = ProgramCache(ctx.context, ctx.device, ctx.fingerprint, store, [], key, replace_foreign=args.force)
    tuned = TunedParamsStore(args.parameter_path, ctx.fingerprint, key) if args.parameter_path else None
    for path in args.model:
        model = modelfile.load(path)
        if isinstance(model, DynamicModel):
            from mace.converter import specialize  # onnx: only dynamic models need the converter here

            graphs = [specialize(model, shapes) for shapes in specializations(model, args.input_shape,
                                                                             args.batch_sizes)]
        elif args.input_shape or args.batch_sizes:
            raise MaceError(f"{path}: has fixed input shapes; --input-shape/--batch-sizes are for dynamic models "
                            "(convert the ONNX model with ranges, docs/model-format.md)")
        else:
            graphs = [model]
        for graph in graphs:
            plan = program_plan(graph, ctx.device, tuned, tf32=ctx.tf32)
            cache.build(plan.source, plan.build_options)
    built = cache.stats["programs_from_source"]
    cache.save(strict=True)  # a file that cannot be written is the command's error (StoreError names it)
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
    cache = program_cache.decode(data) if not problems else None
    if cache is not None:
        problems = _binary_problems(cache)
    if problems or cache is None:
        print(f"{args.file}: invalid: {problems[0]}")
        for extra in problems[1:]:
            print(f"  also: {extra}")
        return 1
    print(f"{args.file}: valid ({len(cache.entries)} entries, {len(cache.fingerprints)} device fingerprints)")
    return 0


def _binary_problems(cache: program_cache.CacheFile) -> list[str]:
    """Each entry whose binary is malformed for its device's vendor format (binary_checks): a file whose hashes
    are right can still hold a binary cut short, which some drivers crash on."""
    problems = []
    for i, entry in enumerate(cache.entries):
        fp = cache.fingerprints[entry.fingerprint_id]
        reason = binary_checks.check(entry.blob, binary_checks.vendor_of(fp.platform_name, fp.platform_vendor,
                                                                         fp.device_vendor))
        if reason is not None:
            problems.append(f"entry {i} (program {entry.program_key[:12]}, {fp.device_name}): {reason}")
    return problems


def cmd_merge(args: argparse.Namespace) -> int:
    from mace import settings

    output = Path(args.output)
    check_output_file(output, "-o")
    key = args.key.encode() if args.key else settings.cache_key()
    _check_replaceable(output, "-o", key, args.force)
    merged = program_cache.CacheFile()
    for path in args.inputs:
        data = _read(path)
        signed = stores.is_signed(data, program_cache.MAGIC)
        if signed and key is None:
            raise MaceError(f"{path}: is signed; merging it needs its key (--key or MACE_CACHE_KEY), or the output "
                            "would lose its signature")
        try:  # a signed input must verify under the key; an unsigned one is vouched for by whoever merges it
            merged = merged.merged(program_cache.decode(data, key=key if signed else None))
        except program_cache.CacheFormatError as exc:
            raise MaceError(f"{path}: {exc}") from exc
    write_file(output, program_cache.encode(merged, key=key), "-o")
    print(f"{output}: {len(merged.entries)} entries from {len(args.inputs)} files, "
          f"{len(merged.fingerprints)} device fingerprints")
    return 0


def _not_mace_file(path: Path) -> str | None:
    """None when ``path`` is mace's own cache file of its name (or empty, or unreadable: the removal says why);
    else what it is."""
    magic = program_cache.MAGIC if path.name == PROGRAM_CACHE_NAME else tuned_params.MAGIC
    title = "mace program cache" if path.name == PROGRAM_CACHE_NAME else "mace tuned-parameters file"
    try:
        head = read_head(path, 4096)
    except UnreadableFileError as exc:
        return str(exc).removeprefix(f"{path}: ")
    except OSError:
        return None
    return stores.foreign_content(head, magic, title)


def cmd_clear(args: argparse.Namespace) -> int:
    from mace import settings

    directory = Path(args.storage_path) if args.storage_path else settings.storage_dir()
    if directory is None:
        print("the writable cache is turned off (MACE_STORAGE_PATH); nothing to clear")
        return 0
    if directory.exists() and not directory.is_dir():
        raise MaceError(f"--storage-path {directory}: is a file, not a directory")
    present = [directory / name for name in (PROGRAM_CACHE_NAME, TUNED_PARAMS_NAME)
               if (directory / name).exists() or (directory / name).is_symlink()]
    for path in present:  # check all before removing any: never half cleared
        if path.is_dir() and not path.is_symlink():
            raise MaceError(f"{path}: is a directory, not a mace cache file; nothing was removed")
    kept = [(path, why) for path in present if (why := _not_mace_file(path)) is not None]
    for path, why in kept:  # a XiaoMi MACE cache of the same name, a FIFO, anything else: not mace's to delete
        print(f"left {path}: {why}")
    present = [path for path in present if path not in {p for p, _ in kept}]
    if present and not os.access(directory, os.W_OK | os.X_OK):
        raise MaceError(f"{directory}: permission denied: cannot remove {present[0].name} from a read-only "
                        "directory; nothing was removed")
    removed: list[str] = []
    for path in present:
        try:
            path.unlink()
        except OSError as exc:
            done = f" (removed {', '.join(removed)})" if removed else "; nothing was removed"
            raise MaceError(f"{path}: cannot remove: {os_reason(exc)}{done}") from exc
        removed.append(str(path))
    print("removed " + ", ".join(removed) if removed else f"nothing to clear in {directory}")
    return 0
