"""Reading XiaoMi MACE's mace_cl_compiled_program.bin: both layouts, the wire format pinned by hand-written bytes,
and that every malformed input raises MaceCompatError (describe_mace never raises)."""

from __future__ import annotations

import doctest
import hashlib
import json
import struct
import subprocess
import sys
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from byte_edits import flip, mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mace.cachefiles.xiaomi as mace_compat
from mace.cachefiles.program_cache import MAGIC as MCLP_MAGIC
from mace.cachefiles.xiaomi import (
    DEVICE_NAME_KEY,
    PLATFORM_INFO_KEY,
    MaceCompatError,
    MaceProgram,
    describe_mace,
    detect,
    encode_mace_legacy,
    encode_mace_v11,
    read_mace_file,
)
from mace.errors import MaceError

PLATFORM = b"QUALCOMM Snapdragon(TM), OpenCL 2.0 Adreno(TM) 640"
DEVICE = b"QUALCOMM Adreno(TM)"
CONV_KEY = "conv_2d_1x1 -DBIAS -DDATA_TYPE=float -DCMD_DATA_TYPE=f -DUSE_RELU"
POOL_KEY = "pooling -DDATA_TYPE=half -DCMD_DATA_TYPE=h -DPOOL_TYPE=1"
CONV_BIN = b"\x7fELF" + bytes(range(200))
POOL_BIN = b"adreno-binary" * 3


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_crc(payload: bytes) -> bytes:
    return payload + struct.pack("<I", zlib.crc32(payload))


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, framed here independently of the module's encoder."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def v11_pairs() -> list[tuple[str, bytes | list[int]]]:
    return [
        (PLATFORM_INFO_KEY, PLATFORM),
        (DEVICE_NAME_KEY, DEVICE),
        (CONV_KEY, CONV_BIN),
        ("program_hash_" + CONV_KEY, b"5f2c0e9a7d"),
        (POOL_KEY, POOL_BIN),
        ("program_hash_ " + POOL_KEY, [1, 0xDEADBEEF, 0xFFFFFFFF]),  # the "program_hash_ <key>" spelling, uint32s
        ("tuned_params", [0, 127, 128, 300, 2**32 - 1]),
        ("mace_opencl_precompiled_future_key", b"xyz"),
        ("program_hash_nothing_like_this", b"ab"),
        ("empty_program", b""),
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Round trips


def test_module_doctest() -> None:
    assert doctest.testmod(mace_compat, optionflags=doctest.ELLIPSIS).failed == 0


@pytest.mark.parametrize("packed", [True, False])
def test_v11_round_trip(packed: bool) -> None:
    data = encode_mace_v11(v11_pairs(), packed=packed)
    assert detect(data) == "mace-v1.1"
    f = read_mace_file(data)
    assert f.layout == "v1.1"
    assert f.platform_info == PLATFORM.decode()
    assert f.device_name == DEVICE.decode()
    assert f.programs == [
        MaceProgram(CONV_KEY, len(CONV_BIN), "5f2c0e9a7d", sha(CONV_BIN)),
        MaceProgram(POOL_KEY, len(POOL_BIN), "00000001deadbeefffffffff", sha(POOL_BIN)),
        MaceProgram("empty_program", 0, None, sha(b"")),
    ]
    assert f.other_keys == [
        ("tuned_params", 20),
        ("mace_opencl_precompiled_future_key", 3),
        ("program_hash_nothing_like_this", 2),
    ]
    assert f.crc_stored == f.crc_computed == zlib.crc32(data[:-4])
    assert f.crc_ok is True
    info = describe_mace(data)
    json.dumps(info)
    assert info["valid"] and info["error"] is None and info["format"] == "mace-v1.1"
    assert info["crc"] == {"stored": f.crc_computed, "computed": f.crc_computed, "verdict": "ok"}
    assert [(p["key"], p["size"]) for p in info["programs"]] == [(p.key, p.size) for p in f.programs]
    assert info["hex_preview"][0].startswith("00000000  0a ")
    assert len(info["hex_preview"]) == 4


def test_packed_unpacked_and_mixed_uint32s_read_the_same() -> None:
    key = ld(1, b"program_hash_p")
    packed = ld(3, varint(7) + varint(300) + varint(2**32 - 1))
    unpacked = b"".join(b"\x18" + varint(v) for v in (7, 300, 2**32 - 1))
    mixed = b"\x18" + varint(7) + ld(3, varint(300)) + b"\x18" + varint(2**32 - 1)  # both encodings accumulate
    program = ld(1, ld(1, b"p") + ld(2, b"bin"))
    for value in (packed, unpacked, mixed):
        f = read_mace_file(with_crc(program + ld(1, key + value)))
        assert f.programs == [MaceProgram("p", 3, "000000070000012cffffffff", sha(b"bin"))]


def test_legacy_round_trip() -> None:
    pairs = [(k, v) for k, v in v11_pairs() if isinstance(v, bytes)]
    data = encode_mace_legacy(pairs)
    assert detect(data) == "mace-legacy"
    f = read_mace_file(data)
    assert f.layout == "legacy"
    assert (f.platform_info, f.device_name) == (PLATFORM.decode(), DEVICE.decode())
    assert [(p.key, p.size, p.program_hash) for p in f.programs] == [
        (CONV_KEY, len(CONV_BIN), "5f2c0e9a7d"),
        (POOL_KEY, len(POOL_BIN), None),
        ("empty_program", 0, None),
    ]
    assert f.crc_stored is f.crc_computed is f.crc_ok is None
    info = describe_mace(data)
    assert info["valid"] and info["layout"] == "legacy"
    assert info["crc"]["verdict"] == "absent"


def test_empty_files_of_both_layouts() -> None:
    assert detect(b"\x00" * 8) == "mace-legacy"
    assert read_mace_file(b"\x00" * 8).programs == []
    assert encode_mace_v11([]) == b"\x00\x00\x00\x00"  # crc32(b"") == 0
    assert detect(b"\x00\x00\x00\x00") == "mace-v1.1"
    assert read_mace_file(b"\x00\x00\x00\x00").crc_ok is True
    assert detect(b"\x01\x02\x03\x04") == "unknown"  # no pairs and no CRC match: not taken for an empty container


# ---------------------------------------------------------------------------------------------------------------------
# The wire format, pinned by hand-written bytes


def test_hand_written_v11_bytes() -> None:
    data = bytes.fromhex(
        "0a 07"  # PairContainer field 1 (pairs), length 7
        "   0a 01 6b"  # KVPair field 1 (key), length 1: "k"
        "   12 02 01 02"  # KVPair field 2 (bytes_value), length 2
        "89 46 ad f6"  # zlib.crc32 of the 9 bytes above, little-endian (0xf6ad4689)
    )
    assert encode_mace_v11([("k", b"\x01\x02")]) == data
    f = read_mace_file(data)
    assert f.programs == [MaceProgram("k", 2, None, sha(b"\x01\x02"))]
    assert f.crc_stored == 0xF6AD4689 and f.crc_ok


def test_hand_written_v11_with_unknown_fields_and_uint32s() -> None:
    payload = bytes.fromhex(
        "15 01 02 03 04"  # container field 2, fixed32: unknown, skipped
        "0a 28"  # field 1 (pairs), length 40
        "   0a 12 70 72 6f 67 72 61 6d 5f 68 61 73 68 5f 6d 6f 64 65 6c"  # key, 18 bytes: "program_hash_model"
        "   1a 03 ac 02 05"  # field 3 packed, length 3: 300, 5
        "   18 80 80 80 80 0f"  # field 3 unpacked: 0xf0000000 (a 5-byte varint)
        "   21 00 00 00 00 00 00 00 00"  # field 4, fixed64: unknown, skipped
        "19 ff ff ff ff ff ff ff ff"  # container field 3, fixed64: unknown, skipped
        "0a 0e"  # field 1 (pairs), length 14
        "   2a 00"  # field 5, length-delimited, empty: unknown, skipped
        "   0a 05 6d 6f 64 65 6c"  # key "model"
        "   12 01 41"  # bytes_value "A"
        "   30 01"  # field 6, varint: unknown, skipped
    )
    f = read_mace_file(with_crc(payload))
    assert f.programs == [MaceProgram("model", 1, "0000012c00000005f0000000", sha(b"A"))]
    assert f.other_keys == []


def test_hand_written_legacy_bytes() -> None:
    data = bytes.fromhex(
        "02 00 00 00 00 00 00 00"  # int64 entry count 2
        "01 00 00 00 6b"  # int32 key length 1, "k"
        "02 00 00 00 01 02"  # int32 value length 2, value
        "27 00 00 00"
        + DEVICE_NAME_KEY.encode().hex()  # key length 39, the device name key
        + "03 00 00 00 47 50 55"  # value "GPU"
    )
    assert encode_mace_legacy([("k", b"\x01\x02"), (DEVICE_NAME_KEY, b"GPU")]) == data
    f = read_mace_file(data)
    assert f.device_name == "GPU"
    assert f.programs == [MaceProgram("k", 2, None, sha(b"\x01\x02"))]


# ---------------------------------------------------------------------------------------------------------------------
# Errors: offset and reason

PAIR_K = ld(1, ld(1, b"k") + ld(2, b"v"))  # 8 bytes

BAD_FILES = [
    ("empty", b"", 0, "is only 0 bytes"),
    ("pairs field as varint", with_crc(b"\x08\x01"), 0, "field 1 (pairs) has wire type 0, expected 2"),
    ("field number 0", with_crc(b"\x02\x00"), 0, "field number 0 is outside"),
    ("group wire type", with_crc(b"\x0b\x0c"), 0, "wire type 3 (groups)"),
    ("invalid wire type", with_crc(b"\x0e"), 0, "invalid wire type 6"),
    ("varint longer than 10 bytes", with_crc(b"\x10" + b"\xff" * 11), 1, "longer than 10 bytes"),
    ("varint over 64 bits", with_crc(b"\x10" + b"\xff" * 9 + b"\x7f"), 1, "overflows 64 bits"),
    ("varint cut off", with_crc(b"\x10\xff"), 1, "varint is cut off at byte 2"),
    ("pair longer than payload", with_crc(PAIR_K + b"\x0a\x50\x0a"), 9, "length 80 exceeds the 1 bytes left"),
    ("huge length", with_crc(b"\x12" + varint(2**63) + b"x"), 1, f"length {2**63} exceeds"),
    ("pair without key", with_crc(ld(1, ld(2, b"v"))), 0, "without a key"),
    ("key as fixed32", with_crc(ld(1, b"\x0d" + b"abcd")), 2, "field 1 (key) has wire type 5"),
    ("uint32s as fixed64", with_crc(ld(1, ld(1, b"k") + b"\x19" + bytes(8))), 5, "expected 0 or 2"),
    ("uint32 too large", with_crc(ld(1, ld(1, b"k") + b"\x18" + varint(2**32))), 6, "does not fit in a uint32"),
    ("packed varint cut off", with_crc(ld(1, ld(1, b"k") + ld(3, b"\x05\x80"))), 8, "cut off at byte 9"),
    ("bad UTF-8 key", with_crc(ld(1, ld(1, b"ab\xff") + ld(2, b""))), 6, "key is not valid UTF-8"),
    ("duplicate key", with_crc(PAIR_K + PAIR_K), 8, "duplicate key 'k' (first at byte 0)"),
    ("bytes and uint32s", with_crc(ld(1, ld(1, b"k") + ld(2, b"v") + b"\x18\x01")), 0, "holds both"),
    (
        "platform info as uint32s",
        with_crc(ld(1, ld(1, PLATFORM_INFO_KEY.encode()) + b"\x18\x01")),
        0,
        "holds uint32s_value, expected a string",
    ),
    (
        "device name not UTF-8",
        with_crc(ld(1, ld(1, DEVICE_NAME_KEY.encode()) + ld(2, b"GP\xc3"))),
        47,
        "is not valid UTF-8",
    ),
    ("no pairs, no CRC", b"\x10\x01\x00\x00\x00\x00", 2, "not the CRC32"),
    ("legacy negative count", struct.pack("<q", -1), 0, "is negative"),
    ("legacy count too large", struct.pack("<q", 2**62) + bytes(8), 0, "needs at least"),
    ("legacy negative length", struct.pack("<qi", 1, -5) + bytes(4), 8, "key length -5 is negative"),
    ("legacy value too long", struct.pack("<qi", 1, 0) + struct.pack("<i", 9) + b"abc", 12, "value length 9 exceeds"),
    ("legacy trailing data", encode_mace_legacy([("k", b"v")]) + b"\x00", 18, "1 bytes of trailing data"),
    ("ours", MCLP_MAGIC + bytes(100), 0, "mace cache inspect"),
]


@pytest.mark.parametrize(("data", "offset", "reason"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_malformed_inputs_name_offset_and_reason(data: bytes, offset: int, reason: str) -> None:
    with pytest.raises(MaceCompatError) as caught:
        read_mace_file(data)
    assert caught.value.offset == offset, caught.value
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"byte offset {offset}: ")
    assert isinstance(caught.value, MaceError)
    info = describe_mace(data)
    assert not info["valid"] and info["error"] == str(caught.value)


def test_small_legacy_files_never_parse_as_v11() -> None:
    for n in range(16):
        data = encode_mace_legacy([(f"key{i}", bytes(i)) for i in range(n)])
        assert detect(data) == "mace-legacy"
        with pytest.raises(MaceCompatError):
            mace_compat._parse_v11(memoryview(data))


def test_detect() -> None:
    assert detect(MCLP_MAGIC + bytes(100)) == "mclp"
    assert detect(encode_mace_v11([("k", b"v")])) == "mace-v1.1"
    assert detect(encode_mace_legacy([("k", b"v")])) == "mace-legacy"
    assert detect(b"GIF89a" + bytes(20)) == "unknown"
    assert detect(with_crc(PAIR_K + PAIR_K)) == "mace-v1.1"  # structurally v1.1; reading rejects the duplicate
    assert detect("not bytes") == "unknown"  # type: ignore[arg-type]


def test_crc_mismatch() -> None:
    data = encode_mace_v11(v11_pairs())
    i = data.index(CONV_BIN) + 10
    corrupt = flip(data, i, 6)  # inside a binary: the payload still parses
    for bad in (corrupt, flip(data, len(data) - 1)):
        assert detect(bad) == "mace-v1.1"
        with pytest.raises(MaceCompatError) as caught:
            read_mace_file(bad)
        assert caught.value.offset == len(bad) - 4
        assert caught.value.reason.startswith("CRC mismatch: stored 0x")
        f = read_mace_file(bad, check_crc=False)
        assert f.crc_ok is False and f.crc_stored != f.crc_computed == zlib.crc32(bad[:-4])
        assert len(f.programs) == 3
        info = describe_mace(bad)
        assert not info["valid"] and info["crc"]["verdict"] == "mismatch"
        assert info["error"] == str(caught.value)
        assert len(info["programs"]) == 3  # still shown


def test_truncation_at_every_length_is_an_error() -> None:
    files = [
        encode_mace_v11([*v11_pairs()[:3], ("u", [1, 300])]),
        encode_mace_v11([("k", b"v"), ("u", [1, 300])], packed=False),
        encode_mace_legacy([(PLATFORM_INFO_KEY, b"p"), ("k", b"vv"), ("e", b"")]),
    ]
    for data in files:
        for n in range(len(data)):
            with pytest.raises(MaceCompatError):
                read_mace_file(data[:n])
            info = describe_mace(data[:n])
            json.dumps(info)
            assert info["valid"] is False and info["error"]


def test_non_bytes_input() -> None:
    with pytest.raises(MaceCompatError) as caught:
        read_mace_file("text")  # type: ignore[arg-type]
    assert caught.value.offset is None
    info = describe_mace(None)  # type: ignore[arg-type]
    assert not info["valid"] and "must be bytes" in info["error"]
    assert read_mace_file(bytearray(encode_mace_v11([("k", b"v")]))).programs[0].key == "k"
    assert read_mace_file(memoryview(encode_mace_legacy([("k", b"v")]))).layout == "legacy"


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: encode_mace_v11([("k", b"a"), ("k", b"b")]), "duplicates key"),
        (lambda: encode_mace_v11([("k", "text")]), "bytes or a list of uint32"),  # type: ignore[list-item]
        (lambda: encode_mace_v11([("k", [2**32])]), "is not a uint32"),
        (lambda: encode_mace_v11([("k", [True])]), "is not a uint32"),
        (lambda: encode_mace_v11([(b"k", b"v")]), "(str key, value)"),  # type: ignore[list-item]
        (lambda: encode_mace_v11([("\ud800", b"v")]), "not encodable"),
        (lambda: encode_mace_legacy([("k", [1])]), "must be bytes in the legacy layout"),  # type: ignore[list-item]
    ],
)
def test_encoders_refuse_what_the_reader_rejects(call, reason: str) -> None:
    with pytest.raises(MaceCompatError) as caught:
        call()
    assert caught.value.offset is None and reason in caught.value.reason


# ---------------------------------------------------------------------------------------------------------------------
# Fuzzing: only MaceCompatError escapes read_mace_file; describe_mace never raises

FUZZ = settings(max_examples=1000, deadline=timedelta(milliseconds=200), suppress_health_check=[HealthCheck.too_slow])
SMALL_V11 = encode_mace_v11(
    [(PLATFORM_INFO_KEY, b"plat"), ("k -DA", b"bin"), ("program_hash_k -DA", b"h"), ("u", [1, 300])]
)
SMALL_LEGACY = encode_mace_legacy([(DEVICE_NAME_KEY, b"dev"), ("k", b"bin"), ("program_hash_k", b"h")])


def check_only_compat_errors(data: bytes) -> None:
    try:
        strict = read_mace_file(data)
    except MaceCompatError:
        strict = None
    try:
        lenient = read_mace_file(data, check_crc=False)
    except MaceCompatError:
        lenient = None
    kind = detect(data)
    if lenient is not None:
        assert kind == "mace-" + lenient.layout
        assert (strict is not None) == (lenient.crc_ok is not False)
    else:
        assert strict is None
    if kind in ("unknown", "mclp"):
        assert lenient is None
    info = describe_mace(data)
    json.dumps(info)
    assert info["valid"] == (strict is not None)
    assert (info["error"] is None) == info["valid"]


def test_every_bit_flip_of_small_files() -> None:
    for base in (SMALL_V11, SMALL_LEGACY):
        for i in range(len(base)):
            for bit in range(8):
                data = flip(base, i, bit)
                check_only_compat_errors(data)
                check_only_compat_errors(with_crc(data[:-4]))


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**4), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10**4), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**4), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**4), st.just(0)),
)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    check_only_compat_errors(data)
    check_only_compat_errors(with_crc(data))  # reaches the protobuf parser with a matching CRC
    check_only_compat_errors(struct.pack("<q", 1) + data)  # a plausible legacy count


@FUZZ
@given(st.sampled_from([SMALL_V11, SMALL_LEGACY]), st.lists(mutation, min_size=1, max_size=4), st.booleans())
def test_fuzz_mutations(base: bytes, ops: list[tuple[str, int, int]], recrc: bool) -> None:
    data = mutate(base, ops, wrap=True)
    check_only_compat_errors(with_crc(data[:-4]) if recrc and len(data) >= 4 else data)


keys = st.text(max_size=12).map(lambda s: "k" + s)  # never one of the metadata or program_hash_ prefixes
values = st.one_of(st.binary(max_size=40), st.lists(st.integers(0, 2**32 - 1), max_size=6))


@FUZZ
@given(st.dictionaries(keys, values, max_size=6), st.booleans())
def test_fuzz_encode_read_round_trip(pairs: dict[str, bytes | list[int]], packed: bool) -> None:
    f = read_mace_file(encode_mace_v11(list(pairs.items()), packed=packed))
    assert f.programs == [MaceProgram(k, len(v), None, sha(v)) for k, v in pairs.items() if isinstance(v, bytes)]
    assert f.other_keys == [(k, 4 * len(v)) for k, v in pairs.items() if isinstance(v, list)]
    legacy = {k: v for k, v in pairs.items() if isinstance(v, bytes)}
    g = read_mace_file(encode_mace_legacy(list(legacy.items())))
    assert g.layout == "legacy" and g.programs == f.programs


def test_cli_inspect_and_verify_read_xiaomi_files(tmp_path: Path) -> None:
    v11 = tmp_path / "mace_cl_compiled_program.bin"
    v11.write_bytes(
        encode_mace_v11(
            [
                ("mace_opencl_precompiled_platform_info_key", b"QUALCOMM Adreno(TM) OpenCL 2.0"),
                ("mace_opencl_precompiled_device_name_key", b"QUALCOMM Adreno(TM) 640"),
                ("conv_2d_1x1 -DBIAS -DDATA_TYPE=float", b"\x01" * 300),
                ("program_hash_conv_2d_1x1 -DBIAS -DDATA_TYPE=float", b"abc123"),
            ]
        )
    )
    run = [sys.executable, "-m", "mace.cli.main", "cache"]
    out = subprocess.run([*run, "inspect", str(v11)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Adreno(TM) 640" in out.stdout and "conv_2d_1x1 -DBIAS" in out.stdout and "300" in out.stdout
    assert "verdict: valid" in out.stdout
    verify = subprocess.run([*run, "verify", str(v11)], capture_output=True, text=True)
    assert verify.returncode == 0 and "1 programs, CRC32 ok" in verify.stdout
    damaged = bytearray(v11.read_bytes())
    damaged[-1] ^= 0xFF
    v11.write_bytes(bytes(damaged))
    verify = subprocess.run([*run, "verify", str(v11)], capture_output=True, text=True)
    assert verify.returncode == 1 and "invalid" in verify.stdout
    legacy = tmp_path / "legacy.bin"
    legacy.write_bytes(
        encode_mace_legacy(
            [("mace_opencl_precompiled_device_name_key", b"Mali-G76"), ("winograd_transform_2x2", b"\x02" * 64)]
        )
    )
    verify = subprocess.run([*run, "verify", str(legacy)], capture_output=True, text=True)
    assert verify.returncode == 0 and "legacy layout, 1 programs" in verify.stdout
