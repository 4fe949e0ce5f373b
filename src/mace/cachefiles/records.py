"""Record files: what every format of the MCLP family is (docs/cache-format.md), written once.

A record file holds device fingerprints and entries; each entry belongs to one fingerprint and has a key that is
unique per fingerprint and a recency (a time stamp) that decides which of two entries with the same key a merge
keeps. On disk: the family's header, the fingerprint section, the entry table, optional aligned areas the entries
point into (the program cache's blob area), the trailer.

A format supplies only its entry codec: a ``RecordFormat`` subclass that names its records, encodes one entry
(``encode_entry``) and the entry table (``encode_table``), and decodes one entry (``entry``). Encoding, decode
(strict), decode_report (lenient), validate and describe are the classmethods here, the same for every format.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from mace.cachefiles import binformat
from mace.cachefiles.fingerprint import (
    FINGERPRINT_MIN_SIZE,
    DeviceFingerprint,
    encode_fingerprints,
    fingerprint_id,
    read_fingerprints,
)


class Record(Protocol):
    """What the record file needs of an entry."""

    @property
    def fingerprint_id(self) -> str: ...

    @property
    def key(self) -> str:
        """Unique among the entries of one fingerprint."""
        ...

    @property
    def recency(self) -> float:
        """Of two entries with the same (fingerprint_id, key), a merge keeps the one with the larger recency."""
        ...


E = TypeVar("E", bound=Record)
F = TypeVar("F", bound="RecordFile[Any]")


@dataclass
class RecordFile(Generic[E]):
    """A decoded file. One file may hold entries of several devices; a loader uses its own (``entries_of``)."""

    fingerprints: dict[str, DeviceFingerprint] = field(default_factory=dict)  # id -> fingerprint
    entries: list[E] = field(default_factory=list)

    def entries_of(self, fingerprint: DeviceFingerprint | str) -> list[E]:
        """The entries of one device (a fingerprint or its id), in file order."""
        fid = fingerprint_id(fingerprint)
        return [e for e in self.entries if e.fingerprint_id == fid]

    def by_key(self, fingerprint: DeviceFingerprint | str) -> dict[str, E]:
        """Key -> entry, for one device (a fingerprint or its id)."""
        return {e.key: e for e in self.entries_of(fingerprint)}

    def merged(self: F, other: F) -> F:
        """Union by (fingerprint_id, key); the larger ``recency`` wins (ties: ``self``).

        Order: ``self``'s entries, then those only in ``other``. Fingerprints no entry refers to are dropped.
        Entries are copied, so editing the result's entries leaves the inputs alone.
        """
        by_key: dict[tuple[str, str], Any] = {}
        for entry in [*self.entries, *other.entries]:
            k = (entry.fingerprint_id, entry.key)
            if k not in by_key or entry.recency > by_key[k].recency:
                by_key[k] = entry
        known = {**self.fingerprints}
        for fid, fp in other.fingerprints.items():
            known.setdefault(fid, fp)
        entries = [copy.copy(e) for e in by_key.values()]
        used = {e.fingerprint_id for e in entries}
        return type(self)({fid: fp for fid, fp in known.items() if fid in used}, entries)


@dataclass
class Layout:
    """Where the sections are, from a checked header."""

    fingerprint_count: int
    fingerprint_offset: int
    fingerprint_size: int
    entry_count: int
    entry_offset: int
    entry_size: int
    areas: dict[str, tuple[int, int]]  # area name -> (offset, size)
    exact: bool  # written by this minor version (or older): no unknown trailing bytes or gaps allowed


def record_format(
    magic: bytes, title: str, data_name: str, error: type[binformat.FormatError], major: int, minor: int,
    areas: Sequence[tuple[str, int]] = (),
) -> binformat.Format:  # fmt: skip
    """A record file's format: its header holds the family's common fields, the offset and size of each area (``areas``:
    name, alignment), then total_size."""
    fields = binformat.header_fields(*((f"{name}_{what}", "Q") for name, _ in areas for what in ("offset", "size")))
    return binformat.Format(magic, title, data_name, binformat.header_struct(fields), fields, major, minor, error)


class RecordFormat(binformat.Decoder, Generic[E, F]):
    """One record-file format. A subclass sets the class attributes and implements the entry codec:
    ``encode_entry`` and ``encode_table`` (classmethods) and ``entry`` (on the instance, which decodes one file).
    """

    file_type: type[F]
    entry_type: type[E]
    key_field: str  # the entry's key field, for messages: "program_key"
    key_at: int  # byte offset of the key in an entry record, for the duplicate-entry error
    entry_min_size: int
    areas: tuple[tuple[str, int], ...] = ()  # (name, alignment) of each area after the entry table

    # -- the entry codec (supplied by each format) ------------------------------------------------------------
    @classmethod
    def encode_entry(cls, entry: E, what: str, fingerprints: dict[str, DeviceFingerprint]) -> Any:
        """Check ``entry`` (called ``what`` in errors) and return what ``encode_table`` needs of it."""
        raise NotImplementedError

    @classmethod
    def encode_table(cls, rows: list[Any], offset: int) -> tuple[bytes, tuple[int, ...], bytes]:
        """The entry table at ``offset``; the offset and size of each area; the bytes after the table (padding and
        areas). By default the rows are the records and there is no area."""
        return b"".join(rows), (), b""

    def entry(
        self, i: int, start: int, end: int, layout: Layout, fingerprints: dict[str, DeviceFingerprint],
        row: dict[str, Any],
    ) -> E:  # fmt: skip
        """Entry record ``i`` at [start, end), checked; fills in its describe() ``row``. Raises the format's error."""
        raise NotImplementedError

    # -- encoding ---------------------------------------------------------------------------------------------
    @classmethod
    def encode(cls, records: F, key: bytes | None = None) -> bytes:
        """The file bytes for ``records``; with ``key``, signed with HMAC-SHA256. Inconsistent records raise the
        format's error (offset None): decode(encode(r)) == r holds for everything encode accepts."""
        fmt, error = cls.fmt, cls.fmt.error
        binformat.check_key(key, error)
        fp_section = encode_fingerprints(records.fingerprints, error)
        rows = []
        seen: set[tuple[str, str]] = set()
        for i, e in enumerate(records.entries):
            what = f"entries[{i}]"
            if not isinstance(e, cls.entry_type):
                raise error(None, f"{what} is a {type(e).__name__}, not a {cls.entry_type.__name__}")
            rows.append(cls.encode_entry(e, what, records.fingerprints))
            if (e.fingerprint_id, e.key) in seen:
                raise error(None, f"{what} duplicates an earlier (fingerprint_id, {cls.key_field})")
            seen.add((e.fingerprint_id, e.key))
        header_size = fmt.header.size
        entry_offset = header_size + len(fp_section)
        table, areas, after = cls.encode_table(rows, entry_offset)
        signed = key is not None
        header = fmt.header.pack(
            fmt.magic, fmt.major << 16 | fmt.minor, fmt.flag_signed if signed else 0, header_size,
            len(records.fingerprints), len(rows), header_size, len(fp_section), entry_offset, len(table), *areas,
            entry_offset + len(table) + len(after) + binformat.trailer_size(signed),
        )  # fmt: skip
        return binformat.seal(header + fp_section + table + after, key)

    # -- decoding: one decoder serves decode (strict), decode_report (lenient), validate and describe ----------
    @classmethod
    def decode(cls, data: bytes, key: bytes | None = None) -> F:
        """Parse and validate everything; any problem raises the format's error ("byte offset N: reason").

        With ``key``, the file must be signed with it. Without, a signed file is read and its signature not checked.
        """
        result: F = cls(data, key, strict=True).run()
        return result

    @classmethod
    def decode_report(cls, data: bytes, key: bytes | None = None) -> tuple[F, list[str]]:
        """Lenient decode: a bad record drops only itself (and the entries of a bad fingerprint) and is reported,
        so the rest can be kept.

        Still raises the format's error for whole-file problems: header, section layout, record framing, and a
        missing or wrong signature when ``key`` is given. A whole-file sha256 mismatch is reported, not raised:
        every surviving entry was verified on its own, every fingerprint by its recomputed id.
        """
        decoder = cls(data, key, strict=False)
        result: F = decoder.run()
        return result, decoder.problems

    @classmethod
    def validate(cls, data: bytes, key: bytes | None = None) -> list[str]:
        """Every problem found (empty when ``decode`` would succeed), for ``mace cache verify``."""
        try:
            return cls.decode_report(data, key)[1]
        except cls.fmt.error as exc:
            return [str(exc)]

    @classmethod
    def describe(cls, data: bytes) -> dict[str, Any]:
        """What ``mace cache inspect`` shows: as much as can be parsed, plus the problems and the error. Never
        raises for any input. JSON-serialisable."""
        return binformat.describe(cls, data)

    def layout(self, header: binformat.Header) -> Layout:
        fields = {name: (at, value) for (name, at, _), value in zip(self.fmt.header_fields, header.values)}
        fp_count, entry_count, fp_off, fp_size, entry_off, entry_size = header.values[4:10]
        areas = {name: (fields[f"{name}_offset"][1], fields[f"{name}_size"][1]) for name, _ in self.areas}
        binformat.check_sections(
            self.fmt.error,
            header,
            (
                ("fingerprint section", 24, fp_off, fp_size, 1),
                ("entry table", 40, entry_off, entry_size, 1),
                *((f"{name} area", fields[f"{name}_offset"][0], *areas[name], align) for name, align in self.areas),
            ),
        )
        binformat.check_counts(
            self.fmt.error,
            (
                ("fingerprint", 16, fp_count, fp_size, FINGERPRINT_MIN_SIZE),
                ("entry", 20, entry_count, entry_size, self.entry_min_size),
            ),
        )
        return Layout(fp_count, fp_off, fp_size, entry_count, entry_off, entry_size, areas, header.exact)

    def sections(self, layout: Layout) -> F:
        fingerprints = read_fingerprints(
            self, layout.fingerprint_count, layout.fingerprint_offset, layout.fingerprint_size, layout.exact
        )
        key_name = self.key_field.replace("_", " ")

        def read(i: int, start: int, end: int, row: dict[str, Any]) -> E:
            entry = self.entry(i, start, end, layout, fingerprints, row)
            if (entry.fingerprint_id, entry.key) in seen:
                raise self.fmt.error(start + self.key_at, f"entry {i}: duplicate (fingerprint id, {key_name})")
            seen.add((entry.fingerprint_id, entry.key))
            return entry

        seen: set[tuple[str, str]] = set()
        spans = self.records(
            "entry", layout.entry_count, layout.entry_offset, layout.entry_size, self.entry_min_size, layout.exact
        )
        return self.file_type(fingerprints, self.read_records(self.entry_rows, spans, read))
