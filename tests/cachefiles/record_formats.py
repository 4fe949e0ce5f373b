"""One adapter per record-file format (records.py): what the shared conformance tests (test_record_formats.py) and
each format's own tests need to know about it, and the byte helpers built on that (header fields, reseal, reject).

The numbers a format promises (magic, header size, the areas after the entry table) are written here by hand, not
read from the module under test, so a change to them fails the tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable
from datetime import timedelta
from functools import cached_property
from types import ModuleType
from typing import Any

import pytest
from cachefile_samples import CONV, FP_CPU, FP_GPU, POOL, program_cache_records, tuned_params_records
from hypothesis import HealthCheck, settings

from mace.cachefiles import program_cache, tuned_params
from mace.errors import MaceError

FUZZ = settings(max_examples=1000, deadline=timedelta(milliseconds=250), suppress_health_check=[HealthCheck.too_slow])
KEY = b"k" * 32

# the header fields every record file starts with (records.py), then per area an offset and a size, then the total
COMMON_HEADER = ("magic", "version", "flags", "header_size", "fp_count", "entry_count", "fp_off", "fp_size",
                 "entry_off", "entry_size")  # fmt: skip


class RecordFormatCase:
    """The base: what is the same in every record file. A subclass states the rest."""

    name: str
    module: ModuleType
    file_class: type  # the records of a whole file: file_class(fingerprints, entries)
    error: type[MaceError]
    magic: bytes
    header_size: int
    areas: tuple[tuple[str, int], ...] = ()  # (name, alignment) of each area after the entry table
    what: str  # how a bad-magic error names the format
    key_field: str  # the entry's key: one entry a key (and fingerprint)
    time_field: str  # the entry time merge keeps the newer of
    payload_field: str  # what merge carries over from the winning entry, besides the key
    entries_mutable: bool  # whether an entry may be changed in place (then merge must copy)
    records: Callable[[], Any]  # the sample records of cachefile_samples.py: 2 fingerprints, 4 entries
    small_entries: Callable[[], list]  # for the fuzzing base file: one entry of FP_CPU, then one of FP_GPU
    bad_entry: tuple[int, str]  # an entry whose damage (self.bad_entry_at) drops only it, and the problem reported

    def payload(self, n: int) -> object:
        """The n-th distinct value of payload_field."""
        raise NotImplementedError

    def bad_entry_at(self) -> int:
        raise NotImplementedError

    def seal_record(self, record: bytearray) -> None:
        """Recompute the record's own checksum after an edit (what a forger would do); none by default."""

    def move_area_refs(self, table: bytearray, shift: int) -> None:
        """Move the area offsets that the entry table holds by ``shift``; none by default."""

    def __repr__(self) -> str:
        return self.name

    # --- records -------------------------------------------------------------------------------------------------

    def file(self, fingerprints: dict | None = None, entries: list | None = None) -> Any:
        return self.file_class(fingerprints or {}, entries or [])

    def small(self) -> Any:
        """A small file for fuzzing: two fingerprints, one entry each."""
        return self.file({FP_CPU.id(): FP_CPU, FP_GPU.id(): FP_GPU}, self.small_entries())

    def key_of(self, entry: Any) -> str:
        return getattr(entry, self.key_field)

    def payload_of(self, entry: Any) -> object:
        return getattr(entry, self.payload_field)

    def with_payload(self, entry: Any, n: int, time: float | None = None) -> Any:
        """The entry with the n-th payload and, where given, another time."""
        time = getattr(entry, self.time_field) if time is None else time
        return dataclasses.replace(entry, **{self.payload_field: self.payload(n), self.time_field: time})

    # --- bytes ---------------------------------------------------------------------------------------------------

    @cached_property
    def header_struct(self) -> struct.Struct:
        return struct.Struct("<4sIIIIIQQQQ" + "QQ" * len(self.areas) + "Q")

    @cached_property
    def header_names(self) -> tuple[str, ...]:
        return COMMON_HEADER + tuple(f"{a}_{f}" for a, _ in self.areas for f in ("off", "size")) + ("total",)

    @property
    def total_at(self) -> int:
        return self.header_size - 8

    @cached_property
    def data(self) -> bytes:
        return self.module.encode(self.records())

    @cached_property
    def header(self) -> dict[str, Any]:
        return self.header_of(self.data)

    @cached_property
    def small_data(self) -> bytes:
        return self.module.encode(self.small())

    def header_of(self, data: bytes) -> dict[str, Any]:
        return dict(zip(self.header_names, self.header_struct.unpack_from(data)))

    def reseal(self, data: bytes | bytearray) -> bytes:
        """Make total size and sha256 trailer match again, so a mutation reaches the deeper checks."""
        out = bytearray(data)
        if len(out) >= self.header_size + 32:
            struct.pack_into("<Q", out, self.total_at, len(out))
            out[-32:] = hashlib.sha256(out[:-32]).digest()
        return bytes(out)

    def rehash(self, data: bytes, start: int) -> bytes:
        """Seal the record at ``start`` again, and the file."""
        out = bytearray(data)
        size = struct.unpack_from("<I", out, start)[0]
        record = bytearray(out[start : start + size])
        self.seal_record(record)
        out[start : start + size] = record
        return self.reseal(out)

    def rehash_all(self, data: bytes) -> bytes:
        """Seal every entry record the framing still finds, so mutations reach the field checks."""
        try:
            h = self.header_of(data)
            pos, end = h["entry_off"], h["entry_off"] + h["entry_size"]
            for _ in range(min(h["entry_count"], 64)):
                size = struct.unpack_from("<I", data, pos)[0]
                if not self.module.ENTRY_MIN_SIZE <= size <= min(end, len(data)) - pos:
                    break
                data = self.rehash(data, pos)
                pos += size
        except (struct.error, OverflowError, ValueError):  # the mutation broke the header or framing: leave it
            pass
        return data

    def reject(self, data: bytes, key: bytes | None = None) -> MaceError:
        with pytest.raises(self.error) as info:
            self.module.decode(data, key)
        assert str(info.value).startswith(f"byte offset {info.value.offset}: ")
        assert isinstance(info.value, MaceError)
        return info.value

    def entry_offset(self, i: int, data: bytes | None = None) -> int:
        data = self.data if data is None else data
        pos = self.header_of(data)["entry_off"]
        for _ in range(i):
            pos += struct.unpack_from("<I", data, pos)[0]
        return pos

    def extended(self, data: bytes, minor: int) -> bytes:
        """What a future 1.minor writer may emit: a header 16 bytes longer, records 8 bytes longer (sealed whole),
        8-byte gaps between sections and before the trailer, each area 32 bytes further on."""
        h = self.header_of(data)

        def grow(start: int, count: int, seal: bool) -> bytes:
            out, pos = bytearray(), start
            for _ in range(count):
                size = struct.unpack_from("<I", data, pos)[0]
                record = bytearray(struct.pack("<I", size + 8) + data[pos + 4 : pos + size] + b"future!!")
                if seal:
                    self.seal_record(record)
                out += record
                pos += size
            return bytes(out)

        fps, table = grow(h["fp_off"], h["fp_count"], False), bytearray(grow(h["entry_off"], h["entry_count"], True))
        header_size = self.header_size + 16
        fp_off = header_size + 8
        entry_off = fp_off + len(fps) + 8
        end, areas, fields = entry_off + len(table), b"", []
        for area, align in self.areas:
            off = -(-end // align) * align + 32
            self.move_area_refs(table, off - h[f"{area}_off"])
            blob = data[h[f"{area}_off"] : h[f"{area}_off"] + h[f"{area}_size"]]
            areas += bytes(off - end) + blob
            fields += [off, len(blob)]
            end = off + len(blob)
        total = end + 8 + 32
        header = self.header_struct.pack(self.magic, 0x00010000 | minor, 0, header_size, h["fp_count"],
                                         h["entry_count"], fp_off, len(fps), entry_off, len(table), *fields,
                                         total) + bytes(16)  # fmt: skip
        body = header + bytes(8) + fps + bytes(8) + table + areas + bytes(8)
        return body + hashlib.sha256(body).digest()


class ProgramCacheCase(RecordFormatCase):
    name = "program_cache"
    module = program_cache
    file_class = program_cache.CacheFile
    error = program_cache.CacheFormatError
    magic = b"MCLP"
    header_size = 80
    areas = (("blob", 16),)
    what = "not a mace OpenCL program cache"
    key_field = "program_key"
    time_field = "last_used"
    payload_field = "blob"
    entries_mutable = True
    records = staticmethod(program_cache_records)
    bad_entry = (0, "entry 0: blob sha256 mismatch")

    @staticmethod
    def small_entries() -> list:
        return [
            program_cache.CacheEntry.for_program(CONV, "-DA", FP_CPU, b"abc" * 7, 1.0),
            program_cache.CacheEntry.for_program(POOL, "", FP_GPU, b"", 2.0),
        ]

    def payload(self, n: int) -> object:
        return b"payload %d" % n

    def bad_entry_at(self) -> int:
        return self.header["blob_off"] + 3  # the first entry's blob

    def move_area_refs(self, table: bytearray, shift: int) -> None:
        pos = 0
        while pos < len(table):
            struct.pack_into("<Q", table, pos + 132, struct.unpack_from("<Q", table, pos + 132)[0] + shift)
            pos += struct.unpack_from("<I", table, pos)[0]


class TunedParamsCase(RecordFormatCase):
    name = "tuned_params"
    module = tuned_params
    file_class = tuned_params.TunedParams
    error = tuned_params.TunedParamsError
    magic = b"MCTP"
    header_size = 64
    what = "not a mace OpenCL tuned-parameters file"
    key_field = "tuning_key"
    time_field = "created"
    payload_field = "local_size"
    entries_mutable = False
    records = staticmethod(tuned_params_records)
    bad_entry = (1, "entry 1: entry sha256 mismatch")

    @staticmethod
    def small_entries() -> list:
        return [
            tuned_params.TunedEntry.for_launch("a", "s", (8, 8), FP_CPU, (8, 1), 1.0, 1.0, variant=(3,)),
            tuned_params.TunedEntry.for_launch("b", "s", (5,), FP_GPU, None, 2.0, 2.0),
        ]

    def payload(self, n: int) -> object:
        return (n, n, n)

    def bad_entry_at(self) -> int:
        return self.entry_offset(1) + 100  # entry 1's time

    def seal_record(self, record: bytearray) -> None:
        record[4:36] = hashlib.sha256(b"mace-tuned-entry\x00" + record[:4] + record[36:]).digest()


PROGRAM_CACHE = ProgramCacheCase()
TUNED_PARAMS = TunedParamsCase()
FORMATS = (PROGRAM_CACHE, TUNED_PARAMS)
