# Sourced by demo.sh and test.sh: create .venv (once) and install mace with its test extras into it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.mace-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# pocl-binary-distribution 3.0's LLVM cannot build for a CPU newer than itself (AMD Zen 5: "unknown target CPU
# 'generic'"). Debian's pocl picks its kernel library by the CPU's features instead: where pocl builds nothing and we
# may, install it (OpenCL then lists it first).
POCL_PROBE='import pyopencl as cl
ds = [d for p in cl.get_platforms() for d in p.get_devices()]
cl.Program(cl.Context(ds[:1]), "__kernel void k(__global float* x) { x[0] = 1.0f; }").build()'
if ! .venv/bin/python -c "$POCL_PROBE" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: the first OpenCL device builds no program; installing Debian's pocl (pocl-opencl-icd)" >&2
    apt-get install -y -qq pocl-opencl-icd >/dev/null || { apt-get update -qq && apt-get install -y -qq pocl-opencl-icd >/dev/null; }
  fi
fi
