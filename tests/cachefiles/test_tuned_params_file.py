"""What only the tuned-parameters file has: tuning keys, per-entry sha256, global and local sizes, variants, lookup.
The rules it shares with every record file are in test_record_formats.py."""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import pytest
from byte_edits import flip, patch
from cachefile_samples import CONV_SPEC as CONV
from cachefile_samples import FP_CPU, FP_GPU
from hypothesis import given
from hypothesis import strategies as st
from record_formats import FUZZ, KEY
from record_formats import TUNED_PARAMS as FMT

from mace.cachefiles.tuned_params import (
    ENTRY_FIXED_SIZE,
    ENTRY_MIN_SIZE,
    TunedEntry,
    TunedParams,
    TunedParamsError,
    decode,
    encode,
    tuning_key,
)

ENTRY = struct.Struct("<I32s32s32sdd3Q3IBB")
DATA, H, reject, rehash, entry_offset = FMT.data, FMT.header, FMT.reject, FMT.rehash, FMT.entry_offset
E0, E1, E2, E3 = (entry_offset(i) for i in range(4))


# --- round trips and layout ------------------------------------------------------------------------------------------


def test_entries_for_a_device_and_lookup() -> None:
    params = FMT.records()
    assert list(decode(DATA).entries_for(FP_GPU).values()) == params.entries[2:]
    assert decode(DATA).lookup(FP_CPU, params.entries[1].tuning_key).local_size is None
    assert decode(DATA).lookup(FP_GPU.id(), params.entries[1].tuning_key) is None  # other device's key


def test_entry_table_ends_the_file() -> None:
    assert H["total"] == H["entry_off"] + H["entry_size"] + 32


def test_entry_records_byte_exact() -> None:
    pos = H["entry_off"]
    for e in FMT.records().entries:
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
    assert ENTRY_FIXED_SIZE == ENTRY.size == 154 and ENTRY_MIN_SIZE == 158


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


# --- entry fields: flips, and values a forger could hash correctly: each is still rejected, at its field ------------


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
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
    ],
)
def test_entry_bit_flip_reason(offset: int, reason: str) -> None:
    err = reject(flip(DATA, offset))
    assert reason in err.reason, err


def test_huge_name_length_and_variant_count() -> None:
    name_len_at = E0 + ENTRY_FIXED_SIZE  # entry 0 has no variants
    err = reject(rehash(patch(DATA, name_len_at, "<I", 2**32 - 1), E0))
    assert err.offset == name_len_at and "exceeds" in err.reason
    err = reject(rehash(patch(DATA, E0 + 153, "B", 255), E0))  # 255 variants claimed, the record is too short
    assert "variant" in err.reason


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
    params = FMT.records()
    twin = TunedEntry.for_launch("conv_0", CONV, (64, 56, 56), FP_CPU, (1, 1, 1), 1.0, 5.0)
    data = bytearray(encode(TunedParams(params.fingerprints, [params.entries[0], params.entries[1]])))
    # forge: give entry 1 entry 0's key
    e1 = entry_offset(1, bytes(data))
    data[e1 + 36 : e1 + 68] = bytes.fromhex(twin.tuning_key)
    err = reject(rehash(bytes(data), e1))
    assert "duplicate" in err.reason and err.offset == e1 + 36


# --- describe and encode ---------------------------------------------------------------------------------------------


def test_describe_entries() -> None:
    rows = FMT.module.describe(DATA)["entries"]
    assert [r["kernel_name"] for r in rows] == [e.kernel_name for e in FMT.records().entries]
    assert rows[0]["local_size"] == [4, 8, 8] and rows[1]["local_size"] is None and rows[2]["variant"] == [2, -1]


def test_encode_rejects_inconsistent_tuned_entries() -> None:
    params = FMT.records()
    e = params.entries[0]
    fps = params.fingerprints
    bad = [
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
        TunedParams(fps, [dataclasses.replace(e, created="now")]),
        TunedParams(fps, [dataclasses.replace(e, kernel_name="\ud800")]),
        TunedParams(fps, [dataclasses.replace(e, kernel_name=None)]),
        TunedParams(fps, ["not an entry"]),
    ]
    for params_file in bad:
        with pytest.raises(TunedParamsError) as info:
            encode(params_file)  # type: ignore[arg-type]
        assert info.value.offset is None, params_file


# --- fuzzing ----------------------------------------------------------------------------------------------------------


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
