#!/usr/bin/env bash
# Convert the shipped SqueezeNet, start it cold and warm on OpenCL (a GPU, else pocl on the CPU), print the results.
source "$(dirname "$0")/setup.sh"
exec python examples/demo.py "$@"
