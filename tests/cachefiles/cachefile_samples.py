"""The records behind the committed sample files in tests/cachefiles/data/ (fixed times, fixed bytes).

The samples were written by the code of each format as it stood when they were committed; test_samples.py checks
that today's encoders produce exactly those bytes from these records and that today's decoders read them back.
Regenerate only on a deliberate format change (a new version): ``python tests/cachefiles/cachefile_samples.py``.
"""

from __future__ import annotations

from pathlib import Path

from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.cachefiles.program_cache import CacheEntry, CacheFile
from mace.cachefiles.tuned_params import TunedEntry, TunedParams

DATA = Path(__file__).with_name("data")
SIGNING_KEY = b"mace-sample-signing-key"

FP_CPU = DeviceFingerprint(
    "Portable Computing Language", "The pocl project", "OpenCL 3.0 PoCL 5.0", "cpu-haswell-AMD EPYC", "AuthenticAMD",
    "OpenCL 3.0 PoCL HSTR", "5.0", 64, True, "0.1.0",
)  # fmt: skip
FP_GPU = DeviceFingerprint(
    "ARM Platform", "ARM", "OpenCL 2.1 v1.r40p0", "Mali-G710 r0p0", "ARM", "OpenCL 2.1 v1.r40p0", "2.1", 64, True,
    "0.1.0",
)  # fmt: skip
CONV = "__kernel void conv2d(__global float *x) { x[get_global_id(0)] *= 2.0f; }"
POOL = "__kernel void pool(__global float *x) {}"
CONV_SPEC = "#define KERNEL_NAME conv_0\n#define K 3\n__kernel void KERNEL_NAME(__global float *x) {}"


def program_cache_records() -> CacheFile:
    entries = [
        CacheEntry.for_program(CONV, "-cl-mad-enable -DBLOCK=4", FP_CPU, b"\x7fELF" + bytes(range(37)), 1000.0),
        CacheEntry.for_program(POOL, "", FP_CPU, b"", 1001.5),
        CacheEntry.for_program(CONV, "-DBLOCK=8  -cl-fast-relaxed-math", FP_GPU, b"mali" * 40, 1002.25),
        CacheEntry.for_program("// ünïcödé\n" + POOL, '-DNAME="é"', FP_GPU, b"x" * 16, 1003.0),
    ]
    entries[0].last_used = 2000.0
    return CacheFile({FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU}, entries)


def tuned_params_records() -> TunedParams:
    entries = [
        TunedEntry.for_launch("conv_0", CONV_SPEC, (64, 56, 56), FP_CPU, (4, 8, 8), 812.5, 1000.0),
        TunedEntry.for_launch("add_0", "add", (4096,), FP_CPU, None, 3.25, 1001.0),
        TunedEntry.for_launch("conv_0", CONV_SPEC, (64, 56, 56), FP_GPU, (1, 8, 32), 90.0, 1002.0, variant=(2, -1)),
        TunedEntry.for_launch("pool_ü", "pool", (7, 2**40), FP_GPU, (7, 1), 0.0, 1003.5, variant=(2**31 - 1,)),
    ]
    return TunedParams({FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU}, entries)


def samples() -> dict[str, tuple[str, object, bytes | None]]:
    """File name -> (format module name, records, signing key)."""
    return {
        "program_cache.bin": ("program_cache", program_cache_records(), None),
        "program_cache_signed.bin": ("program_cache", program_cache_records(), SIGNING_KEY),
        "program_cache_empty.bin": ("program_cache", CacheFile(), None),
        "tuned_params.bin": ("tuned_params", tuned_params_records(), None),
        "tuned_params_signed.bin": ("tuned_params", tuned_params_records(), SIGNING_KEY),
    }


if __name__ == "__main__":
    import importlib

    for name, (module, records, key) in samples().items():
        fmt = importlib.import_module(f"mace.cachefiles.{module}")
        (DATA / name).write_bytes(fmt.encode(records, key=key))
        print(DATA / name)
