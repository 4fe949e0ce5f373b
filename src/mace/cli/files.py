"""Files the `mace` commands write for the user: checked before the work starts, written atomically, and any failure
one MaceError that names the option and the file (not a temp file next to it), with nothing left behind."""

from __future__ import annotations

import errno
from pathlib import Path

from mace.errors import MaceError
from mace.fileio import atomic_write

_REASONS = {errno.ENOENT: "no such file or directory", errno.EISDIR: "is a directory, not a file",
            errno.ENOTDIR: "a part of the path is not a directory", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted", errno.ENOSPC: "no space left on the device",
            errno.EROFS: "read-only file system", errno.EDQUOT: "disk quota exceeded"}


def os_reason(exc: OSError) -> str:
    """The reason alone: 'permission denied', 'no space left on the device'."""
    return _REASONS.get(exc.errno or -1) or exc.strerror or str(exc)


def describe_os_error(exc: OSError) -> str:
    """'<file>: <reason>' for the usual cases; the reason alone when the error names no file."""
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(names)}: {os_reason(exc)}" if names else os_reason(exc)


def _file_in_the_way(path: Path) -> Path | None:
    """The first existing ancestor of `path` that is not a directory (`file.txt/out.mace`), if any."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_file(path: Path, option: str) -> None:
    """Fail before any work when `path` cannot be a file to write: a directory, or under a regular file."""
    if path.is_dir():
        raise MaceError(f"{option} {path}: is a directory; give the path of the file to write")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise MaceError(f"{option} {path}: {blocker} is a file, not a directory")


def check_output_dir(path: Path, option: str) -> None:
    """Fail before any work when `path` cannot be a directory to write into."""
    if path.exists() and not path.is_dir():
        raise MaceError(f"{option} {path}: is a file, not a directory")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise MaceError(f"{option} {path}: {blocker} is a file, not a directory")


def write_error(option: str, path: Path, exc: OSError) -> MaceError:
    """'<option> <file>: cannot write: <reason>'; the temp file atomic_write uses is never the one named."""
    return MaceError(f"{option} {path}: cannot write: {os_reason(exc)}")


def write_file(path: Path, data: bytes, option: str) -> None:
    """Atomically (mace.fileio.atomic_write): on any failure the old file or none is there, never a torn one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    except OSError as exc:
        raise write_error(option, path, exc) from exc
