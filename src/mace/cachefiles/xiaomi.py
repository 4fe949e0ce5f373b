"""Read-only support for XiaoMi MACE's own ``mace_cl_compiled_program.bin``: bytes in, records out.

mace never loads these binaries into a device; it only recognizes, inspects and verifies them (``mace cache
inspect``). Pure like program_cache.py: no OpenCL import, no file I/O, no protobuf dependency, so it can be fuzzed. Two
layouts exist, both described in docs/cache-format.md ("Reading XiaoMi MACE files"):

- v1.1 and later: a protobuf ``PairContainer`` (repeated ``KVPair`` in field 1) followed by the little-endian
  ``zlib.crc32`` of those bytes;
- legacy: an int64 entry count, then per entry an int32 key length, the key, an int32 value length, the value.

Every problem raises ``MaceCompatError`` with the byte offset and the reason; no other exception escapes, parsing
always advances (no hang), and memory stays proportional to the input size.

Example:
    >>> data = encode_mace_v11([(PLATFORM_INFO_KEY, b"QUALCOMM Adreno(TM) OpenCL 2.0"), ("conv_2d -DBIAS", b"ELF")])
    >>> detect(data)
    'mace-v1.1'
    >>> f = read_mace_file(data)
    >>> f.platform_info, [(p.key, p.size) for p in f.programs], f.crc_ok
    ('QUALCOMM Adreno(TM) OpenCL 2.0', [('conv_2d -DBIAS', 3)], True)
    >>> try:
    ...     read_mace_file(data[:-1])
    ... except MaceCompatError as exc:
    ...     print(exc.offset, exc.reason)  # doctest: +ELLIPSIS
    78 not a readable MACE file; as v1.1: pairs entry length 21 exceeds the 20 bytes left in the PairContainer ...
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from mace.cachefiles.binformat import Cursor, FormatError
from mace.cachefiles.program_cache import MAGIC as MCLP_MAGIC

PLATFORM_INFO_KEY = "mace_opencl_precompiled_platform_info_key"
DEVICE_NAME_KEY = "mace_opencl_precompiled_device_name_key"
PROGRAM_HASH_PREFIX = "program_hash_"
METADATA_PREFIX = "mace_opencl_precompiled_"  # unknown keys with this prefix are metadata, not programs
CRC_SIZE = 4

_PAIRS, _KEY, _BYTES_VALUE, _UINT32S_VALUE = 1, 1, 2, 3  # field numbers (PairContainer.pairs; KVPair fields)
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5  # protobuf wire types
_MAX_FIELD_NUMBER = (1 << 29) - 1
_UINT32_MAX = 0xFFFFFFFF
_INT32_MAX = 0x7FFFFFFF


class MaceCompatError(FormatError):
    """The bytes are not a readable XiaoMi MACE program file (or pairs cannot be encoded as one).

    ``offset`` is the byte offset of the bad field or of where the data ended; None for whole-object problems.
    """


@dataclass(frozen=True)
class MaceProgram:
    """One program binary: its MACE key (kernel name and build options), size, MACE's stored hash, our sha256."""

    key: str
    size: int
    program_hash: str | None  # the value of "program_hash_<key>": text if printable ASCII, else hex; None if absent
    sha256: str  # hex sha256 of the binary, computed here


@dataclass
class MaceProgramFile:
    """What a MACE file holds. ``crc_*`` are None for the legacy layout, which has no CRC."""

    layout: str  # "v1.1" or "legacy"
    platform_info: str | None = None
    device_name: str | None = None
    programs: list[MaceProgram] = field(default_factory=list)
    other_keys: list[tuple[str, int]] = field(default_factory=list)  # (key, value size in bytes)
    crc_stored: int | None = None
    crc_computed: int | None = None
    crc_ok: bool | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Public functions


def detect(data: bytes) -> str:
    """``"mclp"`` (mace's own cache file), ``"mace-legacy"``, ``"mace-v1.1"`` or ``"unknown"``. Never raises.

    Structural only: legacy when the count and lengths walk the data exactly to its end; v1.1 when everything but
    the last 4 bytes parses as a PairContainer and either the CRC matches or at least one pair was found (a CRC
    mismatch is then reported by ``read_mace_file``/``describe_mace``, not here).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return "unknown"
    view = memoryview(bytes(data))
    if view[:4] == MCLP_MAGIC:
        return "mclp"
    for layout, parse in (("mace-legacy", _walk_legacy), ("mace-v1.1", _parse_v11)):
        try:
            parse(view)
        except MaceCompatError:
            continue
        return layout
    return "unknown"


def read_mace_file(data: bytes, *, check_crc: bool = True) -> MaceProgramFile:
    """Parse and check a MACE file. Any problem raises MaceCompatError; so does a CRC mismatch unless
    ``check_crc=False``, which returns the records with ``crc_ok=False`` (what ``describe_mace`` shows)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MaceCompatError(None, f"MACE file data must be bytes, not {type(data).__name__}")
    view = memoryview(bytes(data))
    layout, pairs, crc = _recognize(view)
    if check_crc and crc is not None and crc[0] != crc[1]:
        raise _crc_error(len(view), *crc)
    return _interpret(layout, pairs, crc)


def describe_mace(data: bytes) -> dict[str, Any]:
    """What ``mace cache inspect`` shows for a MACE file: as much as could be read, the CRC verdict, a hex preview
    of the first 64 bytes, ``valid`` and ``error``. Never raises for bytes input. JSON-serialisable."""
    is_bytes = isinstance(data, (bytes, bytearray, memoryview))
    raw = bytes(data) if is_bytes else b""
    info: dict[str, Any] = {
        "format": detect(raw) if is_bytes else "unknown",
        "size": len(raw),
        "valid": False,
        "error": None,
        "layout": None,
        "platform_info": None,
        "device_name": None,
        "programs": [],
        "other_keys": [],
        "crc": None,
        "hex_preview": [f"{i:08x}  {raw[i : i + 16].hex(' ')}" for i in range(0, min(len(raw), 64), 16)],
    }
    try:
        f = read_mace_file(data, check_crc=False)
    except MaceCompatError as exc:
        info["error"] = str(exc)
        return info
    info["layout"] = f.layout
    info["platform_info"] = f.platform_info
    info["device_name"] = f.device_name
    info["programs"] = [asdict(p) for p in f.programs]
    info["other_keys"] = [{"key": k, "size": n} for k, n in f.other_keys]
    verdict = "absent" if f.crc_ok is None else "ok" if f.crc_ok else "mismatch"
    info["crc"] = {"stored": f.crc_stored, "computed": f.crc_computed, "verdict": verdict}
    if f.crc_ok is False:
        info["error"] = str(_crc_error(len(raw), f.crc_stored, f.crc_computed))
    info["valid"] = info["error"] is None
    return info


def encode_mace_v11(pairs: list[tuple[str, bytes | list[int]]], *, packed: bool = True) -> bytes:
    """A v1.1 file for tests and tools: bytes values go to ``bytes_value``, lists of ints to ``uint32s_value``
    (packed, or one varint field per element with ``packed=False``; an empty list is an empty packed field).
    Raises MaceCompatError (offset None) for what ``read_mace_file`` would reject: duplicate or non-str keys,
    values that are neither bytes nor uint32 lists."""
    body = bytearray()
    for i, (key, value) in enumerate(_checked_pairs(pairs)):
        message = _length_delimited(_KEY, key)
        if isinstance(value, bytes):
            message += _length_delimited(_BYTES_VALUE, value)
        elif packed or not value:
            message += _length_delimited(_UINT32S_VALUE, b"".join(_varint(v) for v in _uint32s(value, i)))
        else:
            for v in _uint32s(value, i):
                message += _varint(_UINT32S_VALUE << 3 | _VARINT) + _varint(v)
        body += _length_delimited(_PAIRS, bytes(message))
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def encode_mace_legacy(pairs: list[tuple[str, bytes]]) -> bytes:
    """A legacy-layout file for tests and tools (bytes values only; same checks as ``encode_mace_v11``)."""
    out = bytearray(struct.pack("<q", len(pairs)))
    for i, (key, value) in enumerate(_checked_pairs(pairs)):
        if not isinstance(value, bytes):
            raise MaceCompatError(None, f"pairs[{i}] value must be bytes in the legacy layout")
        for part in (key, value):
            if len(part) > _INT32_MAX:
                raise MaceCompatError(None, f"pairs[{i}] has a field longer than 2**31-1 bytes")
            out += struct.pack("<i", len(part)) + part
    return bytes(out)


# ---------------------------------------------------------------------------------------------------------------------
# Structure: the wire level of both layouts


@dataclass
class _RawPair:
    offset: int  # where the pair starts: its KVPair tag (v1.1) or its key length (legacy)
    key: memoryview
    key_offset: int
    value: memoryview | None = None  # bytes_value
    value_offset: int = 0
    uint32s: list[int] | None = None  # uint32s_value; None when the field never occurs


class _Reader(Cursor):
    """Reads inside [pos, end) of a memoryview; running past ``end`` raises with the offset. Every read advances."""

    error = MaceCompatError

    def varint(self, what: str) -> int:
        start, value = self.pos, 0
        for shift in range(0, 70, 7):
            if self.pos >= self.end:
                raise MaceCompatError(
                    start, f"{what} varint is cut off at byte {self.end}, the end of the {self.region}"
                )
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value >> 64:
                    raise MaceCompatError(start, f"{what} varint overflows 64 bits")
                return value
        raise MaceCompatError(start, f"{what} varint is longer than 10 bytes")

    def uint32(self, what: str) -> int:
        start = self.pos
        value = self.varint(what)
        if value > _UINT32_MAX:
            raise MaceCompatError(start, f"{what} {value} does not fit in a uint32")
        return value

    def length(self, what: str) -> int:
        start = self.pos
        n = self.varint(f"{what} length")
        if n > self.end - self.pos:
            raise MaceCompatError(
                start, f"{what} length {n} exceeds the {self.end - self.pos} bytes left in the {self.region}"
            )
        return n

    def tag(self) -> tuple[int, int]:
        start = self.pos
        tag = self.varint("field tag")
        number, wire = tag >> 3, tag & 7
        if number == 0 or number > _MAX_FIELD_NUMBER:
            raise MaceCompatError(start, f"field number {number} is outside 1..{_MAX_FIELD_NUMBER}")
        if wire in (3, 4):
            raise MaceCompatError(start, f"field {number} uses wire type {wire} (groups), which MACE never writes")
        if wire > _FIXED32:
            raise MaceCompatError(start, f"field {number} has invalid wire type {wire}")
        return number, wire

    def skip(self, number: int, wire: int) -> None:
        what = f"unknown field {number}"
        if wire == _VARINT:
            self.varint(what)
        elif wire == _FIXED64:
            self.take(8, what)
        elif wire == _FIXED32:
            self.take(4, what)
        else:
            self.take(self.length(what), what)

    def int32_length(self, what: str) -> int:
        start = self.pos
        n = struct.unpack("<i", self.take(4, f"{what} length"))[0]
        if n < 0:
            raise MaceCompatError(start, f"{what} length {n} is negative")
        if n > self.end - self.pos:
            raise MaceCompatError(start, f"{what} length {n} exceeds the {self.end - self.pos} bytes left in the file")
        return n


def _expect_wire(number: int, name: str, wire: int, expected: int, at: int) -> None:
    if wire != expected:
        raise MaceCompatError(at, f"field {number} ({name}) has wire type {wire}, expected {expected}")


def _parse_v11(view: memoryview) -> tuple[list[_RawPair], tuple[int, int]]:
    """The pairs and (stored, computed) CRC. Raises unless the payload parses and it has pairs or the CRC matches."""
    size = len(view)
    if size < CRC_SIZE:
        raise MaceCompatError(size, f"a v1.1 file ends with a 4-byte CRC but the data is only {size} bytes")
    end = size - CRC_SIZE
    reader = _Reader(view, 0, end, "PairContainer")
    pairs = []
    while reader.pos < end:
        at = reader.pos
        number, wire = reader.tag()
        if number != _PAIRS:
            reader.skip(number, wire)
            continue
        _expect_wire(number, "pairs", wire, _LENGTH_DELIMITED, at)
        n = reader.length("pairs entry")
        pairs.append(_parse_pair(view, reader.pos, reader.pos + n, at))
        reader.pos += n
    crc = (int.from_bytes(view[end:], "little"), zlib.crc32(view[:end]))
    if not pairs and crc[0] != crc[1]:
        raise MaceCompatError(end, "no key-value pairs and the last 4 bytes are not the CRC32 of the rest")
    return pairs, crc


def _parse_pair(view: memoryview, start: int, end: int, at: int) -> _RawPair:
    reader = _Reader(view, start, end, f"key-value pair at byte {at}")
    key: memoryview | None = None
    pair = _RawPair(at, view[0:0], 0)
    while reader.pos < end:
        field_at = reader.pos
        number, wire = reader.tag()
        if number == _KEY:  # a repeated singular field: the last one wins, as in protobuf
            _expect_wire(number, "key", wire, _LENGTH_DELIMITED, field_at)
            n = reader.length("key")
            pair.key_offset, key = reader.pos, reader.take(n, "key")
        elif number == _BYTES_VALUE:
            _expect_wire(number, "bytes_value", wire, _LENGTH_DELIMITED, field_at)
            n = reader.length("bytes_value")
            pair.value_offset, pair.value = reader.pos, reader.take(n, "bytes_value")
        elif number == _UINT32S_VALUE:
            values = pair.uint32s if pair.uint32s is not None else []
            if wire == _VARINT:  # unpacked: one field per element
                values.append(reader.uint32("uint32s_value element"))
            elif wire == _LENGTH_DELIMITED:  # packed: one field holding the varints
                n = reader.length("packed uint32s_value")
                packed = _Reader(view, reader.pos, reader.pos + n, f"packed uint32s_value at byte {field_at}")
                while packed.pos < packed.end:
                    values.append(packed.uint32("uint32s_value element"))
                reader.pos = packed.end
            else:
                raise MaceCompatError(field_at, f"field 3 (uint32s_value) has wire type {wire}, expected 0 or 2")
            pair.uint32s = values
        else:
            reader.skip(number, wire)
    if key is None:
        raise MaceCompatError(at, "key-value pair without a key (field 1)")
    pair.key = key
    return pair


def _walk_legacy(view: memoryview) -> list[_RawPair]:
    size = len(view)
    reader = _Reader(view, 0, size, "file")
    count = struct.unpack("<q", reader.take(8, "legacy entry count"))[0]
    if count < 0:
        raise MaceCompatError(0, f"legacy entry count {count} is negative")
    if count > (size - 8) // 8:  # each entry needs at least its two int32 lengths: bound the loop first
        raise MaceCompatError(0, f"legacy entry count {count} needs at least {8 * count} bytes, {size - 8} follow")
    pairs = []
    for _ in range(count):
        at = reader.pos
        key_len = reader.int32_length("key")
        pair = _RawPair(at, reader.take(key_len, "key"), at + 4)
        value_len = reader.int32_length("value")
        pair.value_offset, pair.value = reader.pos, reader.take(value_len, "value")
        pairs.append(pair)
    if reader.pos != size:
        raise MaceCompatError(reader.pos, f"{size - reader.pos} bytes of trailing data after {count} legacy entries")
    return pairs


def _recognize(view: memoryview) -> tuple[str, list[_RawPair], tuple[int, int] | None]:
    """Layout, pairs and CRC; legacy is tried first. When neither fits, the error that got further is raised."""
    if view[:4] == MCLP_MAGIC:
        raise MaceCompatError(0, "this is mace's own cache file (magic MCLP): read it with mace cache inspect")
    try:
        return "legacy", _walk_legacy(view), None
    except MaceCompatError as exc:
        legacy_error = exc
    try:
        pairs, crc = _parse_v11(view)
        return "v1.1", pairs, crc
    except MaceCompatError as exc:
        v11_error = exc
    (best, name), (other, other_name) = sorted(
        [(v11_error, "v1.1"), (legacy_error, "legacy")], key=lambda e: -(e[0].offset or 0)
    )
    raise MaceCompatError(
        best.offset,
        f"not a readable MACE file; as {name}: {best.reason} (as {other_name}, byte offset {other.offset}: "
        f"{other.reason})",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Meaning: keys, metadata, programs


def _text(raw: memoryview, offset: int, what: str) -> str:
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        raise MaceCompatError(offset + exc.start, f"{what} is not valid UTF-8 ({exc.reason})") from None


def _hash_text(pair: _RawPair) -> str:
    if pair.uint32s is not None:
        return "".join(f"{v:08x}" for v in pair.uint32s)
    raw = bytes(pair.value or b"")
    return raw.decode("ascii") if all(0x20 <= b < 0x7F for b in raw) else raw.hex()


def _interpret(layout: str, pairs: list[_RawPair], crc: tuple[int, int] | None) -> MaceProgramFile:
    result = MaceProgramFile(layout)
    if crc is not None:
        result.crc_stored, result.crc_computed = crc
        result.crc_ok = crc[0] == crc[1]
    first_at: dict[str, int] = {}
    hashes: list[tuple[str, _RawPair]] = []
    for pair in pairs:
        key = _text(pair.key, pair.key_offset, "key")
        if key in first_at:
            raise MaceCompatError(pair.offset, f"duplicate key {key!r} (first at byte {first_at[key]})")
        first_at[key] = pair.offset
        if pair.value is not None and pair.uint32s is not None:
            raise MaceCompatError(pair.offset, f"key {key!r} holds both bytes_value and uint32s_value")
        if key in (PLATFORM_INFO_KEY, DEVICE_NAME_KEY):
            if pair.uint32s is not None:
                raise MaceCompatError(pair.offset, f"key {key!r} holds uint32s_value, expected a string")
            text = _text(pair.value or memoryview(b""), pair.value_offset, f"value of {key!r}")
            if key == PLATFORM_INFO_KEY:
                result.platform_info = text
            else:
                result.device_name = text
        elif key.startswith(PROGRAM_HASH_PREFIX):
            hashes.append((key, pair))
        elif pair.uint32s is not None:
            result.other_keys.append((key, 4 * len(pair.uint32s)))
        elif key.startswith(METADATA_PREFIX):
            result.other_keys.append((key, len(pair.value or b"")))
        else:
            binary = pair.value if pair.value is not None else memoryview(b"")
            result.programs.append(MaceProgram(key, len(binary), None, hashlib.sha256(binary).hexdigest()))
    index = {p.key: i for i, p in enumerate(result.programs)}
    for key, pair in hashes:
        target = key[len(PROGRAM_HASH_PREFIX) :]
        if target not in index and target[:1] == " ":  # also accept "program_hash_ <key>"
            target = target[1:]
        if target in index and result.programs[index[target]].program_hash is None:
            i = index[target]
            program = result.programs[i]
            result.programs[i] = MaceProgram(program.key, program.size, _hash_text(pair), program.sha256)
        else:
            size = 4 * len(pair.uint32s) if pair.uint32s is not None else len(pair.value or b"")
            result.other_keys.append((key, size))
    return result


def _crc_error(size: int, stored: int | None, computed: int | None) -> MaceCompatError:
    return MaceCompatError(
        size - CRC_SIZE, f"CRC mismatch: stored 0x{stored:08x}, computed 0x{computed:08x} over bytes [0, {size - 4})"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Encoding (tests and tools)


def _checked_pairs(pairs: list[tuple[str, Any]]) -> list[tuple[bytes, Any]]:
    out, seen = [], set()
    for i, item in enumerate(pairs):
        if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str):
            raise MaceCompatError(None, f"pairs[{i}] must be a (str key, value) tuple")
        key, value = item
        if key in seen:
            raise MaceCompatError(None, f"pairs[{i}] duplicates key {key!r}")
        seen.add(key)
        try:
            raw_key = key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MaceCompatError(None, f"pairs[{i}] key is not encodable as UTF-8: {exc.reason}") from None
        if isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        if not isinstance(value, (bytes, list)):
            raise MaceCompatError(
                None, f"pairs[{i}] value must be bytes or a list of uint32, not {type(value).__name__}"
            )
        out.append((raw_key, value))
    return out


def _uint32s(values: list[Any], i: int) -> list[int]:
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _UINT32_MAX:
            raise MaceCompatError(None, f"pairs[{i}] value {v!r} is not a uint32")
    return values


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload
