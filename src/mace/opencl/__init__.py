"""The OpenCL runtime: device and context, the plan (one program per model), the executor, the program cache
service, tuning and profiling."""
