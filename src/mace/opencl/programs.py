"""Building OpenCL programs through the compiled-program cache.

Lookup order for a program key: the writable storage cache -> the read-only binaries (in-memory ones, then
opencl_binary_paths in order; the first that holds the key wins) -> build from source. Anything wrong with a file or
an entry (bad magic, version, hash, a foreign fingerprint, a binary the driver rejects) is reported once as a warning
naming the reason; the program is then built from source and the storage file rewritten. Never a crash.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyopencl as cl

from mace.cachefiles import binary_checks, program_cache
from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.cachefiles.program_cache import CacheEntry, CacheFile, ProgramCacheFormat
from mace.cachefiles.sentinel import EntryId, Sentinel
from mace.cachefiles.service import StoredRecords, Warnings, Wording
from mace.cachefiles.stores import Store

log = logging.getLogger("mace.opencl")

NO_BINARY_WARNING = "There is no precompiled OpenCL binary in all OpenCL binary paths"
# last_used is refreshed in the file at most this often, so a warm start does not rewrite the file every run
LAST_USED_GRANULARITY_SECONDS = 24 * 3600


def _build_log(program: cl.Program, device: cl.Device) -> str:
    try:
        return str(program.get_build_info(device, cl.program_build_info.LOG) or "").strip()  # type: ignore[no-untyped-call]
    except (cl.Error, AttributeError, RuntimeError):  # a program that never got as far as a build has no log
        return ""


def _build_quietly(program: cl.Program, options: str, device: cl.Device, stats: dict[str, Any]) -> cl.Program:
    """program.build() without pyopencl's "CompilerWarning: Non-empty compiler output encountered", which reaches
    users of `mace run` for harmless driver remarks: the log is kept in stats["build_log"] and logged at DEBUG (on a
    failed build it is part of the error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cl.CompilerWarning)
        built = program.build(options=options, devices=[device])
    build_log = _build_log(built, device)
    if build_log:
        stats["build_log"] = "\n".join(filter(None, [stats.get("build_log", ""), build_log]))
        log.debug("OpenCL build log (%s): %s", device.name.strip(), build_log)
    return built


def _wording(writable: bool) -> Wording:
    return Wording(
        unreadable="{error}; building from source",
        discarded="{where}: discarded ({error}); programs will be rebuilt from source"
        + (" and the file rewritten" if writable else ""),
        bad_record="{where}: {error}; rebuilding what it concerns",
        not_saved="{error}; the program cache is not saved (the engine keeps working; a later start saves it)",
    )


Programs = StoredRecords[CacheEntry, CacheFile]


@dataclass
class ProgramCache:
    """One per engine: builds its programs, remembers which came from source, saves them after their first launch."""

    context: cl.Context
    device: cl.Device
    fingerprint: DeviceFingerprint
    storage: Store | None
    binary_stores: list[Store]
    cache_key: bytes | None = None
    max_cache_bytes: int | None = None  # cap on the blobs kept in the writable cache; least recently used go first
    stats: dict[str, Any] = field(
        default_factory=lambda: {
            "programs_from_source": 0,
            "programs_from_cache": 0,
            "program_build_seconds": 0.0,
            "cache_files_read": [],
            "cache_files_written": [],
            "warnings": [],
            "program_origins": [],
        }
    )
    _loaded: list[Programs] | None = None  # the stores that held a file: the storage first, then binary_stores
    _stored: Programs | None = None  # the storage's records
    _pending: list[tuple[str, str, str, cl.Program]] = field(default_factory=list)
    _touched: set[str] = field(default_factory=set)  # storage entries used now whose last_used is stale
    _sentinel: Sentinel | None = None  # the crash sentinel of binary loads (created at the first one)
    replace_foreign: bool = False  # mace cache build --force: the storage file is replaced whatever it holds

    def __post_init__(self) -> None:
        self.warn = Warnings(log, self.stats["warnings"])
        if self.storage is not None:
            self._stored = self._records(self.storage, writable=True)
            self._stored.replace_foreign = self.replace_foreign

    def _records(self, store: Store, writable: bool) -> Programs:
        return StoredRecords(
            store, ProgramCacheFormat, self.fingerprint, self.cache_key, self.warn, _wording(writable), writable
        )

    # -- reading -----------------------------------------------------------------------------------------------
    def _sources(self) -> list[Programs]:
        if self._loaded is None:
            self._loaded = []
            writable = [self._stored] if self._stored is not None else []
            for records in writable + [self._records(store, writable=False) for store in self.binary_stores]:
                entries = records.load()
                if not records.read:
                    continue
                self.stats["cache_files_read"].append(records.store.description)
                self._loaded.append(records)
                if records.file is not None and records.file.entries and not entries and not records.problems:
                    self.warn(
                        f"{records.store.description}: holds no program for this device "
                        f"({self.fingerprint.device_name}, driver {self.fingerprint.driver_version}); its "
                        f"{len(records.file.entries)} entries are for other devices or drivers"
                    )
            if not self._loaded:
                self.warn(NO_BINARY_WARNING)
        return self._loaded

    # -- building ----------------------------------------------------------------------------------------------
    def build(self, source: str, options: str) -> cl.Program:
        """A built program for (source, options): from a cached binary when one is valid, else from source."""
        options = program_cache.normalize_build_options(options)
        key = program_cache.program_key(source, options, self.fingerprint)
        kernels: frozenset[str] | None = None
        for records in self._sources():
            entry = records.load().get(key)
            if entry is None:
                continue
            if kernels is None:
                kernels = binary_checks.source_kernel_names(source)
            program = self._build_from_binary(entry, options, records.store.description, kernels, records.writable)
            if program is not None:
                self.stats["program_origins"].append(records.store.description)
                if records is self._stored and time.time() - entry.last_used > LAST_USED_GRANULARITY_SECONDS:
                    self._touched.add(key)
                return program
            records.needs_rewrite |= records.writable
        start = time.perf_counter()
        try:
            unbuilt = cl.Program(self.context, source)
            program = _build_quietly(unbuilt, options, self.device, self.stats)
        except cl.Error as exc:
            from mace.errors import DeviceError

            build_log = _build_log(unbuilt, self.device)
            detail = f"; build log: {build_log}" if build_log and build_log not in str(exc) else ""
            raise DeviceError(f"building the OpenCL program failed on {self.device.name}: {exc}{detail}") from exc
        self.stats["program_build_seconds"] += time.perf_counter() - start
        self.stats["programs_from_source"] += 1
        self.stats["program_origins"].append("source")
        self._pending.append((key, options, source, program))
        return program

    def _build_from_binary(
        self, entry: CacheEntry, options: str, where: str, kernels: frozenset[str] = frozenset(),
        writable: bool = False,
    ) -> cl.Program | None:  # fmt: skip
        """The program built from ``entry``'s binary, or None (warned about) when the binary is not to be used: it
        crashed an earlier process (the sentinel), it is malformed (binary_checks), or the driver rejects it."""
        then = " and dropping it from the file" if writable else ""
        sentinel = self._crash_sentinel()
        entry_id = EntryId(entry.fingerprint_id, entry.program_key, len(entry.blob), entry.created)
        crash = sentinel.crashed(entry_id)
        if crash is not None:
            self.warn(
                f"{where}: skipping the cached binary of program {entry.program_key[:12]}: {crash.describe()}; "
                f"rebuilding from source{then}"
            )
            return None
        fp = self.fingerprint
        problem = binary_checks.check(
            entry.blob, binary_checks.vendor_of(fp.platform_name, fp.platform_vendor, fp.device_vendor), kernels
        )
        if problem is not None:
            self.warn(
                f"{where}: rejected the cached binary of program {entry.program_key[:12]} before the driver saw it: "
                f"it is malformed ({problem}); rebuilding from source{then}"
            )
            return None
        start = time.perf_counter()
        try:
            with sentinel.loading(entry_id, where):
                program = self._driver_build(entry.blob, options)
        except (cl.Error, RuntimeError, ValueError) as exc:
            # CL_INVALID_BINARY or a failing build from binary: a driver update, or bytes the driver does not accept
            self.warn(
                f"{where}: the driver rejected the cached binary of program {entry.program_key[:12]} ({exc}); "
                "rebuilding from source"
            )
            return None
        self.stats["program_build_seconds"] += time.perf_counter() - start
        self.stats["programs_from_cache"] += 1
        return program

    def _driver_build(self, blob: bytes, options: str) -> cl.Program:
        """Hand a binary to the driver (the call a bad binary can crash; tests replace it to simulate that)."""
        return _build_quietly(cl.Program(self.context, [self.device], [blob]), options, self.device, self.stats)

    def _crash_sentinel(self) -> Sentinel:
        """Beside the writable storage file; with no storage, the per-user one (shipped binaries are marked too)."""
        if self._sentinel is None:
            path = getattr(self.storage, "path", None)
            self._sentinel = Sentinel.beside(path if isinstance(path, Path) else None)
        return self._sentinel

    # -- saving ------------------------------------------------------------------------------------------------
    @property
    def has_pending(self) -> bool:
        return bool(self._pending) or bool(self._touched) or (self._stored is not None and self._stored.needs_rewrite)

    def save(self, strict: bool = False) -> None:
        """Write programs built from source into the storage cache (call after their kernels have launched once:
        pocl compiles the work-group functions lazily and only then puts them in the binary). A store that cannot be
        written is one warning (``strict``: the StoreError is raised, for ``mace cache build``)."""
        if not self.has_pending:
            return
        if self._stored is None:
            self._pending.clear()
            return
        now = time.time()
        fp_id = self.fingerprint.id()
        new_entries: list[CacheEntry] = []
        for key, options, source, program in self._pending:
            blobs: Any = program.get_info(cl.program_info.BINARIES)
            blob = bytes(blobs[0]) if blobs else b""
            if not blob:
                self.warn(f"the driver returned no binary for program {key[:12]}; it will be rebuilt next start")
                continue
            new_entries.append(CacheEntry.for_program(source, options, self.fingerprint, blob, now))
        touched = set(self._touched) | {e.program_key for e in new_entries}
        evicted: list[CacheEntry] = []

        def refresh_and_evict(merged: CacheFile) -> None:
            for entry in merged.entries:
                if entry.fingerprint_id == fp_id and entry.program_key in touched:
                    entry.last_used = max(entry.last_used, now)
            evicted[:] = evict_least_recently_used(merged, self.max_cache_bytes, keep=touched)

        try:
            saved = self._stored.save(new_entries, refresh_and_evict, strict=strict)
        finally:
            self._pending.clear()
            self._touched.clear()
        if not saved:
            return
        self.stats["cache_files_written"].append(self._stored.store.description)
        if evicted:
            self.stats["cache_entries_evicted"] = len(evicted)
            log.info("evicted %d least recently used programs to keep %s under %d bytes", len(evicted),
                     self._stored.store.description, self.max_cache_bytes)


def evict_least_recently_used(cache: CacheFile, max_bytes: int | None, keep: set[str]) -> list[CacheEntry]:
    """Drop the least recently used entries until the blobs fit in max_bytes; entries in `keep` (the programs the
    running engine uses) go last and are never dropped. Returns what was evicted; `cache` is edited in place."""
    if max_bytes is None:
        return []
    total = sum(len(e.blob) for e in cache.entries)
    evicted = []
    for entry in sorted(cache.entries, key=lambda e: (e.program_key in keep, e.last_used)):
        if total <= max_bytes or entry.program_key in keep:
            break
        evicted.append(entry)
        total -= len(entry.blob)
    gone = {id(e) for e in evicted}
    cache.entries = [e for e in cache.entries if id(e) not in gone]
    used = {e.fingerprint_id for e in cache.entries}
    cache.fingerprints = {k: v for k, v in cache.fingerprints.items() if k in used}
    return evicted
