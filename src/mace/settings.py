"""Every environment variable mace reads, defined once: name, default, meaning, and how its value is parsed.

Each is read when it is needed (an engine or context reads them as it is made), so a process may change them between
engines. A value that cannot be used raises SettingError naming the variable and the value; nothing is ignored
silently. The README's settings table lists the same variables (a test checks it).

    >>> import os
    >>> os.environ["MACE_TUNING"] = "off"
    >>> tuning_at_start()
    False
    >>> os.environ["MACE_TUNING"] = "maybe"
    >>> try:
    ...     tuning_at_start()
    ... except SettingError as exc:
    ...     print(exc)
    MACE_TUNING='maybe' is not a yes/no value: use 1/on/true/yes or 0/off/false/no
    >>> del os.environ["MACE_TUNING"]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mace.errors import SettingError


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # as the README shows it
    meaning: str

    def raw(self) -> str | None:
        """The variable's value with surrounding blanks removed; None when unset or blank."""
        value = os.environ.get(self.name)
        return value.strip() if value is not None and value.strip() else None


STORAGE_PATH = Setting("MACE_STORAGE_PATH", "$XDG_CACHE_HOME/mace, else ~/.cache/mace",
                       "directory of the writable caches; off disables them")
CACHE_KEY = Setting("MACE_CACHE_KEY", "unset (files unsigned)",
                    "HMAC-SHA256 key (UTF-8 text) that signs and checks both cache files")
MAX_CACHE_BYTES = Setting("MACE_MAX_CACHE_BYTES", "unset (no cap)",
                          "cap on the program cache's binary bytes (a positive integer); least recently used go first")
TF32 = Setting("MACE_TF32", "0", "1: products on NVIDIA tensor cores at TF32 accuracy (10-bit mantissas, as "
               "PyTorch's cuDNN default), faster than fp32's; elsewhere no change")
TUNING = Setting("MACE_TUNING", "0", "1: tune kernel variants and work-group sizes when an engine starts, then save")
ONNX_BACKEND_DEVICE = Setting("MACE_BACKEND_DEVICE", "cpu",
                              "the device mace.onnx_backend runs ONNX's CPU test cases on (e.g. opencl)")
DEBUG = Setting("MACE_DEBUG", "0", "1: the CLI prints the traceback of an internal error")
XDG_CACHE_HOME = Setting("XDG_CACHE_HOME", "~/.cache", "base of the default storage directory (freedesktop spec)")
OCL_ICD_VENDORS = Setting("OCL_ICD_VENDORS", "/etc/OpenCL/vendors",
                          "where the OpenCL ICD loader finds drivers; mace devices looks there too")

SETTINGS = (STORAGE_PATH, CACHE_KEY, MAX_CACHE_BYTES, TF32, TUNING, ONNX_BACKEND_DEVICE, DEBUG, XDG_CACHE_HOME,
            OCL_ICD_VENDORS)

OFF_WORDS = frozenset({"0", "off", "false", "no", "none", "disable", "disabled"})
ON_WORDS = frozenset({"1", "on", "true", "yes", "enable", "enabled"})


def flag(setting: Setting, default: bool = False) -> bool:
    """A yes/no variable: unset or blank gives ``default``; anything but the known words is an error."""
    raw = setting.raw()
    if raw is None:
        return default
    if raw.lower() in ON_WORDS:
        return True
    if raw.lower() in OFF_WORDS:
        return False
    raise SettingError(f"{setting.name}={raw!r} is not a yes/no value: use 1/on/true/yes or 0/off/false/no")


def storage_dir() -> Path | None:
    """$MACE_STORAGE_PATH, else $XDG_CACHE_HOME/mace, else ~/.cache/mace; None when turned off."""
    raw = os.environ.get(STORAGE_PATH.name)
    if raw is not None:
        return None if not raw.strip() or raw.strip().lower() in OFF_WORDS else Path(raw).expanduser()
    base = XDG_CACHE_HOME.raw() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mace"


def cache_key() -> bytes | None:
    raw = os.environ.get(CACHE_KEY.name)
    return raw.encode() if raw else None


def max_cache_bytes() -> int | None:
    raw = MAX_CACHE_BYTES.raw()
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) <= 0:
        raise SettingError(f"{MAX_CACHE_BYTES.name}={raw!r} is not a positive whole number of bytes "
                           "(e.g. 268435456 for 256 MiB); unset it for no cap")
    return int(raw)


def tuning_at_start() -> bool:
    return flag(TUNING)


def tf32() -> bool:
    return flag(TF32)


def onnx_backend_device() -> str:
    return ONNX_BACKEND_DEVICE.raw() or "cpu"


def debug() -> bool:
    try:
        return flag(DEBUG)
    except SettingError:
        return True  # asking for the traceback with an odd word still asks for it


def icd_vendor_dirs() -> list[str]:
    """The directories an ICD loader reads driver registrations from: $OCL_ICD_VENDORS first, then the default."""
    raw = OCL_ICD_VENDORS.raw()
    return [d for d in (raw, "/etc/OpenCL/vendors") if d]
