"""Edits of file bytes the format tests share: patch a field, flip a bit, apply a list of fuzzing mutations."""

from __future__ import annotations

import struct


def patch(data: bytes, offset: int, fmt: str, *values: object) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def mutate(data: bytes, ops: list[tuple[str, int, int]], wrap: bool = False) -> bytes:
    """Apply (op, position, argument) in order: flip bit ``arg``, truncate, insert byte ``arg``, delete one byte,
    overwrite a u32 or a u8 with ``arg``. A position past the end is clamped to it, or with ``wrap`` taken modulo."""
    out = bytearray(data)
    for op, at, arg in ops:
        at = at % (len(out) + 1) if wrap else min(at, len(out))
        if op == "flip" and at < len(out):
            out[at] ^= 1 << arg
        elif op == "truncate":
            del out[at:]
        elif op == "insert":
            out[at:at] = bytes([arg])
        elif op == "delete":
            del out[at : at + 1]
        elif op == "u32" and at + 4 <= len(out):
            struct.pack_into("<I", out, at, arg)
        elif op == "u8" and at < len(out):
            out[at] = arg
    return bytes(out)
