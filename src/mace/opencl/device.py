"""Choosing an OpenCL device, describing it (the cache fingerprint), spotting unregistered vendor drivers, and
naming the step of a device failure."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyopencl as cl

from mace import settings
from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.errors import DeviceError, MaceError
from mace.version import __version__

# Vendor OpenCL libraries that an ICD loader can use once they are listed in /etc/OpenCL/vendors/*.icd.
VENDOR_LIBRARIES = {
    "NVIDIA": [
        "/usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1",
        "/usr/local/nvidia/lib64/libnvidia-opencl.so.1",
        "/usr/lib/libnvidia-opencl.so.1",
        "/usr/lib64/libnvidia-opencl.so.1",
    ],
    "AMD ROCm": ["/opt/rocm/lib/libamdocl64.so", "/opt/rocm/opencl/lib/libamdocl64.so"],
    "Intel": ["/usr/lib/x86_64-linux-gnu/intel-opencl/libigdrcl.so", "/usr/local/lib/intel-opencl/libigdrcl.so"],
}


@dataclass(frozen=True)
class DeviceChoice:
    platform: cl.Platform
    device: cl.Device

    @property
    def label(self) -> str:
        return f"{self.device.name.strip()} ({self.platform.name.strip()})"


def _platforms() -> list[cl.Platform]:
    try:
        return cl.get_platforms()
    except cl.Error as exc:  # CL_PLATFORM_NOT_FOUND_KHR when no ICD is registered at all
        raise DeviceError(
            f"no OpenCL platform found ({exc}); install pocl-binary-distribution or a GPU driver" + _registration_hint()
        ) from exc


def list_devices() -> list[DeviceChoice]:
    return [DeviceChoice(p, d) for p in _platforms() for d in p.get_devices()]


def is_gpu(device: cl.Device) -> bool:
    return bool(device.type & cl.device_type.GPU)


def _is_pocl(platform: cl.Platform) -> bool:
    return "portable computing language" in platform.name.lower()


def parse_spec(spec: str) -> tuple[str, int]:
    """"<platform substring>[:<index>]" -> (substring, index); an index that is no non-negative integer is a
    DeviceError naming it (it used to pick device 0 silently)."""
    name, sep, index_text = spec.partition(":")
    if not sep:
        return name, 0
    text = index_text.strip()
    if not text.isascii() or not text.isdigit():
        raise DeviceError(f"device index {index_text!r} in {spec!r} is not a non-negative integer; "
                          "use opencl:<platform>[:<index>], e.g. opencl:portable:0")
    return name, int(text)


def _fast_choice(spec: str) -> DeviceChoice | None:
    """The common cases without enumerating every platform's devices: asking pocl for its devices initializes it,
    which costs a noticeable part of a warm start. A GPU on a vendor platform, or a platform named by `spec`."""
    name, index = parse_spec(spec)  # a bad spec is the error, whatever OpenCL lists
    platforms = sorted(_platforms(), key=_is_pocl)  # vendor drivers first
    for platform in platforms:
        if spec and name.lower() not in platform.name.lower() and name.lower() not in platform.vendor.lower():
            continue
        try:
            devices = platform.get_devices() if spec else platform.get_devices(device_type=cl.device_type.GPU)
        except cl.Error:  # CL_DEVICE_NOT_FOUND
            continue
        if spec and index < len(devices):
            return DeviceChoice(platform, devices[index])
        if not spec and devices:
            return DeviceChoice(platform, devices[0])
    return None


def select_device(spec: str = "") -> DeviceChoice:
    """spec "" picks a GPU when one is listed, else the first device (pocl's CPU device when no GPU driver is there);
    "<platform substring>[:<index>]" picks exactly, e.g. "nvidia", "portable:0"."""
    fast = _fast_choice(spec)
    if fast is not None:
        return fast
    choices = list_devices()
    if not choices:
        raise DeviceError("OpenCL lists no device" + _registration_hint())
    if not spec:
        gpus = [c for c in choices if is_gpu(c.device)]
        return (gpus or choices)[0]
    name, index = parse_spec(spec)
    matching = [
        c
        for c in choices
        if name.lower() in c.platform.name.lower()
        or name.lower() in c.platform.vendor.lower()
        or name.lower() in c.device.name.lower()
    ]
    available = "; ".join(f"{c.platform.name.strip()}:{i}={c.device.name.strip()}" for i, c in enumerate(choices))
    if not matching:
        raise DeviceError(
            f"no OpenCL platform or device matches {name!r}; available: {available}" + _registration_hint()
        )
    if index >= len(matching):
        raise DeviceError(
            f"device index {index} is out of range for {name!r}: {len(matching)} device(s) "
            f"match; available: {available}"
        )
    return matching[index]


def fingerprint(choice: DeviceChoice) -> DeviceFingerprint:
    """Everything that decides whether a compiled binary is valid: a driver or device change gives another id."""
    p, d = choice.platform, choice.device
    return DeviceFingerprint(
        platform_name=p.name.strip(),
        platform_vendor=p.vendor.strip(),
        platform_version=p.version.strip(),
        device_name=d.name.strip(),
        device_vendor=d.vendor.strip(),
        device_version=d.version.strip(),
        driver_version=d.driver_version.strip(),
        address_bits=int(d.address_bits),
        little_endian=bool(d.endian_little),
        engine_version=__version__,
    )


def unregistered_vendor_libraries() -> dict[str, str]:
    """Vendor OpenCL libraries installed on disk but not named by any ICD file, so OpenCL cannot list them."""
    if not sys.platform.startswith("linux"):
        return {}
    icd_dirs = settings.icd_vendor_dirs()
    registered = ""
    for directory in icd_dirs:
        for icd in glob.glob(os.path.join(directory, "*.icd")) if directory else []:
            try:
                with open(icd, encoding="utf-8", errors="replace") as f:
                    registered += f.read()
            except OSError:
                continue
    found = {}
    for vendor, paths in VENDOR_LIBRARIES.items():
        for path in paths:
            if os.path.exists(path) and os.path.basename(path) not in registered:
                found[vendor] = path
                break
    return found


def registration_commands(library: str) -> str:
    name = os.path.basename(library).split(".")[0].replace("lib", "", 1)
    return f"mkdir -p /etc/OpenCL/vendors && echo {library} > /etc/OpenCL/vendors/{name}.icd"


def _registration_hint() -> str:
    libs = unregistered_vendor_libraries()
    if not libs:
        return ""
    return "".join(
        f"; {vendor}'s OpenCL driver {lib} is installed but not registered with the ICD loader: "
        f"run `{registration_commands(lib)}`"
        for vendor, lib in libs.items()
    )


@contextmanager
def device_step(step: str) -> Iterator[None]:
    """Re-raises OpenCL failures as DeviceError naming the step that failed."""
    try:
        yield
    except MaceError:
        raise
    except (cl.Error, MemoryError) as exc:
        hint = ""
        if "unknown target CPU" in str(exc):  # pocl's LLVM predates this CPU (pocl-binary-distribution 3.0 on Zen 5)
            hint = ("; this pocl's LLVM does not know this CPU: use a pocl built for it (Debian/Ubuntu: apt install "
                    "pocl-opencl-icd), or choose another device with --device")
        raise DeviceError(f"OpenCL error while {step}: {exc}{hint}") from exc
