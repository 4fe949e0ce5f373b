"""The tuned-parameters file (``mace_cl_tuned_params.bin``): bytes in, records out.

Pure like ``cachefile.py``: no OpenCL import and no file I/O, so loaders, ``mace tune`` and fuzzers share one
implementation. It stores, per device fingerprint and per tuning key, the local work size that measured fastest
(plus optional small integer variant parameters, such as a tile size index). The byte layout and validation rules
are in docs/cache-format.md, section "Tuned parameters file".

The identity of a tuned launch is computed in exactly one place: ``tuning_key()``. Device identity is
``cachefile.DeviceFingerprint.id()``, the same as for compiled programs.

A stored local size is only a hint: the backend re-checks it against the current kernel's limits
(``tuner.validate_local_size``) before using it, because the file may come from another build or be hand-edited.

Example:
    >>> fp = DeviceFingerprint("pocl", "The pocl project", "OpenCL 3.0 PoCL 5.0", "cpu-x86-64", "GenuineIntel",
    ...                        "OpenCL 3.0", "5.0", 64, True, "0.1.0")
    >>> entry = TunedEntry.for_launch("conv_0", "#define KERNEL_NAME conv_0 ...", (64, 56, 56), fp,
    ...                               local_size=(4, 8, 8), time_us=812.5, now=1.0)
    >>> data = encode(TunedParams({fp.id(): fp}, [entry]))
    >>> decode(data).lookup(fp, entry.tuning_key).local_size
    (4, 8, 8)
    >>> try:
    ...     decode(data[:-1])
    ... except TunedParamsError as exc:
    ...     print(exc.offset, exc.reason)
    411 file truncated: the header declares 412 bytes, data ends at byte 411
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import MaceError
from .cachefile import _FINGERPRINT_STRINGS, FINGERPRINT_MIN_SIZE, CacheFormatError, DeviceFingerprint
from .cachefile import _fingerprint_fields as _cachefile_fingerprint_fields

MAGIC = b"MCTP"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
FORMAT_VERSION = (FORMAT_MAJOR << 16) | FORMAT_MINOR  # 0x00010000

FLAG_SIGNED = 1 << 0  # the trailer ends with an HMAC-SHA256 over everything before it
REQUIRED_FLAGS_MASK = 0x0000FFFF  # bits a reader must understand; unknown ones are rejected
KNOWN_REQUIRED_FLAGS = FLAG_SIGNED  # bits 16..31 are optional features a reader may ignore

# magic, version, flags, header size, fingerprint count, entry count,
# fingerprint section offset/size, entry table offset/size, total file size
_HEADER = struct.Struct("<4sIIIIIQQQQQ")
HEADER_SIZE = _HEADER.size  # 64
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
    ("total_size", 56, "Q"),
)

DIGEST_SIZE = 32  # sha256 and HMAC-SHA256
MAX_DIMS = 3
MAX_VARIANTS = 255  # the count is a u8
# record size u32, entry sha256, tuning key, fingerprint id, time_us f64, created f64, global size 3 x u64,
# local size 3 x u32, work_dim u8, variant count u8; then variant i32 x n and the kernel name str
_ENTRY_FIXED = struct.Struct("<I32s32s32sdd3Q3IBB")
ENTRY_FIXED_SIZE = _ENTRY_FIXED.size  # 154
ENTRY_MIN_SIZE = ENTRY_FIXED_SIZE + 4  # 158: no variants, empty kernel name
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1

_TUNING_KEY_DOMAIN = b"mace-tuning-key\x00"
_ENTRY_HASH_DOMAIN = b"mace-tuned-entry\x00"
_HEX_DIGITS = frozenset("0123456789abcdef")


class TunedParamsError(MaceError):
    """The tuned-parameters bytes are corrupt, truncated, forged or of an unknown version (or records cannot be
    encoded). ``offset`` is the byte offset of the bad field or of where the data ended; None for whole-object
    problems."""

    def __init__(self, offset: int | None, reason: str) -> None:
        super().__init__(f"byte offset {offset}: {reason}" if offset is not None else reason)
        self.offset = offset
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------------------
# Records and the tuning key


@dataclass(frozen=True)
class TunedEntry:
    """The fastest launch configuration measured for one tuning key on one device.

    ``local_size`` None means "let the driver choose" (the NULL local size), which the tuner stores when the driver's
    choice was as fast as any explicit size. ``variant`` holds optional small integers a kernel family may be tuned
    over besides the local size (a tile size index, an unroll factor); empty for plain local-size tuning.
    """

    tuning_key: str  # 64 lowercase hex digits: tuning_key(kernel_name, specialization, global_size)
    fingerprint_id: str  # 64 lowercase hex digits: DeviceFingerprint.id()
    kernel_name: str  # stored for people (describe()); the key already covers it
    global_size: tuple[int, ...]  # 1 to 3 dims, each >= 1: the size the time was measured at
    local_size: tuple[int, ...] | None  # same number of dims as global_size, each >= 1; None = driver's choice
    time_us: float  # measured kernel time in microseconds (finite, >= 0)
    created: float  # unix seconds
    variant: tuple[int, ...] = ()  # 0 to 255 signed 32-bit integers

    @classmethod
    def for_launch(
        cls,
        kernel_name: str,
        specialization: str,
        global_size: Sequence[int],
        fingerprint: DeviceFingerprint,
        local_size: Sequence[int] | None,
        time_us: float,
        now: float,
        variant: Sequence[int] = (),
    ) -> TunedEntry:
        """A consistent entry for the launch of ``kernel_name`` (from ``specialization``) at ``global_size``."""
        return cls(
            tuning_key=tuning_key(kernel_name, specialization, global_size),
            fingerprint_id=_fingerprint_id(fingerprint),
            kernel_name=kernel_name,
            global_size=_global_size(global_size, "global_size"),
            local_size=None if local_size is None else _int_tuple(local_size, "local_size"),
            time_us=float(time_us),
            created=float(now),
            variant=_int_tuple(variant, "variant"),
        )


@dataclass
class TunedParams:
    """The decoded file. One file may hold several devices' values; a loader uses its own (``entries_for``)."""

    fingerprints: dict[str, DeviceFingerprint] = field(default_factory=dict)  # id -> fingerprint
    entries: list[TunedEntry] = field(default_factory=list)

    def entries_for(self, fingerprint: DeviceFingerprint | str) -> dict[str, TunedEntry]:
        """Tuning key -> entry, for one device (a fingerprint or its id)."""
        fid = fingerprint if isinstance(fingerprint, str) else fingerprint.id()
        return {e.tuning_key: e for e in self.entries if e.fingerprint_id == fid}

    def lookup(self, fingerprint: DeviceFingerprint | str, key: str) -> TunedEntry | None:
        fid = fingerprint if isinstance(fingerprint, str) else fingerprint.id()
        return next((e for e in self.entries if e.fingerprint_id == fid and e.tuning_key == key), None)

    def merged(self, other: TunedParams) -> TunedParams:
        """Union by (fingerprint_id, tuning_key); the newer ``created`` wins (ties: ``self``): a re-tune replaces
        an older measurement even when the older time was lower, since times taken at different moments (clocks,
        thermal state, other load) do not compare; the newest measurement is the one taken under current conditions.

        Order: ``self``'s entries, then those only in ``other``. Fingerprints no entry refers to are dropped.
        """
        by_key: dict[tuple[str, str], TunedEntry] = {}
        for entry in [*self.entries, *other.entries]:
            k = (entry.fingerprint_id, entry.tuning_key)
            if k not in by_key or entry.created > by_key[k].created:
                by_key[k] = entry
        known = {**self.fingerprints}
        for fid, fp in other.fingerprints.items():
            known.setdefault(fid, fp)
        entries = list(by_key.values())
        used = {e.fingerprint_id for e in entries}
        return TunedParams({fid: fp for fid, fp in known.items() if fid in used}, entries)


def tuning_key(kernel_name: str, specialization: str, global_size: Sequence[int]) -> str:
    """THE tuning key: hex sha256 over the kernel name, its specialization and the global size.

    ``specialization`` is the text that decides the kernel's code: the specialization source codegen emitted for it
    (its ``#define``s and template), or, coarser, the program key of the whole program. The device is not part of
    the key: entries are stored per fingerprint id, which also covers the driver and the mace version.

        key = sha256(b"mace-tuning-key\\0" || str(kernel_name) || str(specialization)
                     || u8(len(global_size)) || u64(global_size[0]) || ...)
    """
    dims = _global_size(global_size, "global_size")
    h = hashlib.sha256(_TUNING_KEY_DOMAIN)
    h.update(_pack_str(kernel_name, "kernel_name"))
    h.update(_pack_str(specialization, "specialization"))
    h.update(struct.pack(f"<B{len(dims)}Q", len(dims), *dims))
    return h.hexdigest()


def _global_size(values: Any, what: str) -> tuple[int, ...]:
    dims = _int_tuple(values, what)
    if not 1 <= len(dims) <= MAX_DIMS or not all(1 <= g <= _U64_MAX for g in dims):
        raise TunedParamsError(None, f"{what} {values!r} is not 1 to 3 sizes in 1..2**64-1")
    return dims


def _int_tuple(values: Any, what: str) -> tuple[int, ...]:
    try:
        if isinstance(values, (str, bytes, bytearray)):
            raise TypeError
        items = tuple(values)
        if any(isinstance(v, bool) for v in items):
            raise TypeError
        out = tuple(operator.index(v) for v in items)
    except TypeError:
        raise TunedParamsError(None, f"{what} {values!r} is not a sequence of integers") from None
    return out


def _fingerprint_id(fp: DeviceFingerprint) -> str:
    if not isinstance(fp, DeviceFingerprint):
        raise TunedParamsError(None, f"fingerprint must be a DeviceFingerprint, not {type(fp).__name__}")
    try:
        return fp.id()
    except CacheFormatError as exc:
        raise TunedParamsError(None, f"fingerprint: {exc.reason}") from None


def _fingerprint_fields(fp: DeviceFingerprint) -> bytes:
    try:
        return _cachefile_fingerprint_fields(fp)
    except CacheFormatError as exc:
        raise TunedParamsError(None, f"fingerprint: {exc.reason}") from None


def _utf8(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise TunedParamsError(None, f"{what} must be str, not {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TunedParamsError(None, f"{what} is not encodable as UTF-8: {exc.reason}") from None


def _pack_str(text: str, what: str) -> bytes:
    raw = _utf8(text, what)
    if len(raw) > _U32_MAX:
        raise TunedParamsError(None, f"{what} is longer than 2**32-1 bytes")
    return struct.pack("<I", len(raw)) + raw


def _check_key(key: bytes | None) -> None:
    if key is not None and (not isinstance(key, (bytes, bytearray)) or not key):
        raise TunedParamsError(None, "the signing key must be non-empty bytes")


def _entry_sha256(record: bytes) -> bytes:
    """The per-entry hash: over the record size and every byte after the hash field, so a reader verifies each
    entry on its own (lenient decoding keeps the good ones) and fields a newer minor version appends are covered."""
    return hashlib.sha256(_ENTRY_HASH_DOMAIN + record[:4] + record[4 + DIGEST_SIZE :]).digest()


# ---------------------------------------------------------------------------------------------------------------------
# Encoding


def _hex_digest(value: str, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * DIGEST_SIZE or not set(value) <= _HEX_DIGITS:
        raise TunedParamsError(None, f"{what} {value!r} is not 64 lowercase hex digits")
    return bytes.fromhex(value)


def _entry_record(e: TunedEntry, what: str, fingerprints: dict[str, DeviceFingerprint]) -> bytes:
    key_raw = _hex_digest(e.tuning_key, f"{what}.tuning_key")
    fid_raw = _hex_digest(e.fingerprint_id, f"{what}.fingerprint_id")
    if e.fingerprint_id not in fingerprints:
        raise TunedParamsError(None, f"{what}.fingerprint_id {e.fingerprint_id} is not in fingerprints")
    global_size = _global_size(e.global_size, f"{what}.global_size")
    local = (0,) * len(global_size)
    if e.local_size is not None:
        local = _int_tuple(e.local_size, f"{what}.local_size")
        if len(local) != len(global_size) or not all(1 <= v <= _U32_MAX for v in local):
            raise TunedParamsError(
                None, f"{what}.local_size {e.local_size!r} is not {len(global_size)} sizes in 1..2**32-1 (or None)"
            )
    variant = _int_tuple(e.variant, f"{what}.variant")
    if len(variant) > MAX_VARIANTS or not all(_I32_MIN <= v <= _I32_MAX for v in variant):
        raise TunedParamsError(None, f"{what}.variant {e.variant!r} is not at most {MAX_VARIANTS} i32 values")
    for name in ("time_us", "created"):
        value = getattr(e, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TunedParamsError(None, f"{what}.{name} {value!r} is not a finite number")
    if e.time_us < 0:
        raise TunedParamsError(None, f"{what}.time_us {e.time_us!r} is negative")
    name = _pack_str(e.kernel_name, f"{what}.kernel_name")
    pad = MAX_DIMS - len(global_size)
    tail = struct.pack(f"<{len(variant)}i", *variant) + name
    size = ENTRY_FIXED_SIZE + len(tail)
    fixed = _ENTRY_FIXED.pack(
        size, bytes(DIGEST_SIZE), key_raw, fid_raw, float(e.time_us), float(e.created),
        *global_size, *(0,) * pad, *local, *(0,) * pad, len(global_size), len(variant),
    )  # fmt: skip
    record = bytearray(fixed + tail)
    record[4 : 4 + DIGEST_SIZE] = _entry_sha256(bytes(record))
    return bytes(record)


def encode(params: TunedParams, key: bytes | None = None) -> bytes:
    """The file bytes for ``params``; with ``key``, signed with HMAC-SHA256. Inconsistent records raise
    TunedParamsError (offset None): decode(encode(p)) == p holds for everything encode accepts."""
    _check_key(key)
    fp_section = bytearray()
    for fid, fp in params.fingerprints.items():
        if fid != _fingerprint_id(fp):
            raise TunedParamsError(None, f"fingerprints[{fid!r}] holds a fingerprint whose id is {fp.id()}")
        body = bytes.fromhex(fid) + _fingerprint_fields(fp)
        fp_section += struct.pack("<I", 4 + len(body)) + body

    table = bytearray()
    seen: set[tuple[str, str]] = set()
    for i, e in enumerate(params.entries):
        if not isinstance(e, TunedEntry):
            raise TunedParamsError(None, f"entries[{i}] is a {type(e).__name__}, not a TunedEntry")
        table += _entry_record(e, f"entries[{i}]", params.fingerprints)
        if (e.fingerprint_id, e.tuning_key) in seen:
            raise TunedParamsError(None, f"entries[{i}] duplicates an earlier (fingerprint_id, tuning_key)")
        seen.add((e.fingerprint_id, e.tuning_key))

    signed = key is not None
    entry_offset = HEADER_SIZE + len(fp_section)
    total = entry_offset + len(table) + DIGEST_SIZE * (2 if signed else 1)
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        FLAG_SIGNED if signed else 0,
        HEADER_SIZE,
        len(params.fingerprints),
        len(params.entries),
        HEADER_SIZE,
        len(fp_section),
        entry_offset,
        len(table),
        total,
    )
    body = bytearray(header + fp_section + table)
    body += hashlib.sha256(body).digest()
    if key is not None:
        body += hmac.new(bytes(key), body, hashlib.sha256).digest()
    return bytes(body)


# ---------------------------------------------------------------------------------------------------------------------
# Decoding: one decoder serves decode (strict), decode_report (lenient), validate and describe


def decode(data: bytes, key: bytes | None = None) -> TunedParams:
    """Parse and validate everything; any problem raises TunedParamsError("byte offset N: reason").

    With ``key``, the file must be signed with it. Without, a signed file is read and its signature not checked.
    """
    return _Decoder(data, key, strict=True).run()


def decode_report(data: bytes, key: bytes | None = None) -> tuple[TunedParams, list[str]]:
    """Lenient decode: a bad record drops only itself and is reported, so the rest can be kept.

    Still raises TunedParamsError for whole-file problems: header, section layout, record framing, and a missing or
    wrong signature when ``key`` is given. A whole-file sha256 mismatch is reported, not raised: every surviving
    entry was verified on its own (entry sha256), every fingerprint by its recomputed id.
    """
    decoder = _Decoder(data, key, strict=False)
    return decoder.run(), decoder.problems


def validate(data: bytes, key: bytes | None = None) -> list[str]:
    """Every problem found (empty when ``decode`` would succeed)."""
    try:
        return decode_report(data, key)[1]
    except TunedParamsError as exc:
        return [str(exc)]


def describe(data: bytes) -> dict[str, Any]:
    """What an inspection tool shows: as much as can be parsed, plus the problems and the error. Never raises
    for any input. JSON-serialisable."""
    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else b""
    decoder = _Decoder(raw, None, strict=False)
    error = None
    try:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TunedParamsError(None, f"tuned parameters data must be bytes, not {type(data).__name__}")
        decoder.run()
    except TunedParamsError as exc:
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
            raise TunedParamsError(
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
            raise TunedParamsError(
                at, f"{what} length {n} exceeds the {self.end - self.pos} bytes left in the {self.region}"
            )
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TunedParamsError(at + 4 + exc.start, f"{what} is not valid UTF-8 ({exc.reason})") from None


@dataclass
class _Layout:
    flags: int
    header_size: int
    fingerprint_count: int
    entry_count: int
    fingerprint_offset: int
    fingerprint_size: int
    entry_offset: int
    entry_size: int
    total: int
    exact: bool  # written by this minor version (or older): no unknown trailing bytes or gaps allowed
    trailer_start: int


class _Decoder:
    def __init__(self, data: bytes, key: bytes | None, strict: bool) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TunedParamsError(None, f"tuned parameters data must be bytes, not {type(data).__name__}")
        _check_key(key)
        self.data = bytes(data)
        self.key = key
        self.strict = strict
        self.problems: list[str] = []
        self.fingerprint_rows: list[dict[str, Any]] = []
        self.entry_rows: list[dict[str, Any]] = []

    def problem(self, exc: TunedParamsError) -> None:
        """A problem confined to one record: fatal in strict mode, reported (record dropped) in lenient mode."""
        if self.strict:
            raise exc
        self.problems.append(str(exc))

    def run(self) -> TunedParams:
        layout = self.header()
        if self.key is not None:
            self.check_signature(layout)
        fingerprints = self.fingerprints(layout)
        entries = self.entries(layout, fingerprints)
        stored = self.data[layout.trailer_start : layout.trailer_start + DIGEST_SIZE]
        actual = hashlib.sha256(self.data[: layout.trailer_start]).digest()
        if stored != actual:
            self.problem(
                TunedParamsError(
                    layout.trailer_start,
                    f"whole-file sha256 mismatch: trailer holds {stored.hex()}, content hashes to {actual.hex()}",
                )
            )
        return TunedParams(fingerprints, entries)

    def header(self) -> _Layout:
        data = self.data
        if len(data) >= len(MAGIC) and data[:4] != MAGIC:
            raise TunedParamsError(
                0, f"bad magic {data[:4]!r}, expected {MAGIC!r}: not a mace OpenCL tuned-parameters file"
            )
        if len(data) < HEADER_SIZE:
            raise TunedParamsError(
                len(data), f"file truncated: the header needs {HEADER_SIZE} bytes, data ends at byte {len(data)}"
            )
        (_, version, flags, header_size, fp_count, entry_count, fp_off, fp_size, entry_off, entry_size, total) = (
            _HEADER.unpack_from(data)
        )
        if version >> 16 != FORMAT_MAJOR:
            raise TunedParamsError(
                4,
                f"unsupported format version 0x{version:08x} (major {version >> 16}); this "
                f"reader supports major version {FORMAT_MAJOR}",
            )
        exact = (version & 0xFFFF) <= FORMAT_MINOR
        unknown = flags & REQUIRED_FLAGS_MASK & ~KNOWN_REQUIRED_FLAGS
        if unknown:
            raise TunedParamsError(8, f"unknown required flags 0x{unknown:08x} in flags 0x{flags:08x}")
        if total > len(data):
            raise TunedParamsError(
                len(data), f"file truncated: the header declares {total} bytes, data ends at byte {len(data)}"
            )
        if total < len(data):
            raise TunedParamsError(
                total, f"{len(data) - total} bytes of trailing data after the declared total size {total}"
            )
        if header_size < HEADER_SIZE or (exact and header_size != HEADER_SIZE):
            raise TunedParamsError(12, f"header size {header_size}, expected {HEADER_SIZE}")
        trailer_start = total - DIGEST_SIZE * (2 if flags & FLAG_SIGNED else 1)
        if trailer_start < header_size:
            raise TunedParamsError(56, f"total size {total} cannot hold the {header_size}-byte header and the trailer")

        prev_end, prev_name = header_size, "header"
        for name, field_at, off, size in (
            ("fingerprint section", 24, fp_off, fp_size),
            ("entry table", 40, entry_off, entry_size),
        ):
            if off < prev_end or (exact and off != prev_end):
                raise TunedParamsError(
                    field_at, f"{name} offset {off}, expected {prev_end} (the {prev_name} ends at byte {prev_end})"
                )
            if size > trailer_start - off:
                raise TunedParamsError(
                    field_at + 8,
                    f"{name} of {size} bytes at offset {off} runs past the trailer at byte {trailer_start}",
                )
            prev_end, prev_name = off + size, name
        if exact and prev_end != trailer_start:
            raise TunedParamsError(
                48, f"entry table ends at byte {prev_end}, the trailer starts at byte {trailer_start}"
            )
        # Bound counts by the bytes that could hold them before looping: a count of 2**32-1 fails here.
        for name, field_at, count, size, min_size in (
            ("fingerprint", 16, fp_count, fp_size, FINGERPRINT_MIN_SIZE),
            ("entry", 20, entry_count, entry_size, ENTRY_MIN_SIZE),
        ):
            if count * min_size > size:
                raise TunedParamsError(
                    field_at, f"{name} count {count} cannot fit in {size} bytes (a record takes at least {min_size})"
                )
        return _Layout(
            flags, header_size, fp_count, entry_count, fp_off, fp_size, entry_off, entry_size, total, exact,
            trailer_start,
        )  # fmt: skip

    def check_signature(self, layout: _Layout) -> None:
        """Authenticate before parsing the sections: with a key, the bytes are assumed hostile."""
        assert self.key is not None
        if not layout.flags & FLAG_SIGNED:
            raise TunedParamsError(8, "the file is not signed (flags bit 0 clear) but a key was given")
        mac_at = layout.total - DIGEST_SIZE
        expected = hmac.new(bytes(self.key), self.data[:mac_at], hashlib.sha256).digest()
        if not hmac.compare_digest(expected, self.data[mac_at : layout.total]):
            raise TunedParamsError(mac_at, "HMAC-SHA256 signature mismatch: wrong key or modified file")

    def records(
        self, name: str, count: int, start: int, size: int, min_size: int, exact: bool
    ) -> list[tuple[int, int]]:
        """The (start, end) of each record, following the u32 size prefixes; bad framing is whole-file fatal."""
        out = []
        pos, end = start, start + size
        for i in range(count):
            if end - pos < 4:
                raise TunedParamsError(pos, f"{name} {i}: record size field runs past the section end at byte {end}")
            n = struct.unpack_from("<I", self.data, pos)[0]
            if not min_size <= n <= end - pos:
                raise TunedParamsError(pos, f"{name} {i}: record size {n} outside {min_size}..{end - pos}")
            out.append((pos, pos + n))
            pos += n
        if exact and pos != end:
            raise TunedParamsError(pos, f"{end - pos} unused bytes after the last {name} record")
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
                    raise TunedParamsError(start + 4, f"fingerprint {i}: duplicate id {stored}")
            except TunedParamsError as exc:
                row["problem"] = str(exc)
                self.problem(exc)
                continue
            out[stored] = fp
        return out

    def fingerprint_record(self, i: int, start: int, end: int, exact: bool) -> tuple[DeviceFingerprint, str]:
        """The same record as in the compiled-program cache file (docs/cache-format.md, "Fingerprint record")."""
        c = _Cursor(self.data, start + 4, end, f"fingerprint {i} record")
        stored = c.take(DIGEST_SIZE, f"fingerprint {i} id").hex()
        strings = {name: c.string(f"fingerprint {i} {name}") for name in _FINGERPRINT_STRINGS}
        address_bits = c.unpack("I", f"fingerprint {i} address_bits")
        endian_at = c.pos
        endian = c.unpack("B", f"fingerprint {i} little_endian")
        if endian > 1:
            raise TunedParamsError(endian_at, f"fingerprint {i}: little_endian byte is {endian}, expected 0 or 1")
        engine_version = c.string(f"fingerprint {i} engine_version")
        if exact and c.pos != end:
            raise TunedParamsError(c.pos, f"fingerprint {i}: {end - c.pos} unknown bytes at the end of the record")
        fp = DeviceFingerprint(
            **strings, address_bits=address_bits, little_endian=endian == 1, engine_version=engine_version
        )
        computed = _fingerprint_id(fp)
        if computed != stored:
            raise TunedParamsError(
                start + 4,
                f"fingerprint {i}: stored id {stored} differs from the id {computed} computed from its fields",
            )
        return fp, stored

    def entries(self, layout: _Layout, fingerprints: dict[str, DeviceFingerprint]) -> list[TunedEntry]:
        out: list[TunedEntry] = []
        seen: set[tuple[str, str]] = set()
        spans = self.records(
            "entry", layout.entry_count, layout.entry_offset, layout.entry_size, ENTRY_MIN_SIZE, layout.exact
        )
        for i, (start, end) in enumerate(spans):
            row: dict[str, Any] = {"index": i, "offset": start, "size": end - start}
            self.entry_rows.append(row)
            try:
                entry = self.entry_record(i, start, end, layout.exact, fingerprints, row)
                if (entry.fingerprint_id, entry.tuning_key) in seen:
                    raise TunedParamsError(start + 36, f"entry {i}: duplicate (fingerprint id, tuning key)")
            except TunedParamsError as exc:
                row["problem"] = str(exc)
                self.problem(exc)
                continue
            seen.add((entry.fingerprint_id, entry.tuning_key))
            out.append(entry)
        return out

    def entry_record(
        self,
        i: int,
        start: int,
        end: int,
        exact: bool,
        fingerprints: dict[str, DeviceFingerprint],
        row: dict[str, Any],
    ) -> TunedEntry:
        (_, entry_sha, key_raw, fid_raw, time_us, created, g0, g1, g2, l0, l1, l2, dims, n_variants) = (
            _ENTRY_FIXED.unpack_from(self.data, start)
        )
        global_raw, local_raw = (g0, g1, g2), (l0, l1, l2)
        row.update(
            tuning_key=key_raw.hex(),
            fingerprint_id=fid_raw.hex(),
            time_us=time_us,
            created=created,
            work_dim=dims,
            global_size=list(global_raw[:dims]),
            local_size=None if local_raw == (0, 0, 0) else list(local_raw[:dims]),
        )
        computed = _entry_sha256(self.data[start:end])
        if computed != entry_sha:
            raise TunedParamsError(
                start + 4, f"entry {i}: entry sha256 mismatch (stored {entry_sha.hex()}, computed {computed.hex()})"
            )
        c = _Cursor(self.data, start + ENTRY_FIXED_SIZE, end, f"entry {i} record")
        variant = tuple(c.unpack("i", f"entry {i} variant[{v}]") for v in range(n_variants))
        name = c.string(f"entry {i} kernel_name")
        row.update(variant=list(variant), kernel_name=name)
        if exact and c.pos != end:
            raise TunedParamsError(c.pos, f"entry {i}: {end - c.pos} unknown bytes at the end of the record")
        if not 1 <= dims <= MAX_DIMS:
            raise TunedParamsError(start + 152, f"entry {i}: work_dim {dims} is not 1, 2 or 3")
        if not all(global_raw[:dims]) or any(global_raw[dims:]):
            raise TunedParamsError(
                start + 116, f"entry {i}: global size {list(global_raw)} is not {dims} sizes >= 1 then zeros"
            )
        if local_raw != (0, 0, 0) and (not all(local_raw[:dims]) or any(local_raw[dims:])):
            raise TunedParamsError(
                start + 140,
                f"entry {i}: local size {list(local_raw)} is neither all zero (driver's choice) nor {dims} sizes >= 1 "
                "then zeros",
            )
        for what, value, at in (("time_us", time_us, 100), ("created", created, 108)):
            if not math.isfinite(value):
                raise TunedParamsError(start + at, f"entry {i}: {what} {value} is not finite")
        if time_us < 0:
            raise TunedParamsError(start + 100, f"entry {i}: time_us {time_us} is negative")
        if fid_raw.hex() not in fingerprints:
            raise TunedParamsError(
                start + 68,
                f"entry {i}: fingerprint id {fid_raw.hex()} is not in the fingerprint section (or its record was "
                "invalid)",
            )
        return TunedEntry(
            tuning_key=key_raw.hex(),
            fingerprint_id=fid_raw.hex(),
            kernel_name=name,
            global_size=tuple(global_raw[:dims]),
            local_size=None if local_raw == (0, 0, 0) else tuple(local_raw[:dims]),
            time_us=time_us,
            created=created,
            variant=variant,
        )
