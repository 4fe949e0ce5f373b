"""The OpenCL runtime: programs, the compiled-program cache file, the tuner and the kernels."""
