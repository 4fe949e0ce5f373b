"""What mace's binary file formats share: bounded reads, strings, record framing, header and section checks, signing.

Pure like the formats built on it (program_cache.py and tuned_params.py through records.py, xiaomi.py): stdlib only,
no OpenCL, no file I/O. Each format describes its own layout (a ``Format`` and a ``Decoder`` subclass) and raises
its own ``FormatError`` subclass; the messages and offsets produced here are part of those modules' behaviour.

Every file of the MCLP family has the same frame (docs/cache-format.md): a little-endian header starting with magic,
version (major << 16 | minor), flags and header size and ending with the total file size; sections of records, each
record prefixed by its u32 size; a trailer holding the sha256 of everything before it and, when flags bit 0 is set,
an HMAC-SHA256 over everything before the HMAC.

Example:
    >>> c = Cursor(b"\\x02\\x00\\x00\\x00hi!", 0, 6, "record")
    >>> c.string("name"), c.pos
    ('hi', 6)
    >>> try:
    ...     c.take(1, "tail")
    ... except FormatError as exc:
    ...     print(exc)
    byte offset 6: tail needs 1 bytes but only 0 remain in the record
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mace.errors import MaceError

DIGEST_SIZE = 32  # sha256 and HMAC-SHA256
FLAG_SIGNED = 1 << 0  # the trailer ends with an HMAC-SHA256 over everything before it
REQUIRED_FLAGS_MASK = 0x0000FFFF  # bits a reader must understand; unknown ones are rejected
KNOWN_REQUIRED_FLAGS = FLAG_SIGNED  # bits 16..31 are optional features a reader may ignore
U32_MAX = 0xFFFFFFFF
_HEX_DIGITS = frozenset("0123456789abcdef")
_BYTES_TYPES = (bytes, bytearray, memoryview)
# The header fields every format of the family starts with (name, struct code); total_size (Q) always ends it.
_COMMON_HEADER = (
    ("magic", "4s"),
    ("version", "I"),
    ("flags", "I"),
    ("header_size", "I"),
    ("fingerprint_count", "I"),
    ("entry_count", "I"),
    ("fingerprint_offset", "Q"),
    ("fingerprint_size", "Q"),
    ("entry_table_offset", "Q"),
    ("entry_table_size", "Q"),
)
T = TypeVar("T")


class FormatError(MaceError):
    """Bytes that are corrupt, truncated, forged or of an unknown version (or records that cannot be encoded).

    ``offset`` is the byte offset of the bad field or of where the data ended; None for whole-object problems.
    """

    def __init__(self, offset: int | None, reason: str) -> None:
        super().__init__(f"byte offset {offset}: {reason}" if offset is not None else reason)
        self.offset = offset
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------------------
# Encoding helpers


def utf8(text: str, what: str, error: type[FormatError]) -> bytes:
    if not isinstance(text, str):
        raise error(None, f"{what} must be str, not {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(None, f"{what} is not encodable as UTF-8: {exc.reason}") from None


def pack_str(text: str, what: str, error: type[FormatError]) -> bytes:
    """A u32 byte length, then the UTF-8 bytes."""
    raw = utf8(text, what, error)
    if len(raw) > U32_MAX:
        raise error(None, f"{what} is longer than 2**32-1 bytes")
    return struct.pack("<I", len(raw)) + raw


def hex_digest(value: str, what: str, error: type[FormatError]) -> bytes:
    """The 32 bytes of a digest given as 64 lowercase hex digits."""
    if not isinstance(value, str) or len(value) != 2 * DIGEST_SIZE or not set(value) <= _HEX_DIGITS:
        raise error(None, f"{what} {value!r} is not 64 lowercase hex digits")
    return bytes.fromhex(value)


def check_key(key: bytes | None, error: type[FormatError]) -> None:
    if key is not None and (not isinstance(key, (bytes, bytearray)) or not key):
        raise error(None, "the signing key must be non-empty bytes")


def frame(body: bytes) -> bytes:
    """One record: its u32 size (counting the size field itself), then ``body``."""
    return struct.pack("<I", 4 + len(body)) + body


def trailer_size(signed: bool) -> int:
    return DIGEST_SIZE * (2 if signed else 1)


def seal(body: bytes | bytearray, key: bytes | None) -> bytes:
    """``body`` followed by the trailer: its sha256, then (with ``key``) the HMAC-SHA256 of body and sha256."""
    out = bytearray(body)
    out += hashlib.sha256(out).digest()
    if key is not None:
        out += hmac.new(bytes(key), out, hashlib.sha256).digest()
    return bytes(out)


# ---------------------------------------------------------------------------------------------------------------------
# Reading


class Cursor:
    """Reads little-endian fields inside [pos, end); running past ``end`` raises ``error`` with the offset."""

    error: type[FormatError] = FormatError

    def __init__(self, data: Any, pos: int, end: int, region: str, error: type[FormatError] | None = None) -> None:
        self.data, self.pos, self.end, self.region = data, pos, end, region
        if error is not None:
            self.error = error

    def take(self, n: int, what: str) -> Any:
        if n > self.end - self.pos:
            raise self.error(
                self.pos, f"{what} needs {n} bytes but only {self.end - self.pos} remain in the {self.region}"
            )
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def unpack(self, code: str, what: str) -> Any:
        return struct.unpack("<" + code, self.take(struct.calcsize("<" + code), what))[0]

    def string(self, what: str) -> str:
        """A u32 byte length, then that many bytes of UTF-8."""
        at = self.pos
        n = self.unpack("I", f"{what} length")
        if n > self.end - self.pos:
            raise self.error(at, f"{what} length {n} exceeds the {self.end - self.pos} bytes left in the {self.region}")
        raw = self.take(n, what)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(at + 4 + exc.start, f"{what} is not valid UTF-8 ({exc.reason})") from None


def header_fields(*own: tuple[str, str]) -> tuple[tuple[str, int, str], ...]:
    """(name, byte offset, struct code) of each header field: the family's common ones, a format's ``own``, then
    total_size."""
    out, at = [], 0
    for name, code in (*_COMMON_HEADER, *own, ("total_size", "Q")):
        out.append((name, at, code))
        at += struct.calcsize("<" + code)
    return tuple(out)


def header_struct(fields: tuple[tuple[str, int, str], ...]) -> struct.Struct:
    return struct.Struct("<" + "".join(code for _, _, code in fields))


@dataclass(frozen=True)
class Format:
    """One file format of the family: what its header looks like and which error it raises."""

    magic: bytes
    title: str  # what the file is, for the bad-magic message: "mace OpenCL program cache"
    data_name: str  # what the input is, for the not-bytes message: "cache data"
    header: struct.Struct  # header_struct(header_fields)
    header_fields: tuple[tuple[str, int, str], ...]  # header_fields(...): name, byte offset, struct code
    major: int
    minor: int
    error: type[FormatError]
    flag_signed: int = FLAG_SIGNED
    required_flags_mask: int = REQUIRED_FLAGS_MASK
    known_required_flags: int = KNOWN_REQUIRED_FLAGS


@dataclass
class Header:
    values: tuple[Any, ...]  # every header field, in the order of Format.header
    flags: int
    header_size: int
    total: int
    exact: bool  # written by this minor version (or older): no unknown trailing bytes or gaps allowed
    trailer_start: int


def check_bytes(data: Any, fmt: Format) -> None:
    if not isinstance(data, _BYTES_TYPES):
        raise fmt.error(None, f"{fmt.data_name} must be bytes, not {type(data).__name__}")


def read_header(data: bytes, fmt: Format) -> Header:
    """The checks every format's header gets: magic, size, version, required flags, total size, trailer room."""
    error, size = fmt.error, fmt.header.size
    if len(data) >= len(fmt.magic) and data[: len(fmt.magic)] != fmt.magic:
        raise error(0, f"bad magic {data[:4]!r}, expected {fmt.magic!r}: not a {fmt.title}")
    if len(data) < size:
        raise error(len(data), f"file truncated: the header needs {size} bytes, data ends at byte {len(data)}")
    values = fmt.header.unpack_from(data)
    version, flags, header_size, total = values[1], values[2], values[3], values[-1]
    if version >> 16 != fmt.major:
        raise error(
            4,
            f"unsupported format version 0x{version:08x} (major {version >> 16}); this "
            f"reader supports major version {fmt.major}",
        )
    exact = (version & 0xFFFF) <= fmt.minor
    unknown = flags & fmt.required_flags_mask & ~fmt.known_required_flags
    if unknown:
        raise error(8, f"unknown required flags 0x{unknown:08x} in flags 0x{flags:08x}")
    if total > len(data):
        raise error(len(data), f"file truncated: the header declares {total} bytes, data ends at byte {len(data)}")
    if total < len(data):
        raise error(total, f"{len(data) - total} bytes of trailing data after the declared total size {total}")
    if header_size < size or (exact and header_size != size):
        raise error(12, f"header size {header_size}, expected {size}")
    trailer_start = total - trailer_size(bool(flags & fmt.flag_signed))
    if trailer_start < header_size:
        raise error(size - 8, f"total size {total} cannot hold the {header_size}-byte header and the trailer")
    return Header(values, flags, header_size, total, exact, trailer_start)


def check_sections(
    error: type[FormatError], header: Header, sections: tuple[tuple[str, int, int, int, int], ...]
) -> None:
    """Sections (name, header offset of their offset field, offset, size, alignment) follow the header in order,
    without overlap, before the trailer; in an exact file without gaps (but alignment padding)."""
    exact, trailer_start = header.exact, header.trailer_start
    prev_end, prev_name, field_at = header.header_size, "header", 0
    for name, field_at, off, size, align in sections:
        expected = -(-prev_end // align) * align
        if off < prev_end or (exact and off != expected):
            raise error(field_at, f"{name} offset {off}, expected {expected} (the {prev_name} ends at byte {prev_end})")
        if size > trailer_start - off:
            raise error(
                field_at + 8, f"{name} of {size} bytes at offset {off} runs past the trailer at byte {trailer_start}"
            )
        if off % align:
            raise error(field_at, f"{name} offset {off} is not {align}-byte aligned")
        prev_end, prev_name = off + size, name
    if exact and prev_end != trailer_start:
        raise error(field_at + 8, f"{prev_name} ends at byte {prev_end}, the trailer starts at byte {trailer_start}")


def check_counts(error: type[FormatError], counts: tuple[tuple[str, int, int, int, int], ...]) -> None:
    """Bound record counts (name, header offset, count, section size, minimum record size) by the bytes that could
    hold them before looping: a count of 2**32-1 fails here."""
    for name, field_at, count, size, min_size in counts:
        if count * min_size > size:
            raise error(
                field_at, f"{name} count {count} cannot fit in {size} bytes (a record takes at least {min_size})"
            )


def raw_header(data: bytes, fmt: Format) -> dict[str, Any]:
    """The header fields that fit in ``data``, unchecked (for describe())."""
    out: dict[str, Any] = {}
    for name, offset, code in fmt.header_fields:
        if offset + struct.calcsize("<" + code) <= len(data):
            value = struct.unpack_from("<" + code, data, offset)[0]
            out[name] = repr(value) if isinstance(value, bytes) else value
    if "version" in out:
        out["version_text"] = f"{out['version'] >> 16}.{out['version'] & 0xFFFF}"
    if "flags" in out:
        out["signed"] = bool(out["flags"] & fmt.flag_signed)
    return out


class Decoder:
    """One decoder serves decode (strict), decode_report (lenient), validate and describe.

    A subclass sets ``fmt`` and implements ``layout`` (the format's own header checks) and ``sections`` (the
    records); ``run`` does the rest in order: header, signature, sections, whole-file sha256.
    """

    fmt: Format

    def __init__(self, data: bytes, key: bytes | None, strict: bool) -> None:
        check_bytes(data, self.fmt)
        check_key(key, self.fmt.error)
        self.data = bytes(data)
        self.key = key
        self.strict = strict
        self.problems: list[str] = []
        self.fingerprint_rows: list[dict[str, Any]] = []
        self.entry_rows: list[dict[str, Any]] = []

    def layout(self, header: Header) -> Any:
        raise NotImplementedError

    def sections(self, layout: Any) -> Any:
        raise NotImplementedError

    def run(self) -> Any:
        header = read_header(self.data, self.fmt)
        layout = self.layout(header)
        if self.key is not None:
            self.check_signature(header)
        result = self.sections(layout)
        stored = self.data[header.trailer_start : header.trailer_start + DIGEST_SIZE]
        actual = hashlib.sha256(self.data[: header.trailer_start]).digest()
        if stored != actual:
            self.problem(
                self.fmt.error(
                    header.trailer_start,
                    f"whole-file sha256 mismatch: trailer holds {stored.hex()}, content hashes to {actual.hex()}",
                )
            )
        return result

    def problem(self, exc: FormatError) -> None:
        """A problem confined to one record: fatal in strict mode, reported (record dropped) in lenient mode."""
        if self.strict:
            raise exc
        self.problems.append(str(exc))

    def check_signature(self, header: Header) -> None:
        """Authenticate before parsing the sections: with a key, the bytes are assumed hostile."""
        assert self.key is not None
        if not header.flags & self.fmt.flag_signed:
            raise self.fmt.error(8, "the file is not signed (flags bit 0 clear) but a key was given")
        mac_at = header.total - DIGEST_SIZE
        expected = hmac.new(bytes(self.key), self.data[:mac_at], hashlib.sha256).digest()
        if not hmac.compare_digest(expected, self.data[mac_at : header.total]):
            raise self.fmt.error(mac_at, "HMAC-SHA256 signature mismatch: wrong key or modified file")

    def cursor(self, pos: int, end: int, region: str) -> Cursor:
        return Cursor(self.data, pos, end, region, self.fmt.error)

    def records(
        self, name: str, count: int, start: int, size: int, min_size: int, exact: bool
    ) -> list[tuple[int, int]]:
        """The (start, end) of each record, following the u32 size prefixes; bad framing is whole-file fatal."""
        error = self.fmt.error
        out = []
        pos, end = start, start + size
        for i in range(count):
            if end - pos < 4:
                raise error(pos, f"{name} {i}: record size field runs past the section end at byte {end}")
            n = struct.unpack_from("<I", self.data, pos)[0]
            if not min_size <= n <= end - pos:
                raise error(pos, f"{name} {i}: record size {n} outside {min_size}..{end - pos}")
            out.append((pos, pos + n))
            pos += n
        if exact and pos != end:
            raise error(pos, f"{end - pos} unused bytes after the last {name} record")
        return out

    def read_records(
        self,
        rows: list[dict[str, Any]],
        spans: list[tuple[int, int]],
        read: Callable[[int, int, int, dict[str, Any]], T],
    ) -> list[T]:
        """``read(i, start, end, row)`` for each record; a record whose read raises is reported and dropped
        (``problem``). Each record gets a describe() row, which ``read`` fills in."""
        out = []
        for i, (start, end) in enumerate(spans):
            row: dict[str, Any] = {"index": i, "offset": start, "size": end - start}
            rows.append(row)
            try:
                out.append(read(i, start, end, row))
            except self.fmt.error as exc:
                row["problem"] = str(exc)
                self.problem(exc)
        return out


def describe(decoder_type: type[Decoder], data: bytes) -> dict[str, Any]:
    """As much as can be parsed, plus the problems and the error. Never raises for any input. JSON-serialisable."""
    fmt = decoder_type.fmt
    raw = bytes(data) if isinstance(data, _BYTES_TYPES) else b""
    decoder = decoder_type(raw, None, strict=False)
    error = None
    try:
        check_bytes(data, fmt)
        decoder.run()
    except fmt.error as exc:
        error = str(exc)
    return {
        "size": len(raw),
        "valid": error is None and not decoder.problems,
        "error": error,
        "problems": decoder.problems,
        "header": raw_header(raw, fmt),
        "fingerprints": decoder.fingerprint_rows,
        "entries": decoder.entry_rows,
        "hex_preview": [f"{i:08x}  {raw[i : i + 16].hex(' ')}" for i in range(0, min(len(raw), 64), 16)],
    }
