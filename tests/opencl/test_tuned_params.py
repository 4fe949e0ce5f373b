"""The tuned-parameters file format: round trips, byte layout, and that decode rejects every corruption with
TunedParamsError and nothing else."""

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

import mace.cachefiles.tuned_params as tp
from mace.cachefiles.program_cache import DeviceFingerprint
from mace.cachefiles.tuned_params import (
    ENTRY_FIXED_SIZE,
    ENTRY_MIN_SIZE,
    FORMAT_VERSION,
    HEADER_SIZE,
    TunedEntry,
    TunedParams,
    TunedParamsError,
    decode,
    decode_report,
    describe,
    encode,
    tuning_key,
    validate,
)
from mace.errors import MaceError

HEADER = struct.Struct("<4sIIIIIQQQQQ")
ENTRY = struct.Struct("<I32s32s32sdd3Q3IBB")
FP_CPU = DeviceFingerprint(
    "Portable Computing Language", "The pocl project", "OpenCL 3.0 PoCL 5.0", "cpu-haswell-AMD EPYC", "AuthenticAMD",
    "OpenCL 3.0 PoCL HSTR", "5.0", 64, True, "0.1.0",
)  # fmt: skip
FP_GPU = DeviceFingerprint(
    "ARM Platform", "ARM", "OpenCL 2.1 v1.r40p0", "Mali-G710 r0p0", "ARM", "OpenCL 2.1 v1.r40p0", "2.1", 64, True,
    "0.1.0",
)  # fmt: skip
CONV = "#define KERNEL_NAME conv_0\n#define K 3\n__kernel void KERNEL_NAME(__global float *x) {}"


def make_params() -> TunedParams:
    entries = [
        TunedEntry.for_launch("conv_0", CONV, (64, 56, 56), FP_CPU, (4, 8, 8), 812.5, 1000.0),
        TunedEntry.for_launch("add_0", "add", (4096,), FP_CPU, None, 3.25, 1001.0),  # the driver's choice won
        TunedEntry.for_launch("conv_0", CONV, (64, 56, 56), FP_GPU, (1, 8, 32), 90.0, 1002.0, variant=(2, -1)),
        TunedEntry.for_launch("pool_ü", "pool", (7, 2**40), FP_GPU, (7, 1), 0.0, 1003.5, variant=(2**31 - 1,)),
    ]
    return TunedParams({FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU}, entries)


def header_of(data: bytes) -> dict[str, int]:
    names = ("magic", "version", "flags", "header_size", "fp_count", "entry_count", "fp_off", "fp_size", "entry_off",
             "entry_size", "total")  # fmt: skip
    return dict(zip(names, HEADER.unpack_from(data)))


def reseal(data: bytes | bytearray) -> bytes:
    """Make total size and sha256 trailer match again, so a mutation reaches the deeper checks."""
    out = bytearray(data)
    if len(out) >= HEADER_SIZE + 32:
        struct.pack_into("<Q", out, 56, len(out))
        out[-32:] = hashlib.sha256(out[:-32]).digest()
    return bytes(out)


def rehash(data: bytes, start: int) -> bytes:
    """Recompute the entry sha256 of the record at ``start`` (and the trailer): what a forger would do."""
    out = bytearray(data)
    size = struct.unpack_from("<I", out, start)[0]
    record = bytes(out[start : start + size])
    out[start + 4 : start + 36] = hashlib.sha256(b"mace-tuned-entry\x00" + record[:4] + record[36:]).digest()
    return reseal(out)


def patch(data: bytes, offset: int, fmt: str, *values: object) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def reject(data: bytes, key: bytes | None = None) -> TunedParamsError:
    with pytest.raises(TunedParamsError) as info:
        decode(data, key)
    assert str(info.value).startswith(f"byte offset {info.value.offset}: ")
    assert isinstance(info.value, MaceError)
    return info.value


DATA = encode(make_params())
H = header_of(DATA)


def entry_offset(i: int, data: bytes = DATA) -> int:
    pos = header_of(data)["entry_off"]
    for _ in range(i):
        pos += struct.unpack_from("<I", data, pos)[0]
    return pos


E0, E1, E2, E3 = (entry_offset(i) for i in range(4))


# --- round trips and layout ------------------------------------------------------------------------------------------


def test_round_trip_several_devices_dims_and_variants() -> None:
    params = make_params()
    assert decode(DATA) == params
    assert encode(decode(DATA)) == DATA  # deterministic
    assert list(decode(DATA).entries_for(FP_GPU).values()) == params.entries[2:]
    assert decode(DATA).lookup(FP_CPU, params.entries[1].tuning_key).local_size is None
    assert decode(DATA).lookup(FP_GPU.id(), params.entries[1].tuning_key) is None  # other device's key


def test_round_trip_empty_and_unreferenced_fingerprint() -> None:
    data = encode(TunedParams())
    assert len(data) == HEADER_SIZE + 32 and decode(data) == TunedParams()
    only_fp = TunedParams({FP_CPU.id(): FP_CPU}, [])
    assert decode(encode(only_fp)) == only_fp


def test_header_fields_byte_exact() -> None:
    assert H["magic"] == b"MCTP"
    assert H["version"] == FORMAT_VERSION == 0x00010000
    assert H["flags"] == 0
    assert H["header_size"] == HEADER_SIZE == 64
    assert (H["fp_count"], H["entry_count"]) == (2, 4)
    assert H["fp_off"] == 64 and H["entry_off"] == H["fp_off"] + H["fp_size"]
    assert H["total"] == len(DATA) == H["entry_off"] + H["entry_size"] + 32
    assert DATA[-32:] == hashlib.sha256(DATA[:-32]).digest()


def test_fingerprint_records_are_those_of_the_program_cache() -> None:
    from mace.cachefiles import program_cache

    program_cache = program_cache.encode(program_cache.CacheFile({FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU}, []))
    pc = struct.unpack_from("<QQ", program_cache, 24)  # fingerprint offset, size
    assert program_cache[pc[0] : pc[0] + pc[1]] == DATA[H["fp_off"] : H["fp_off"] + H["fp_size"]]


def test_entry_records_byte_exact() -> None:
    pos = H["entry_off"]
    for e in make_params().entries:
        size, sha, key, fid, time_us, created, *rest = ENTRY.unpack_from(DATA, pos)
        global_raw, local_raw, (dims, n) = rest[:3], rest[3:6], rest[6:]
        assert (key.hex(), fid.hex(), time_us, created) == (e.tuning_key, e.fingerprint_id, e.time_us, e.created)
        assert dims == len(e.global_size) and tuple(global_raw) == e.global_size + (0,) * (3 - dims)
        assert tuple(local_raw) == (e.local_size or (0,) * dims) + (0,) * (3 - dims)
        assert n == len(e.variant) and struct.unpack_from(f"<{n}i", DATA, pos + 154) == e.variant
        name_at = pos + ENTRY_FIXED_SIZE + 4 * n
        assert struct.unpack_from("<I", DATA, name_at)[0] == len(e.kernel_name.encode())
        assert DATA[name_at + 4 : pos + size].decode() == e.kernel_name
        record = DATA[pos : pos + size]
        assert sha == hashlib.sha256(b"mace-tuned-entry\x00" + record[:4] + record[36:]).digest()
        pos += size
    assert pos == H["entry_off"] + H["entry_size"]
    assert ENTRY_FIXED_SIZE == 154 and ENTRY_MIN_SIZE == 158


def test_golden_tuning_key_and_bytes() -> None:
    # Changing any of these invalidates every tuned-parameters file in the field: bump the major version.
    expected = hashlib.sha256(
        b"mace-tuning-key\x00" + struct.pack("<I", 6) + b"conv_0" + struct.pack("<I", 4) + b"spec"
        + struct.pack("<B3Q", 3, 64, 56, 56)
    ).hexdigest()  # fmt: skip
    assert tuning_key("conv_0", "spec", (64, 56, 56)) == expected
    assert expected == "94fe96877eb0103169e50e2263178628ae26f32b68bf0045bcc1b137c8783807"
    entry = TunedEntry.for_launch("conv_0", "spec", (64, 56, 56), FP_CPU, (4, 8, 8), 12.5, 1700000000.0, (1,))
    data = encode(TunedParams({FP_CPU.id(): FP_CPU}, [entry]))
    assert hashlib.sha256(data).hexdigest() == "2f481a925d8d31f4f57d37058b708de24cae52d12954285f63d805eb079fd00d"


def test_tuning_key_inputs() -> None:
    base = tuning_key("conv_0", CONV, (64, 56, 56))
    assert len(base) == 64
    others = {
        tuning_key("conv_1", CONV, (64, 56, 56)),
        tuning_key("conv_0", CONV + " ", (64, 56, 56)),
        tuning_key("conv_0", CONV, (64, 56, 57)),
        tuning_key("conv_0", CONV, (64, 56)),
        tuning_key("conv_0", CONV, (64, 56, 56, 1)[:3][::-1]),
        tuning_key("conv_", "0" + CONV, (64, 56, 56)),  # field boundaries are length-prefixed
    }
    assert base not in others and len(others) == 6
    assert tuning_key("conv_0", CONV, [64, 56, 56]) == base  # any sequence of ints
    for bad in [(), (1, 2, 3, 4), (0,), (-1, 2), (2**64,), (1.5,), ("8",), (True,), None, b"\x01", "8"]:
        with pytest.raises(TunedParamsError) as info:
            tuning_key("k", "s", bad)  # type: ignore[arg-type]
        assert info.value.offset is None
    with pytest.raises(TunedParamsError):
        tuning_key("k", b"bytes", (1,))  # type: ignore[arg-type]


def test_module_doctest() -> None:
    assert doctest.testmod(tp).failed == 0


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
        for bit in (0, 3, 7):
            reject(flip(DATA, offset, bit))


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (1, "bad magic"),
        (6, "unsupported format version 0x00000000"),
        (12, "header size 65"),
        (16, "fingerprint 2: record size field runs past"),  # fingerprint count 2 -> 3
        (29, "fingerprint section offset"),
        (50, "entry table of"),  # entry table size
        (56, "truncated"),  # total size
        (H["fp_off"] + 40, "differs from the id"),  # a fingerprint string
        (H["fp_off"] + 5, "differs from the id"),  # the stored fingerprint id
        (E0 + 4, "entry sha256 mismatch"),  # the hash itself
        (E0 + 36, "entry sha256 mismatch"),  # tuning key
        (E0 + 68, "entry sha256 mismatch"),  # fingerprint id
        (E0 + 100, "entry sha256 mismatch"),  # time
        (E0 + 108, "entry sha256 mismatch"),  # created: covered too, unlike in the program cache
        (E0 + 116, "entry sha256 mismatch"),  # global size
        (E0 + 140, "entry sha256 mismatch"),  # local size
        (E0 + 152, "entry sha256 mismatch"),  # work_dim
        (E0 + 153, "entry sha256 mismatch"),  # variant count
        (E0 + 160, "entry sha256 mismatch"),  # kernel name text
        (E0, "entry 1: record size"),  # entry 0 one byte shorter: entry 1's framing breaks (whole-file fatal)
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
    assert decode(newer) == make_params()


def extended(data: bytes, minor: int) -> bytes:
    """What a future 1.minor writer may emit: a longer header, longer records (hashed whole), gaps between
    sections and before the trailer."""
    h = header_of(data)

    def grow(start: int, count: int, entries: bool) -> bytes:
        out, pos = bytearray(), start
        for _ in range(count):
            size = struct.unpack_from("<I", data, pos)[0]
            record = bytearray(struct.pack("<I", size + 8) + data[pos + 4 : pos + size] + b"future!!")
            if entries:
                record[4:36] = hashlib.sha256(b"mace-tuned-entry\x00" + record[:4] + record[36:]).digest()
            out += record
            pos += size
        return bytes(out)

    fps, table = grow(h["fp_off"], h["fp_count"], False), grow(h["entry_off"], h["entry_count"], True)
    fp_off = 80 + 8
    entry_off = fp_off + len(fps) + 8
    total = entry_off + len(table) + 8 + 32
    header = HEADER.pack(b"MCTP", 0x00010000 | minor, 0, 80, h["fp_count"], h["entry_count"], fp_off, len(fps),
                         entry_off, len(table), total) + bytes(16)  # fmt: skip
    body = header + bytes(8) + fps + bytes(8) + table + bytes(8)
    return body + hashlib.sha256(body).digest()


def test_newer_minor_version_may_extend_header_records_and_layout() -> None:
    assert decode(extended(DATA, minor=1)) == make_params()
    assert "header size 80" in reject(extended(DATA, minor=0)).reason  # this minor version must be exact
    assert validate(extended(encode(TunedParams()), minor=3)) == []


def test_unknown_required_flag_is_rejected() -> None:
    err = reject(patch(DATA, 8, "<I", 0x2))
    assert err.offset == 8 and "unknown required flags" in err.reason


def test_wrong_magic() -> None:
    err = reject(b"MCLP" + DATA[4:])  # a compiled-program cache is not a tuned-parameters file
    assert err.offset == 0 and "bad magic" in err.reason and "tuned-parameters" in err.reason
    assert "bad magic" in reject(b"PK\x03\x04").reason


@pytest.mark.parametrize(("field_at", "fmt"), [(16, "<I"), (20, "<I"), (24, "<Q"), (32, "<Q"), (40, "<Q"), (48, "<Q")])
def test_huge_counts_and_sizes_fail_fast(field_at: int, fmt: str) -> None:
    value = 2**32 - 1 if fmt == "<I" else 2**64 - 1
    t0 = time.perf_counter()
    err = reject(reseal(patch(DATA, field_at, fmt, value)))
    assert time.perf_counter() - t0 < 0.05
    assert err.offset in (field_at, field_at - 8), err


def test_counts_are_bounded_by_section_size() -> None:
    # entry count 4 -> 100 in a table that holds 4 records: rejected before any loop, at the count field
    err = reject(reseal(patch(DATA, 20, "<I", 100)))
    assert err.offset == 20 and "cannot fit" in err.reason


def test_huge_string_length_and_record_size() -> None:
    fp_string_len = H["fp_off"] + 36
    err = reject(reseal(patch(DATA, fp_string_len, "<I", 2**32 - 1)))
    assert err.offset == fp_string_len and "exceeds" in err.reason
    err = reject(reseal(patch(DATA, E1, "<I", 2**32 - 1)))
    assert err.offset == E1 and "record size" in err.reason
    name_len_at = E0 + ENTRY_FIXED_SIZE  # entry 0 has no variants
    err = reject(rehash(patch(DATA, name_len_at, "<I", 2**32 - 1), E0))
    assert err.offset == name_len_at and "exceeds" in err.reason
    err = reject(rehash(patch(DATA, E0 + 153, "B", 255), E0))  # 255 variants claimed, the record is too short
    assert "variant" in err.reason


# --- values a forger could hash correctly: each is still rejected, at its field --------------------------------------


@pytest.mark.parametrize(
    ("entry", "at", "fmt", "value", "reported_at", "reason"),
    [
        (0, 152, "B", 0, 152, "work_dim 0"),
        (0, 152, "B", 4, 152, "work_dim 4"),
        (0, 116, "<Q", 0, 116, "global size"),  # a zero global dim
        (1, 124, "<Q", 1, 116, "global size"),  # entry 1 is 1-D: a dim beyond work_dim is not zero
        (0, 140, "<I", 0, 140, "local size"),  # partly zero local size
        (1, 144, "<I", 1, 140, "local size"),  # (0, 1, 0) for a 1-D launch
        (0, 100, "<d", float("nan"), 100, "time_us nan is not finite"),
        (0, 100, "<d", -1.0, 100, "time_us -1.0 is negative"),
        (0, 108, "<d", float("inf"), 108, "created inf is not finite"),
        (0, 68, "32s", b"\x01" * 32, 68, "not in the fingerprint section"),
        (0, ENTRY_FIXED_SIZE + 4, "B", 0xFF, ENTRY_FIXED_SIZE + 4, "not valid UTF-8"),
    ],
)
def test_hashed_but_invalid_entry_fields(
    entry: int, at: int, fmt: str, value: object, reported_at: int, reason: str
) -> None:
    start = (E0, E1)[entry]
    err = reject(rehash(patch(DATA, start + at, fmt, value), start))
    assert reason in err.reason and err.offset == start + reported_at, err


def test_duplicate_entry_is_rejected() -> None:
    params = make_params()
    twin = TunedEntry.for_launch("conv_0", CONV, (64, 56, 56), FP_CPU, (1, 1, 1), 1.0, 5.0)
    data = bytearray(encode(TunedParams(params.fingerprints, [params.entries[0], params.entries[1]])))
    # forge: give entry 1 entry 0's key
    e1 = entry_offset(1, bytes(data))
    data[e1 + 36 : e1 + 68] = bytes.fromhex(twin.tuning_key)
    err = reject(rehash(bytes(data), e1))
    assert "duplicate" in err.reason and err.offset == e1 + 36


def test_non_bytes_input() -> None:
    with pytest.raises(TunedParamsError):
        decode("MCTP")  # type: ignore[arg-type]
    assert decode(bytearray(DATA)) == decode(memoryview(DATA)) == make_params()


# --- lenient decode, validate, describe ------------------------------------------------------------------------------


def test_one_bad_entry_drops_only_itself() -> None:
    bad = flip(DATA, E1 + 100)  # entry 1's time
    params, problems = decode_report(bad)
    assert params.entries == [e for i, e in enumerate(make_params().entries) if i != 1]
    assert len(problems) == 2 and "entry 1: entry sha256 mismatch" in problems[0] and "whole-file" in problems[1]
    assert validate(bad) == problems and validate(DATA) == []
    info = describe(bad)
    assert not info["valid"] and info["error"] is None and "problem" in info["entries"][1]


def test_lenient_decode_still_rejects_whole_file_problems() -> None:
    with pytest.raises(TunedParamsError, match="truncated"):
        decode_report(DATA[:-1])
    assert validate(DATA[:-1]) == [str(reject(DATA[:-1]))]


def test_bad_fingerprint_drops_its_entries_in_lenient_mode() -> None:
    params, problems = decode_report(reseal(flip(DATA, H["fp_off"] + 40)))
    assert list(params.fingerprints) == [FP_GPU.id()] and params.entries == make_params().entries[2:]
    assert len(problems) == 3  # the fingerprint and its two entries


def test_describe_valid_file() -> None:
    info = describe(DATA)
    json.dumps(info)
    assert info["valid"] and info["header"]["magic"] == "b'MCTP'" and info["header"]["version_text"] == "1.0"
    assert [f["device_name"] for f in info["fingerprints"]] == [FP_CPU.device_name, FP_GPU.device_name]
    rows = info["entries"]
    assert [r["kernel_name"] for r in rows] == [e.kernel_name for e in make_params().entries]
    assert rows[0]["local_size"] == [4, 8, 8] and rows[1]["local_size"] is None and rows[2]["variant"] == [2, -1]
    assert info["hex_preview"][0].startswith("00000000  4d 43 54 50") and len(info["hex_preview"]) == 4


def test_describe_invalid_files() -> None:
    info = describe(DATA[:50])
    assert not info["valid"] and "truncated" in info["error"] and "total_size" not in info["header"]
    assert info["header"]["entry_count"] == 4
    assert describe(b"")["error"] is not None and describe(b"")["hex_preview"] == []
    assert "must be bytes" in describe("x")["error"]  # type: ignore[arg-type]


# --- merge and encode ------------------------------------------------------------------------------------------------


def test_merge_semantics() -> None:
    e0, e1, e2, _ = make_params().entries
    old = TunedParams({FP_CPU.id(): FP_CPU}, [dataclasses.replace(e0, local_size=(1, 1, 1), created=5.0), e1])
    new = TunedParams(
        {FP_GPU.id(): FP_GPU, FP_CPU.id(): FP_CPU}, [dataclasses.replace(e0, local_size=(2, 2, 2), created=9.0), e2]
    )
    for merged in (old.merged(new), new.merged(old)):
        assert {(e.tuning_key, e.fingerprint_id, e.local_size) for e in merged.entries} == {
            (e0.tuning_key, e0.fingerprint_id, (2, 2, 2)), (e1.tuning_key, e1.fingerprint_id, None),
            (e2.tuning_key, e2.fingerprint_id, e2.local_size),
        }  # fmt: skip
        assert set(merged.fingerprints) == {FP_CPU.id(), FP_GPU.id()}
    assert [e.tuning_key for e in old.merged(new).entries] == [e0.tuning_key, e1.tuning_key, e2.tuning_key]
    tie = old.merged(TunedParams(old.fingerprints, [dataclasses.replace(old.entries[0], local_size=(4, 4, 4))]))
    assert tie.entries[0].local_size == (1, 1, 1)  # tie on created: self wins
    only_gpu = TunedParams({FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU}, [e2]).merged(TunedParams())
    assert list(only_gpu.fingerprints) == [FP_GPU.id()]
    assert decode(encode(old.merged(new))) == old.merged(new)


def test_encode_rejects_inconsistent_records() -> None:
    params = make_params()
    e = params.entries[0]
    fps = params.fingerprints
    bad = [
        TunedParams({"0" * 64: FP_CPU}, []),
        TunedParams({}, [e]),
        TunedParams(fps, [e, dataclasses.replace(e, local_size=(1, 1, 1))]),
        TunedParams(fps, [dataclasses.replace(e, tuning_key=e.tuning_key.upper())]),
        TunedParams(fps, [dataclasses.replace(e, fingerprint_id="x" * 64)]),
        TunedParams(fps, [dataclasses.replace(e, global_size=())]),
        TunedParams(fps, [dataclasses.replace(e, global_size=(1, 2, 3, 4), local_size=(1, 1, 1, 1))]),
        TunedParams(fps, [dataclasses.replace(e, global_size=(0, 1, 1))]),
        TunedParams(fps, [dataclasses.replace(e, local_size=(4, 8))]),
        TunedParams(fps, [dataclasses.replace(e, local_size=(0, 8, 8))]),
        TunedParams(fps, [dataclasses.replace(e, local_size=(2**32, 1, 1))]),
        TunedParams(fps, [dataclasses.replace(e, local_size=(True, 1, 1))]),
        TunedParams(fps, [dataclasses.replace(e, variant=(2**31,))]),
        TunedParams(fps, [dataclasses.replace(e, variant=(0,) * 256)]),
        TunedParams(fps, [dataclasses.replace(e, variant=("1",))]),
        TunedParams(fps, [dataclasses.replace(e, time_us=float("nan"))]),
        TunedParams(fps, [dataclasses.replace(e, time_us=-0.5)]),
        TunedParams(fps, [dataclasses.replace(e, created=float("inf"))]),
        TunedParams(fps, [dataclasses.replace(e, created="now")]),
        TunedParams(fps, [dataclasses.replace(e, kernel_name="\ud800")]),
        TunedParams(fps, [dataclasses.replace(e, kernel_name=None)]),
        TunedParams(fps, ["not an entry"]),
        TunedParams({"0" * 64: dataclasses.replace(FP_CPU, address_bits=-1)}, []),  # id() itself fails
    ]
    for params_file in bad:
        with pytest.raises(TunedParamsError) as info:
            encode(params_file)  # type: ignore[arg-type]
        assert info.value.offset is None, params_file


# --- signing ----------------------------------------------------------------------------------------------------------

KEY = b"k" * 32


def test_signed_round_trip() -> None:
    signed = encode(make_params(), key=KEY)
    assert header_of(signed)["flags"] == 1 and len(signed) == len(DATA) + 32
    assert signed[-32:] == hmac.new(KEY, signed[:-32], hashlib.sha256).digest()
    assert signed[-64:-32] == hashlib.sha256(signed[:-64]).digest()
    assert decode(signed, key=KEY) == decode(signed) == make_params()  # readable without the key, unchecked


def test_signature_rejections() -> None:
    signed = encode(make_params(), key=KEY)
    assert "signature mismatch" in reject(signed, key=b"other key").reason
    err = reject(flip(signed, E0 + 140), key=KEY)
    assert "signature mismatch" in err.reason  # authenticated before anything is parsed
    assert "not signed" in reject(DATA, key=KEY).reason
    stripped = bytearray(signed[:-32])  # an attacker drops the MAC and clears the flag
    struct.pack_into("<I", stripped, 8, 0)
    stripped = bytearray(reseal(stripped))
    assert decode(bytes(stripped)) == make_params()
    assert "not signed" in reject(bytes(stripped), key=KEY).reason
    for bad_key in (b"", "text"):
        with pytest.raises(TunedParamsError, match="non-empty"):
            encode(make_params(), key=bad_key)  # type: ignore[arg-type]
        with pytest.raises(TunedParamsError, match="non-empty"):
            decode(signed, key=bad_key)  # type: ignore[arg-type]


# --- fuzzing ----------------------------------------------------------------------------------------------------------

SMALL = encode(
    TunedParams(
        {FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU},
        [
            TunedEntry.for_launch("a", "s", (8, 8), FP_CPU, (8, 1), 1.0, 1.0, variant=(3,)),
            TunedEntry.for_launch("b", "s", (5,), FP_GPU, None, 2.0, 2.0),
        ],
    )
)
FUZZ = settings(max_examples=1000, deadline=timedelta(milliseconds=250), suppress_health_check=[HealthCheck.too_slow])


def check_only_format_errors(data: bytes) -> None:
    try:
        decode(data)
        ok = True
    except TunedParamsError:
        ok = False
    assert (validate(data) == []) == ok
    with contextlib.suppress(TunedParamsError):
        decode_report(data)
    with contextlib.suppress(TunedParamsError):
        decode(data, key=KEY)
    info = describe(data)
    json.dumps(info)
    assert info["valid"] == ok


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(SMALL) - 1), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, len(SMALL) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(SMALL)), st.integers(0, 255)),
    st.tuples(st.just("u32"), st.integers(0, len(SMALL) - 4), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("u8"), st.integers(0, len(SMALL) - 1), st.sampled_from([0, 1, 2, 3, 4, 255])),
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
        elif op == "u8" and at < len(out):
            out[at] = arg
    return bytes(out)


def rehash_all(data: bytes) -> bytes:
    """Recompute every entry hash the framing still finds, so mutations reach the field checks."""
    try:
        h = header_of(data)
        pos, end = h["entry_off"], h["entry_off"] + h["entry_size"]
        for _ in range(min(h["entry_count"], 64)):
            size = struct.unpack_from("<I", data, pos)[0]
            if not ENTRY_MIN_SIZE <= size <= min(end, len(data)) - pos:
                break
            data = rehash(data, pos)
            pos += size
    except (struct.error, OverflowError, ValueError):  # the mutation broke the header or framing: leave it
        pass
    return data


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    check_only_format_errors(data)
    check_only_format_errors(b"MCTP" + data)
    check_only_format_errors(reseal(b"MCTP\x00\x00\x01\x00" + data))


@FUZZ
@given(st.lists(mutation, min_size=1, max_size=4), st.sampled_from(["raw", "resealed", "rehashed"]))
def test_fuzz_mutations(ops: list[tuple[str, int, int]], how: str) -> None:
    data = mutate(SMALL, ops)
    check_only_format_errors(data if how == "raw" else reseal(data) if how == "resealed" else rehash_all(data))


@FUZZ
@given(
    st.lists(
        st.builds(
            lambda name, dims, local_some, variant, t: (name, dims, local_some, variant, t),
            st.text(max_size=8),
            st.lists(st.integers(1, 2**64 - 1), min_size=1, max_size=3),
            st.booleans(),
            st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4),
            st.floats(0, 1e12),
        ),
        max_size=4,
    )
)
def test_fuzz_round_trip(specs: list[tuple[str, list[int], bool, list[int], float]]) -> None:
    entries = {}
    for name, dims, local_some, variant, t in specs:
        local = tuple(min(g, 2**32 - 1) for g in dims) if local_some else None
        e = TunedEntry.for_launch(name, "spec", dims, FP_GPU, local, t, t, variant)
        entries[e.tuning_key] = e
    params = TunedParams({FP_GPU.id(): FP_GPU}, list(entries.values()))
    assert decode(encode(params)) == params
    assert decode(encode(params, key=KEY), key=KEY) == params
