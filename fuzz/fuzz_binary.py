"""Fuzzing the structural checks of program binaries (mace.cachefiles.binary_checks) with well-formed-but-wrong
binaries: what a cache file with recomputed hashes can hand the driver.

The first input byte picks what the rest means:
- 0: the bytes themselves are the binary, checked as unknown, pocl and NVIDIA: ``check`` returns None or a reason
  and never raises;
- 1: parameters of a well-formed pocl binary (kernel count and names, file sizes, version), then a cut and a few
  byte edits: the well-formed one passes and lists its kernels, every strict prefix (a binary cut short) is
  rejected, an expected kernel it lacks is rejected, and the garbled one gets a verdict without an exception;
- 2: the same for NVIDIA PTX text.

    python fuzz/fuzz_binary.py -max_total_time=180 /tmp/fuzz-binary fuzz/corpus/binary
"""

from __future__ import annotations

from binary_samples import pocl_binary, ptx_text
from harness import fuzz, import_instrumented

(binary_checks,) = import_instrumented("mace.cachefiles.binary_checks")
NAMES = ["conv_0", "pool_0", "gemm_12", "reduce_0", "copy_7", "k", "x" * 40]


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        value = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return value

    def u32(self) -> int:
        return self.byte() | self.byte() << 8 | self.byte() << 16 | self.byte() << 24


def verdict(blob: bytes, vendor: str, kernels: frozenset[str] = frozenset()) -> str | None:
    result = binary_checks.check(blob, vendor, kernels)
    assert result is None or (isinstance(result, str) and result), f"check returned {result!r}"
    return result


def edited(blob: bytes, r: Reader) -> bytes:
    out = bytearray(blob)
    for _ in range(r.byte() % 4):
        at = r.u32() % len(out)
        out[at] ^= r.byte() or 1
    return bytes(out)


def test_one_input(data: bytes) -> None:
    mode = data[0] % 3 if data else 0
    rest = data[1:]
    if mode == 0:
        for vendor in ("", "pocl", "nvidia"):
            verdict(rest, vendor)
        return
    r = Reader(rest)
    kernels = [NAMES[r.byte() % len(NAMES)] + str(i) for i in range(1 + r.byte() % 4)]
    if mode == 1:
        blob = pocl_binary(kernels, version=6 + r.byte() % 3, file_size=r.byte() % 64)
        vendor = "pocl"
        assert binary_checks.pocl_kernel_names(blob) == kernels
    else:
        blob = ptx_text(kernels)
        vendor = "nvidia"
        assert binary_checks.ptx_entry_names(blob) == kernels
    assert verdict(blob, vendor, frozenset(kernels)) is None, "a well-formed binary was rejected"
    assert verdict(blob, "", frozenset(kernels)) is None, "a well-formed binary was rejected (vendor unknown)"
    assert verdict(blob, vendor, frozenset(kernels) | {"missing"}) is not None, "a missing kernel was not noticed"
    cut = r.u32() % len(blob)
    assert verdict(blob[:cut], vendor, frozenset(kernels)) is not None, f"a binary cut at {cut} passed"
    verdict(edited(blob, r), vendor, frozenset(kernels))
    verdict(edited(blob[:cut], r) if cut else b"", vendor)


if __name__ == "__main__":
    fuzz(test_one_input, "binary.dict")
