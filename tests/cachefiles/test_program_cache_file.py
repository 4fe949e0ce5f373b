"""What only the compiled-program cache has: program keys and build options, the entry records and the blob area
(16-byte aligned, bounded), last_used. The rules it shares with every record file are in test_record_formats.py."""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import pytest
from byte_edits import flip, patch
from cachefile_samples import CONV, FP_CPU, FP_GPU
from record_formats import PROGRAM_CACHE as FMT

from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.cachefiles.program_cache import (
    ENTRY_MIN_SIZE,
    CacheEntry,
    CacheFile,
    CacheFormatError,
    decode,
    encode,
    normalize_build_options,
    program_key,
    source_sha256,
)
from mace.errors import MaceError

ENTRY = struct.Struct("<I32s32s32s32sQQddI")  # docs/cache-format.md, "Entry record"
DATA, H, reject, reseal, entry_offset = FMT.data, FMT.header, FMT.reject, FMT.reseal, FMT.entry_offset
ENTRY0 = H["entry_off"]


# --- round trips and layout ------------------------------------------------------------------------------------------


def test_entries_for_a_device() -> None:
    assert decode(DATA).entries_for(FP_GPU) == FMT.records().entries[2:]


def test_blob_area_is_aligned_after_the_entry_table() -> None:
    assert ENTRY_MIN_SIZE == ENTRY.size == 168
    assert (
        H["blob_off"] % 16 == 0
        and H["entry_off"] + H["entry_size"] <= H["blob_off"] < H["entry_off"] + H["entry_size"] + 16
    )
    assert H["total"] == H["blob_off"] + H["blob_size"] + 32


def test_records_byte_exact() -> None:
    pos = H["entry_off"]
    for entry in FMT.records().entries:
        size, key, fid, src, blob_sha, blob_at, blob_len, created, last_used, n = ENTRY.unpack_from(DATA, pos)
        assert (key.hex(), fid.hex(), src.hex(), created, last_used) == (
            entry.program_key, entry.fingerprint_id, entry.source_sha256, entry.created, entry.last_used,
        )  # fmt: skip
        assert DATA[pos + ENTRY_MIN_SIZE : pos + size].decode() == entry.build_options and n == size - ENTRY_MIN_SIZE
        assert blob_at % 16 == 0 and DATA[blob_at : blob_at + blob_len] == entry.blob
        assert blob_sha == hashlib.sha256(entry.blob).digest()
        pos += size
    assert pos == H["entry_off"] + H["entry_size"]


def test_golden_identities_and_bytes() -> None:
    # Changing any of these invalidates every cache file in the field: bump the format version when you do.
    assert program_key("__kernel void k() {}", "-DN=4", FP_CPU) == (
        "92114568833820a9efef22b54169e780b9c6281656c69a81eecbffbe39b778c2"
    )
    entry = CacheEntry.for_program("__kernel void k() {}", "-DN=4", FP_CPU, b"blob", 1700000000.0)
    data = encode(CacheFile({FP_CPU.id(): FP_CPU}, [entry]))
    assert hashlib.sha256(data).hexdigest() == "4de6f754ff5bf5de68819cd836224d56ee86da76bced4abd1bd5630b1df445ff"


# --- entry fields: flips and values a decoder must refuse ------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (ENTRY0 + 4, "program key does not match"),
        (ENTRY0 + 36, "not in the fingerprint section"),
        (ENTRY0 + 68, "program key does not match"),  # source sha256
        (ENTRY0 + 100, "blob sha256 mismatch"),
        (ENTRY0 + 132, "aligned range inside the blob area"),  # blob offset
        (ENTRY0 + 141, "aligned range inside the blob area"),  # blob length
        (ENTRY0 + 150, "whole-file sha256 mismatch"),  # created: only the trailer covers times
        (ENTRY0 + 170, "program key does not match"),  # build options text
        (H["blob_off"] + 3, "blob sha256 mismatch"),
    ],
)
def test_entry_bit_flip_reason(offset: int, reason: str) -> None:
    err = reject(flip(DATA, offset))
    assert reason in err.reason, err


def test_invalid_utf8_and_non_normalized_options() -> None:
    at = entry_offset(0) + ENTRY_MIN_SIZE
    err = reject(reseal(patch(DATA, at, "B", 0xFF)))
    assert err.offset == at and "UTF-8" in err.reason
    err = reject(reseal(patch(DATA, at + 13, "B", ord(" "))))  # "-cl-mad-enable -DBLOCK=4" -> two spaces
    assert "not normalized" in err.reason


def test_nan_time_is_rejected() -> None:
    err = reject(reseal(patch(DATA, entry_offset(2) + 156, "<d", float("nan"))))
    assert "last_used" in err.reason and "not finite" in err.reason


def test_entries_sharing_one_blob_are_rejected() -> None:
    """Found in review: entries all pointing at one large blob made decode copy and hash it once per entry (a 1 MB
    file reached 525 MB of memory). Blob bytes read are now bounded by the blob area."""
    fp = DeviceFingerprint("p", "v", "1", "d", "v", "1", "1", 64, True, "0.1.0")
    big = bytes(4096)
    entries = [CacheEntry.for_program("k", f"-DN={i}", fp, b"", 1.0) for i in range(3)]
    entries[0].blob = big
    data = bytearray(encode(CacheFile({fp.id(): fp}, entries)))
    h = FMT.header_of(bytes(data))
    pos = h["entry_off"]
    for _ in range(3):
        fields = list(ENTRY.unpack_from(data, pos))
        fields[4], fields[5], fields[6] = hashlib.sha256(big).digest(), h["blob_off"], len(big)
        ENTRY.pack_into(data, pos, *fields)
        pos += fields[0]
    with pytest.raises(CacheFormatError, match="blobs overlap"):
        decode(reseal(data))


# --- lenient decode, describe ----------------------------------------------------------------------------------------


def test_describe_entries() -> None:
    info = FMT.module.describe(DATA)
    assert [e["blob_length"] for e in info["entries"]] == [len(e.blob) for e in FMT.records().entries]


# --- identities and encode -------------------------------------------------------------------------------------------


def test_normalize_build_options() -> None:
    assert normalize_build_options("  -DA=1 \t\n -cl-mad-enable  ") == "-DA=1 -cl-mad-enable"
    assert normalize_build_options("-DB -DA") == "-DB -DA"  # order is meaningful (later -D wins)


def test_program_key_inputs() -> None:
    base = program_key(CONV, "-DA -DB", FP_CPU)
    assert program_key(CONV, "  -DA\t -DB ", FP_CPU) == base
    assert program_key(CONV + " ", "-DA -DB", FP_CPU) != base
    assert program_key(CONV, "-DB -DA", FP_CPU) != base
    assert program_key(CONV, "-DA -DB", FP_GPU) != base
    assert program_key(CONV, "-DA-DB", FP_CPU) != base
    assert len(base) == 64 and source_sha256(CONV) == hashlib.sha256(CONV.encode()).hexdigest()


def test_encode_rejects_inconsistent_program_entries() -> None:
    cache = FMT.records()
    e = cache.entries[0]
    bad = [
        CacheFile(cache.fingerprints, [dataclasses.replace(e, build_options=" -DX")]),
        CacheFile(cache.fingerprints, [dataclasses.replace(e, source_sha256="1" * 64)]),
        CacheFile(cache.fingerprints, [dataclasses.replace(e, blob="text")]),  # type: ignore[arg-type]
    ]
    for cache_file in bad:
        with pytest.raises(CacheFormatError) as info:
            encode(cache_file)
        assert info.value.offset is None and isinstance(info.value, MaceError)
