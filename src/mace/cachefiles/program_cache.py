"""The compiled-program cache file (``mace_cl_compiled_program.bin``): bytes in, records out.

Pure on purpose: no OpenCL import and no file I/O, so loaders, ``mace cache`` tools and fuzzers share one
implementation. The byte layout, validation rules and signing threat model are in docs/cache-format.md. The file is
a record file (records.py): this module supplies its entries (``CacheEntry``, keyed by program key, the one used
last wins a merge) and their codec, which also lays out the blob area the entries point into.

The two identities that decide whether a cached binary may be used are computed in exactly one place each:
``DeviceFingerprint.id()`` (fingerprint.py) and ``program_key()``.

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

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any

from mace.cachefiles import binformat, records
from mace.cachefiles.binformat import FormatError, hex_digest
from mace.cachefiles.fingerprint import DeviceFingerprint

MAGIC = b"MCLP"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
FORMAT_VERSION = (FORMAT_MAJOR << 16) | FORMAT_MINOR  # 0x00010000

BLOB_ALIGN = 16
_AREAS = (("blob", BLOB_ALIGN),)  # after the entry table: the program binaries, each 16-byte aligned

# record size u32, program key, fingerprint id, source sha256, blob sha256, blob offset/length u64,
# created/last used f64, build options length u32
_ENTRY_FIXED = struct.Struct("<I32s32s32s32sQQddI")
ENTRY_MIN_SIZE = _ENTRY_FIXED.size  # 168

_PROGRAM_KEY_DOMAIN = b"mace-program-key\x00"


class CacheFormatError(FormatError):
    """The cache bytes are corrupt, truncated, forged or of an unknown version (or records cannot be encoded).

    ``offset`` is the byte offset of the bad field or of where the data ended; None for whole-object problems.
    """


# the family's common header (magic ... entry table offset/size), then the blob area offset/size, total file size
FORMAT = records.record_format(
    MAGIC, "mace OpenCL program cache", "cache data", CacheFormatError, FORMAT_MAJOR, FORMAT_MINOR, _AREAS
)
HEADER_SIZE = FORMAT.header.size  # 80: <4sIIIIIQQQQQQQ


# ---------------------------------------------------------------------------------------------------------------------
# Records and the program key


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

    @property
    def key(self) -> str:
        return self.program_key

    @property
    def recency(self) -> float:
        """A merge keeps the entry used last."""
        return self.last_used

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


class CacheFile(records.RecordFile[CacheEntry]):
    """The decoded file (fingerprints, entries). ``merged`` keeps, per (fingerprint_id, program_key), the entry with
    the newer ``last_used``."""

    def entries_for(self, fingerprint: DeviceFingerprint | str) -> list[CacheEntry]:
        return self.entries_of(fingerprint)


def normalize_build_options(options: str) -> str:
    """Split on whitespace and rejoin with single spaces, order preserved: ``' -DA  -DB '`` -> ``'-DA -DB'``."""
    return " ".join(options.split())


def source_sha256(source: str) -> str:
    """Hex sha256 of the UTF-8 kernel source (with its headers already inlined)."""
    return hashlib.sha256(binformat.utf8(source, "kernel source", CacheFormatError)).hexdigest()


def program_key(source: str, build_options: str, fingerprint: DeviceFingerprint) -> str:
    """THE cache key: sha256 over the source, the normalized build options and the fingerprint id.

    Computed from ``source_sha256(source)`` so a reader can re-check every stored key without the source.
    """
    return _program_key_from_parts(source_sha256(source), normalize_build_options(build_options), fingerprint.id())


def _program_key_from_parts(source_hex: str, normalized_options: str, fingerprint_id: str) -> str:
    h = hashlib.sha256(_PROGRAM_KEY_DOMAIN)
    h.update(bytes.fromhex(source_hex))
    h.update(binformat.pack_str(normalized_options, "build options", CacheFormatError))
    h.update(bytes.fromhex(fingerprint_id))
    return h.hexdigest()


def _align(n: int) -> int:
    return -(-n // BLOB_ALIGN) * BLOB_ALIGN


# ---------------------------------------------------------------------------------------------------------------------
# The entry codec

_Row = tuple[bytes, bytes, bytes, bytes, bytes, float, float, bytes]


class ProgramCacheFormat(records.RecordFormat[CacheEntry, CacheFile]):
    fmt = FORMAT
    file_type = CacheFile
    entry_type = CacheEntry
    key_field = "program_key"
    key_at = 4
    entry_min_size = ENTRY_MIN_SIZE
    areas = _AREAS

    @classmethod
    def encode_entry(cls, e: CacheEntry, what: str, fingerprints: dict[str, DeviceFingerprint]) -> _Row:
        key_raw = hex_digest(e.program_key, f"{what}.program_key", CacheFormatError)
        fid_raw = hex_digest(e.fingerprint_id, f"{what}.fingerprint_id", CacheFormatError)
        src_raw = hex_digest(e.source_sha256, f"{what}.source_sha256", CacheFormatError)
        options = binformat.utf8(e.build_options, f"{what}.build_options", CacheFormatError)
        if e.build_options != normalize_build_options(e.build_options):
            raise CacheFormatError(None, f"{what}.build_options {e.build_options!r} is not normalized")
        if e.fingerprint_id not in fingerprints:
            raise CacheFormatError(None, f"{what}.fingerprint_id {e.fingerprint_id} is not in fingerprints")
        if e.program_key != _program_key_from_parts(e.source_sha256, e.build_options, e.fingerprint_id):
            raise CacheFormatError(None, f"{what}.program_key does not match its source, options and fingerprint")
        times = []
        for name in ("created", "last_used"):
            value = getattr(e, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CacheFormatError(None, f"{what}.{name} {value!r} is not a finite number")
            times.append(float(value))
        if not isinstance(e.blob, (bytes, bytearray, memoryview)):
            raise CacheFormatError(None, f"{what}.blob must be bytes, not {type(e.blob).__name__}")
        blob = bytes(e.blob)
        return key_raw, fid_raw, src_raw, hashlib.sha256(blob).digest(), blob, times[0], times[1], options

    @classmethod
    def encode_table(cls, rows: list[_Row], offset: int) -> tuple[bytes, tuple[int, ...], bytes]:
        """The entry table, then zero padding to the 16-aligned blob area, whose blobs are 16-aligned too."""
        entry_size = sum(ENTRY_MIN_SIZE + len(r[7]) for r in rows)
        blob_offset = _align(offset + entry_size)
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
        return bytes(table), (blob_offset, len(blobs)), bytes(blob_offset - offset - entry_size) + bytes(blobs)

    def __init__(self, data: bytes, key: bytes | None, strict: bool) -> None:
        super().__init__(data, key, strict)
        self.blob_bytes = 0  # the blob bytes of the entries read so far: bounded by the blob area

    def entry(
        self, i: int, start: int, end: int, layout: records.Layout, fingerprints: dict[str, DeviceFingerprint],
        row: dict[str, Any],
    ) -> CacheEntry:  # fmt: skip
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
        area_offset, area_size = layout.areas["blob"]
        area_end = area_offset + area_size
        if blob_at % BLOB_ALIGN or blob_at < area_offset or blob_len > area_end - blob_at:
            raise CacheFormatError(
                start + 132,
                f"entry {i}: blob of {blob_len} bytes at offset {blob_at} is not a "
                f"{BLOB_ALIGN}-aligned range inside the blob area "
                f"[{area_offset}, {area_end})",
            )
        if blob_len > area_size - self.blob_bytes:
            raise CacheFormatError(
                start + 140,
                f"entry {i}: its blob of {blob_len} bytes and those of the entries before it add up to more than "
                f"the {area_size}-byte blob area: blobs overlap",
            )
        self.blob_bytes += blob_len
        blob = self.data[blob_at : blob_at + blob_len]
        if hashlib.sha256(blob).digest() != blob_sha:
            raise CacheFormatError(blob_at, f"entry {i}: blob sha256 mismatch (stored {blob_sha.hex()})")
        return CacheEntry(key_raw.hex(), options, src_raw.hex(), fid_raw.hex(), blob, created, last_used)


encode = ProgramCacheFormat.encode
decode = ProgramCacheFormat.decode
decode_report = ProgramCacheFormat.decode_report
validate = ProgramCacheFormat.validate
describe = ProgramCacheFormat.describe
