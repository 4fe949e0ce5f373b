"""A record file in a Store, as one engine uses it: read once, every problem warned once, saved by a locked merge.

Pure like the formats (no OpenCL): the program cache (mace.opencl.programs) and the tuned parameters
(mace.opencl.tuning.params) are thin layers on top. Loading never fails the engine: a missing file is empty, an
unreadable or invalid one is warned about and ignored (and rewritten by the next save when the store is writable),
a bad record is dropped and warned about (one warning per file read: the first problem and how many there are in
all, since one damaged record also breaks the records that refer to it and the whole-file sha256). Saving reads
the current file under the store's lock, merges this engine's entries in (other processes' and other devices'
entries are kept; for one key the more recent entry wins) and writes the result atomically; a store that cannot be
written is a warning, never an error, and is not retried by the same process.

A save never replaces what is not this format's file (a XiaoMi MACE cache, a model, any other content: warned once,
left alone) and never downgrades a signed file: a process without the key leaves a signed file as it is.

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
from mace.cachefiles.stores import Store, StoreError, foreign_content, is_signed

WHOLE_FILE_SHA256 = "whole-file sha256 mismatch"


class NotReplaced(StoreError):
    """A save found a file it must not replace (another format's, or signed without the key); the message says so."""


def summary(problems: list[str]) -> str:
    """One line for the problems of one file: the first that is a cause (a bad record, not the whole-file sha256 it
    also breaks), and how many there are in all (``mace cache verify`` lists them)."""
    causes = [p for p in problems if WHOLE_FILE_SHA256 not in p] or problems
    more = len(problems) - 1
    return causes[0] + (f" (and {more} more found with it; mace cache verify lists them)" if more else "")


class Warnings:
    """Warn once per message: kept in ``messages`` (in order), logged (unless ``log`` is None: ``on_warning`` then
    reports it, e.g. another Warnings), and passed to ``on_warning``."""

    def __init__(
        self,
        log: logging.Logger | None,
        messages: list[str] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.log = log
        self.messages = [] if messages is None else messages
        self.on_warning = on_warning

    def __call__(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)
            if self.log is not None:
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
    left_alone: str = "{where}: {error}; it is left as it is, and nothing is saved there"  # not this format's file
    needs_key: str = ("{where}: the file is signed and this process has no key (MACE_CACHE_KEY); it is left as it "
                      "is, and nothing is saved there")  # fmt: skip


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
        self.blocked = False  # the stored file is not this format's: never written, warned about once
        self.replace_foreign = False  # True (mace cache build --force): a save replaces any file
        self.last_error: StoreError | None = None  # why the last save failed
        self.problems: list[str] = []  # the bad records dropped when loaded (warned about as one)

    def _foreign(self, data: bytes) -> str | None:
        fmt = self.fmt.fmt
        return None if self.replace_foreign else foreign_content(data, fmt.magic, fmt.title, fmt.header.size, False)

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
            return self.entries  # a save reads it again under the lock, fails the same way and writes nothing
        if data is None:
            return self.entries
        self.read = True
        foreign = self._foreign(data) if self.writable else None  # a read-only file is only discarded (bad magic)
        if foreign is not None:
            self.warn(self.wording.left_alone.format(where=where, error=foreign))
            self.blocked = True
            return self.entries
        try:
            file, problems = self.fmt.decode_report(data, key=self.key)
        except self.fmt.fmt.error as exc:
            self.warn(self.wording.discarded.format(where=where, error=exc))
            self.needs_rewrite |= self.writable
            return self.entries
        self.problems = list(problems)
        if problems:
            self.warn(self.wording.bad_record.format(where=where, error=summary(problems)))
            self.needs_rewrite |= self.writable
        self.file = file
        self.entries = file.by_key(self.fingerprint)
        return self.entries

    def save(self, entries: list[E], edit: Callable[[F], None] | None = None, strict: bool = False) -> bool:
        """Read-merge-write under the store's lock: the current file merged with ``entries`` (this device's), then
        ``edit``-ed in place, then written. Returns whether the file was written; failures are warned about (and kept
        in ``last_error``). Nothing is written over a file that is not this format's, nor over a signed file
        without the key. ``strict`` (a command whose job is the file): raise the StoreError instead of warning."""
        self.last_error = None
        if self.blocked and not strict:
            return False  # warned about when loaded
        addition = self.fmt.file_type({self.fingerprint.id(): self.fingerprint}, entries)

        where = self.store.description

        def merge(current: bytes | None) -> bytes:
            base = self.fmt.file_type()
            if current:  # checked again under the lock: the file may have been replaced since it was loaded
                foreign = self._foreign(current)
                if foreign is not None:
                    raise NotReplaced(self.wording.left_alone.format(where=where, error=foreign))
                if self.key is None and is_signed(current, self.fmt.fmt.magic):
                    raise NotReplaced(self.wording.needs_key.format(where=where))
                with contextlib.suppress(self.fmt.fmt.error):  # warned about when loaded; replaced by a valid file
                    base, _problems = self.fmt.decode_report(current, key=self.key)
            merged = base.merged(addition)
            if edit is not None:
                edit(merged)
            return self.fmt.encode(merged, key=self.key)

        try:
            self.store.update(merge)
        except StoreError as exc:
            self.last_error = exc
            self.needs_rewrite = False  # not retried by this process (a run must not wait on the lock again)
            if strict:
                raise
            not_saved = str(exc) if isinstance(exc, NotReplaced) else None
            self.warn(not_saved or self.wording.not_saved.format(where=where, error=exc))
            return False
        self.needs_rewrite = False
        return True
