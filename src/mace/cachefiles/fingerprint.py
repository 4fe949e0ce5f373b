"""The device fingerprint: which device (and driver, and mace version) a stored record is valid for.

Every file of the MCLP family (the program cache, the tuned parameters) starts with the same fingerprint section
(docs/cache-format.md, "Fingerprint record"); its encoding and its reading are written here once. The fingerprint
id, ``DeviceFingerprint.id()``, is computed in exactly one place.

Example:
    >>> fp = DeviceFingerprint("pocl", "The pocl project", "OpenCL 3.0 PoCL 5.0", "cpu-x86-64", "GenuineIntel",
    ...                        "OpenCL 3.0", "5.0", 64, True, "0.1.0")
    >>> fingerprint_fields(fp)[:8]  # the first string: platform_name, length-prefixed
    b'\\x04\\x00\\x00\\x00pocl'
    >>> fp.id() == DeviceFingerprint(*dataclasses.astuple(fp)).id() != dataclasses.replace(fp, engine_version="2").id()
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from mace.cachefiles import binformat
from mace.cachefiles.binformat import DIGEST_SIZE, FormatError

FINGERPRINT_STRINGS = (
    "platform_name",
    "platform_vendor",
    "platform_version",
    "device_name",
    "device_vendor",
    "device_version",
    "driver_version",
)
# record size u32 + id + 7 strings (u32 length each) + address_bits u32 + little_endian u8 + engine_version length
FINGERPRINT_MIN_SIZE = 4 + DIGEST_SIZE + 7 * 4 + 4 + 1 + 4  # 73
_FINGERPRINT_DOMAIN = b"mace-device-fingerprint\x00"


class FingerprintError(FormatError):
    """A DeviceFingerprint whose fields cannot be encoded (a non-u32 address_bits, a string that is not UTF-8)."""


@dataclass(frozen=True)
class DeviceFingerprint:
    """Everything that decides whether a program binary built on one device can be loaded on another."""

    platform_name: str
    platform_vendor: str
    platform_version: str
    device_name: str
    device_vendor: str
    device_version: str
    driver_version: str
    address_bits: int
    little_endian: bool
    engine_version: str

    def id(self) -> str:
        """Hex sha256 of the canonical encoding of all fields: THE fingerprint id used in keys and in the file."""
        return hashlib.sha256(_FINGERPRINT_DOMAIN + fingerprint_fields(self)).hexdigest()


def fingerprint_id(fingerprint: DeviceFingerprint | str) -> str:
    """The id of a fingerprint, or the id itself."""
    return fingerprint if isinstance(fingerprint, str) else fingerprint.id()


def fingerprint_fields(fp: DeviceFingerprint) -> bytes:
    """The canonical field encoding: hashed for the id and stored (after the id) in the fingerprint section."""
    out = bytearray()
    for name in FINGERPRINT_STRINGS:
        out += binformat.pack_str(getattr(fp, name), name, FingerprintError)
    if not isinstance(fp.address_bits, int) or not 0 <= fp.address_bits <= 0xFFFFFFFF:
        raise FingerprintError(None, f"address_bits {fp.address_bits!r} is not a u32")
    out += struct.pack("<IB", fp.address_bits, 1 if fp.little_endian else 0)
    out += binformat.pack_str(fp.engine_version, "engine_version", FingerprintError)
    return bytes(out)


def checked_id(fp: Any, error: type[FormatError]) -> str:
    """``fp.id()``, its problems raised as ``error`` (offset None)."""
    if not isinstance(fp, DeviceFingerprint):
        raise error(None, f"fingerprint must be a DeviceFingerprint, not {type(fp).__name__}")
    try:
        return fp.id()
    except FingerprintError as exc:
        raise error(None, f"fingerprint: {exc.reason}") from None


def encode_fingerprints(fingerprints: dict[str, DeviceFingerprint], error: type[FormatError]) -> bytes:
    """The fingerprint section: one framed record (id, then the canonical fields) per fingerprint, in dict order."""
    section = bytearray()
    for fid, fp in fingerprints.items():
        if fid != checked_id(fp, error):
            raise error(None, f"fingerprints[{fid!r}] holds a fingerprint whose id is {fp.id()}")
        section += binformat.frame(bytes.fromhex(fid) + fingerprint_fields(fp))
    return bytes(section)


def read_fingerprints(
    decoder: binformat.Decoder, count: int, start: int, size: int, exact: bool
) -> dict[str, DeviceFingerprint]:
    """Id -> DeviceFingerprint of the fingerprint section at [start, start + size). A bad record is the decoder's
    ``problem`` (dropped in lenient mode); errors are ``decoder``'s format's."""
    error = decoder.fmt.error

    def read(i: int, start: int, end: int, row: dict[str, Any]) -> tuple[str, DeviceFingerprint]:
        c = decoder.cursor(start + 4, end, f"fingerprint {i} record")
        stored = c.take(DIGEST_SIZE, f"fingerprint {i} id").hex()
        strings = {name: c.string(f"fingerprint {i} {name}") for name in FINGERPRINT_STRINGS}
        address_bits = c.unpack("I", f"fingerprint {i} address_bits")
        endian_at = c.pos
        endian = c.unpack("B", f"fingerprint {i} little_endian")
        if endian > 1:
            raise error(endian_at, f"fingerprint {i}: little_endian byte is {endian}, expected 0 or 1")
        engine_version = c.string(f"fingerprint {i} engine_version")
        if exact and c.pos != end:
            raise error(c.pos, f"fingerprint {i}: {end - c.pos} unknown bytes at the end of the record")
        fp = DeviceFingerprint(
            **strings, address_bits=address_bits, little_endian=endian == 1, engine_version=engine_version
        )
        if fp.id() != stored:
            raise error(
                start + 4, f"fingerprint {i}: stored id {stored} differs from the id {fp.id()} computed from its fields"
            )
        row.update(id=stored, **dataclasses.asdict(fp))
        if stored in seen:
            raise error(start + 4, f"fingerprint {i}: duplicate id {stored}")
        seen.add(stored)
        return stored, fp

    seen: set[str] = set()
    spans = decoder.records("fingerprint", count, start, size, FINGERPRINT_MIN_SIZE, exact)
    return dict(decoder.read_records(decoder.fingerprint_rows, spans, read))
