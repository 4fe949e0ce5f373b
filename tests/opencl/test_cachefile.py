"""The cache file format: round trips, byte layout, and that decode rejects every corruption with CacheFormatError."""

from __future__ import annotations

import contextlib
import dataclasses
import doctest
import hashlib
import hmac
import json
import struct
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mace.cachefiles.program_cache as cachefile
from mace.cachefiles.program_cache import (
    ENTRY_MIN_SIZE,
    FORMAT_VERSION,
    HEADER_SIZE,
    CacheEntry,
    CacheFile,
    CacheFormatError,
    DeviceFingerprint,
    decode,
    decode_report,
    describe,
    encode,
    normalize_build_options,
    program_key,
    source_sha256,
    validate,
)
from mace.errors import MaceError

HEADER = struct.Struct("<4sIIIIIQQQQQQQ")
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


def make_cache() -> CacheFile:
    entries = [
        CacheEntry.for_program(CONV, "-cl-mad-enable -DBLOCK=4", FP_CPU, b"\x7fELF" + bytes(range(37)), 1000.0),
        CacheEntry.for_program(POOL, "", FP_CPU, b"", 1001.5),  # empty blob: the format allows it
        CacheEntry.for_program(CONV, "-DBLOCK=8  -cl-fast-relaxed-math", FP_GPU, b"mali" * 40, 1002.25),
        CacheEntry.for_program("// ünïcödé\n" + POOL, '-DNAME="é"', FP_GPU, b"x" * 16, 1003.0),
    ]
    return CacheFile({FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU}, entries)


def header_of(data: bytes) -> dict[str, int]:
    names = ("magic", "version", "flags", "header_size", "fp_count", "entry_count", "fp_off", "fp_size", "entry_off",
             "entry_size", "blob_off", "blob_size", "total")  # fmt: skip
    return dict(zip(names, HEADER.unpack_from(data)))


def reseal(data: bytes | bytearray) -> bytes:
    """Make total size and sha256 trailer match again, so a mutation reaches the deeper checks."""
    out = bytearray(data)
    if len(out) >= HEADER_SIZE + 32:
        struct.pack_into("<Q", out, 72, len(out))
        out[-32:] = hashlib.sha256(out[:-32]).digest()
    return bytes(out)


def patch(data: bytes, offset: int, fmt: str, value: object) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def reject(data: bytes, key: bytes | None = None) -> CacheFormatError:
    with pytest.raises(CacheFormatError) as info:
        decode(data, key)
    assert str(info.value).startswith(f"byte offset {info.value.offset}: ")
    return info.value


DATA = encode(make_cache())
H = header_of(DATA)
ENTRY0 = H["entry_off"]


def entry_offset(i: int) -> int:
    pos = ENTRY0
    for _ in range(i):
        pos += struct.unpack_from("<I", DATA, pos)[0]
    return pos


# --- round trips and layout ------------------------------------------------------------------------------------------


def test_round_trip_several_fingerprints_and_entries() -> None:
    cache = make_cache()
    assert decode(DATA) == cache
    assert decode(DATA).entries_for(FP_GPU) == cache.entries[2:]
    assert encode(decode(DATA)) == DATA  # deterministic


def test_round_trip_empty() -> None:
    data = encode(CacheFile())
    assert len(data) == HEADER_SIZE + 32
    assert decode(data) == CacheFile()


def test_unreferenced_fingerprint_survives_round_trip() -> None:
    cache = CacheFile({FP_CPU.id(): FP_CPU}, [])
    assert decode(encode(cache)) == cache


def test_header_fields_byte_exact() -> None:
    assert H["magic"] == b"MCLP"
    assert H["version"] == FORMAT_VERSION == 0x00010000
    assert H["flags"] == 0
    assert H["header_size"] == HEADER_SIZE == 80
    assert (H["fp_count"], H["entry_count"]) == (2, 4)
    assert H["fp_off"] == 80
    assert H["entry_off"] == H["fp_off"] + H["fp_size"]
    assert (
        H["blob_off"] % 16 == 0
        and H["entry_off"] + H["entry_size"] <= H["blob_off"] < H["entry_off"] + H["entry_size"] + 16
    )
    assert H["total"] == len(DATA) == H["blob_off"] + H["blob_size"] + 32
    assert DATA[-32:] == hashlib.sha256(DATA[:-32]).digest()


def test_records_byte_exact() -> None:
    cache = make_cache()
    fp_id = struct.unpack_from("<I32s", DATA, H["fp_off"])[1]
    assert fp_id.hex() == FP_CPU.id()
    assert struct.unpack_from("<I", DATA, H["fp_off"] + 36) == (len(FP_CPU.platform_name),)
    pos = H["entry_off"]
    for entry in cache.entries:
        size, key, fid, src, blob_sha, blob_at, blob_len, created, last_used, n = struct.unpack_from(
            "<I32s32s32s32sQQddI", DATA, pos
        )
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
    assert FP_CPU.id() == "02839b91655632e7f26ea36ce92e7d4ba948da912be9958c0e9f273a1207a80f"
    assert program_key("__kernel void k() {}", "-DN=4", FP_CPU) == (
        "92114568833820a9efef22b54169e780b9c6281656c69a81eecbffbe39b778c2"
    )
    entry = CacheEntry.for_program("__kernel void k() {}", "-DN=4", FP_CPU, b"blob", 1700000000.0)
    data = encode(CacheFile({FP_CPU.id(): FP_CPU}, [entry]))
    assert hashlib.sha256(data).hexdigest() == "4de6f754ff5bf5de68819cd836224d56ee86da76bced4abd1bd5630b1df445ff"


def test_module_doctest() -> None:
    assert doctest.testmod(cachefile).failed == 0


# --- truncation, flips, bad header fields ----------------------------------------------------------------------------


def test_every_truncation_is_rejected_at_the_end_of_data() -> None:
    for n in range(len(DATA)):
        err = reject(DATA[:n])
        assert err.offset == n and "truncated" in err.reason, (n, err)


def test_trailing_data_is_rejected() -> None:
    err = reject(DATA + b"\0")
    assert err.offset == len(DATA) and "trailing data" in err.reason


def test_every_single_bit_flip_is_rejected() -> None:
    for offset in range(len(DATA)):
        for bit in (0, 7):
            reject(flip(DATA, offset, bit))


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (1, "bad magic"),
        (6, "unsupported format version 0x00000000"),
        (12, "header size 81"),
        (16, "fingerprint 2: record size field runs past"),  # fingerprint count 2 -> 3
        (29, "fingerprint section offset"),
        (50, "entry table of"),  # entry table size
        (72, "truncated"),  # total size
        (H["fp_off"] + 40, "differs from the id"),  # a fingerprint string
        (H["fp_off"] + 5, "differs from the id"),  # the stored fingerprint id
        (ENTRY0 + 4, "program key does not match"),
        (ENTRY0 + 36, "not in the fingerprint section"),
        (ENTRY0 + 68, "program key does not match"),  # source sha256
        (ENTRY0 + 100, "blob sha256 mismatch"),
        (ENTRY0 + 132, "aligned range inside the blob area"),  # blob offset
        (ENTRY0 + 141, "aligned range inside the blob area"),  # blob length
        (ENTRY0 + 150, "whole-file sha256 mismatch"),  # created: only the trailer covers times
        (ENTRY0 + 170, "program key does not match"),  # build options text
        (H["blob_off"] + 3, "blob sha256 mismatch"),
        (len(DATA) - 1, "whole-file sha256 mismatch"),
    ],
)
def test_bit_flip_reason(offset: int, reason: str) -> None:
    err = reject(flip(DATA, offset))
    assert reason in err.reason, err


def test_future_major_version_is_rejected_by_name() -> None:
    err = reject(patch(DATA, 4, "<I", 0x00020000))
    assert err.offset == 4 and "unsupported format version 0x00020000" in err.reason


def test_future_minor_version_and_optional_flags_are_readable() -> None:
    newer = reseal(patch(patch(DATA, 4, "<I", 0x00010007), 8, "<I", 0x00FF0000))
    assert decode(newer) == make_cache()


def extended(data: bytes, minor: int) -> bytes:
    """What a future 1.minor writer may emit: a longer header, longer records, gaps between sections."""
    h = header_of(data)

    def grow(start: int, count: int) -> bytes:
        out, pos = bytearray(), start
        for _ in range(count):
            size = struct.unpack_from("<I", data, pos)[0]
            out += struct.pack("<I", size + 8) + data[pos + 4 : pos + size] + b"future!!"
            pos += size
        return bytes(out)

    fps, table = grow(h["fp_off"], h["fp_count"]), bytearray(grow(h["entry_off"], h["entry_count"]))
    fp_off = 96 + 8
    entry_off = fp_off + len(fps) + 8
    blob_off = -(-(entry_off + len(table)) // 16) * 16 + 32
    pos = 0
    for _ in range(h["entry_count"]):
        struct.pack_into(
            "<Q", table, pos + 132, struct.unpack_from("<Q", table, pos + 132)[0] - h["blob_off"] + blob_off
        )
        pos += struct.unpack_from("<I", table, pos)[0]
    blobs = data[h["blob_off"] : h["blob_off"] + h["blob_size"]]
    total = blob_off + len(blobs) + 8 + 32
    header = HEADER.pack(b"MCLP", 0x00010000 | minor, 0, 96, h["fp_count"], h["entry_count"], fp_off, len(fps),
                         entry_off, len(table), blob_off, len(blobs), total) + bytes(16)  # fmt: skip
    body = header + bytes(8) + fps + bytes(8) + table
    body += bytes(blob_off - len(body)) + blobs + bytes(8)
    return body + hashlib.sha256(body).digest()


def test_newer_minor_version_may_extend_header_records_and_layout() -> None:
    assert decode(extended(DATA, minor=1)) == make_cache()
    assert "header size 96" in reject(extended(DATA, minor=0)).reason  # this minor version must be exact
    assert validate(extended(encode(CacheFile()), minor=3)) == []


def test_unknown_required_flag_is_rejected() -> None:
    err = reject(patch(DATA, 8, "<I", 0x2))
    assert err.offset == 8 and "unknown required flags" in err.reason


def test_wrong_magic() -> None:
    err = reject(b"\x7fELF" + DATA[4:])
    assert err.offset == 0 and "bad magic" in err.reason
    assert "bad magic" in reject(b"PK\x03\x04").reason


@pytest.mark.parametrize(("field_at", "fmt"), [(16, "<I"), (20, "<I"), (32, "<Q"), (48, "<Q"), (64, "<Q"), (24, "<Q")])
def test_huge_counts_and_sizes_fail_fast(field_at: int, fmt: str) -> None:
    value = 2**32 - 1 if fmt == "<I" else 2**64 - 1
    t0 = time.perf_counter()
    err = reject(reseal(patch(DATA, field_at, fmt, value)))
    assert time.perf_counter() - t0 < 0.05
    assert err.offset in (field_at, field_at - 8), err


def test_huge_string_length_and_record_size() -> None:
    fp_string_len = H["fp_off"] + 36
    err = reject(reseal(patch(DATA, fp_string_len, "<I", 2**32 - 1)))
    assert err.offset == fp_string_len and "exceeds" in err.reason
    err = reject(reseal(patch(DATA, entry_offset(1), "<I", 2**32 - 1)))
    assert err.offset == entry_offset(1) and "record size" in err.reason


def test_invalid_utf8_and_non_normalized_options() -> None:
    at = entry_offset(0) + ENTRY_MIN_SIZE
    err = reject(reseal(patch(DATA, at, "B", 0xFF)))
    assert err.offset == at and "UTF-8" in err.reason
    err = reject(reseal(patch(DATA, at + 13, "B", ord(" "))))  # "-cl-mad-enable -DBLOCK=4" -> two spaces
    assert "not normalized" in err.reason


def test_nan_time_is_rejected() -> None:
    err = reject(reseal(patch(DATA, entry_offset(2) + 156, "<d", float("nan"))))
    assert "last_used" in err.reason and "not finite" in err.reason


def test_non_bytes_input() -> None:
    with pytest.raises(CacheFormatError):
        decode("MCLP")  # type: ignore[arg-type]
    assert decode(bytearray(DATA)) == decode(memoryview(DATA)) == make_cache()


# --- lenient decode, validate, describe ------------------------------------------------------------------------------


def test_one_bad_blob_drops_only_its_entry() -> None:
    bad = flip(DATA, H["blob_off"] + 3)  # the first entry's blob
    cache, problems = decode_report(bad)
    assert cache.entries == make_cache().entries[1:]
    assert len(problems) == 2 and "entry 0: blob sha256 mismatch" in problems[0] and "whole-file" in problems[1]
    assert validate(bad) == problems
    assert validate(DATA) == []
    info = describe(bad)
    assert not info["valid"] and info["error"] is None and "problem" in info["entries"][0]


def test_lenient_decode_still_rejects_whole_file_problems() -> None:
    with pytest.raises(CacheFormatError, match="truncated"):
        decode_report(DATA[:-1])
    assert validate(DATA[:-1]) == [str(reject(DATA[:-1]))]


def test_bad_fingerprint_drops_its_entries_in_lenient_mode() -> None:
    cache, problems = decode_report(reseal(flip(DATA, H["fp_off"] + 40)))
    assert list(cache.fingerprints) == [FP_GPU.id()] and cache.entries == make_cache().entries[2:]
    assert len(problems) == 3  # the fingerprint and its two entries


def test_describe_valid_file() -> None:
    info = describe(DATA)
    json.dumps(info)
    assert info["valid"] and info["header"]["magic"] == "b'MCLP'" and info["header"]["version_text"] == "1.0"
    assert [f["device_name"] for f in info["fingerprints"]] == [FP_CPU.device_name, FP_GPU.device_name]
    assert [e["blob_length"] for e in info["entries"]] == [len(e.blob) for e in make_cache().entries]
    assert info["hex_preview"][0].startswith("00000000  4d 43 4c 50") and len(info["hex_preview"]) == 4


def test_describe_invalid_files() -> None:
    info = describe(DATA[:50])
    assert not info["valid"] and "truncated" in info["error"] and "blob_offset" not in info["header"]
    assert info["header"]["entry_count"] == 4
    assert describe(b"")["error"] is not None and describe(b"")["hex_preview"] == []
    assert "must be bytes" in describe("x")["error"]  # type: ignore[arg-type]


# --- identities and merge ---------------------------------------------------------------------------------------------


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


def test_fingerprint_id_depends_on_every_field() -> None:
    ids = {FP_CPU.id()}
    for f in dataclasses.fields(DeviceFingerprint):
        value = getattr(FP_CPU, f.name)
        changed = not value if isinstance(value, bool) else value + 1 if isinstance(value, int) else value + "x"
        ids.add(dataclasses.replace(FP_CPU, **{f.name: changed}).id())
    assert len(ids) == 1 + len(dataclasses.fields(DeviceFingerprint))
    # field boundaries are length-prefixed: moving a character between fields changes the id
    assert (
        dataclasses.replace(FP_CPU, platform_name="ab", platform_vendor="c").id()
        != dataclasses.replace(FP_CPU, platform_name="a", platform_vendor="bc").id()
    )


def test_merge_semantics() -> None:
    cache = make_cache()
    e0, e1, e2, _ = cache.entries
    old = CacheFile({FP_CPU.id(): FP_CPU}, [dataclasses.replace(e0, blob=b"old", last_used=5.0), e1])
    new = CacheFile(
        {FP_GPU.id(): FP_GPU, FP_CPU.id(): FP_CPU}, [dataclasses.replace(e0, blob=b"new", last_used=9.0), e2]
    )
    for merged in (old.merged(new), new.merged(old)):
        assert {(e.program_key, e.blob) for e in merged.entries} == {
            (e0.program_key, b"new"), (e1.program_key, e1.blob), (e2.program_key, e2.blob),
        }  # fmt: skip
        assert set(merged.fingerprints) == {FP_CPU.id(), FP_GPU.id()}
    assert [e.program_key for e in old.merged(new).entries] == [e0.program_key, e1.program_key, e2.program_key]
    # tie on last_used: self wins; the result does not alias the inputs
    tie = old.merged(CacheFile(old.fingerprints, [dataclasses.replace(old.entries[0], blob=b"other")]))
    assert tie.entries[0].blob == b"old"
    tie.entries[0].last_used = 99.0
    assert old.entries[0].last_used == 5.0
    # fingerprints no entry uses are dropped
    only_gpu = CacheFile({FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU}, [e2]).merged(CacheFile())
    assert list(only_gpu.fingerprints) == [FP_GPU.id()]
    assert decode(encode(old.merged(new))) == old.merged(new)


def test_encode_rejects_inconsistent_records() -> None:
    cache = make_cache()
    e = cache.entries[0]
    bad = [
        CacheFile({"0" * 64: FP_CPU}, []),
        CacheFile({}, [e]),
        CacheFile(cache.fingerprints, [dataclasses.replace(e, build_options=" -DX")]),
        CacheFile(cache.fingerprints, [dataclasses.replace(e, source_sha256="1" * 64)]),
        CacheFile(cache.fingerprints, [dataclasses.replace(e, program_key=e.program_key.upper())]),
        CacheFile(cache.fingerprints, [e, dataclasses.replace(e, blob=b"dup")]),
        CacheFile(cache.fingerprints, [dataclasses.replace(e, created=float("inf"))]),
        CacheFile(cache.fingerprints, [dataclasses.replace(e, blob="text")]),  # type: ignore[arg-type]
        CacheFile({"0" * 64: dataclasses.replace(FP_CPU, address_bits=-1)}, []),  # id() itself raises
        CacheFile({"0" * 64: dataclasses.replace(FP_CPU, device_name="\ud800")}, []),
    ]
    for cache_file in bad:
        with pytest.raises(CacheFormatError) as info:
            encode(cache_file)
        assert info.value.offset is None and isinstance(info.value, MaceError)


# --- signing ----------------------------------------------------------------------------------------------------------

KEY = b"k" * 32


def test_signed_round_trip() -> None:
    signed = encode(make_cache(), key=KEY)
    assert header_of(signed)["flags"] == 1 and len(signed) == len(DATA) + 32
    assert signed[-32:] == hmac.new(KEY, signed[:-32], hashlib.sha256).digest()
    assert signed[-64:-32] == hashlib.sha256(signed[:-64]).digest()
    assert decode(signed, key=KEY) == decode(signed) == make_cache()  # readable without the key, unchecked


def test_signature_rejections() -> None:
    signed = encode(make_cache(), key=KEY)
    assert "signature mismatch" in reject(signed, key=b"other key").reason
    err = reject(flip(signed, header_of(signed)["blob_off"]), key=KEY)
    assert "signature mismatch" in err.reason  # authenticated before anything is parsed
    assert "not signed" in reject(DATA, key=KEY).reason
    stripped = bytearray(signed[:-32])  # an attacker drops the MAC and clears the flag
    struct.pack_into("<I", stripped, 8, 0)
    struct.pack_into("<Q", stripped, 72, len(stripped))
    stripped = bytearray(reseal(stripped))
    assert decode(bytes(stripped)) == make_cache()
    assert "not signed" in reject(bytes(stripped), key=KEY).reason
    with pytest.raises(CacheFormatError, match="non-empty"):
        encode(make_cache(), key=b"")


# --- fuzzing ----------------------------------------------------------------------------------------------------------

SMALL = encode(
    CacheFile(
        {FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU},
        [
            CacheEntry.for_program(CONV, "-DA", FP_CPU, b"abc" * 7, 1.0),
            CacheEntry.for_program(POOL, "", FP_GPU, b"", 2.0),
        ],
    )
)
FUZZ = settings(max_examples=1000, deadline=timedelta(milliseconds=250), suppress_health_check=[HealthCheck.too_slow])


def check_only_format_errors(data: bytes) -> None:
    try:
        decode(data)
        ok = True
    except CacheFormatError:
        ok = False
    assert (validate(data) == []) == ok
    with contextlib.suppress(CacheFormatError):
        decode_report(data)
    info = describe(data)
    json.dumps(info)
    assert info["valid"] == ok


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(SMALL) - 1), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, len(SMALL) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(SMALL)), st.integers(0, 255)),
    st.tuples(st.just("u32"), st.integers(0, len(SMALL) - 4), st.integers(0, 2**32 - 1)),
)


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for op, at, arg in ops:
        at = min(at, len(out))
        if op == "flip" and at < len(out):
            out[at] ^= 1 << arg
        elif op == "truncate":
            del out[at:]
        elif op == "insert":
            out[at:at] = bytes([arg])
        elif op == "u32" and at + 4 <= len(out):
            struct.pack_into("<I", out, at, arg)
    return bytes(out)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    check_only_format_errors(data)
    check_only_format_errors(b"MCLP" + data)
    check_only_format_errors(reseal(b"MCLP\x00\x00\x01\x00" + data))


@FUZZ
@given(st.lists(mutation, min_size=1, max_size=4), st.booleans())
def test_fuzz_mutations(ops: list[tuple[str, int, int]], resealed: bool) -> None:
    data = mutate(SMALL, ops)
    check_only_format_errors(reseal(data) if resealed else data)


def test_entries_sharing_one_blob_are_rejected() -> None:
    """Found in review: entries all pointing at one large blob made decode copy and hash it once per entry (a 1 MB
    file reached 525 MB of memory). Blob bytes read are now bounded by the blob area."""
    import hashlib as _hashlib
    import struct as _struct

    from mace.cachefiles.program_cache import _ENTRY_FIXED

    fp = DeviceFingerprint("p", "v", "1", "d", "v", "1", "1", 64, True, "0.1.0")
    big = bytes(4096)
    entries = [CacheEntry.for_program("k", f"-DN={i}", fp, b"", 1.0) for i in range(3)]
    entries[0].blob = big
    data = bytearray(encode(CacheFile({fp.id(): fp}, entries)))
    header = _struct.unpack_from("<4sIIIIIQQQQQQQ", data)
    pos, blob_offset = header[8], header[10]
    for _ in range(3):
        fields = list(_ENTRY_FIXED.unpack_from(data, pos))
        fields[4], fields[5], fields[6] = _hashlib.sha256(big).digest(), blob_offset, len(big)
        _struct.pack_into(_ENTRY_FIXED.format, data, pos, *fields)
        pos += fields[0]
    body = bytes(data[:-32])
    with pytest.raises(CacheFormatError, match="blobs overlap"):
        decode(body + _hashlib.sha256(body).digest())
