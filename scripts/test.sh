#!/usr/bin/env bash
# The whole test suite: lint, then pytest (reference ops, converter, model file, ONNX suites, OpenCL on pocl, cache).
source "$(dirname "$0")/setup.sh"
ruff check src tests examples benchmarks
exec python -m pytest -q "$@"
