"""A record file in a Store, as one engine uses it: read once, every problem warned once, saved by a locked merge.

Pure like the formats (no OpenCL): the program cache (mace.opencl.programs) and the tuned parameters
(mace.opencl.tuning.params) are thin layers on top. Loading never fails the engine: a missing file is empty, an
unreadable or invalid one is warned about and ignored (and rewritten by the next save when the store is writable),
a bad record is dropped and warned about. Saving reads the current file under the store's lock, merges this
engine's entries in (other processes' and other devices' entries are kept; for one key the more recent entry
wins) and writes the result atomically; a store that cannot be written is a warning, never an error.

    records = StoredRecords(FileStore(path), TunedParamsFormat, fingerprint, key, Warnings(log), wording)
    mine = records.load()                  # key -> entry, this device's
    records.save([entry])                  # True when written
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic

from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.cachefiles.records import E, F, RecordFormat
from mace.cachefiles.stores import Store, StoreError


class Warnings:
    """Warn once per message: kept in ``messages`` (in order), logged, and passed to ``on_warning``."""

    def __init__(
        self,
        log: logging.Logger,
        messages: list[str] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.log = log
        self.messages = [] if messages is None else messages
        self.on_warning = on_warning

    def __call__(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)
            self.log.warning(message)
            if self.on_warning is not None:
                self.on_warning(message)


@dataclass(frozen=True)
class Wording:
    """The warnings of one kind of file, saying what each problem means for the user. ``{where}`` is the store's
    description, ``{error}`` the StoreError, the format error or the dropped record's problem."""

    unreadable: str  # the store cannot be read
    discarded: str  # the file is invalid as a whole
    bad_record: str  # one record (and what depends on it) was dropped
    not_saved: str  # the store cannot be written


class StoredRecords(Generic[E, F]):
    """The records of one store, for one device. ``writable``: a bad file is to be replaced by the next save."""

    def __init__(
        self,
        store: Store,
        fmt: type[RecordFormat[E, F]],
        fingerprint: DeviceFingerprint,
        key: bytes | None,
        warn: Callable[[str], None],
        wording: Wording,
        writable: bool = True,
    ) -> None:
        self.store = store
        self.fmt = fmt
        self.fingerprint = fingerprint
        self.key = key  # HMAC key: only files signed with it load, and saves are signed
        self.warn = warn
        self.wording = wording
        self.writable = writable
        self.entries: dict[str, E] | None = None  # this device's, by key; None until loaded
        self.file: F | None = None  # the whole decoded file; None when absent, unreadable or discarded
        self.read = False  # bytes were read from the store (even if they were then discarded)
        self.needs_rewrite = False  # the stored file is invalid or lost records: the next save replaces it

    def load(self) -> dict[str, E]:
        """This device's entries by key (read once; later calls return the same dict)."""
        if self.entries is not None:
            return self.entries
        self.entries = {}
        where = self.store.description
        try:
            data = self.store.read()
        except StoreError as exc:
            self.warn(self.wording.unreadable.format(where=where, error=exc))
            return self.entries
        if data is None:
            return self.entries
        self.read = True
        try:
            file, problems = self.fmt.decode_report(data, key=self.key)
        except self.fmt.fmt.error as exc:
            self.warn(self.wording.discarded.format(where=where, error=exc))
            self.needs_rewrite |= self.writable
            return self.entries
        for problem in problems:
            self.warn(self.wording.bad_record.format(where=where, error=problem))
            self.needs_rewrite |= self.writable
        self.file = file
        self.entries = file.by_key(self.fingerprint)
        return self.entries

    def save(self, entries: list[E], edit: Callable[[F], None] | None = None) -> bool:
        """Read-merge-write under the store's lock: the current file merged with ``entries`` (this device's), then
        ``edit``-ed in place, then written. Returns whether the file was written; failures are warned about."""
        addition = self.fmt.file_type({self.fingerprint.id(): self.fingerprint}, entries)

        def merge(current: bytes | None) -> bytes:
            base = self.fmt.file_type()
            if current is not None:
                with contextlib.suppress(self.fmt.fmt.error):  # warned about when loaded; replaced by a valid file
                    base, _problems = self.fmt.decode_report(current, key=self.key)
            merged = base.merged(addition)
            if edit is not None:
                edit(merged)
            return self.fmt.encode(merged, key=self.key)

        try:
            self.store.update(merge)
        except StoreError as exc:
            self.warn(self.wording.not_saved.format(where=self.store.description, error=exc))
            return False
        self.needs_rewrite = False
        return True
