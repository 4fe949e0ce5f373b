"""Coverage-guided fuzzing of the tuned-parameters parsers: tuned_params.decode, decode_report, validate, describe.

Contract checked on every input (a violation is a finding; fuzz/README.md says how to run and triage):
- decode, decode_report and validate raise nothing but TunedParamsError, with or without a key; describe never
  raises and its report is JSON-serialisable;
- they agree: decode succeeds <=> decode_report finds no problem <=> validate is empty <=> describe says valid;
- what decode accepts re-encodes to the same records, and what decode_report salvages can be encoded (the tuner's
  merge writes it back).
Each input is tried as is and with its total size, sha256 trailer and (signed) HMAC with KEY made right.

    python fuzz/fuzz_tunedparams.py -max_total_time=180 /tmp/fuzz-tunedparams fuzz/corpus/tunedparams
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct

from harness import fuzz, import_instrumented

KEY = b"fuzz-key"

tuned_params, binformat = import_instrumented("mace.cachefiles.tuned_params", "mace.cachefiles.binformat")
TOTAL_SIZE_AT = tuned_params.HEADER_SIZE - 8  # the header ends with total_size (u64)


def with_fixed_trailer(data: bytes) -> bytes | None:
    """``data`` with the header's total size, the sha256 trailer and (for a signed file) the HMAC made right."""
    if len(data) < tuned_params.HEADER_SIZE:
        return None
    signed = struct.unpack_from("<I", data, 8)[0] & binformat.FLAG_SIGNED
    trailer_start = len(data) - binformat.DIGEST_SIZE * (2 if signed else 1)
    if trailer_start < tuned_params.HEADER_SIZE:
        return None
    body = data[:TOTAL_SIZE_AT] + struct.pack("<Q", len(data)) + data[tuned_params.HEADER_SIZE : trailer_start]
    body += hashlib.sha256(body).digest()
    if signed:
        body += hmac.new(KEY, body, hashlib.sha256).digest()
    return body


def check(data: bytes, key: bytes | None) -> None:
    try:
        strict = tuned_params.decode(data, key)
    except tuned_params.TunedParamsError:
        strict = None
    try:
        salvaged, problems = tuned_params.decode_report(data, key)
    except tuned_params.TunedParamsError:
        salvaged, problems = None, []
    listed = tuned_params.validate(data, key)
    assert isinstance(listed, list) and all(isinstance(p, str) for p in listed)
    assert (not listed) == (strict is not None), "validate disagrees with decode"
    if salvaged is not None:
        tuned_params.encode(salvaged)  # must not raise
    if strict is not None:
        assert salvaged == strict and not problems, "decode_report disagrees with a successful decode"
        assert tuned_params.decode(tuned_params.encode(strict)) == strict, "decode(encode(decode(x))) != decode(x)"
    else:
        assert salvaged is None or problems, "decode failed but decode_report found no problem"
    if key is None:
        report = tuned_params.describe(data)
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
    fuzz(test_one_input, "tunedparams.dict")
