"""The device targets the converter tests plan for (an H200-like GPU, a 2-core CPU) and the type of the conftest's
``opencl_check`` fixture; a module of its own, since test modules must not import a conftest."""

from __future__ import annotations

from collections.abc import Callable

from transformer_layer import GPU_TARGET_ARGS

from mace.opencl.plan import DeviceTarget

GPU = DeviceTarget(**GPU_TARGET_ARGS)  # type: ignore[arg-type]
CPU = DeviceTarget(is_gpu=False, compute_units=2, local_mem_bytes=1 << 21, max_work_group_size=4096)
OpenCLCheck = Callable[..., None]
