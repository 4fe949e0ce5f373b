"""The compiled-program cache file (``mace_cl_compiled_program.bin``): bytes in, records out.

Pure on purpose: no OpenCL import and no file I/O, so loaders, ``mace cache`` tools and fuzzers share one
implementation. The byte layout, validation rules and signing threat model are in docs/cache-format.md.

The two identities that decide whether a cached binary may be used are computed in exactly one place each:
``DeviceFingerprint.id()`` and ``program_key()``.

Example:
    >>> fp = DeviceFingerprint("pocl", "The pocl project", "OpenCL 3.0 PoCL 5.0", "cpu-x86-64", "GenuineIntel",
    ...                        "OpenCL 3.0", "5.0", 64, True, "0.1.0")
    >>> entry = CacheEntry.for_program("__kernel void k() {}", "-cl-mad-enable  -DN=4", fp, b"BINARY", now=1.0)
    >>> entry.build_options
    '-cl-mad-enable -DN=4'
    >>> data = encode(CacheFile({fp.id(): fp}, [entry]))
    >>> decode(data).entries_for(fp) == [entry]
    True
    >>> try:
    ...     decode(data[:-1])
    ... except CacheFormatError as exc:
    ...     print(exc.offset, exc.reason)
    469 file truncated: the header declares 470 bytes, data ends at byte 469
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from mace.errors import MaceError

MAGIC = b"MCLP"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
FORMAT_VERSION = (FORMAT_MAJOR << 16) | FORMAT_MINOR  # 0x00010000

FLAG_SIGNED = 1 << 0  # the trailer ends with an HMAC-SHA256 over everything before it
REQUIRED_FLAGS_MASK = 0x0000FFFF  # bits a reader must understand; unknown ones are rejected
KNOWN_REQUIRED_FLAGS = FLAG_SIGNED  # bits 16..31 are optional features a reader may ignore

# magic, version, flags, header size, fingerprint count, entry count,
# fingerprint section offset/size, entry table offset/size, blob area offset/size, total file size
_HEADER = struct.Struct("<4sIIIIIQQQQQQQ")
HEADER_SIZE = _HEADER.size  # 80
_HEADER_FIELDS: tuple[tuple[str, int, str], ...] = (  # name, byte offset, struct code (for describe())
    ("magic", 0, "4s"),
    ("version", 4, "I"),
    ("flags", 8, "I"),
    ("header_size", 12, "I"),
    ("fingerprint_count", 16, "I"),
    ("entry_count", 20, "I"),
    ("fingerprint_offset", 24, "Q"),
    ("fingerprint_size", 32, "Q"),
    ("entry_table_offset", 40, "Q"),
    ("entry_table_size", 48, "Q"),
    ("blob_offset", 56, "Q"),
    ("blob_size", 64, "Q"),
    ("total_size", 72, "Q"),
)

DIGEST_SIZE = 32  # sha256 and HMAC-SHA256
BLOB_ALIGN = 16
_FINGERPRINT_STRINGS = (
    "platform_name",
    "platform_vendor",
    "platform_version",
    "device_name",
    "device_vendor",
    "device_version",
    "driver_version",
)
# record size u32 + id + 7 strings (u32 length each) + address_bits u32 + little_endian u8 + engine_version length
FINGERPRINT_MIN_SIZE = 4 + DIGEST_SIZE + 7 * 4 + 4 + 1 + 4  # 73
# record size u32, program key, fingerprint id, source sha256, blob sha256, blob offset/length u64,
# created/last used f64, build options length u32
_ENTRY_FIXED = struct.Struct("<I32s32s32s32sQQddI")
ENTRY_MIN_SIZE = _ENTRY_FIXED.size  # 168

_FINGERPRINT_DOMAIN = b"mace-device-fingerprint\x00"
_PROGRAM_KEY_DOMAIN = b"mace-program-key\x00"
_HEX_DIGITS = frozenset("0123456789abcdef")


class CacheFormatError(MaceError):
    """The cache bytes are corrupt, truncated, forged or of an unknown version (or records cannot be encoded).

    ``offset`` is the byte offset of the bad field or of where the data ended; None for whole-object problems.
    """

    def __init__(self, offset: int | None, reason: str) -> None:
        super().__init__(f"byte offset {offset}: {reason}" if offset is not None else reason)
        self.offset = offset
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------------------
# Records and the two identities


@dataclass(frozen=True)
class DeviceFingerprint:
    """Everything that decides whether a program binary built on one device can be loaded on another."""

    platform_name: str
    platform_vendor: str
    platform_version: str
    device_name: str
    device_vendor: str
    device_version: str
    driver_version: str
    address_bits: int
    little_endian: bool
    engine_version: str

    def id(self) -> str:
        """Hex sha256 of the canonical encoding of all fields: THE fingerprint id used in keys and in the file."""
        return hashlib.sha256(_FINGERPRINT_DOMAIN + _fingerprint_fields(self)).hexdigest()


@dataclass
class CacheEntry:
    """One compiled program binary for one device fingerprint. Hex fields are 64 lowercase hex digits."""

    program_key: str
    build_options: str  # normalized (see normalize_build_options)
    source_sha256: str
    fingerprint_id: str
    blob: bytes
    created: float  # unix seconds
    last_used: float  # unix seconds

    @classmethod
    def for_program(
        cls, source: str, build_options: str, fingerprint: DeviceFingerprint, blob: bytes, now: float
    ) -> CacheEntry:
        """A consistent entry for ``source`` built with ``build_options`` on ``fingerprint``."""
        return cls(
            program_key=program_key(source, build_options, fingerprint),
            build_options=normalize_build_options(build_options),
            source_sha256=source_sha256(source),
            fingerprint_id=fingerprint.id(),
            blob=bytes(blob),
            created=now,
            last_used=now,
        )


@dataclass
class CacheFile:
    """The decoded file. One file may hold entries of several devices; a loader uses ``entries_for`` its own."""

    fingerprints: dict[str, DeviceFingerprint] = field(default_factory=dict)  # id -> fingerprint
    entries: list[CacheEntry] = field(default_factory=list)

    def entries_for(self, fingerprint: DeviceFingerprint) -> list[CacheEntry]:
        fid = fingerprint.id()
        return [e for e in self.entries if e.fingerprint_id == fid]

    def merged(self, other: CacheFile) -> CacheFile:
        """Union by (fingerprint_id, program_key); the newer ``last_used`` wins (ties: ``self``).

        Order: ``self``'s entries, then those only in ``other``. Fingerprints no entry refers to are dropped.
        Entries are copied, so bumping ``last_used`` on the result leaves the inputs alone.
        """
        by_key: dict[tuple[str, str], CacheEntry] = {}
        for entry in [*self.entries, *other.entries]:
            k = (entry.fingerprint_id, entry.program_key)
            if k not in by_key or entry.last_used > by_key[k].last_used:
                by_key[k] = entry
        known = {**self.fingerprints}
        for fid, fp in other.fingerprints.items():
            known.setdefault(fid, fp)
        entries = [dataclasses.replace(e) for e in by_key.values()]
        used = {e.fingerprint_id for e in entries}
        return CacheFile({fid: fp for fid, fp in known.items() if fid in used}, entries)


def normalize_build_options(options: str) -> str:
    """Split on whitespace and rejoin with single spaces, order preserved: ``' -DA  -DB '`` -> ``'-DA -DB'``."""
    return " ".join(options.split())


def source_sha256(source: str) -> str:
    """Hex sha256 of the UTF-8 kernel source (with its headers already inlined)."""
    return hashlib.sha256(_utf8(source, "kernel source")).hexdigest()


def program_key(source: str, build_options: str, fingerprint: DeviceFingerprint) -> str:
    """THE cache key: sha256 over the source, the normalized build options and the fingerprint id.

    Computed from ``source_sha256(source)`` so a reader can re-check every stored key without the source.
    """
    return _program_key_from_parts(source_sha256(source), normalize_build_options(build_options), fingerprint.id())


def _program_key_from_parts(source_hex: str, normalized_options: str, fingerprint_id: str) -> str:
    h = hashlib.sha256(_PROGRAM_KEY_DOMAIN)
    h.update(bytes.fromhex(source_hex))
    h.update(_pack_str(normalized_options, "build options"))
    h.update(bytes.fromhex(fingerprint_id))
    return h.hexdigest()


def _fingerprint_fields(fp: DeviceFingerprint) -> bytes:
    """The canonical field encoding: hashed for the id and stored (after the id) in the fingerprint section."""
    out = bytearray()
    for name in _FINGERPRINT_STRINGS:
        out += _pack_str(getattr(fp, name), name)
    if not isinstance(fp.address_bits, int) or not 0 <= fp.address_bits <= 0xFFFFFFFF:
        raise CacheFormatError(None, f"address_bits {fp.address_bits!r} is not a u32")
    out += struct.pack("<IB", fp.address_bits, 1 if fp.little_endian else 0)
    out += _pack_str(fp.engine_version, "engine_version")
    return bytes(out)


def _utf8(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise CacheFormatError(None, f"{what} must be str, not {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CacheFormatError(None, f"{what} is not encodable as UTF-8: {exc.reason}") from None


def _pack_str(text: str, what: str) -> bytes:
    raw = _utf8(text, what)
    if len(raw) > 0xFFFFFFFF:
        raise CacheFormatError(None, f"{what} is longer than 2**32-1 bytes")
    return struct.pack("<I", len(raw)) + raw


def _align(n: int) -> int:
    return -(-n // BLOB_ALIGN) * BLOB_ALIGN


def _check_key(key: bytes | None) -> None:
    if key is not None and (not isinstance(key, (bytes, bytearray)) or not key):
        raise CacheFormatError(None, "the signing key must be non-empty bytes")


# ---------------------------------------------------------------------------------------------------------------------
# Encoding


def _hex_digest(value: str, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * DIGEST_SIZE or not set(value) <= _HEX_DIGITS:
        raise CacheFormatError(None, f"{what} {value!r} is not 64 lowercase hex digits")
    return bytes.fromhex(value)


def encode(cache: CacheFile, key: bytes | None = None) -> bytes:
    """The file bytes for ``cache``; with ``key``, signed with HMAC-SHA256. Inconsistent records raise
    CacheFormatError (offset None): decode(encode(c)) == c holds for everything encode accepts."""
    _check_key(key)
    fp_section = bytearray()
    for fid, fp in cache.fingerprints.items():
        if fid != fp.id():
            raise CacheFormatError(None, f"fingerprints[{fid!r}] holds a fingerprint whose id is {fp.id()}")
        body = bytes.fromhex(fid) + _fingerprint_fields(fp)
        fp_section += struct.pack("<I", 4 + len(body)) + body

    rows: list[tuple[bytes, bytes, bytes, bytes, bytes, float, float, bytes]] = []
    seen: set[tuple[str, str]] = set()
    for i, e in enumerate(cache.entries):
        what = f"entries[{i}]"
        key_raw = _hex_digest(e.program_key, f"{what}.program_key")
        fid_raw = _hex_digest(e.fingerprint_id, f"{what}.fingerprint_id")
        src_raw = _hex_digest(e.source_sha256, f"{what}.source_sha256")
        options = _utf8(e.build_options, f"{what}.build_options")
        if e.build_options != normalize_build_options(e.build_options):
            raise CacheFormatError(None, f"{what}.build_options {e.build_options!r} is not normalized")
        if e.fingerprint_id not in cache.fingerprints:
            raise CacheFormatError(None, f"{what}.fingerprint_id {e.fingerprint_id} is not in fingerprints")
        if e.program_key != _program_key_from_parts(e.source_sha256, e.build_options, e.fingerprint_id):
            raise CacheFormatError(None, f"{what}.program_key does not match its source, options and fingerprint")
        if (e.fingerprint_id, e.program_key) in seen:
            raise CacheFormatError(None, f"{what} duplicates an earlier (fingerprint_id, program_key)")
        seen.add((e.fingerprint_id, e.program_key))
        times = []
        for name in ("created", "last_used"):
            value = getattr(e, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CacheFormatError(None, f"{what}.{name} {value!r} is not a finite number")
            times.append(float(value))
        if not isinstance(e.blob, (bytes, bytearray, memoryview)):
            raise CacheFormatError(None, f"{what}.blob must be bytes, not {type(e.blob).__name__}")
        blob = bytes(e.blob)
        rows.append((key_raw, fid_raw, src_raw, hashlib.sha256(blob).digest(), blob, times[0], times[1], options))

    fp_offset = HEADER_SIZE
    entry_offset = fp_offset + len(fp_section)
    entry_size = sum(ENTRY_MIN_SIZE + len(r[7]) for r in rows)
    blob_offset = _align(entry_offset + entry_size)
    table = bytearray()
    blobs = bytearray()
    for key_raw, fid_raw, src_raw, blob_sha, blob, created, last_used, options in rows:
        if blobs:
            blobs += bytes(_align(len(blobs)) - len(blobs))
        size = ENTRY_MIN_SIZE + len(options)
        at = blob_offset + len(blobs)
        table += (
            _ENTRY_FIXED.pack(
                size, key_raw, fid_raw, src_raw, blob_sha, at, len(blob), created, last_used, len(options)
            )
            + options
        )
        blobs += blob

    signed = key is not None
    trailer_start = blob_offset + len(blobs)
    total = trailer_start + DIGEST_SIZE * (2 if signed else 1)
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        FLAG_SIGNED if signed else 0,
        HEADER_SIZE,
        len(cache.fingerprints),
        len(rows),
        fp_offset,
        len(fp_section),
        entry_offset,
        entry_size,
        blob_offset,
        len(blobs),
        total,
    )
    body = bytearray(header + fp_section + table)
    body += bytes(blob_offset - len(body)) + blobs
    body += hashlib.sha256(body).digest()
    if key is not None:
        body += hmac.new(bytes(key), body, hashlib.sha256).digest()
    return bytes(body)


# ---------------------------------------------------------------------------------------------------------------------
# Decoding: one decoder serves decode (strict), decode_report (lenient), validate and describe


def decode(data: bytes, key: bytes | None = None) -> CacheFile:
    """Parse and validate everything; any problem raises CacheFormatError("byte offset N: reason").

    With ``key``, the file must be signed with it. Without, a signed file is read and its signature not checked.
    """
    return _Decoder(data, key, strict=True).run()


def decode_report(data: bytes, key: bytes | None = None) -> tuple[CacheFile, list[str]]:
    """Lenient decode: a bad record (or blob) drops only itself and is reported, so the rest can be salvaged.

    Still raises CacheFormatError for whole-file problems: header, section layout, record framing, and a missing or
    wrong signature when ``key`` is given. A whole-file sha256 mismatch is reported, not raised: each surviving entry
    was re-verified on its own (key recomputed, blob sha256, fingerprint id), timestamps excepted.
    """
    decoder = _Decoder(data, key, strict=False)
    return decoder.run(), decoder.problems


def validate(data: bytes, key: bytes | None = None) -> list[str]:
    """Every problem found (empty when ``decode`` would succeed), for ``mace cache verify``."""
    try:
        return decode_report(data, key)[1]
    except CacheFormatError as exc:
        return [str(exc)]


def describe(data: bytes) -> dict[str, Any]:
    """What ``mace cache inspect`` shows: as much as can be parsed, plus the problems and the error. Never raises
    for bytes input. JSON-serialisable."""
    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else b""
    decoder = _Decoder(raw, None, strict=False)
    error = None
    try:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CacheFormatError(None, f"cache data must be bytes, not {type(data).__name__}")
        decoder.run()
    except CacheFormatError as exc:
        error = str(exc)
    return {
        "size": len(raw),
        "valid": error is None and not decoder.problems,
        "error": error,
        "problems": decoder.problems,
        "header": _raw_header(raw),
        "fingerprints": decoder.fingerprint_rows,
        "entries": decoder.entry_rows,
        "hex_preview": [f"{i:08x}  {raw[i : i + 16].hex(' ')}" for i in range(0, min(len(raw), 64), 16)],
    }


def _raw_header(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, offset, code in _HEADER_FIELDS:
        if offset + struct.calcsize("<" + code) <= len(data):
            value = struct.unpack_from("<" + code, data, offset)[0]
            out[name] = repr(value) if isinstance(value, bytes) else value
    if "version" in out:
        out["version_text"] = f"{out['version'] >> 16}.{out['version'] & 0xFFFF}"
    if "flags" in out:
        out["signed"] = bool(out["flags"] & FLAG_SIGNED)
    return out


class _Cursor:
    """Reads little-endian fields inside [pos, end); running past ``end`` raises with the offset."""

    def __init__(self, data: bytes, pos: int, end: int, region: str) -> None:
        self.data, self.pos, self.end, self.region = data, pos, end, region

    def take(self, n: int, what: str) -> bytes:
        if n > self.end - self.pos:
            raise CacheFormatError(
                self.pos, f"{what} needs {n} bytes but only {self.end - self.pos} remain in the {self.region}"
            )
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def unpack(self, code: str, what: str) -> Any:
        return struct.unpack("<" + code, self.take(struct.calcsize("<" + code), what))[0]

    def string(self, what: str) -> str:
        at = self.pos
        n = self.unpack("I", f"{what} length")
        if n > self.end - self.pos:
            raise CacheFormatError(
                at, f"{what} length {n} exceeds the {self.end - self.pos} bytes left in the {self.region}"
            )
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CacheFormatError(at + 4 + exc.start, f"{what} is not valid UTF-8 ({exc.reason})") from None


@dataclass
class _Layout:
    version: int
    flags: int
    header_size: int
    fingerprint_count: int
    entry_count: int
    fingerprint_offset: int
    fingerprint_size: int
    entry_offset: int
    entry_size: int
    blob_offset: int
    blob_size: int
    total: int
    exact: bool  # written by this minor version (or older): no unknown trailing bytes or gaps allowed
    trailer_start: int


class _Decoder:
    def __init__(self, data: bytes, key: bytes | None, strict: bool) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CacheFormatError(None, f"cache data must be bytes, not {type(data).__name__}")
        _check_key(key)
        self.data = bytes(data)
        self.key = key
        self.strict = strict
        self.problems: list[str] = []
        self.fingerprint_rows: list[dict[str, Any]] = []
        self.entry_rows: list[dict[str, Any]] = []
        self.blob_bytes = 0  # the blob bytes of the entries read so far: bounded by the blob area

    def problem(self, exc: CacheFormatError) -> None:
        """A problem confined to one record: fatal in strict mode, reported (record dropped) in lenient mode."""
        if self.strict:
            raise exc
        self.problems.append(str(exc))

    def run(self) -> CacheFile:
        layout = self.header()
        if self.key is not None:
            self.check_signature(layout)
        fingerprints = self.fingerprints(layout)
        entries = self.entries(layout, fingerprints)
        stored = self.data[layout.trailer_start : layout.trailer_start + DIGEST_SIZE]
        actual = hashlib.sha256(self.data[: layout.trailer_start]).digest()
        if stored != actual:
            self.problem(
                CacheFormatError(
                    layout.trailer_start,
                    f"whole-file sha256 mismatch: trailer holds {stored.hex()}, content hashes to {actual.hex()}",
                )
            )
        return CacheFile(fingerprints, entries)

    def header(self) -> _Layout:
        data = self.data
        if len(data) >= len(MAGIC) and data[:4] != MAGIC:
            raise CacheFormatError(0, f"bad magic {data[:4]!r}, expected {MAGIC!r}: not a mace OpenCL program cache")
        if len(data) < HEADER_SIZE:
            raise CacheFormatError(
                len(data), f"file truncated: the header needs {HEADER_SIZE} bytes, data ends at byte {len(data)}"
            )
        (
            _,
            version,
            flags,
            header_size,
            fp_count,
            entry_count,
            fp_off,
            fp_size,
            entry_off,
            entry_size,
            blob_off,
            blob_size,
            total,
        ) = _HEADER.unpack_from(data)
        if version >> 16 != FORMAT_MAJOR:
            raise CacheFormatError(
                4,
                f"unsupported format version 0x{version:08x} (major {version >> 16}); this "
                f"reader supports major version {FORMAT_MAJOR}",
            )
        exact = (version & 0xFFFF) <= FORMAT_MINOR
        unknown = flags & REQUIRED_FLAGS_MASK & ~KNOWN_REQUIRED_FLAGS
        if unknown:
            raise CacheFormatError(8, f"unknown required flags 0x{unknown:08x} in flags 0x{flags:08x}")
        if total > len(data):
            raise CacheFormatError(
                len(data), f"file truncated: the header declares {total} bytes, data ends at byte {len(data)}"
            )
        if total < len(data):
            raise CacheFormatError(
                total, f"{len(data) - total} bytes of trailing data after the declared total size {total}"
            )
        if header_size < HEADER_SIZE or (exact and header_size != HEADER_SIZE):
            raise CacheFormatError(12, f"header size {header_size}, expected {HEADER_SIZE}")
        trailer_start = total - DIGEST_SIZE * (2 if flags & FLAG_SIGNED else 1)
        if trailer_start < header_size:
            raise CacheFormatError(72, f"total size {total} cannot hold the {header_size}-byte header and the trailer")

        prev_end, prev_name = header_size, "header"
        for name, field_at, off, size in (
            ("fingerprint section", 24, fp_off, fp_size),
            ("entry table", 40, entry_off, entry_size),
            ("blob area", 56, blob_off, blob_size),
        ):
            expected = _align(prev_end) if name == "blob area" else prev_end
            if off < prev_end or (exact and off != expected):
                raise CacheFormatError(
                    field_at, f"{name} offset {off}, expected {expected} (the {prev_name} ends at byte {prev_end})"
                )
            if size > trailer_start - off:
                raise CacheFormatError(
                    field_at + 8,
                    f"{name} of {size} bytes at offset {off} runs past the trailer at byte {trailer_start}",
                )
            prev_end, prev_name = off + size, name
        if blob_off % BLOB_ALIGN:
            raise CacheFormatError(56, f"blob area offset {blob_off} is not {BLOB_ALIGN}-byte aligned")
        if exact and prev_end != trailer_start:
            raise CacheFormatError(64, f"blob area ends at byte {prev_end}, the trailer starts at byte {trailer_start}")
        # Bound counts by the bytes that could hold them before looping: a count of 2**32-1 fails here.
        for name, field_at, count, size, min_size in (
            ("fingerprint", 16, fp_count, fp_size, FINGERPRINT_MIN_SIZE),
            ("entry", 20, entry_count, entry_size, ENTRY_MIN_SIZE),
        ):
            if count * min_size > size:
                raise CacheFormatError(
                    field_at, f"{name} count {count} cannot fit in {size} bytes (a record takes at least {min_size})"
                )
        return _Layout(
            version,
            flags,
            header_size,
            fp_count,
            entry_count,
            fp_off,
            fp_size,
            entry_off,
            entry_size,
            blob_off,
            blob_size,
            total,
            exact,
            trailer_start,
        )

    def check_signature(self, layout: _Layout) -> None:
        """Authenticate before parsing the sections: with a key, the bytes are assumed hostile."""
        assert self.key is not None
        if not layout.flags & FLAG_SIGNED:
            raise CacheFormatError(8, "the file is not signed (flags bit 0 clear) but a key was given")
        mac_at = layout.total - DIGEST_SIZE
        expected = hmac.new(bytes(self.key), self.data[:mac_at], hashlib.sha256).digest()
        if not hmac.compare_digest(expected, self.data[mac_at : layout.total]):
            raise CacheFormatError(mac_at, "HMAC-SHA256 signature mismatch: wrong key or modified file")

    def records(
        self, name: str, count: int, start: int, size: int, min_size: int, exact: bool
    ) -> list[tuple[int, int]]:
        """The (start, end) of each record, following the u32 size prefixes; bad framing is whole-file fatal."""
        out = []
        pos, end = start, start + size
        for i in range(count):
            if end - pos < 4:
                raise CacheFormatError(pos, f"{name} {i}: record size field runs past the section end at byte {end}")
            n = struct.unpack_from("<I", self.data, pos)[0]
            if not min_size <= n <= end - pos:
                raise CacheFormatError(pos, f"{name} {i}: record size {n} outside {min_size}..{end - pos}")
            out.append((pos, pos + n))
            pos += n
        if exact and pos != end:
            raise CacheFormatError(pos, f"{end - pos} unused bytes after the last {name} record")
        return out

    def fingerprints(self, layout: _Layout) -> dict[str, DeviceFingerprint]:
        out: dict[str, DeviceFingerprint] = {}
        spans = self.records(
            "fingerprint",
            layout.fingerprint_count,
            layout.fingerprint_offset,
            layout.fingerprint_size,
            FINGERPRINT_MIN_SIZE,
            layout.exact,
        )
        for i, (start, end) in enumerate(spans):
            row: dict[str, Any] = {"index": i, "offset": start, "size": end - start}
            self.fingerprint_rows.append(row)
            try:
                fp, stored = self.fingerprint_record(i, start, end, layout.exact)
                row.update(id=stored, **dataclasses.asdict(fp))
                if stored in out:
                    raise CacheFormatError(start + 4, f"fingerprint {i}: duplicate id {stored}")
            except CacheFormatError as exc:
                row["problem"] = str(exc)
                self.problem(exc)
                continue
            out[stored] = fp
        return out

    def fingerprint_record(self, i: int, start: int, end: int, exact: bool) -> tuple[DeviceFingerprint, str]:
        c = _Cursor(self.data, start + 4, end, f"fingerprint {i} record")
        stored = c.take(DIGEST_SIZE, f"fingerprint {i} id").hex()
        strings = {name: c.string(f"fingerprint {i} {name}") for name in _FINGERPRINT_STRINGS}
        address_bits = c.unpack("I", f"fingerprint {i} address_bits")
        endian_at = c.pos
        endian = c.unpack("B", f"fingerprint {i} little_endian")
        if endian > 1:
            raise CacheFormatError(endian_at, f"fingerprint {i}: little_endian byte is {endian}, expected 0 or 1")
        engine_version = c.string(f"fingerprint {i} engine_version")
        if exact and c.pos != end:
            raise CacheFormatError(c.pos, f"fingerprint {i}: {end - c.pos} unknown bytes at the end of the record")
        fp = DeviceFingerprint(
            **strings, address_bits=address_bits, little_endian=endian == 1, engine_version=engine_version
        )
        if fp.id() != stored:
            raise CacheFormatError(
                start + 4, f"fingerprint {i}: stored id {stored} differs from the id {fp.id()} computed from its fields"
            )
        return fp, stored

    def entries(self, layout: _Layout, fingerprints: dict[str, DeviceFingerprint]) -> list[CacheEntry]:
        out: list[CacheEntry] = []
        seen: set[tuple[str, str]] = set()
        spans = self.records(
            "entry", layout.entry_count, layout.entry_offset, layout.entry_size, ENTRY_MIN_SIZE, layout.exact
        )
        for i, (start, end) in enumerate(spans):
            row: dict[str, Any] = {"index": i, "offset": start, "size": end - start}
            self.entry_rows.append(row)
            try:
                entry = self.entry_record(i, start, end, layout, fingerprints, row)
                if (entry.fingerprint_id, entry.program_key) in seen:
                    raise CacheFormatError(start + 4, f"entry {i}: duplicate (fingerprint id, program key)")
            except CacheFormatError as exc:
                row["problem"] = str(exc)
                self.problem(exc)
                continue
            seen.add((entry.fingerprint_id, entry.program_key))
            out.append(entry)
        return out

    def entry_record(
        self,
        i: int,
        start: int,
        end: int,
        layout: _Layout,
        fingerprints: dict[str, DeviceFingerprint],
        row: dict[str, Any],
    ) -> CacheEntry:
        (_, key_raw, fid_raw, src_raw, blob_sha, blob_at, blob_len, created, last_used, _) = _ENTRY_FIXED.unpack_from(
            self.data, start
        )
        row.update(
            program_key=key_raw.hex(),
            fingerprint_id=fid_raw.hex(),
            source_sha256=src_raw.hex(),
            blob_sha256=blob_sha.hex(),
            blob_offset=blob_at,
            blob_length=blob_len,
            created=created,
            last_used=last_used,
        )
        c = _Cursor(self.data, start + ENTRY_MIN_SIZE - 4, end, f"entry {i} record")
        options = c.string(f"entry {i} build_options")
        row["build_options"] = options
        if layout.exact and c.pos != end:
            raise CacheFormatError(c.pos, f"entry {i}: {end - c.pos} unknown bytes at the end of the record")
        if options != normalize_build_options(options):
            raise CacheFormatError(start + ENTRY_MIN_SIZE, f"entry {i}: build options {options!r} are not normalized")
        if fid_raw.hex() not in fingerprints:
            raise CacheFormatError(
                start + 36,
                f"entry {i}: fingerprint id {fid_raw.hex()} is not in the fingerprint "
                f"section (or its record was invalid)",
            )
        if key_raw.hex() != _program_key_from_parts(src_raw.hex(), options, fid_raw.hex()):
            raise CacheFormatError(
                start + 4, f"entry {i}: program key does not match its source sha256, build options and fingerprint id"
            )
        for name, value, at in (("created", created, 148), ("last_used", last_used, 156)):
            if not math.isfinite(value):
                raise CacheFormatError(start + at, f"entry {i}: {name} time {value} is not finite")
        area_end = layout.blob_offset + layout.blob_size
        if blob_at % BLOB_ALIGN or blob_at < layout.blob_offset or blob_len > area_end - blob_at:
            raise CacheFormatError(
                start + 132,
                f"entry {i}: blob of {blob_len} bytes at offset {blob_at} is not a "
                f"{BLOB_ALIGN}-aligned range inside the blob area "
                f"[{layout.blob_offset}, {area_end})",
            )
        if blob_len > layout.blob_size - self.blob_bytes:
            raise CacheFormatError(
                start + 140,
                f"entry {i}: its blob of {blob_len} bytes and those of the entries before it add up to more than "
                f"the {layout.blob_size}-byte blob area: blobs overlap",
            )
        self.blob_bytes += blob_len
        blob = self.data[blob_at : blob_at + blob_len]
        if hashlib.sha256(blob).digest() != blob_sha:
            raise CacheFormatError(blob_at, f"entry {i}: blob sha256 mismatch (stored {blob_sha.hex()})")
        return CacheEntry(key_raw.hex(), options, src_raw.hex(), fid_raw.hex(), blob, created, last_used)
