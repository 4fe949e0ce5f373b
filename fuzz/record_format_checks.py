"""The contract both record-file harnesses check (fuzz_cachefile.py, fuzz_tunedparams.py), written once.

On every input: decode, decode_report and validate raise nothing but the format's error, with or without a key;
describe never raises and its report is JSON-serialisable; all four agree (decode succeeds <=> decode_report finds no
problem <=> validate is empty <=> describe says valid, with equal records); what decode accepts re-encodes to the
same records and what decode_report salvages can be encoded (the merge on save writes it back). Each input is tried
as is and with its trailer (total size, sha256, HMAC with ``key``) made right, so mutations of the records are judged
by the record checks rather than all stopping at the whole-file checksum.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable
from typing import Any


def record_format_test(fmt: Any, error: type[Exception], header_size: int, binformat: Any,
                       key: bytes) -> Callable[[bytes], None]:
    """test_one_input for the format module ``fmt`` (encode/decode/decode_report/validate/describe)."""
    total_size_at = header_size - 8  # every header of the family ends with total_size (u64)

    def with_fixed_trailer(data: bytes) -> bytes | None:
        if len(data) < header_size:
            return None
        signed = struct.unpack_from("<I", data, 8)[0] & binformat.FLAG_SIGNED
        trailer_start = len(data) - binformat.DIGEST_SIZE * (2 if signed else 1)
        if trailer_start < header_size:
            return None
        body = data[:total_size_at] + struct.pack("<Q", len(data)) + data[header_size:trailer_start]
        body += hashlib.sha256(body).digest()
        if signed:
            body += hmac.new(key, body, hashlib.sha256).digest()
        return body

    def check(data: bytes, with_key: bytes | None) -> None:
        try:
            strict = fmt.decode(data, with_key)
        except error:
            strict = None
        try:
            salvaged, problems = fmt.decode_report(data, with_key)
        except error:
            salvaged, problems = None, []
        listed = fmt.validate(data, with_key)
        assert isinstance(listed, list) and all(isinstance(p, str) for p in listed)
        assert (not listed) == (strict is not None), "validate disagrees with decode"
        if salvaged is not None:
            fmt.encode(salvaged)  # must not raise
        if strict is not None:
            assert salvaged == strict and not problems, "decode_report disagrees with a successful decode"
            assert fmt.decode(fmt.encode(strict)) == strict, "decode(encode(decode(x))) != decode(x)"
        else:
            assert salvaged is None or problems, "decode failed but decode_report found no problem"
        if with_key is None:
            report = fmt.describe(data)
            json.dumps(report)
            assert report["valid"] == (strict is not None), "describe's verdict disagrees with decode"

    def test_one_input(data: bytes) -> None:
        for candidate in (data, with_fixed_trailer(data)):
            if candidate is None:
                continue
            check(candidate, None)
            if len(candidate) >= 12 and struct.unpack_from("<I", candidate, 8)[0] & binformat.FLAG_SIGNED:
                check(candidate, key)

    return test_one_input
