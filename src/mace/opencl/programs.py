"""Building OpenCL programs through the compiled-program cache.

Lookup order for a program key: the writable storage cache -> the read-only binaries (in-memory ones, then
opencl_binary_paths in order; the first that holds the key wins) -> build from source. Anything wrong with a file or
an entry (bad magic, version, hash, a foreign fingerprint, a binary the driver rejects) is reported once as a warning
naming the reason; the program is then built from source and the storage file rewritten. Never a crash.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pyopencl as cl

from mace.cachefiles import program_cache
from mace.cachefiles.program_cache import CacheEntry, CacheFile, CacheFormatError, DeviceFingerprint
from mace.cachefiles.stores import Store, StoreError

log = logging.getLogger("mace.opencl")

NO_BINARY_WARNING = "There is no precompiled OpenCL binary in all OpenCL binary paths"
# last_used is refreshed in the file at most this often, so a warm start does not rewrite the file every run
LAST_USED_GRANULARITY_SECONDS = 24 * 3600


@dataclass
class _Loaded:
    store: Store
    entries: dict[str, CacheEntry]  # program key -> entry, for this device only
    cache: CacheFile | None


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
    _loaded: list[_Loaded] | None = None
    _pending: list[tuple[str, str, str, cl.Program]] = field(default_factory=list)
    _storage_needs_rewrite: bool = False
    _touched: set[str] = field(default_factory=set)  # storage entries used now whose last_used is stale

    # -- reading -----------------------------------------------------------------------------------------------
    def warn(self, message: str) -> None:
        if message not in self.stats["warnings"]:
            self.stats["warnings"].append(message)
            log.warning(message)

    def _read_store(self, store: Store, writable: bool) -> _Loaded | None:
        try:
            data = store.read()
        except StoreError as exc:
            self.warn(f"{exc}; building from source")
            return None
        if data is None:
            return None
        self.stats["cache_files_read"].append(store.description)
        try:
            cache, problems = program_cache.decode_report(data, key=self.cache_key)
        except CacheFormatError as exc:
            self.warn(
                f"{store.description}: discarded ({exc}); programs will be rebuilt from source"
                + (" and the file rewritten" if writable else "")
            )
            self._storage_needs_rewrite |= writable
            return _Loaded(store, {}, None)
        for problem in problems:
            self.warn(f"{store.description}: {problem}; rebuilding what it concerns")
            self._storage_needs_rewrite |= writable
        entries = {e.program_key: e for e in cache.entries_for(self.fingerprint)}
        if cache.entries and not entries:
            self.warn(
                f"{store.description}: holds no program for this device ({self.fingerprint.device_name}, "
                f"driver {self.fingerprint.driver_version}); its {len(cache.entries)} entries are for other "
                "devices or drivers"
            )
        return _Loaded(store, entries, cache)

    def _sources(self) -> list[_Loaded]:
        if self._loaded is None:
            self._loaded = []
            if self.storage is not None:
                loaded = self._read_store(self.storage, writable=True)
                if loaded is not None:
                    self._loaded.append(loaded)
            for store in self.binary_stores:
                loaded = self._read_store(store, writable=False)
                if loaded is not None:
                    self._loaded.append(loaded)
            if not self._loaded:
                self.warn(NO_BINARY_WARNING)
        return self._loaded

    # -- building ----------------------------------------------------------------------------------------------
    def build(self, source: str, options: str) -> cl.Program:
        """A built program for (source, options): from a cached binary when one is valid, else from source."""
        options = program_cache.normalize_build_options(options)
        key = program_cache.program_key(source, options, self.fingerprint)
        for loaded in self._sources():
            entry = loaded.entries.get(key)
            if entry is None:
                continue
            program = self._build_from_binary(entry, options, loaded.store.description)
            if program is not None:
                self.stats["program_origins"].append(loaded.store.description)
                if loaded.store is self.storage and time.time() - entry.last_used > LAST_USED_GRANULARITY_SECONDS:
                    self._touched.add(key)
                return program
            if loaded.store is self.storage:
                self._storage_needs_rewrite = True
        start = time.perf_counter()
        try:
            program = cl.Program(self.context, source).build(options=options, devices=[self.device])
        except cl.Error as exc:
            from mace.errors import DeviceError

            raise DeviceError(f"building the OpenCL program failed on {self.device.name}: {exc}") from exc
        self.stats["program_build_seconds"] += time.perf_counter() - start
        self.stats["programs_from_source"] += 1
        self.stats["program_origins"].append("source")
        self._pending.append((key, options, source, program))
        return program

    def _build_from_binary(self, entry: CacheEntry, options: str, where: str) -> cl.Program | None:
        start = time.perf_counter()
        try:
            program = cl.Program(self.context, [self.device], [entry.blob]).build(
                options=options, devices=[self.device]
            )
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

    # -- saving ------------------------------------------------------------------------------------------------
    @property
    def has_pending(self) -> bool:
        return bool(self._pending) or self._storage_needs_rewrite or bool(self._touched)

    def save(self) -> None:
        """Write programs built from source into the storage cache (call after their kernels have launched once:
        pocl compiles the work-group functions lazily and only then puts them in the binary)."""
        if not self.has_pending:
            return
        if self.storage is None:
            self._pending.clear()
            return
        now = time.time()
        fp_id = self.fingerprint.id()
        new_entries: list[CacheEntry] = []
        for key, options, source, program in self._pending:
            blobs = program.get_info(cl.program_info.BINARIES)
            blob = bytes(blobs[0]) if blobs else b""
            if not blob:
                self.warn(f"the driver returned no binary for program {key[:12]}; it will be rebuilt next start")
                continue
            new_entries.append(CacheEntry.for_program(source, options, self.fingerprint, blob, now))
        addition = CacheFile({fp_id: self.fingerprint}, new_entries)
        touched = set(self._touched) | {e.program_key for e in new_entries}
        evicted: list[CacheEntry] = []

        def merge(current: bytes | None) -> bytes:
            base = CacheFile({}, [])
            if current is not None:
                try:
                    base, _problems = program_cache.decode_report(current, key=self.cache_key)
                except CacheFormatError:
                    base = CacheFile({}, [])  # already reported when read; replaced by a valid file now
            merged = base.merged(addition)
            for entry in merged.entries:
                if entry.fingerprint_id == fp_id and entry.program_key in touched:
                    entry.last_used = max(entry.last_used, now)
            evicted[:] = evict_least_recently_used(merged, self.max_cache_bytes, keep=touched)
            return program_cache.encode(merged, key=self.cache_key)

        try:
            self.storage.update(merge)
        except StoreError as exc:
            self.warn(f"{exc}; the program cache is not saved (the engine keeps working)")
            return
        finally:
            self._pending.clear()
            self._touched.clear()
        self._storage_needs_rewrite = False
        self.stats["cache_files_written"].append(self.storage.description)
        if evicted:
            self.stats["cache_entries_evicted"] = len(evicted)
            log.info("evicted %d least recently used programs to keep %s under %d bytes", len(evicted),
                     self.storage.description, self.max_cache_bytes)


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
