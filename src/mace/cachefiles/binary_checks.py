"""Structural checks of a program binary before the driver sees it, for the vendor formats whose layout is known.

A cache file that passes every check of program_cache.py (hashes, keys, fingerprints) can still hold a binary that
is cut short or garbled: whoever wrote the file recomputed the hashes, or the build farm stored a torn binary. Some
drivers do not validate what ``clCreateProgramWithBinary`` / ``clBuildProgram`` are given and crash on it (pocl
reads its serialized records without bounds checks; MACE issue #248 is a SIGSEGV inside Mali's loader), so the loader
(mace.opencl.programs) and ``mace cache verify`` run ``check`` on every blob first. Pure like the file formats: bytes
in, a verdict out, no OpenCL, no file I/O; it never raises for any input and allocates nothing larger than it.

Known formats:

- **pocl** (``poclbin``; pocl's lib/CL/pocl_binary.c): an 8-byte magic, device id u64, version u32, kernel count
  u32, flags u64 (version >= 9: root entry count u32), the program build hash (41 bytes), then the program's own
  files: versions 6 to 8 the serialized ``program.bc`` file, version 9 (pocl 3.1) that many root entries, each a u64
  size and the files it holds; then one record per kernel: ``struct_size`` u64, ``binaries_size`` u64,
  ``arginfo_size`` u32, the kernel name, metadata, argument info and the kernel's cache-directory files, each a
  (relative path, content) pair of u32-length strings. Every declared length must fit the blob and its record,
  the records must end exactly at the end of the blob, counts are bounded by the bytes that could hold them, file
  paths stay inside the cache directory and kernel names are identifiers. Later versions change the layout after
  the header and are checked up to there; versions below 6 are refused by pocl itself and rejected here.
- **NVIDIA PTX** (text): NUL-terminated with no NUL inside, ``.version`` and ``.target`` directives, comments
  closed, braces balanced, and one ``.entry NAME`` per kernel.

When the caller knows the kernels the program must define (``source_kernel_names``: the planner's
``#define KERNEL_NAME name`` lines) a binary lacking one of them is rejected too. A blob of any other format passes:
the crash sentinel (sentinel.py) covers what cannot be checked.

Example:
    >>> check(b"poclbin\\x00" + bytes(8))
    'pocl binary cut short: its header ends at byte 16'
    >>> check(b"// ptx\\n.version 7.0\\n.target sm_80\\n.visible .entry conv_0() { ret; }\\n\\x00", kernels={"conv_0"})
    >>> check(b"// ptx\\n.version 7.0\\n.target sm_80\\n.visible .entry conv_0() { ret;", kernels={"conv_0"})
    'PTX text is not NUL-terminated (cut short?)'
    >>> check(b"\\x7fELF...") is None   # a format this module does not know: the sentinel covers it
    True
"""

from __future__ import annotations

import re
import struct
from collections.abc import Collection

POCL_MAGIC = b"poclbin\x00"
POCL_MIN_VERSION = 6  # pocl refuses older binaries (FIRST_SUPPORTED_POCLCC_VERSION)
POCL_WALKED_VERSIONS = range(6, 10)  # the layout after the header is checked for these; later ones up to the header
_POCL_FIXED = struct.Struct("<8sQIIQ")  # magic, device id, version, kernel count, flags
_POCL_BUILD_HASH = 41  # SHA1_digest_t: 40 characters and a NUL
_POCL_KERNEL_FIXED = struct.Struct("<QQI")  # struct_size, binaries_size, arginfo_size
_U64 = struct.Struct("<Q")
_POCL_MIN_ARG = 26  # the smallest serialized argument info (3 qualifiers, type, size, two empty strings)
_U32 = struct.Struct("<I")
_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*\Z")

_PTX_START = re.compile(rb"\s*(?://|/\*|\.version\b)")
_PTX_TOKENS = re.compile(rb'//[^\n]*|/\*.*?\*/|/\*|"(?:[^"\\\n]|\\.)*"|[{}]', re.S)
_PTX_COMMENT_OR_STRING = re.compile(rb'//[^\n]*|/\*.*?\*/|"(?:[^"\\\n]|\\.)*"', re.S)
_PTX_VERSION = re.compile(rb"^[ \t]*\.version[ \t]+\d+\.\d+", re.M)
_PTX_TARGET = re.compile(rb"^[ \t]*\.target[ \t]+\w", re.M)
_PTX_ENTRY = re.compile(rb"\.entry[ \t\r\n]+([A-Za-z_$%][A-Za-z0-9_$]*)")

_KERNEL_NAME_DEFINE = re.compile(r"#define KERNEL_NAME ([A-Za-z_][A-Za-z0-9_]*)[ \t]*$", re.M)  # literal: fast


class BinaryProblem(Exception):
    """What is wrong with a binary (internal: ``check`` returns the message)."""


def vendor_of(*identity: str) -> str:
    """'pocl', 'nvidia' or '' from platform/device names and vendors (e.g. a DeviceFingerprint's fields)."""
    text = " ".join(identity).lower()
    if "pocl" in text or "portable computing language" in text:
        return "pocl"
    if "nvidia" in text:
        return "nvidia"
    return ""


def detect(blob: bytes, vendor: str = "") -> str:
    """The format of ``blob``: 'pocl', 'ptx' or '' (unknown). ``vendor`` (vendor_of) decides for a blob that is
    not recognizably anything: under pocl every binary must be a pocl binary, under NVIDIA every binary is PTX."""
    if blob[: len(POCL_MAGIC)] == POCL_MAGIC or vendor == "pocl":
        return "pocl"
    if _PTX_START.match(blob[:4096]) or vendor == "nvidia":
        return "ptx"
    return ""


def check(blob: bytes, vendor: str = "", kernels: Collection[str] = ()) -> str | None:
    """None when ``blob`` may be handed to the driver; else why not (one sentence, no trailing period).

    ``vendor``: vendor_of the device the binary is for ('' when unknown); ``kernels``: names the binary must define.
    Never raises."""
    try:
        blob = bytes(blob)
        kind = detect(blob, vendor)
        if kind == "pocl":
            names = pocl_kernel_names(blob)
        elif kind == "ptx":
            names = ptx_entry_names(blob)
        else:
            return None
        if names is not None:
            missing = sorted(set(kernels) - set(names))
            if missing:
                what = "pocl binary" if kind == "pocl" else "PTX"
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                return f"the {what} lacks kernel {missing[0]!r}{more} that the program defines"
        return None
    except BinaryProblem as exc:
        return str(exc)
    except Exception as exc:  # a bug here must not take the engine down: say so and let the sentinel cover it
        return f"binary check failed ({type(exc).__name__}: {exc})"


def source_kernel_names(source: str) -> frozenset[str]:
    """The kernels a planned program defines: every ``#define KERNEL_NAME name`` line (planner.py writes one per
    kernel, before the template's ``__kernel void KERNEL_NAME(...)``). Empty for other sources: nothing expected."""
    names = set()
    for match in _KERNEL_NAME_DEFINE.finditer(source):
        start = match.start()
        if start == 0 or source[start - 1] == "\n":  # at the start of a line
            names.add(match.group(1))
    return frozenset(names)


# ---------------------------------------------------------------------------------------------------------------------
# pocl


def _u32(blob: bytes, at: int, end: int, what: str) -> int:
    if at + 4 > end:
        raise BinaryProblem(f"pocl binary cut short: {what} at byte {at} needs 4 bytes, its record ends at byte {end}")
    value: int = _U32.unpack_from(blob, at)[0]
    return value


def _string(blob: bytes, at: int, end: int, what: str) -> tuple[int, int]:
    """(start, length) of the u32-length string at ``at``, inside [at, end)."""
    n = _u32(blob, at, end, f"the length of {what}")
    if n > end - at - 4:
        raise BinaryProblem(
            f"pocl binary: {what} at byte {at} declares {n} bytes but only {end - at - 4} remain in its record"
        )
    return at + 4, n


def _file(blob: bytes, at: int, end: int, what: str, empty_ok: bool) -> int:
    """Check one serialized file (relative path, content) at ``at``; returns the offset after it."""
    start, n = _string(blob, at, end, f"the path of {what}")
    if n == 0:
        raise BinaryProblem(f"pocl binary: {what} at byte {at} has an empty path")
    path = blob[start : start + n]
    if b"\x00" in path or b".." in path.split(b"/"):
        raise BinaryProblem(f"pocl binary: {what} at byte {at} has path {path[:80]!r} outside pocl's cache directory")
    at = start + n
    start, n = _string(blob, at, end, f"the content of {what} {path[:80].decode('utf-8', 'replace')!r}")
    if n == 0 and not empty_ok:
        raise BinaryProblem(f"pocl binary: {what} {path[:80].decode('utf-8', 'replace')!r} is empty")
    return start + n


def _program_files(blob: bytes, header: int, version: int) -> int:
    """Check the program's own files after the header (version 9: its root entries); returns where they end."""
    size = len(blob)
    if version < 9:
        return _file(blob, header, size, "the program file", empty_ok=False)
    roots = _u32(blob, _POCL_FIXED.size, size, "the root entry count")
    if roots * (_U64.size + 8) > size - header:
        raise BinaryProblem(f"pocl binary declares {roots} root entries, more than its {size} bytes can hold")
    at = header
    for r in range(roots):
        if at + _U64.size > size:
            raise BinaryProblem(f"pocl binary cut short: root entry {r} starts at byte {at}, the binary ends at byte "
                                f"{size}")
        n = _U64.unpack_from(blob, at)[0]
        end = at + _U64.size + n
        if end > size:
            raise BinaryProblem(f"pocl binary cut short: root entry {r} at byte {at} declares {n} bytes, the binary "
                                f"ends at byte {size}")
        pos = at + _U64.size
        while pos < end:
            pos = _file(blob, pos, end, f"a file of root entry {r}", empty_ok=True)
        at = end
    return at


def pocl_kernel_names(blob: bytes) -> list[str] | None:
    """The kernel names of a pocl binary, after checking its structure (BinaryProblem if broken); None for a
    version whose layout after the header is not known here."""
    if blob[: len(POCL_MAGIC)] != POCL_MAGIC:
        raise BinaryProblem(f"not a pocl binary: it starts with {blob[:8]!r}, not {POCL_MAGIC!r}")
    size = len(blob)
    if size < _POCL_FIXED.size:
        raise BinaryProblem(f"pocl binary cut short: its header ends at byte {size}")
    _, _, version, count, flags = _POCL_FIXED.unpack_from(blob, 0)
    header = _POCL_FIXED.size + _POCL_BUILD_HASH + (4 if version >= 9 else 0) + (8 if version >= 9 and flags & 2 else 0)
    if size < header:
        raise BinaryProblem(f"pocl binary cut short: its {header}-byte header ends at byte {size}")
    if version < POCL_MIN_VERSION:
        raise BinaryProblem(f"pocl binary version {version} is older than any pocl reads ({POCL_MIN_VERSION})")
    if count * (_POCL_KERNEL_FIXED.size + 4) > size - header:
        raise BinaryProblem(f"pocl binary declares {count} kernels, more than its {size} bytes can hold")
    if version not in POCL_WALKED_VERSIONS:
        return None
    at = _program_files(blob, header, version)
    names = []
    for k in range(count):
        what = f"kernel {k}"
        if at + _POCL_KERNEL_FIXED.size > size:
            raise BinaryProblem(f"pocl binary cut short: {what} starts at byte {at}, the binary ends at byte {size}")
        struct_size, binaries_size, arginfo_size = _POCL_KERNEL_FIXED.unpack_from(blob, at)
        if struct_size > size - at:
            raise BinaryProblem(
                f"pocl binary cut short: {what} at byte {at} declares {struct_size} bytes, the binary ends at byte "
                f"{size}"
            )
        end = at + struct_size
        start, n = _string(blob, at + _POCL_KERNEL_FIXED.size, end, f"the name of {what}")
        raw = blob[start : start + n]
        if not _IDENTIFIER.match(raw):
            raise BinaryProblem(f"pocl binary: {what} at byte {at} has name {raw[:80]!r}, not an identifier")
        name = raw.decode("ascii")
        meta_start = start + n
        files_start = end - binaries_size if binaries_size <= struct_size else -1
        if files_start < meta_start + 8 + 24:  # num_args, num_locals, reqd_wg_size[3]
            raise BinaryProblem(
                f"pocl binary: kernel {name!r} at byte {at}: its {binaries_size} bytes of files leave no room for its "
                f"metadata in its {struct_size}-byte record"
            )
        num_args, num_locals = struct.unpack_from("<II", blob, meta_start)
        meta = files_start - meta_start
        if arginfo_size > meta or num_args * _POCL_MIN_ARG > arginfo_size or num_locals * 8 > meta:
            raise BinaryProblem(
                f"pocl binary: kernel {name!r} at byte {at} declares {num_args} arguments ({arginfo_size} bytes) and "
                f"{num_locals} locals, more than its {meta} bytes of metadata hold"
            )
        pos = files_start
        while pos < end:
            pos = _file(blob, pos, end, f"a file of kernel {name!r}", empty_ok=version >= 9)
        names.append(name)
        at = end
    if at != size:
        raise BinaryProblem(f"pocl binary: {size - at} unknown bytes after its last kernel, at byte {at}")
    return names


# ---------------------------------------------------------------------------------------------------------------------
# NVIDIA PTX


def ptx_entry_names(blob: bytes) -> list[str]:
    """The ``.entry`` names of a PTX text, after checking its structure (BinaryProblem if broken)."""
    first_nul = blob.find(b"\x00")
    if first_nul < 0:
        raise BinaryProblem("PTX text is not NUL-terminated (cut short?)")
    text = blob[:first_nul]
    if blob.count(b"\x00", first_nul) != len(blob) - first_nul:
        raise BinaryProblem(f"PTX text holds a NUL byte at {first_nul}, before its end (garbled or not PTX)")
    if not _PTX_VERSION.search(text):
        raise BinaryProblem("PTX text has no .version directive")
    if not _PTX_TARGET.search(text):
        raise BinaryProblem("PTX text has no .target directive")
    depth = 0
    for match in _PTX_TOKENS.finditer(text):
        token = match.group()
        if token == b"{":
            depth += 1
        elif token == b"}":
            depth -= 1
            if depth < 0:
                raise BinaryProblem(f"PTX text closes a brace it never opened, at byte {match.start()}")
        elif token == b"/*":
            raise BinaryProblem(f"PTX text has a comment opened at byte {match.start()} and never closed (cut short?)")
    if depth:
        raise BinaryProblem(f"PTX text leaves {depth} brace(s) open at its end (cut short?)")
    code = _PTX_COMMENT_OR_STRING.sub(b" ", text)
    names = [m.decode("ascii") for m in _PTX_ENTRY.findall(code)]
    if not names:
        raise BinaryProblem("PTX text defines no kernel (.entry)")
    return names
