"""The interface every runtime implements, and the registry that maps a device name to one."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from mace.errors import DeviceError
from mace.model.ir import Graph


class Backend(Protocol):
    """A runtime for one graph: weights are prepared once at construction, then run() is called many times."""

    name: str
    stats: dict[str, Any]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def warm_up(self) -> None: ...


# device prefix -> "module:factory"; a factory takes (graph, device_spec, gpu_context) and returns a Backend.
# Adding a runtime adds a line here and a module, nothing else.
BACKENDS = {
    "cpu": "mace.runtime.cpu:create_backend",
    "opencl": "mace.opencl.runtime:create_backend",
}
ALIASES = {"gpu": "opencl", "numpy": "cpu", "reference": "cpu"}


def create_backend(graph: Graph, device: str, gpu_context: Any = None) -> Backend:
    kind, _, rest = device.partition(":")
    kind = ALIASES.get(kind.lower(), kind.lower())
    if kind not in BACKENDS:
        known = sorted(set(BACKENDS) | set(ALIASES))
        raise DeviceError(f"unknown device {device!r}; use one of {', '.join(known)} (e.g. 'opencl:nvidia:0')")
    module_name, factory_name = BACKENDS[kind].split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(graph, rest, gpu_context)
