"""binary_checks on pocl binaries built here byte by byte, in the layouts of pocl_binary.c: versions 6-8 (the
program file after the header) and 9 (pocl 3.1: root entries, each a size and the files it holds). A whole binary
passes with its kernel names; every shorter one, and one with bytes after its last kernel, is refused with a reason,
never an exception: pocl reads these records without bounds checks and crashes on a cut one."""

from __future__ import annotations

import struct

import pytest

from mace.cachefiles.binary_checks import check, pocl_kernel_names


def _string(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def _file(path: bytes, content: bytes) -> bytes:
    return _string(path) + _string(content)


def _kernel(name: bytes, files: bytes) -> bytes:
    meta = struct.pack("<II", 1, 0) + struct.pack("<QQQ", 0, 0, 0) + _string(b"") + struct.pack("<Q", 1)
    arginfo = struct.pack("<IIIII", 0, 0, 0, 0, 4) + _string(b"x") + _string(b"float*")
    body = _string(name) + meta + arginfo + files
    fixed = struct.Struct("<QQI")
    return fixed.pack(fixed.size + len(body), len(files), len(arginfo)) + body


def pocl_binary(version: int, names: tuple[bytes, ...] = (b"conv_0", b"relu_0")) -> bytes:
    header = b"poclbin\x00" + struct.pack("<QIIQ", 1234, version, len(names), 0)
    program = _file(b"/program.bc", b"BC\xc0\xde" + bytes(40))
    if version >= 9:
        root = _file(b"/program.bc", b"BC\xc0\xde" + bytes(40)) + _file(b"/build.log", b"")
        header += struct.pack("<I", 1) + b"A" * 40 + b"\x00"
        program = struct.pack("<Q", len(root)) + root
    else:
        header += b"A" * 40 + b"\x00"
    kernels = b"".join(_kernel(n, _file(b"/kernel/" + n + b"/parallel.so", b"\x7fELF" + bytes(20))) for n in names)
    return header + program + kernels


@pytest.mark.parametrize("version", [8, 9])
def test_whole_binaries_pass_with_their_kernels(version: int) -> None:
    blob = pocl_binary(version)
    assert pocl_kernel_names(blob) == ["conv_0", "relu_0"]
    assert check(blob, "pocl", {"conv_0", "relu_0"}) is None
    assert check(blob, "pocl", {"conv_0", "gemm_3"}) == (
        "the pocl binary lacks kernel 'gemm_3' that the program defines")


@pytest.mark.parametrize("version", [8, 9])
def test_every_cut_and_any_trailing_bytes_are_refused(version: int) -> None:
    blob = pocl_binary(version)
    for end in range(len(blob)):
        reason = check(blob[:end], "pocl")
        assert reason is not None and reason.startswith(("pocl binary", "not a pocl binary")), (end, reason)
    assert check(blob + b"\x00\x00", "pocl") == (
        f"pocl binary: 2 unknown bytes after its last kernel, at byte {len(blob)}")


def test_version_9_root_entries_are_bounded() -> None:
    blob = bytearray(pocl_binary(9))
    roots_at, entry_at = 32, 32 + 4 + 41
    struct.pack_into("<I", blob, roots_at, 1 << 30)
    assert "root entries, more than its" in str(check(bytes(blob), "pocl"))
    blob = bytearray(pocl_binary(9))
    struct.pack_into("<Q", blob, entry_at, 1 << 40)
    assert check(bytes(blob), "pocl") == (
        f"pocl binary cut short: root entry 0 at byte {entry_at} declares {1 << 40} bytes, the binary ends at byte "
        f"{len(blob)}")
    traversal = pocl_binary(9).replace(b"/build.log", b"/../../.x")
    assert "outside pocl's cache directory" in str(check(traversal, "pocl"))


def test_later_versions_are_checked_up_to_their_header() -> None:
    blob = bytearray(pocl_binary(9))
    struct.pack_into("<I", blob, 16, 10)
    assert pocl_kernel_names(bytes(blob)) is None and check(bytes(blob), "pocl", {"conv_0"}) is None
    assert check(bytes(blob[:40]), "pocl") == "pocl binary cut short: its 77-byte header ends at byte 40"
