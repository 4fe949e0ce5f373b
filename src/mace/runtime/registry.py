"""The interface every runtime implements, and the registry that maps a device name to one."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from mace.errors import DeviceError
from mace.model.ir import Graph


class Runtime(Protocol):
    """Runs one graph on one device: weights are prepared once at construction, then run() is called many times."""

    name: str
    stats: dict[str, Any]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def warm_up(self) -> None: ...


# device prefix -> "module:factory"; a factory takes (graph, device_spec, gpu_context) and returns a Runtime.
# Adding a runtime adds a line here and a module, nothing else.
RUNTIMES = {
    "cpu": "mace.runtime.cpu:create_runtime",
    "opencl": "mace.opencl.runtime:create_runtime",
}
ALIASES = {"gpu": "opencl", "numpy": "cpu", "reference": "cpu"}


def device_kind(device: str) -> str:
    """The registry name of a device string ("gpu:nvidia" -> "opencl"); an unknown one raises DeviceError."""
    if not isinstance(device, str):
        raise DeviceError(f"device must be a string such as 'cpu' or 'opencl:nvidia:0', not {type(device).__name__}")
    kind = device.partition(":")[0].strip().lower()
    kind = ALIASES.get(kind, kind)
    if kind not in RUNTIMES:
        known = sorted(set(RUNTIMES) | set(ALIASES))
        raise DeviceError(f"unknown device {device!r}; use one of {', '.join(known)} (e.g. 'opencl:nvidia:0')")
    return kind


def create_runtime(graph: Graph, device: str, gpu_context: Any = None) -> Runtime:
    module_name, factory_name = RUNTIMES[device_kind(device)].split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    runtime: Runtime = factory(graph, device.partition(":")[2], gpu_context)
    return runtime
