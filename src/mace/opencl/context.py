"""GPUContextBuilder / GPUContext: the OpenCL device, its queue and where compiled programs are cached.

Named after MACE's API. One GPUContext can be shared by several engines: they share the OpenCL context, the queue
and the cache settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyopencl as cl

from mace import settings
from mace.cachefiles.fingerprint import DeviceFingerprint
from mace.cachefiles.stores import PROGRAM_CACHE_NAME, TUNED_PARAMS_NAME, FileStore, MemoryStore, Store
from mace.errors import SettingError
from mace.opencl.device import DeviceChoice, fingerprint, select_device


@dataclass
class GPUContext:
    """What engines need from the device side. Build it with GPUContextBuilder."""

    choice: DeviceChoice
    context: cl.Context
    queue: cl.CommandQueue
    storage: Store | None
    binary_stores: list[Store] = field(default_factory=list)
    parameter_path: Path | None = None
    cache_key: bytes | None = None
    max_cache_bytes: int | None = None
    tf32: bool = False  # products at TF32 accuracy where the device has the tensor cores (set_tf32)

    @property
    def device(self) -> cl.Device:
        return self.choice.device

    @property
    def fingerprint(self) -> DeviceFingerprint:
        return fingerprint(self.choice)


class GPUContextBuilder:
    """
    >>> import mace
    >>> ctx = (mace.GPUContextBuilder()                       # doctest: +SKIP
    ...        .set_storage_path("/data/app/mace")            # writable cache directory
    ...        .set_opencl_binary_paths(["/app/assets/mace_cl_compiled_program.bin"])  # shipped, read-only
    ...        .finalize())
    >>> engine = mace.Engine("model.mace", device="opencl", gpu_context=ctx)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._storage_dir: Path | None = settings.storage_dir()
        self._binary_paths: list[Path] = []
        self._binary_bytes: list[bytes] = []
        self._parameter_path: Path | None = None
        self._device_spec = ""
        self._cache_key: bytes | None = settings.cache_key()
        self._max_cache_bytes: int | None = settings.max_cache_bytes()
        self._tf32 = settings.tf32()

    def set_storage_path(self, path: str | os.PathLike[str]) -> GPUContextBuilder:
        """Directory of the writable cache; mace_cl_compiled_program.bin is kept there."""
        self._storage_dir = Path(path).expanduser()
        return self

    def disable_storage(self) -> GPUContextBuilder:
        """No writable cache: programs come from the read-only binaries or are built from source every start."""
        self._storage_dir = None
        return self

    def set_opencl_binary_paths(self, paths: list[str | os.PathLike[str]]) -> GPUContextBuilder:
        """Read-only precompiled program files, searched in order after the storage cache."""
        self._binary_paths = [Path(p).expanduser() for p in paths]
        return self

    def set_opencl_binary(self, data: bytes) -> GPUContextBuilder:
        """A read-only program cache held in memory (for apps that embed the file in their package)."""
        self._binary_bytes.append(bytes(data))
        return self

    def set_opencl_parameter_path(self, path: str | os.PathLike[str]) -> GPUContextBuilder:
        """The tuned work-group sizes file (mace_cl_tuned_params.bin)."""
        self._parameter_path = Path(path).expanduser()
        return self

    def set_device(self, spec: str) -> GPUContextBuilder:
        """"" (a GPU if listed, else any OpenCL device) or "<platform substring>[:<index>]"."""
        self._device_spec = spec
        return self

    def set_cache_key(self, key: bytes) -> GPUContextBuilder:
        """Sign the cache with HMAC-SHA256 under this key; unsigned or altered files are then rejected."""
        self._cache_key = bytes(key)
        return self

    def set_max_cache_bytes(self, max_bytes: int | None) -> GPUContextBuilder:
        """Cap the writable cache's program bytes; least recently used programs are evicted on save (None: no cap)."""
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0):
            raise SettingError(f"max_cache_bytes {max_bytes!r} is not a positive integer (None for no cap)")
        self._max_cache_bytes = max_bytes
        return self

    def set_tf32(self, allow: bool = True) -> GPUContextBuilder:
        """Let matrix products and convolutions run on NVIDIA tensor cores at TF32 accuracy (operands rounded to 10
        mantissa bits, about 1e-3 relative error, as PyTorch's cuDNN convolutions by default), in one pass instead of
        the three that keep fp32 accuracy. No change on devices without them (NVIDIA's from sm_80 on have them).
        ``mace cache build`` and ``mace tune`` take it from MACE_TF32."""
        self._tf32 = bool(allow)
        return self

    def finalize(self) -> GPUContext:
        choice = select_device(self._device_spec)
        context = cl.Context([choice.device])
        queue = cl.CommandQueue(context, choice.device)
        storage = FileStore(self._storage_dir / PROGRAM_CACHE_NAME) if self._storage_dir is not None else None
        binaries: list[Store] = [MemoryStore(b, f"<in-memory OpenCL binary #{i}>")
                                 for i, b in enumerate(self._binary_bytes)]
        binaries += [FileStore(p) for p in self._binary_paths]
        parameter_path = self._parameter_path
        if parameter_path is None and self._storage_dir is not None:
            parameter_path = self._storage_dir / TUNED_PARAMS_NAME
        return GPUContext(choice, context, queue, storage, binaries, parameter_path, self._cache_key,
                          self._max_cache_bytes, self._tf32)


def context_for(device: str, storage_path: str | os.PathLike[str] | None = None,
                binary_paths: list[str] | tuple[str, ...] = ()) -> GPUContext | None:
    """The context for a device string as the CLI and the server take it (``opencl[:platform[:index]]``, ``gpu``);
    None for ``cpu``, whose engine needs none."""
    if not device.startswith(("opencl", "gpu")):
        return None
    builder = GPUContextBuilder().set_device(device.partition(":")[2])  # the engine uses this context's device
    if storage_path:
        builder.set_storage_path(storage_path)
    if binary_paths:
        builder.set_opencl_binary_paths(list(binary_paths))
    return builder.finalize()
