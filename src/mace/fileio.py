"""Reading and writing user files safely.

Writes: a crash or a full disk leaves the old file or the new one, never a torn one; the new file gets the mode any
new file of the process gets (``0o666`` less the umask), not mkstemp's private ``0o600``, so a model or cache meant
to be shared or shipped is readable by others exactly when the user's umask says so.

Reads: never block and never allocate without bound. A path is opened with ``O_NONBLOCK`` and must be a regular
file (a FIFO, a device or a directory is named as such, at once); its size is checked against a limit before a byte
is read, and the read stops at the limit if the file grows meanwhile.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from pathlib import Path

from mace.errors import MaceError

_UMASK_LOCK = threading.Lock()
_READ_CHUNK = 1 << 24  # a file growing while it is read is read in pieces of this size, up to the limit


class UnreadableFileError(MaceError):
    """The path is not a regular file, or is larger than the caller's limit. The message names the path."""


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc/self/status); elsewhere by setting
    and restoring it, with a restrictive value meanwhile (a file another thread creates then is private, not
    public)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def new_file_mode() -> int:
    """The permission bits open(path, "w") would give a new file now: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Temp file in the same directory -> chmod (``mode``, by default ``new_file_mode()``) -> fsync -> os.replace
    -> fsync the directory."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), new_file_mode() if mode is None else mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return  # some file systems cannot open directories; the rename itself is done
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def file_kind(mode: int) -> str:
    """What a stat mode is, for messages: "a FIFO (named pipe)", "a directory", ..."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """An O_RDONLY descriptor of ``path`` and its stat, opened without blocking (a FIFO without a writer would block
    a plain open forever). Anything but a regular file raises UnreadableFileError; OSError as the system gives it
    (FileNotFoundError, PermissionError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFileError(f"{os.fspath(path)}: is {file_kind(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_head(path: str | os.PathLike[str], size: int) -> bytes:
    """The first ``size`` bytes of a regular file (less if it is shorter); the checks of ``open_regular``."""
    fd, _ = open_regular(path)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def read_bounded(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The content of a regular file of at most ``max_bytes`` bytes: a larger one raises UnreadableFileError
    naming the path, its size and the limit, before anything is read (``what`` names the limit in the message)."""
    fd, st = open_regular(path)
    try:
        if st.st_size > max_bytes:
            raise UnreadableFileError(f"{os.fspath(path)}: {st.st_size} bytes, over the {max_bytes}-byte limit "
                                      f"for {what}")  # fmt: skip
        parts: list[bytes] = []
        total = 0
        chunk = max(st.st_size + 1, 1 << 16)
        while total <= max_bytes:
            part = os.read(fd, min(chunk, _READ_CHUNK, max_bytes + 1 - total))
            if not part:
                break
            parts.append(part)
            total += len(part)
        if total > max_bytes:
            raise UnreadableFileError(f"{os.fspath(path)}: grew past the {max_bytes}-byte limit for {what} "
                                      "while it was read")  # fmt: skip
        return b"".join(parts)
    finally:
        os.close(fd)
