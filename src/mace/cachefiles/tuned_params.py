"""The tuned-parameters file (``mace_cl_tuned_params.bin``): bytes in, records out.

Pure like ``program_cache.py``: no OpenCL import and no file I/O, so loaders, ``mace tune`` and fuzzers share one
implementation. It stores, per device fingerprint and per tuning key, the local work size that measured fastest
(plus optional small integer variant parameters, such as a tile size index). The byte layout and validation rules
are in docs/cache-format.md, section "Tuned parameters file".

It is a record file (records.py), like the program cache: this module supplies its entries (``TunedEntry``, keyed
by tuning key, the newest measurement wins a merge) and their codec. The identity of a tuned launch is computed in
exactly one place: ``tuning_key()``. Device identity is ``DeviceFingerprint.id()`` (fingerprint.py), the same as for
compiled programs.

A stored local size is only a hint: the OpenCL runtime re-checks it against the current kernel's limits
(``validate_local_size`` in mace.opencl.tuning.local_sizes) before using it, because the file may come from another
build or be hand-edited.

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
from dataclasses import dataclass
from typing import Any

from mace.cachefiles import binformat, records
from mace.cachefiles.binformat import DIGEST_SIZE, FormatError, hex_digest
from mace.cachefiles.fingerprint import DeviceFingerprint, checked_id

MAGIC = b"MCTP"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
FORMAT_VERSION = (FORMAT_MAJOR << 16) | FORMAT_MINOR  # 0x00010000

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


# the family's common header (magic ... entry table offset/size), then the total file size
FORMAT = records.record_format(
    MAGIC, "mace OpenCL tuned-parameters file", "tuned parameters data", TunedParamsError, FORMAT_MAJOR, FORMAT_MINOR
)
HEADER_SIZE = FORMAT.header.size  # 64: <4sIIIIIQQQQQ


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

    @property
    def key(self) -> str:
        return self.tuning_key

    @property
    def recency(self) -> float:
        """A merge keeps the newer measurement, even when the older time was lower: times taken at different
        moments (clocks, thermal state, other load) do not compare; the newest was taken under current conditions,
        and a re-tune must replace the old value."""
        return self.created

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
            fingerprint_id=checked_id(fingerprint, TunedParamsError),
            kernel_name=kernel_name,
            global_size=_global_size(global_size, "global_size"),
            local_size=None if local_size is None else _int_tuple(local_size, "local_size"),
            time_us=float(time_us),
            created=float(now),
            variant=_int_tuple(variant, "variant"),
        )


class TunedParams(records.RecordFile[TunedEntry]):
    """The decoded file (fingerprints, entries). ``merged`` keeps, per (fingerprint_id, tuning_key), the entry
    created last."""

    def entries_for(self, fingerprint: DeviceFingerprint | str) -> dict[str, TunedEntry]:
        """Tuning key -> entry, for one device (a fingerprint or its id)."""
        return self.by_key(fingerprint)

    def lookup(self, fingerprint: DeviceFingerprint | str, key: str) -> TunedEntry | None:
        return next((e for e in self.entries_of(fingerprint) if e.tuning_key == key), None)


def tuning_key(kernel_name: str, specialization: str, global_size: Sequence[int]) -> str:
    """THE tuning key: hex sha256 over the kernel name, its specialization and the global size.

    ``specialization`` is the text that decides the kernel's code: the specialization source the planner emitted for it
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


def _pack_str(text: str, what: str) -> bytes:
    return binformat.pack_str(text, what, TunedParamsError)


def _entry_sha256(record: bytes) -> bytes:
    """The per-entry hash: over the record size and every byte after the hash field, so a reader verifies each
    entry on its own (lenient decoding keeps the good ones) and fields a newer minor version appends are covered."""
    return hashlib.sha256(_ENTRY_HASH_DOMAIN + record[:4] + record[4 + DIGEST_SIZE :]).digest()


# ---------------------------------------------------------------------------------------------------------------------
# The entry codec


class TunedParamsFormat(records.RecordFormat[TunedEntry, TunedParams]):
    fmt = FORMAT
    file_type = TunedParams
    entry_type = TunedEntry
    key_field = "tuning_key"
    key_at = 36
    entry_min_size = ENTRY_MIN_SIZE

    @classmethod
    def encode_entry(cls, e: TunedEntry, what: str, fingerprints: dict[str, DeviceFingerprint]) -> bytes:
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
        kernel_name = _pack_str(e.kernel_name, f"{what}.kernel_name")
        pad = MAX_DIMS - len(global_size)
        tail = struct.pack(f"<{len(variant)}i", *variant) + kernel_name
        size = ENTRY_FIXED_SIZE + len(tail)
        fixed = _ENTRY_FIXED.pack(
            size, bytes(DIGEST_SIZE), key_raw, fid_raw, float(e.time_us), float(e.created),
            *global_size, *(0,) * pad, *local, *(0,) * pad, len(global_size), len(variant),
        )  # fmt: skip
        record = bytearray(fixed + tail)
        record[4 : 4 + DIGEST_SIZE] = _entry_sha256(bytes(record))
        return bytes(record)

    def entry(
        self, i: int, start: int, end: int, layout: records.Layout, fingerprints: dict[str, DeviceFingerprint],
        row: dict[str, Any],
    ) -> TunedEntry:  # fmt: skip
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
        if layout.exact and c.pos != end:
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


encode = TunedParamsFormat.encode
decode = TunedParamsFormat.decode
decode_report = TunedParamsFormat.decode_report
validate = TunedParamsFormat.validate
describe = TunedParamsFormat.describe
