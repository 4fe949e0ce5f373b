"""Where cache files live. A store hands out the current bytes and applies read-merge-write updates atomically.

The file store never rewrites in place (a crash mid-write would leave a torn file, the lesson of MACE's own cache):
it writes a temp file in the same directory, fsyncs it, renames it over the old one and fsyncs the directory, all
under an inter-process file lock so concurrent savers merge instead of overwriting each other's entries.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from filelock import FileLock, Timeout

from mace.errors import MaceError
from mace.fileio import atomic_write

PROGRAM_CACHE_NAME = "mace_cl_compiled_program.bin"
TUNED_PARAMS_NAME = "mace_cl_tuned_params.bin"
LOCK_TIMEOUT_SECONDS = 30.0
STALE_TEMP_SECONDS = 60.0  # a temp file this old belongs to a writer that died between mkstemp and rename


class StoreError(MaceError):
    """The store cannot be read or written (permissions, disk full, lock timeout)."""


class Store(Protocol):
    description: str

    def read(self) -> bytes | None:
        """The stored bytes, or None when nothing is stored yet."""

    def update(self, merge: Callable[[bytes | None], bytes]) -> None:
        """Atomically replace the content by merge(current content), excluding other writers meanwhile."""

    def clear(self) -> bool:
        """Delete the content; True if something was deleted."""


def remove_stale_temp_files(path: Path, max_age: float = STALE_TEMP_SECONDS) -> int:
    """Delete the temp files of ``path`` that writers killed mid-write left behind; returns how many.

    Called under the store's lock, where no live writer has a temp file open; the age is a second guard for file
    systems whose locks do not hold (some network mounts). Never fails a save: cleanup errors are ignored.
    """
    cutoff = time.time() - max_age
    removed = 0
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except OSError:
            pass  # removed by someone else meanwhile, or not ours to remove
    return removed


class FileStore:
    def __init__(self, path: str | os.PathLike[str], lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self.description = str(self.path)

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc

    def update(self, merge: Callable[[bytes | None], bytes]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # filelock uses flock(): the kernel drops the lock when its holder dies, so a killed process never
            # leaves a lock that blocks the next start (unlike a lock *file* whose existence is the lock).
            with FileLock(str(self.lock_path), timeout=self.lock_timeout):
                atomic_write(self.path, merge(self.read()))
                remove_stale_temp_files(self.path)
        except Timeout as exc:
            raise StoreError(f"{self.lock_path}: lock not acquired within {self.lock_timeout:.0f} s") from exc
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc

    def clear(self) -> bool:
        existed = self.path.exists()
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot delete: {exc.strerror or exc}") from exc
        return existed


class MemoryStore:
    """A read-only in-memory cache (GPUContextBuilder.set_opencl_binary): for apps that embed the file."""

    def __init__(self, data: bytes, description: str = "<in-memory OpenCL binary>") -> None:
        self.data = bytes(data)
        self.description = description

    def read(self) -> bytes | None:
        return self.data

    def update(self, merge: Callable[[bytes | None], bytes]) -> None:
        raise StoreError(f"{self.description} is read-only")

    def clear(self) -> bool:
        return False
