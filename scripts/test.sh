#!/usr/bin/env bash
# The whole test suite: lint, types, layer contracts, then pytest (reference ops, converter, model file, ONNX suites,
# OpenCL on pocl, cache files, CLI).
source "$(dirname "$0")/setup.sh"
ruff check src tests examples benchmarks fuzz
mypy                # files and options: pyproject.toml [tool.mypy]
lint-imports        # the data flow and no cycles: pyproject.toml [tool.importlinter]
exec python -m pytest -q "$@"
