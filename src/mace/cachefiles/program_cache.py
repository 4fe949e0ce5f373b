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
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from mace.cachefiles import binformat
from mace.cachefiles.binformat import (
    DIGEST_SIZE,
    FLAG_SIGNED,
    KNOWN_REQUIRED_FLAGS,
    REQUIRED_FLAGS_MASK,
    FormatError,
    check_sections,
    hex_digest,
)

MAGIC = b"MCLP"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
FORMAT_VERSION = (FORMAT_MAJOR << 16) | FORMAT_MINOR  # 0x00010000

# the family's common header (magic ... entry table offset/size), then the blob area offset/size, total file size
_HEADER_FIELDS = binformat.header_fields(("blob_offset", "Q"), ("blob_size", "Q"))
_HEADER = binformat.header_struct(_HEADER_FIELDS)  # <4sIIIIIQQQQQQQ
HEADER_SIZE = _HEADER.size  # 80

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


class CacheFormatError(FormatError):
    """The cache bytes are corrupt, truncated, forged or of an unknown version (or records cannot be encoded).

    ``offset`` is the byte offset of the bad field or of where the data ended; None for whole-object problems.
    """


FORMAT = binformat.Format(
    MAGIC, "mace OpenCL program cache", "cache data", _HEADER, _HEADER_FIELDS, FORMAT_MAJOR, FORMAT_MINOR,
    CacheFormatError, FLAG_SIGNED, REQUIRED_FLAGS_MASK, KNOWN_REQUIRED_FLAGS,
)  # fmt: skip


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
    return binformat.utf8(text, what, CacheFormatError)


def _pack_str(text: str, what: str) -> bytes:
    return binformat.pack_str(text, what, CacheFormatError)


def _align(n: int) -> int:
    return -(-n // BLOB_ALIGN) * BLOB_ALIGN


# ---------------------------------------------------------------------------------------------------------------------
# Encoding


def encode(cache: CacheFile, key: bytes | None = None) -> bytes:
    """The file bytes for ``cache``; with ``key``, signed with HMAC-SHA256. Inconsistent records raise
    CacheFormatError (offset None): decode(encode(c)) == c holds for everything encode accepts."""
    binformat.check_key(key, CacheFormatError)
    fp_section = bytearray()
    for fid, fp in cache.fingerprints.items():
        if fid != fp.id():
            raise CacheFormatError(None, f"fingerprints[{fid!r}] holds a fingerprint whose id is {fp.id()}")
        body = bytes.fromhex(fid) + _fingerprint_fields(fp)
        fp_section += binformat.frame(body)

    rows: list[tuple[bytes, bytes, bytes, bytes, bytes, float, float, bytes]] = []
    seen: set[tuple[str, str]] = set()
    for i, e in enumerate(cache.entries):
        what = f"entries[{i}]"
        key_raw = hex_digest(e.program_key, f"{what}.program_key", CacheFormatError)
        fid_raw = hex_digest(e.fingerprint_id, f"{what}.fingerprint_id", CacheFormatError)
        src_raw = hex_digest(e.source_sha256, f"{what}.source_sha256", CacheFormatError)
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
    total = trailer_start + binformat.trailer_size(signed)
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
    return binformat.seal(body, key)


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
    return binformat.describe(_Decoder, data)


def read_fingerprints(
    decoder: binformat.Decoder, count: int, start: int, size: int, exact: bool
) -> dict[str, DeviceFingerprint]:
    """Id -> DeviceFingerprint of the fingerprint section at [start, start + size): the same records in every file
    of the family (docs/cache-format.md, "Fingerprint record"). Errors are ``decoder``'s format's."""
    error = decoder.fmt.error

    def read(i: int, start: int, end: int, row: dict[str, Any]) -> tuple[str, DeviceFingerprint]:
        c = decoder.cursor(start + 4, end, f"fingerprint {i} record")
        stored = c.take(DIGEST_SIZE, f"fingerprint {i} id").hex()
        strings = {name: c.string(f"fingerprint {i} {name}") for name in _FINGERPRINT_STRINGS}
        address_bits = c.unpack("I", f"fingerprint {i} address_bits")
        endian_at = c.pos
        endian = c.unpack("B", f"fingerprint {i} little_endian")
        if endian > 1:
            raise error(endian_at, f"fingerprint {i}: little_endian byte is {endian}, expected 0 or 1")
        engine_version = c.string(f"fingerprint {i} engine_version")
        if exact and c.pos != end:
            raise error(c.pos, f"fingerprint {i}: {end - c.pos} unknown bytes at the end of the record")
        fp = DeviceFingerprint(
            **strings, address_bits=address_bits, little_endian=endian == 1, engine_version=engine_version
        )
        if fp.id() != stored:
            raise error(
                start + 4, f"fingerprint {i}: stored id {stored} differs from the id {fp.id()} computed from its fields"
            )
        row.update(id=stored, **dataclasses.asdict(fp))
        if stored in seen:
            raise error(start + 4, f"fingerprint {i}: duplicate id {stored}")
        seen.add(stored)
        return stored, fp

    seen: set[str] = set()
    spans = decoder.records("fingerprint", count, start, size, FINGERPRINT_MIN_SIZE, exact)
    return dict(decoder.read_records(decoder.fingerprint_rows, spans, read))


@dataclass
class _Layout:
    fingerprint_count: int
    fingerprint_offset: int
    fingerprint_size: int
    entry_count: int
    entry_offset: int
    entry_size: int
    blob_offset: int
    blob_size: int
    exact: bool  # written by this minor version (or older): no unknown trailing bytes or gaps allowed


class _Decoder(binformat.Decoder):
    fmt = FORMAT

    def __init__(self, data: bytes, key: bytes | None, strict: bool) -> None:
        super().__init__(data, key, strict)
        self.blob_bytes = 0  # the blob bytes of the entries read so far: bounded by the blob area

    def layout(self, header: binformat.Header) -> _Layout:
        (_, _, _, _, fp_count, entry_count, fp_off, fp_size, entry_off, entry_size, blob_off, blob_size, _) = (
            header.values
        )
        check_sections(
            CacheFormatError,
            header,
            (
                ("fingerprint section", 24, fp_off, fp_size, 1),
                ("entry table", 40, entry_off, entry_size, 1),
                ("blob area", 56, blob_off, blob_size, BLOB_ALIGN),
            ),
        )
        binformat.check_counts(
            CacheFormatError,
            (
                ("fingerprint", 16, fp_count, fp_size, FINGERPRINT_MIN_SIZE),
                ("entry", 20, entry_count, entry_size, ENTRY_MIN_SIZE),
            ),
        )
        return _Layout(fp_count, fp_off, fp_size, entry_count, entry_off, entry_size, blob_off, blob_size, header.exact)

    def sections(self, layout: _Layout) -> CacheFile:
        fingerprints = read_fingerprints(
            self, layout.fingerprint_count, layout.fingerprint_offset, layout.fingerprint_size, layout.exact
        )
        return CacheFile(fingerprints, self.entries(layout, fingerprints))

    def entries(self, layout: _Layout, fingerprints: dict[str, DeviceFingerprint]) -> list[CacheEntry]:
        def read(i: int, start: int, end: int, row: dict[str, Any]) -> CacheEntry:
            entry = self.entry_record(i, start, end, layout, fingerprints, row)
            if (entry.fingerprint_id, entry.program_key) in seen:
                raise CacheFormatError(start + 4, f"entry {i}: duplicate (fingerprint id, program key)")
            seen.add((entry.fingerprint_id, entry.program_key))
            return entry

        seen: set[tuple[str, str]] = set()
        spans = self.records(
            "entry", layout.entry_count, layout.entry_offset, layout.entry_size, ENTRY_MIN_SIZE, layout.exact
        )
        return self.read_records(self.entry_rows, spans, read)

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
        c = self.cursor(start + ENTRY_MIN_SIZE - 4, end, f"entry {i} record")
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
