"""Coverage-guided fuzzing of the compiled-program cache parsers: program_cache.decode, decode_report and describe.

Contract checked on every input (a violation is a finding; fuzz/README.md says how to run and triage):
- decode and decode_report raise nothing but CacheFormatError, with or without a key; describe never raises and its
  report is JSON-serialisable;
- the three agree: decode succeeds <=> decode_report finds no problem <=> describe says valid, with equal records;
- what decode accepts re-encodes to the same records, and what decode_report salvages can be encoded (the program
  cache's merge writes it back).
Each input is tried as is and with its trailer (total size, sha256, HMAC with KEY) made right, so mutations of the
records are judged by the record checks rather than all stopping at the whole-file checksum.

    python fuzz/fuzz_cachefile.py -max_total_time=180 /tmp/fuzz-cachefile fuzz/corpus/cachefile
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct

from harness import fuzz, import_instrumented

KEY = b"fuzz-key"

program_cache, binformat = import_instrumented("mace.cachefiles.program_cache", "mace.cachefiles.binformat")


def with_fixed_trailer(data: bytes) -> bytes | None:
    """``data`` with the header's total size, the sha256 trailer and (for a signed file) the HMAC made right."""
    if len(data) < program_cache.HEADER_SIZE:
        return None
    signed = struct.unpack_from("<I", data, 8)[0] & binformat.FLAG_SIGNED
    trailer_start = len(data) - binformat.DIGEST_SIZE * (2 if signed else 1)
    if trailer_start < 80:
        return None
    body = data[:72] + struct.pack("<Q", len(data)) + data[80:trailer_start]
    body += hashlib.sha256(body).digest()
    if signed:
        body += hmac.new(KEY, body, hashlib.sha256).digest()
    return body


def check(data: bytes, key: bytes | None) -> None:
    try:
        strict = program_cache.decode(data, key)
    except program_cache.CacheFormatError:
        strict = None
    try:
        salvaged, problems = program_cache.decode_report(data, key)
    except program_cache.CacheFormatError:
        salvaged, problems = None, []
    if salvaged is not None:
        program_cache.encode(salvaged)  # must not raise
    if strict is not None:
        assert salvaged == strict and not problems, "decode_report disagrees with a successful decode"
        assert program_cache.decode(program_cache.encode(strict)) == strict, "decode(encode(decode(x))) != decode(x)"
    else:
        assert salvaged is None or problems, "decode failed but decode_report found no problem"
    if key is None:
        report = program_cache.describe(data)
        json.dumps(report)
        assert report["valid"] == (strict is not None), "describe's verdict disagrees with decode"


def test_one_input(data: bytes) -> None:
    for candidate in (data, with_fixed_trailer(data)):
        if candidate is None:
            continue
        check(candidate, None)
        if len(candidate) >= 12 and struct.unpack_from("<I", candidate, 8)[0] & binformat.FLAG_SIGNED:
            check(candidate, KEY)


if __name__ == "__main__":
    fuzz(test_one_input, "cachefile.dict")
