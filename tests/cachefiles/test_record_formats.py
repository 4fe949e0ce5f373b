"""The rules every record-file format (records.py) keeps, checked once for each: the compiled-program cache and the
tuned parameters. Round trips, the common header, truncation, bit flips, version and flag rules, bounded reads,
lenient decode, validate, describe, merge, signing, and that fuzzed input raises only the format's error.

What one format alone has (program keys and the blob area; tuning keys, local sizes and variants) is tested in
test_program_cache_file.py and test_tuned_params_file.py; the adapters are in record_formats.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import doctest
import hashlib
import hmac
import json
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
from byte_edits import flip, mutate, patch
from cachefile_samples import FP_CPU, FP_GPU
from hypothesis import given
from hypothesis import strategies as st
from record_formats import FORMATS, FUZZ, KEY, PROGRAM_CACHE, TUNED_PARAMS, RecordFormatCase

import mace.cachefiles.fingerprint as fingerprint
from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.errors import MaceError

FOREIGN_MAGIC = (b"\x7fELF", PROGRAM_CACHE.magic, TUNED_PARAMS.magic)


@pytest.fixture(scope="module", params=FORMATS, ids=repr)
def fmt(request: pytest.FixtureRequest) -> RecordFormatCase:
    return request.param


# --- round trips and layout ------------------------------------------------------------------------------------------


def test_round_trip_is_exact_and_deterministic(fmt: RecordFormatCase) -> None:
    assert fmt.module.decode(fmt.data) == fmt.records()
    assert fmt.module.encode(fmt.module.decode(fmt.data)) == fmt.data


def test_round_trip_empty_and_unreferenced_fingerprint(fmt: RecordFormatCase) -> None:
    data = fmt.module.encode(fmt.file())
    assert len(data) == fmt.header_size + 32 and fmt.module.decode(data) == fmt.file()
    only_fp = fmt.file({FP_CPU.id(): FP_CPU}, [])
    assert fmt.module.decode(fmt.module.encode(only_fp)) == only_fp


def test_header_fields_byte_exact(fmt: RecordFormatCase) -> None:
    h, data = fmt.header, fmt.data
    assert h["magic"] == fmt.magic == fmt.module.MAGIC
    assert h["version"] == fmt.module.FORMAT_VERSION == 0x00010000
    assert h["flags"] == 0
    assert h["header_size"] == fmt.module.HEADER_SIZE == fmt.header_size
    assert (h["fp_count"], h["entry_count"]) == (2, 4)
    assert h["fp_off"] == fmt.header_size and h["entry_off"] == h["fp_off"] + h["fp_size"]
    last = fmt.areas[-1][0] if fmt.areas else "entry"
    assert h["total"] == len(data) == h[f"{last}_off"] + h[f"{last}_size"] + 32
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()


def test_module_doctest(fmt: RecordFormatCase) -> None:
    assert doctest.testmod(fmt.module).failed == 0


# --- truncation, flips, bad header fields ----------------------------------------------------------------------------


def test_every_truncation_is_rejected_at_the_end_of_data(fmt: RecordFormatCase) -> None:
    for n in range(len(fmt.data)):
        err = fmt.reject(fmt.data[:n])
        assert err.offset == n and "truncated" in err.reason, (n, err)


def test_trailing_data_is_rejected(fmt: RecordFormatCase) -> None:
    err = fmt.reject(fmt.data + b"\0")
    assert err.offset == len(fmt.data) and "trailing data" in err.reason


def test_every_single_bit_flip_is_rejected(fmt: RecordFormatCase) -> None:
    for offset in range(len(fmt.data)):
        for bit in (0, 3, 7):
            fmt.reject(flip(fmt.data, offset, bit))


# (where, reason) for a flip of bit 0 at a byte of the common layout; where takes the format and its header
COMMON_FLIPS = {
    "magic": (lambda f, h: 1, lambda f: "bad magic"),
    "version": (lambda f, h: 6, lambda f: "unsupported format version 0x00000000"),
    "header size": (lambda f, h: 12, lambda f: f"header size {f.header_size + 1}"),
    "fingerprint count": (lambda f, h: 16, lambda f: "fingerprint 2: record size field runs past"),  # 2 -> 3
    "fingerprint offset": (lambda f, h: 29, lambda f: "fingerprint section offset"),
    "entry table size": (lambda f, h: 50, lambda f: "entry table of"),
    "total size": (lambda f, h: f.total_at, lambda f: "truncated"),
    "fingerprint string": (lambda f, h: h["fp_off"] + 40, lambda f: "differs from the id"),
    "stored fingerprint id": (lambda f, h: h["fp_off"] + 5, lambda f: "differs from the id"),
    "trailer": (lambda f, h: len(f.data) - 1, lambda f: "whole-file sha256 mismatch"),
}


@pytest.mark.parametrize("field", COMMON_FLIPS)
def test_bit_flip_reason(fmt: RecordFormatCase, field: str) -> None:
    where, reason = COMMON_FLIPS[field]
    err = fmt.reject(flip(fmt.data, where(fmt, fmt.header)))
    assert reason(fmt) in err.reason, err


def test_future_major_version_is_rejected_by_name(fmt: RecordFormatCase) -> None:
    err = fmt.reject(patch(fmt.data, 4, "<I", 0x00020000))
    assert err.offset == 4 and "unsupported format version 0x00020000" in err.reason


def test_future_minor_version_and_optional_flags_are_readable(fmt: RecordFormatCase) -> None:
    newer = fmt.reseal(patch(patch(fmt.data, 4, "<I", 0x00010007), 8, "<I", 0x00FF0000))
    assert fmt.module.decode(newer) == fmt.records()


def test_newer_minor_version_may_extend_header_records_and_layout(fmt: RecordFormatCase) -> None:
    assert fmt.module.decode(fmt.extended(fmt.data, minor=1)) == fmt.records()
    err = fmt.reject(fmt.extended(fmt.data, minor=0))  # this minor version must be exact
    assert f"header size {fmt.header_size + 16}" in err.reason
    assert fmt.module.validate(fmt.extended(fmt.module.encode(fmt.file()), minor=3)) == []


def test_unknown_required_flag_is_rejected(fmt: RecordFormatCase) -> None:
    err = fmt.reject(patch(fmt.data, 8, "<I", 0x2))
    assert err.offset == 8 and "unknown required flags" in err.reason


def per_format(cases: Callable[[RecordFormatCase], list[tuple]]) -> dict[str, Any]:
    """Parametrize ``fmt`` (overriding the fixture) together with cases that depend on the format."""
    rows = [(f, *case) for f in FORMATS for case in cases(f)]
    return {"argvalues": rows, "ids": [f"{row[0]}-{'-'.join(map(str, row[1:]))}" for row in rows]}


@pytest.mark.parametrize(("fmt", "magic"), **per_format(lambda f: [(m,) for m in FOREIGN_MAGIC if m != f.magic]))
def test_wrong_magic(fmt: RecordFormatCase, magic: bytes) -> None:
    err = fmt.reject(magic + fmt.data[4:])  # an ELF file, or the other format's file
    assert err.offset == 0 and "bad magic" in err.reason and fmt.what in err.reason
    assert "bad magic" in fmt.reject(b"PK\x03\x04").reason


def header_count_and_size_fields(f: RecordFormatCase) -> list[tuple[int, str]]:
    """Every count, offset and size of the header but the total: (16, 20) u32, then u64s up to the total."""
    return [(16, "<I"), (20, "<I")] + [(at, "<Q") for at in range(24, f.total_at, 8)]


@pytest.mark.parametrize(("fmt", "field_at", "form"), **per_format(header_count_and_size_fields))
def test_huge_counts_and_sizes_fail_fast(fmt: RecordFormatCase, field_at: int, form: str) -> None:
    value = 2**32 - 1 if form == "<I" else 2**64 - 1
    t0 = time.perf_counter()
    err = fmt.reject(fmt.reseal(patch(fmt.data, field_at, form, value)))
    assert time.perf_counter() - t0 < 0.05
    assert err.offset in (field_at, field_at - 8), err


def test_counts_are_bounded_by_section_size(fmt: RecordFormatCase) -> None:
    # entry count 4 -> 100 in a table that holds 4 records: rejected before any loop, at the count field
    err = fmt.reject(fmt.reseal(patch(fmt.data, 20, "<I", 100)))
    assert err.offset == 20 and "cannot fit" in err.reason


def test_huge_string_length_and_record_size(fmt: RecordFormatCase) -> None:
    fp_string_len = fmt.header["fp_off"] + 36
    err = fmt.reject(fmt.reseal(patch(fmt.data, fp_string_len, "<I", 2**32 - 1)))
    assert err.offset == fp_string_len and "exceeds" in err.reason
    e1 = fmt.entry_offset(1)
    err = fmt.reject(fmt.reseal(patch(fmt.data, e1, "<I", 2**32 - 1)))
    assert err.offset == e1 and "record size" in err.reason


def test_non_bytes_input(fmt: RecordFormatCase) -> None:
    with pytest.raises(fmt.error):
        fmt.module.decode(fmt.magic.decode())
    assert fmt.module.decode(bytearray(fmt.data)) == fmt.module.decode(memoryview(fmt.data)) == fmt.records()


# --- lenient decode, validate, describe ------------------------------------------------------------------------------


def test_one_bad_entry_drops_only_itself(fmt: RecordFormatCase) -> None:
    index, problem = fmt.bad_entry
    bad = flip(fmt.data, fmt.bad_entry_at())
    records, problems = fmt.module.decode_report(bad)
    assert records.entries == [e for i, e in enumerate(fmt.records().entries) if i != index]
    assert len(problems) == 2 and problem in problems[0] and "whole-file" in problems[1]
    assert fmt.module.validate(bad) == problems and fmt.module.validate(fmt.data) == []
    info = fmt.module.describe(bad)
    assert not info["valid"] and info["error"] is None and "problem" in info["entries"][index]


def test_lenient_decode_still_rejects_whole_file_problems(fmt: RecordFormatCase) -> None:
    with pytest.raises(fmt.error, match="truncated"):
        fmt.module.decode_report(fmt.data[:-1])
    assert fmt.module.validate(fmt.data[:-1]) == [str(fmt.reject(fmt.data[:-1]))]


def test_bad_fingerprint_drops_its_entries_in_lenient_mode(fmt: RecordFormatCase) -> None:
    records, problems = fmt.module.decode_report(fmt.reseal(flip(fmt.data, fmt.header["fp_off"] + 40)))
    assert list(records.fingerprints) == [FP_GPU.id()] and records.entries == fmt.records().entries[2:]
    assert len(problems) == 3  # the fingerprint and its two entries


def test_describe_valid_file(fmt: RecordFormatCase) -> None:
    info = fmt.module.describe(fmt.data)
    json.dumps(info)
    assert info["valid"] and info["header"]["magic"] == repr(fmt.magic) and info["header"]["version_text"] == "1.0"
    assert [f["device_name"] for f in info["fingerprints"]] == [FP_CPU.device_name, FP_GPU.device_name]
    assert len(info["entries"]) == 4
    assert info["hex_preview"][0].startswith("00000000  " + fmt.magic.hex(" ")) and len(info["hex_preview"]) == 4


def test_describe_invalid_files(fmt: RecordFormatCase) -> None:
    info = fmt.module.describe(fmt.data[:50])
    assert not info["valid"] and "truncated" in info["error"]
    assert not {"entry_table_size", "blob_offset", "total_size"} & set(info["header"])  # fields past byte 48
    assert info["header"]["entry_count"] == 4
    assert fmt.module.describe(b"")["error"] is not None and fmt.module.describe(b"")["hex_preview"] == []
    assert "must be bytes" in fmt.module.describe("x")["error"]


# --- merge and encode ------------------------------------------------------------------------------------------------


def test_merge_semantics(fmt: RecordFormatCase) -> None:
    e0, e1, e2, _ = fmt.records().entries
    key, payload = fmt.key_of, fmt.payload_of
    old = fmt.file({FP_CPU.id(): FP_CPU}, [fmt.with_payload(e0, 1, time=5.0), e1])
    new = fmt.file({FP_GPU.id(): FP_GPU, FP_CPU.id(): FP_CPU}, [fmt.with_payload(e0, 2, time=9.0), e2])
    for merged in (old.merged(new), new.merged(old)):  # the newer entry of one key wins
        assert {(key(e), e.fingerprint_id, payload(e)) for e in merged.entries} == {
            (key(e0), e0.fingerprint_id, payload(fmt.with_payload(e0, 2))), (key(e1), e1.fingerprint_id, payload(e1)),
            (key(e2), e2.fingerprint_id, payload(e2)),
        }  # fmt: skip
        assert set(merged.fingerprints) == {FP_CPU.id(), FP_GPU.id()}
    assert [key(e) for e in old.merged(new).entries] == [key(e0), key(e1), key(e2)]
    # tie on the time: self wins; the result does not alias the inputs
    tie = old.merged(fmt.file(old.fingerprints, [fmt.with_payload(old.entries[0], 4)]))
    assert payload(tie.entries[0]) == payload(old.entries[0]) == payload(fmt.with_payload(e0, 1))
    if fmt.entries_mutable:
        setattr(tie.entries[0], fmt.time_field, 99.0)
        assert getattr(old.entries[0], fmt.time_field) == 5.0
    else:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(tie.entries[0], fmt.time_field, 99.0)
    # fingerprints no entry uses are dropped
    only_gpu = fmt.file({FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU}, [e2]).merged(fmt.file())
    assert list(only_gpu.fingerprints) == [FP_GPU.id()]
    assert fmt.module.decode(fmt.module.encode(old.merged(new))) == old.merged(new)


def test_encode_rejects_inconsistent_records(fmt: RecordFormatCase) -> None:
    records = fmt.records()
    e, fps = records.entries[0], records.fingerprints
    bad = [
        fmt.file({"0" * 64: FP_CPU}, []),
        fmt.file({}, [e]),
        fmt.file(fps, [e, fmt.with_payload(e, 9)]),  # one key twice
        fmt.file(fps, [dataclasses.replace(e, **{fmt.key_field: fmt.key_of(e).upper()})]),
        fmt.file(fps, [dataclasses.replace(e, created=float("inf"))]),
        fmt.file({"0" * 64: dataclasses.replace(FP_CPU, address_bits=-1)}, []),  # id() itself raises
        fmt.file({"0" * 64: dataclasses.replace(FP_CPU, device_name="\ud800")}, []),
    ]
    for records_file in bad:
        with pytest.raises(fmt.error) as info:
            fmt.module.encode(records_file)
        assert info.value.offset is None and isinstance(info.value, MaceError), records_file


# --- signing ----------------------------------------------------------------------------------------------------------


def test_signed_round_trip(fmt: RecordFormatCase) -> None:
    signed = fmt.module.encode(fmt.records(), key=KEY)
    assert fmt.header_of(signed)["flags"] == 1 and len(signed) == len(fmt.data) + 32
    assert signed[-32:] == hmac.new(KEY, signed[:-32], hashlib.sha256).digest()
    assert signed[-64:-32] == hashlib.sha256(signed[:-64]).digest()
    # readable without the key, unchecked
    assert fmt.module.decode(signed, key=KEY) == fmt.module.decode(signed) == fmt.records()


def test_signature_rejections(fmt: RecordFormatCase) -> None:
    signed = fmt.module.encode(fmt.records(), key=KEY)
    h = fmt.header_of(signed)
    assert "signature mismatch" in fmt.reject(signed, key=b"other key").reason
    for at in (h["fp_off"], h["entry_off"] + 140, *(h[f"{area}_off"] for area, _ in fmt.areas)):
        err = fmt.reject(flip(signed, at), key=KEY)
        assert "signature mismatch" in err.reason, at  # authenticated before anything is parsed
    assert "not signed" in fmt.reject(fmt.data, key=KEY).reason
    stripped = bytearray(signed[:-32])  # an attacker drops the MAC and clears the flag
    struct.pack_into("<I", stripped, 8, 0)
    stripped = bytearray(fmt.reseal(stripped))
    assert fmt.module.decode(bytes(stripped)) == fmt.records()
    assert "not signed" in fmt.reject(bytes(stripped), key=KEY).reason
    for bad_key in (b"", "text"):
        with pytest.raises(fmt.error, match="non-empty"):
            fmt.module.encode(fmt.records(), key=bad_key)
        with pytest.raises(fmt.error, match="non-empty"):
            fmt.module.decode(signed, key=bad_key)


# --- fuzzing: only the format's error escapes decode, decode_report and validate; describe never raises --------------


def check_only_format_errors(fmt: RecordFormatCase, data: bytes) -> None:
    try:
        fmt.module.decode(data)
        ok = True
    except fmt.error:
        ok = False
    assert (fmt.module.validate(data) == []) == ok
    with contextlib.suppress(fmt.error):
        fmt.module.decode_report(data)
    with contextlib.suppress(fmt.error):
        fmt.module.decode(data, key=KEY)
    info = fmt.module.describe(data)
    json.dumps(info)
    assert info["valid"] == ok


def mutations(data: bytes) -> st.SearchStrategy[tuple[str, int, int]]:
    return st.one_of(
        st.tuples(st.just("flip"), st.integers(0, len(data) - 1), st.integers(0, 7)),
        st.tuples(st.just("truncate"), st.integers(0, len(data) - 1), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, len(data)), st.integers(0, 255)),
        st.tuples(st.just("u32"), st.integers(0, len(data) - 4), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("u8"), st.integers(0, len(data) - 1), st.sampled_from([0, 1, 2, 3, 4, 255])),
    )


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(fmt: RecordFormatCase, data: bytes) -> None:
    check_only_format_errors(fmt, data)
    check_only_format_errors(fmt, fmt.magic + data)
    check_only_format_errors(fmt, fmt.reseal(fmt.magic + b"\x00\x00\x01\x00" + data))


@FUZZ
@given(st.data(), st.sampled_from(["raw", "resealed", "rehashed"]))
def test_fuzz_mutations(fmt: RecordFormatCase, drawn: st.DataObject, how: str) -> None:
    data = mutate(fmt.small_data, drawn.draw(st.lists(mutations(fmt.small_data), min_size=1, max_size=4)))
    sealed = {"raw": data, "resealed": fmt.reseal(data), "rehashed": fmt.rehash_all(data)}
    check_only_format_errors(fmt, sealed[how])


# --- the shared layer: device fingerprints ----------------------------------------------------------------------------


def test_fingerprint_golden_id_and_doctest() -> None:
    # Changing this invalidates every file of every format in the field: bump the format versions when you do.
    assert FP_CPU.id() == "02839b91655632e7f26ea36ce92e7d4ba948da912be9958c0e9f273a1207a80f"
    assert doctest.testmod(fingerprint).failed == 0


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


def test_fingerprint_sections_are_byte_identical_across_formats() -> None:
    fps = {FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU}
    sections = []
    for f in FORMATS:
        data = f.module.encode(f.file(fps, []))
        h = f.header_of(data)
        sections.append(data[h["fp_off"] : h["fp_off"] + h["fp_size"]])
        assert struct.unpack_from("<I32s", data, h["fp_off"])[1].hex() == FP_CPU.id()
        assert struct.unpack_from("<I", data, h["fp_off"] + 36) == (len(FP_CPU.platform_name),)
    h = TUNED_PARAMS.header
    assert sections[0] == sections[1] == TUNED_PARAMS.data[h["fp_off"] : h["entry_off"]]
