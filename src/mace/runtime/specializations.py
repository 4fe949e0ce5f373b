"""The specializations of a dynamic model: one runtime per concrete input shape, the most recently used kept.

A shape met for the first time is converted (``mace.converter.specialize``) and given a runtime of its own, whose
program comes from the program cache when an earlier process (or ``mace cache build --input-shape``) built it, else
from source: that is logged once per shape with the time it took and the command that precompiles it. The converted
graph is kept too (``GraphCache``: a .mace file per shape in the storage directory), so a later process skips the
conversion (and the onnx import) for a shape it has seen; like every cache, deleting it only costs time. At most
``capacity`` runtimes stay resident (least recently used evicted first), so a stream of shapes keeps memory bounded.
Counters over every specialization made (``totals``) and the resident shapes go into the engine's stats.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mace import settings
from mace.errors import InputError, MaceError, ModelFormatError
from mace.model import modelfile
from mace.model.dynamic import DynamicModel
from mace.model.ir import Graph
from mace.runtime.registry import Runtime, create_runtime
from mace.version import __version__

log = logging.getLogger("mace.runtime")

DEFAULT_CAPACITY = 8
_SUMMED = ("programs_from_source", "programs_from_cache", "program_build_seconds")
GRAPH_CACHE_DIR = "mace_specializations"  # in the storage directory


class GraphCache:
    """Converted graphs of dynamic models, one .mace file per (model, shapes, mace version) in ``directory``."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def path(self, model: DynamicModel, key: str) -> Path | None:
        if self.directory is None:
            return None
        h = hashlib.sha256(b"mace-specialization\0")
        for part in (model.source, model.data_type.encode(), repr(model.output_names).encode(), key.encode(),
                     __version__.encode()):
            h.update(len(part).to_bytes(8, "little") + part)
        return self.directory / f"{h.hexdigest()[:32]}.mace"

    def load(self, model: DynamicModel, key: str, warn: Any) -> Graph | None:
        path = self.path(model, key)
        if path is None or not path.exists():
            return None
        try:
            graph = modelfile.load(path)
        except ModelFormatError as exc:
            warn(f"{exc}; converting shape {key} again")
            return None
        if not isinstance(graph, Graph) or graph.metadata.get("specialization") != key:
            warn(f"{path}: holds another specialization than {key}; converting again")
            return None
        return graph

    def save(self, model: DynamicModel, key: str, graph: Graph, warn: Any) -> None:
        path = self.path(model, key)
        if path is None:
            return
        try:
            modelfile.save(graph, path)
        except OSError as exc:
            warn(f"{path}: cannot keep the converted graph of shape {key} ({exc.strerror or exc}); the next process "
                 "converts it again")


class Specializations:
    def __init__(self, model: DynamicModel, device: str, gpu_context: Any, capacity: int = DEFAULT_CAPACITY,
                 model_path: str = "MODEL") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise MaceError(f"max_specializations {capacity!r} is not a positive integer")
        self.model = model
        self.device = device
        self.gpu_context = gpu_context
        self.capacity = capacity
        self.model_path = model_path
        self.resident: OrderedDict[str, tuple[Graph, Runtime]] = OrderedDict()
        self.totals: dict[str, Any] = {"specializations_made": 0, "specializations_evicted": 0,
                                       "specializations_converted": 0,
                                       **{k: 0 for k in _SUMMED}, "warnings": []}
        self.last: Runtime | None = None
        self.graphs = GraphCache(_storage_directory(gpu_context))

    def get(self, shapes: Mapping[str, Sequence[int]]) -> tuple[Graph, Runtime]:
        """The graph and runtime for these input shapes: resident, or made now (the shapes checked against the specs
        then: a resident key was checked when it was made)."""
        key = self.model.specialization_key(shapes)
        found = self.resident.get(key)
        if found is not None:
            self.resident.move_to_end(key)
            self.last = found[1]
            return found
        problem = self.model.check(shapes)
        if problem is not None:
            raise InputError(problem)
        made = self._make(key, shapes)
        self.resident[key] = made
        while len(self.resident) > self.capacity:
            self.resident.popitem(last=False)  # the runtime and its device buffers go with the last reference
            self.totals["specializations_evicted"] += 1
        self.last = made[1]
        return made

    def _make(self, key: str, shapes: Mapping[str, Sequence[int]]) -> tuple[Graph, Runtime]:
        start = time.perf_counter()
        graph = self.graphs.load(self.model, key, self._warn)
        if graph is None:
            from mace.converter.dynamic import specialize  # onnx loads only when a shape must be converted

            graph = specialize(self.model, shapes)
            self.graphs.save(self.model, key, graph, self._warn)
            self.totals["specializations_converted"] += 1
        runtime = create_runtime(graph, self.device, self.gpu_context)
        runtime.warm_up()  # every kernel launched once: the programs are complete and saved to the cache now
        if self.gpu_context is None:
            self.gpu_context = getattr(runtime, "gpu_context", None)  # one device context for all shapes
        seconds = time.perf_counter() - start
        self.totals["specializations_made"] += 1
        for name in _SUMMED:
            self.totals[name] += runtime.stats.get(name, 0)
        if runtime.stats.get("programs_from_source"):
            flags = " ".join(f"--input-shape {name}={','.join(str(int(v)) for v in shapes[name])}"
                             for name in self.model.input_names)
            message = (f"{self.model.name}: shape {key} was compiled from source ({seconds:.2f} s); precompile it "
                       f"with `mace cache build {self.model_path} {flags} -o mace_cl_compiled_program.bin` or "
                       "engine.warm_up(shapes=[...])")
            self._warn(message)
        return graph, runtime

    def _warn(self, message: str) -> None:
        if message not in self.totals["warnings"]:
            log.warning(message)
            self.totals["warnings"].append(message)

    def stats(self) -> dict[str, Any]:
        current = dict(self.last.stats) if self.last is not None else {}
        warnings = list(current.get("warnings", [])) + [w for w in self.totals["warnings"]
                                                        if w not in current.get("warnings", [])]
        return {**current, **self.totals, "warnings": warnings, "resident_shapes": list(self.resident),
                "max_specializations": self.capacity}


def _storage_directory(gpu_context: Any) -> Path | None:
    """Where converted graphs are kept: beside the program cache of the GPU context, else the default storage
    directory; None when storage is off."""
    storage = getattr(gpu_context, "storage", None)
    base = getattr(storage, "path", None)
    if base is not None:
        return Path(base).parent / GRAPH_CACHE_DIR
    if gpu_context is not None:
        return None  # a context without a writable store: storage is off
    directory = settings.storage_dir()
    return directory / GRAPH_CACHE_DIR if directory is not None else None
