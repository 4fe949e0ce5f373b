"""Registers, spills and local memory per kernel of a model's GPU program on NVIDIA, by ptxas.

    python3 benchmarks/ptx_registers.py MODEL.onnx ... [--ptxas PATH] [--arch sm_90] [--tf32] [--sass DIR]

NVIDIA's OpenCL hands back PTX as the program binary; the driver assembles it when the program loads and says
nothing about the result. This builds each model's GPU plan, writes its PTX and runs ptxas -v on it (the ptxas
found on PATH, under CUDA_HOME, or the one triton ships), printing per kernel: registers, spill stores and loads
(bytes), local memory (shared memory in OpenCL's words) and the kernel's defines that distinguish it. --sass DIR
also keeps the assembled cubin and, where nvdisasm or cuobjdump is there, its SASS, one file per model.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pyopencl as cl
from gpu_kernels import KEYS, gpu_device, kernel_defines

from mace.converter import convert_onnx
from mace.opencl.plan import DeviceTarget, plan_graph


def find_tool(name: str, given: str | None = None) -> str | None:
    if given:
        return given
    found = shutil.which(name)
    if found:
        return found
    for root in filter(None, (os.environ.get("CUDA_HOME"), "/usr/local/cuda")):
        path = Path(root) / "bin" / name
        if path.exists():
            return str(path)
    try:
        import triton

        path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
        return str(path) if path.exists() else None
    except ImportError:
        return None


def ptxas_report(text: str) -> dict[str, dict[str, int]]:
    """ptxas -v's stderr -> kernel -> registers, spill_stores, spill_loads, stack, shared (bytes)."""
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = m.group(1)
            out[current] = {}
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            out[current].update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[current]["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            out[current]["shared"] = int(s.group(1)) if s else 0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--ptxas")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--tf32", action="store_true", help="the plan at TF32 accuracy")
    ap.add_argument("--sass", type=Path, help="keep cubins (and SASS) here")
    args = ap.parse_args()
    ptxas = find_tool("ptxas", args.ptxas)
    if ptxas is None:
        raise SystemExit("no ptxas found (PATH, CUDA_HOME, /usr/local/cuda, triton): pass --ptxas")
    device = gpu_device(False)
    ctx = cl.Context([device])
    target = DeviceTarget.from_device(device)
    if args.tf32:
        target = replace(target, tf32=target.tensor_cores)
    for path in args.models:
        name = Path(path).stem
        plan = plan_graph(convert_onnx(path), target)
        program = cl.Program(ctx, plan.source).build(options=plan.build_options)
        ptx = program.get_info(cl.program_info.BINARIES)[0]
        with tempfile.TemporaryDirectory() as tmp:
            ptx_path, cubin = Path(tmp) / f"{name}.ptx", Path(tmp) / f"{name}.cubin"
            text = ptx.rstrip(b"\0").decode()
            # (a ptxas older than the driver rejects its PTX's .version: retry with older ones, same code)
            for version in (None, "8.8", "8.7", "8.5", "8.4", "8.0"):
                if version:
                    text = re.sub(r"^\.version \S+", f".version {version}", text, count=1, flags=re.M)
                ptx_path.write_text(text)
                done = subprocess.run([ptxas, "-v", f"-arch={args.arch}", str(ptx_path), "-o", str(cubin)],
                                      capture_output=True, text=True)
                if done.returncode == 0 or ".version" not in done.stderr:
                    break
            if done.returncode:
                raise SystemExit(f"ptxas failed on {name}: {done.stderr[-2000:]}")
            report = ptxas_report(done.stderr)
            if args.sass:
                args.sass.mkdir(parents=True, exist_ok=True)
                shutil.copy(cubin, args.sass / cubin.name)
                shutil.copy(ptx_path, args.sass / ptx_path.name)
                disasm = find_tool("nvdisasm") or find_tool("cuobjdump")
                if disasm:
                    flag = [] if disasm.endswith("nvdisasm") else ["-sass"]
                    sass = subprocess.run([disasm, *flag, str(cubin)], capture_output=True, text=True).stdout
                    (args.sass / f"{name}.sass").write_text(sass)
        defines = kernel_defines(plan.source)
        used = {launch.kernel for launch in plan.launches}
        print(f"\n{name}: {len(used)} kernels ({ptxas})")
        print(f"  {'kernel':14s} {'regs':>4s} {'spill st/ld':>12s} {'stack':>5s} {'shared':>6s}  defines")
        for kernel in sorted(used, key=lambda k: -report.get(k, {}).get("registers", 0)):
            r = report.get(kernel, {})
            keys = " ".join(f"{k}={v}" for k, v in defines.get(kernel, {}).items() if k in KEYS)
            spills = f"{r.get('spill_stores', 0)}/{r.get('spill_loads', 0)}"
            print(f"  {kernel:14s} {r.get('registers', -1):4d} {spills:>12s} {r.get('stack', 0):5d} "
                  f"{r.get('shared', 0):6d}  {keys[:110]}")


if __name__ == "__main__":
    main()
