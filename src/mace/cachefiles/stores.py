"""Where cache files live. A store hands out the current bytes and applies read-merge-write updates atomically.

The file store never rewrites in place (a crash mid-write would leave a torn file, the lesson of MACE's own cache):
it writes a temp file in the same directory, fsyncs it, renames it over the old one and fsyncs the directory, all
under an inter-process file lock so concurrent savers merge instead of overwriting each other's entries.

Reading takes no lock (the rename makes every read see a whole file) and never blocks or reads without bound: the
path must be a regular file (a FIFO is named, not waited on) of at most ``MAX_FILE_BYTES``. Saving waits at most
``lock_timeout`` (2 s by default) for the lock; a holder that hangs costs the save, never the engine: the caller
warns and the next start saves.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from mace.errors import MaceError
from mace.fileio import UnreadableFileError, atomic_write, read_bounded

PROGRAM_CACHE_NAME = "mace_cl_compiled_program.bin"
TUNED_PARAMS_NAME = "mace_cl_tuned_params.bin"
LOCK_TIMEOUT_SECONDS = 2.0  # a save waits this long for another saver, then gives up (the next start saves)
LOCK_POLL_SECONDS = 0.05
MAX_FILE_BYTES = 1 << 30  # a cache file larger than this is not read (nor replaced): mace never writes one that big
STALE_TEMP_SECONDS = 60.0  # a temp file this old belongs to a writer that died between mkstemp and rename
MODEL_MAGIC = b"MACEMDL\0"
TUNED_MAGIC = b"MCTP"
PROGRAM_MAGIC = b"MCLP"
FLAG_SIGNED = 1  # header flags bit 0 of both mace formats (binformat.FLAG_SIGNED)


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


def foreign_content(
    data: bytes, magic: bytes, title: str, header_size: int | None = None, strict: bool = True
) -> str | None:
    """None when ``data`` may be replaced by a file of the format with ``magic`` (empty, or that format, or a
    start of its magic, or, given the format's ``header_size``, a file of it whose magic alone is damaged: its header
    size field and its total size field, the header's last, match); else what the data is, for the message that says
    mace leaves it alone.

    ``strict`` (a path the user names, ``mace cache build -o``): anything else is foreign. Not strict (the file of
    mace's own name in its storage directory): only what is recognizably another program's or the user's, a XiaoMi
    MACE cache (MACE uses the same file name) or a ``.mace`` model; other bytes there are a damaged mace file, to be
    replaced so that its warning does not return every start."""
    if not data or data.startswith(magic) or magic.startswith(data):
        return None
    if header_size is not None and len(data) >= max(header_size, 16):
        size_field = struct.unpack_from("<I", data, 12)[0]
        if size_field == header_size and struct.unpack_from("<Q", data, header_size - 8)[0] == len(data):
            return None
    from mace.cachefiles import xiaomi  # here: only a foreign file needs it

    if xiaomi.detect(data) in ("mace-v1.1", "mace-legacy"):
        return f"a XiaoMi MACE program cache, not a {title}"
    if not strict:
        return f"a .mace model file, not a {title}" if data.startswith(MODEL_MAGIC) else None
    known = {PROGRAM_MAGIC: "a mace program cache", TUNED_MAGIC: "a mace tuned-parameters file",
             MODEL_MAGIC: "a .mace model file"}  # fmt: skip
    for other, name in known.items():
        if data.startswith(other):
            return f"{name}, not a {title}"
    return f"not a {title} (it starts with {bytes(data[:8])!r})"


def is_signed(data: bytes, magic: bytes) -> bool:
    """Whether a file of the mace format with ``magic`` says it is signed (header flags bit 0)."""
    return len(data) >= 12 and data.startswith(magic) and bool(struct.unpack_from("<I", data, 8)[0] & FLAG_SIGNED)


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
    def __init__(
        self,
        path: str | os.PathLike[str],
        lock_timeout: float = LOCK_TIMEOUT_SECONDS,
        max_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self.max_bytes = max_bytes  # None: MAX_FILE_BYTES (read when used)
        self.description = str(self.path)

    def read(self) -> bytes | None:
        limit = MAX_FILE_BYTES if self.max_bytes is None else self.max_bytes
        try:
            return read_bounded(self.path, limit, "a mace cache file (mace.cachefiles.stores.MAX_FILE_BYTES)")
        except FileNotFoundError:
            return None
        except UnreadableFileError as exc:
            raise StoreError(str(exc)) from exc
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (flock on the ``.lock`` file: the kernel drops it when its holder dies, so a killed
        process never blocks the next start). Every problem is a StoreError naming the ``.lock`` file."""
        flags = os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | flags, 0o666)
            except PermissionError:
                if not self.lock_path.exists():
                    raise
                fd = os.open(self.lock_path, os.O_RDONLY | flags)  # another user's lock file: flock works read-only
        except OSError as exc:
            raise StoreError(f"{self.lock_path}: cannot open the lock file: {exc.strerror or exc}") from exc
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreError(f"{self.lock_path}: lock not acquired within {self.lock_timeout:g} s "
                                         "(another process holds it)") from None  # fmt: skip
                    time.sleep(LOCK_POLL_SECONDS)
                except OSError as exc:
                    raise StoreError(f"{self.lock_path}: cannot lock: {exc.strerror or exc}") from exc
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def update(self, merge: Callable[[bytes | None], bytes]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path.parent}: cannot create the directory: {exc.strerror or exc}") from exc
        with self.locked():
            data = merge(self.read())
            try:
                atomic_write(self.path, data)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc
            remove_stale_temp_files(self.path)

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
