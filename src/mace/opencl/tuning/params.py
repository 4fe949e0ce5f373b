"""This device's tuned values in ``mace_cl_tuned_params.bin``: the tuned-parameters file as the engine uses it.

A thin layer on the stored-records service (mace.cachefiles.service), which loads once, warns once and saves by a
locked read-merge-write; what this adds is the re-check of a loaded local size against the current kernel's
limits (``validate_local_size``) before use, since the file may come from another build, another driver or a hand
edit (MACE trusted its tuned values without re-checking them).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence

from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.cachefiles.service import StoredRecords, Warnings, Wording
from mace.cachefiles.stores import FileStore, Store
from mace.cachefiles.tuned_params import TunedEntry, TunedParams, TunedParamsError, TunedParamsFormat
from mace.opencl.tuning.local_sizes import KernelLimits, validate_local_size

log = logging.getLogger("mace.opencl")

WORDING = Wording(
    unreadable="{error}; tuned parameters ignored",
    discarded="{where}: tuned parameters discarded ({error}); drivers choose local sizes",
    bad_record="{where}: {error}; that entry is ignored",
    not_saved="{error}; tuned parameters are not saved (the engine keeps working; a later start saves them)",
)


class TunedParamsStore:
    """This device's tuned values from one store (a FileStore path, or any Store), with atomic saving.

    Loading never fails the engine: a missing file is empty, an unreadable or invalid file is reported once as a
    warning and ignored (it is replaced by a valid file at the next save: ``has_pending`` says one is due, and the
    runtime saves after the first run), a bad entry is dropped and reported. ``on_warning`` reports each warning
    (the runtime passes its own, which logs it); without it they are logged here.
    With ``key`` (an HMAC key), only files signed with it are loaded, and saves are signed.

        store = TunedParamsStore(cache_dir / TUNED_PARAMS_NAME, fingerprint)
        key = tuned_params.tuning_key(launch.kernel, specialization, launch.global_size)
        entry = store.lookup_valid(key, launch.global_size, limits)  # None: not tuned, or not usable now
        store.record(store.new_entry(launch.kernel, specialization, launch.global_size, best, best_us))
        store.save()
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        fingerprint: DeviceFingerprint,
        key: bytes | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.store: Store = FileStore(store) if isinstance(store, (str, os.PathLike)) else store
        self.fingerprint = fingerprint
        self.key = key
        self.warnings: list[str] = []
        # with on_warning (the runtime's own Warnings, which logs), logging here too would print each warning twice
        self.warn = Warnings(log if on_warning is None else None, self.warnings, on_warning)
        self._records: StoredRecords[TunedEntry, TunedParams] = StoredRecords(
            self.store, TunedParamsFormat, fingerprint, key, self.warn, WORDING
        )
        self._pending: dict[str, TunedEntry] = {}

    def load(self) -> dict[str, TunedEntry]:
        """This device's entries by tuning key (read once; later calls return the same dict)."""
        return self._records.load()

    def lookup(self, key: str) -> TunedEntry | None:
        """The entry for ``key`` on this device (recorded in this process or loaded), unchecked."""
        return self._pending.get(key) or self.load().get(key)

    def lookup_valid(
        self, key: str, global_size: Sequence[int], limits: KernelLimits, local_mem_per_item: int = 0
    ) -> TunedEntry | None:
        """``lookup``, then re-checked against the current kernel: an entry for another global size or one that
        breaks a limit is reported once and None returned (the caller then uses the driver's choice or re-tunes)."""
        entry = self.lookup(key)
        if entry is None:
            return None
        if tuple(entry.global_size) != tuple(int(g) for g in global_size):
            reason: str | None = f"it was tuned for global size {entry.global_size}, not {tuple(global_size)}"
        else:
            reason = validate_local_size(
                entry.local_size,
                global_size,
                limits.work_group_size,
                limits.max_work_item_sizes,
                limits.needs_uniform,
                local_mem_per_item,
                limits.local_mem_size,
            )
        if reason is None:
            return entry
        self.warn(
            f"{self.store.description}: tuned local size {entry.local_size} of kernel {entry.kernel_name} "
            f"(key {key[:12]}) is not usable: {reason}; the driver chooses"
        )
        return None

    def new_entry(
        self,
        kernel_name: str,
        specialization: str,
        global_size: Sequence[int],
        local_size: Sequence[int] | None,
        time_us: float,
        variant: Sequence[int] = (),
    ) -> TunedEntry:
        """An entry for this store's device, created now."""
        return TunedEntry.for_launch(
            kernel_name, specialization, global_size, self.fingerprint, local_size, time_us, time.time(), variant
        )

    def record(self, entry: TunedEntry) -> None:
        """Remember ``entry`` (its key is ``entry.tuning_key``) for lookups now and for the next ``save``."""
        if entry.fingerprint_id != self.fingerprint.id():
            raise TunedParamsError(None, f"entry {entry.tuning_key[:12]} is for another device than this store's")
        self._pending[entry.tuning_key] = entry

    @property
    def has_pending(self) -> bool:
        return bool(self._pending) or self._records.needs_rewrite

    def save(self) -> bool:
        """Read-merge-write under the store's lock: entries written meanwhile by other processes (and other
        devices') are kept; for the same key the newer one wins. Returns whether the file was written; a store that
        cannot be written is reported as a warning, never raised."""
        if not self.has_pending or not self._records.save(list(self._pending.values())):
            return False
        if self._records.entries is not None:
            self._records.entries.update(self._pending)
        self._pending.clear()
        return True
