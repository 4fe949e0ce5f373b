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

import hashlib
import math
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mace.cachefiles import binformat
from mace.cachefiles.binformat import (
    DIGEST_SIZE,
    FLAG_SIGNED,
    KNOWN_REQUIRED_FLAGS,
    REQUIRED_FLAGS_MASK,
    FormatError,
    hex_digest,
)
from mace.cachefiles.program_cache import FINGERPRINT_MIN_SIZE, CacheFormatError, DeviceFingerprint, read_fingerprints
from mace.cachefiles.program_cache import _fingerprint_fields as _cachefile_fingerprint_fields

MAGIC = b"MCTP"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
FORMAT_VERSION = (FORMAT_MAJOR << 16) | FORMAT_MINOR  # 0x00010000

# the family's common header (magic ... entry table offset/size), then the total file size
_HEADER_FIELDS = binformat.header_fields()
_HEADER = binformat.header_struct(_HEADER_FIELDS)  # <4sIIIIIQQQQQ
HEADER_SIZE = _HEADER.size  # 64

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


class TunedParamsError(FormatError):
    """The tuned-parameters bytes are corrupt, truncated, forged or of an unknown version (or records cannot be
    encoded). ``offset`` is the byte offset of the bad field or of where the data ended; None for whole-object
    problems."""


FORMAT = binformat.Format(
    MAGIC, "mace OpenCL tuned-parameters file", "tuned parameters data", _HEADER, _HEADER_FIELDS, FORMAT_MAJOR,
    FORMAT_MINOR, TunedParamsError, FLAG_SIGNED, REQUIRED_FLAGS_MASK, KNOWN_REQUIRED_FLAGS,
)  # fmt: skip


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


def _pack_str(text: str, what: str) -> bytes:
    return binformat.pack_str(text, what, TunedParamsError)


def _entry_sha256(record: bytes) -> bytes:
    """The per-entry hash: over the record size and every byte after the hash field, so a reader verifies each
    entry on its own (lenient decoding keeps the good ones) and fields a newer minor version appends are covered."""
    return hashlib.sha256(_ENTRY_HASH_DOMAIN + record[:4] + record[4 + DIGEST_SIZE :]).digest()


# ---------------------------------------------------------------------------------------------------------------------
# Encoding


def _entry_record(e: TunedEntry, what: str, fingerprints: dict[str, DeviceFingerprint]) -> bytes:
    key_raw = hex_digest(e.tuning_key, f"{what}.tuning_key", TunedParamsError)
    fid_raw = hex_digest(e.fingerprint_id, f"{what}.fingerprint_id", TunedParamsError)
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
    binformat.check_key(key, TunedParamsError)
    fp_section = bytearray()
    for fid, fp in params.fingerprints.items():
        if fid != _fingerprint_id(fp):
            raise TunedParamsError(None, f"fingerprints[{fid!r}] holds a fingerprint whose id is {fp.id()}")
        body = bytes.fromhex(fid) + _fingerprint_fields(fp)
        fp_section += binformat.frame(body)

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
    total = entry_offset + len(table) + binformat.trailer_size(signed)
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
    return binformat.seal(header + fp_section + table, key)


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
    return binformat.describe(_Decoder, data)


@dataclass
class _Layout:
    fingerprint_count: int
    fingerprint_offset: int
    fingerprint_size: int
    entry_count: int
    entry_offset: int
    entry_size: int
    exact: bool  # written by this minor version (or older): no unknown trailing bytes or gaps allowed


class _Decoder(binformat.Decoder):
    fmt = FORMAT

    def layout(self, header: binformat.Header) -> _Layout:
        (_, _, _, _, fp_count, entry_count, fp_off, fp_size, entry_off, entry_size, _) = header.values
        binformat.check_sections(
            TunedParamsError,
            header,
            (("fingerprint section", 24, fp_off, fp_size, 1), ("entry table", 40, entry_off, entry_size, 1)),
        )
        binformat.check_counts(
            TunedParamsError,
            (
                ("fingerprint", 16, fp_count, fp_size, FINGERPRINT_MIN_SIZE),
                ("entry", 20, entry_count, entry_size, ENTRY_MIN_SIZE),
            ),
        )
        return _Layout(fp_count, fp_off, fp_size, entry_count, entry_off, entry_size, header.exact)

    def sections(self, layout: _Layout) -> TunedParams:
        fingerprints = read_fingerprints(
            self, layout.fingerprint_count, layout.fingerprint_offset, layout.fingerprint_size, layout.exact
        )
        return TunedParams(fingerprints, self.entries(layout, fingerprints))

    def entries(self, layout: _Layout, fingerprints: dict[str, DeviceFingerprint]) -> list[TunedEntry]:
        def read(i: int, start: int, end: int, row: dict[str, Any]) -> TunedEntry:
            entry = self.entry_record(i, start, end, layout.exact, fingerprints, row)
            if (entry.fingerprint_id, entry.tuning_key) in seen:
                raise TunedParamsError(start + 36, f"entry {i}: duplicate (fingerprint id, tuning key)")
            seen.add((entry.fingerprint_id, entry.tuning_key))
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
        c = self.cursor(start + ENTRY_FIXED_SIZE, end, f"entry {i} record")
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
