"""The crash sentinel: a binary that crashed the driver once is never handed to it again.

Structural checks (binary_checks.py) cover the formats whose layout is known; for everything else, and for what a
check cannot see, the loader marks "process P is loading entry K of file F" before it hands a binary to the driver
and removes the mark when the driver returns. A process that dies inside the driver (SIGSEGV, abort) leaves its mark
behind; the next start finds it, turns it into a crash record and skips that entry (one warning naming the file, the
program key and why), building from source instead. So a cache file can crash an app at most once per entry.

Where: the directory ``mace_cl_loading/`` beside the writable storage cache (shipped read-only files are marked
there too); with the storage turned off, ``$TMPDIR/mace-<uid>/mace_cl_loading/`` (created 0700, used only when it
is a real directory owned by this user). A directory that cannot be used turns the sentinel off, never the engine.

Files in it:

- ``loading-<pid>-<thread>-<n>.json``: a load in progress. Written under a temp name, ``flock``-ed (exclusive) and
  renamed into place, so it is complete and locked from the moment it is visible; the lock is held until the load
  returns and the file is unlinked. The kernel drops the lock when its holder dies, so "the lock is free" means "its
  process is gone": a stale mark. Unlike a pid check this cannot be fooled by a reused pid, and concurrent engines
  in other processes loading the same entry hold their own locked marks and are never taken for crashes. (Where
  ``fcntl`` is missing, a mark is stale when its pid is not alive.)
- ``crashed-<fingerprint>-<key>-<n>.json``: a harvested stale mark, kept so that a read-only shipped file keeps
  being skipped. It names the entry by (fingerprint id, program key, blob length, created time): the entry that
  replaces it in the writable cache (built now) has a new created time and loads normally. At most MAX_CRASH_RECORDS
  are kept (oldest dropped).

The cost of a load: one small file created, written, locked, renamed and unlinked (no fsync: a process crash keeps
the page cache; a power loss during a driver load is not the binary's fault). Pure: stdlib only, no OpenCL.

    sentinel = Sentinel.beside(storage_path)         # or Sentinel(directory), Sentinel(None): off
    crash = sentinel.crashed(entry_id)               # a Crash when this entry crashed an earlier process
    with sentinel.loading(entry_id, "path/to/file"):
        driver_build(blob)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: pid liveness instead of locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("mace.cachefiles")

DIRECTORY_NAME = "mace_cl_loading"
MAX_CRASH_RECORDS = 64
STALE_TEMP_SECONDS = 60.0
_counter = itertools.count()


@dataclass(frozen=True)
class EntryId:
    """Which binary: the same bytes in another file are the same entry (a shipped copy of a poisoned cache)."""

    fingerprint_id: str
    program_key: str
    blob_length: int
    created: float


@dataclass(frozen=True)
class Crash:
    """A process died while its driver loaded ``entry`` from ``file``."""

    entry: EntryId
    file: str
    pid: int
    time: float  # unix seconds, when the load began

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        return f"an earlier process (pid {self.pid}, at {when}) crashed while the driver loaded this binary"


def _record(crash: Crash) -> bytes:
    return json.dumps({**asdict(crash.entry), "file": crash.file, "pid": crash.pid, "time": crash.time}).encode()


def _parse(data: bytes) -> Crash | None:
    try:
        d = json.loads(data)
        entry = EntryId(str(d["fingerprint_id"]), str(d["program_key"]), int(d["blob_length"]), float(d["created"]))
        return Crash(entry, str(d["file"]), int(d["pid"]), float(d["time"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: exists, another user's
        return True
    return True


def default_directory() -> Path | None:
    """The per-user fallback, when there is no storage directory: $TMPDIR/mace-<uid>/mace_cl_loading."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    base = Path(tempfile.gettempdir()) / f"mace-{uid}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(base)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != uid):
        log.debug("crash sentinel off: %s is not a directory of this user", base)
        return None
    return base / DIRECTORY_NAME


class Sentinel:
    """The marks of one directory, for one engine. ``directory`` None: off (loads are not marked, nothing skipped)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._crashes: dict[EntryId, Crash] | None = None
        self._lock = threading.Lock()

    @classmethod
    def beside(cls, storage_file: Path | None) -> Sentinel:
        """The sentinel of a writable storage cache file (its directory), or the per-user one when None."""
        return cls(storage_file.parent / DIRECTORY_NAME if storage_file is not None else default_directory())

    # -- reading ------------------------------------------------------------------------------------------------
    def crashed(self, entry: EntryId) -> Crash | None:
        """The crash this entry caused in an earlier process, if any (the directory is scanned once)."""
        if self.directory is None:
            return None
        with self._lock:
            if self._crashes is None:
                self._crashes = self._scan()
        return self._crashes.get(entry)

    def _scan(self) -> dict[EntryId, Crash]:
        """Harvest stale loading marks into crash records; return every crash record."""
        assert self.directory is not None
        try:
            names = os.listdir(self.directory)
        except OSError:
            return {}
        for name in names:
            path = self.directory / name
            if name.startswith("loading-") and name.endswith(".json"):
                self._harvest(path)
            elif name.startswith(".loading-") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):  # a writer killed before its rename: never reached the driver
                    if path.stat().st_mtime < time.time() - STALE_TEMP_SECONDS:
                        path.unlink()
        records: list[tuple[float, Path, Crash]] = []
        try:
            names = os.listdir(self.directory)
        except OSError:
            return {}
        for name in names:
            if name.startswith("crashed-") and name.endswith(".json"):
                path = self.directory / name
                try:
                    crash = _parse(path.read_bytes())
                except OSError:
                    continue
                if crash is not None:
                    records.append((crash.time, path, crash))
        records.sort(key=lambda r: r[0])
        for _, path, _ in records[:-MAX_CRASH_RECORDS]:
            with contextlib.suppress(OSError):
                path.unlink()
        return {crash.entry: crash for _, _, crash in records[-MAX_CRASH_RECORDS:]}

    def _harvest(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return  # its load just finished
        try:
            data = os.read(fd, 1 << 16)
            crash = _parse(data)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:
                    return  # held: a load in progress in a live process
            elif crash is None or _pid_alive(crash.pid):
                return
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return  # unlinked (then unlocked) by its owner after we opened it: a load that finished
            if crash is None:
                log.debug("removing unreadable crash sentinel mark %s", path)
                with contextlib.suppress(OSError):
                    path.unlink()
                return
            key = f"{crash.entry.fingerprint_id[:16]}-{crash.entry.program_key[:16]}-{crash.entry.blob_length}"
            with contextlib.suppress(OSError):  # another process harvested it first: its record is the same
                os.replace(path, path.with_name(f"crashed-{key}-{int(crash.entry.created * 1000)}.json"))
        except OSError:
            return
        finally:
            os.close(fd)

    # -- marking ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def loading(self, entry: EntryId, file: str) -> Iterator[None]:
        """Mark ``entry`` of ``file`` as being loaded by this process for the duration of the block."""
        mark = self._mark(entry, file) if self.directory is not None else None
        try:
            yield
        finally:
            if mark is not None:
                path, fd = mark
                with contextlib.suppress(OSError):
                    os.unlink(path)
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _mark(self, entry: EntryId, file: str) -> tuple[Path, int] | None:
        assert self.directory is not None
        name = f"loading-{os.getpid()}-{threading.get_ident()}-{next(_counter)}.json"
        tmp = self.directory / f".{name}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            try:
                fd = os.open(tmp, flags, 0o600)
            except FileNotFoundError:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, flags, 0o600)
        except OSError as exc:
            log.debug("crash sentinel: cannot mark the load in %s (%s); loading unmarked", self.directory, exc)
            return None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, _record(Crash(entry, file, os.getpid(), time.time())))
            os.rename(tmp, self.directory / name)
        except OSError as exc:
            log.debug("crash sentinel: cannot mark the load in %s (%s); loading unmarked", self.directory, exc)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            os.close(fd)
            return None
        return self.directory / name, fd
