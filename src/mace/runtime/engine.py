"""mace.Engine: load a model, pick a runtime, check inputs, run; tune and profile where the runtime can.

A model with fixed input shapes has one runtime. A dynamic model (converted without fixing every input dimension)
has one per concrete shape, made when the shape is first met and kept in a bounded LRU (specializations.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mace import settings
from mace.errors import InputError, MaceError, TuningError
from mace.model import modelfile
from mace.model.dynamic import DynamicModel
from mace.model.ir import Graph, TensorInfo
from mace.model.samples import sample_inputs
from mace.model.shapes import Dim, ShapeSpec
from mace.runtime.registry import Runtime, create_runtime
from mace.runtime.specializations import DEFAULT_CAPACITY, Specializations

Shapes = Mapping[str, Sequence[int]]


class Engine:
    """Runs a converted model on a device.

    >>> import mace, numpy as np
    >>> engine = mace.Engine("mobilenet_v2.mace", device="opencl")          # doctest: +SKIP
    >>> out = engine.run({"input": np.zeros((1, 3, 224, 224), np.float32)})  # doctest: +SKIP
    >>> out["output"].shape                                                  # doctest: +SKIP
    (1, 1000)

    device: "cpu" (numpy reference), "opencl" / "gpu" (a GPU if one is listed, else pocl's CPU device),
    or "opencl:<platform substring>[:<device index>]". With MACE_TUNING=1 an OpenCL engine tunes itself once it is
    built (see tune()). A dynamic model keeps up to ``max_specializations`` shapes resident (least recently used
    evicted); ``warm_up(shapes=[...])`` builds them ahead of time.
    """

    def __init__(self, model: str | os.PathLike[str] | Graph | DynamicModel, device: str = "cpu",
                 gpu_context: Any = None, max_specializations: int = DEFAULT_CAPACITY) -> None:
        loaded = model if isinstance(model, (Graph, DynamicModel)) else modelfile.load(Path(model))
        self.device = device
        self._specializations: Specializations | None = None
        self._runtime: Runtime | None = None
        self.graph: Graph | None = None  # the static graph; for a dynamic model, the one that ran last
        if isinstance(loaded, DynamicModel):
            self.model: DynamicModel | None = loaded
            label = str(model) if isinstance(model, (str, os.PathLike)) else "MODEL.mace"
            self._specializations = Specializations(loaded, device, gpu_context, max_specializations, label)
            self._input_dtypes = dict(loaded.dtypes)
            self._specs = {s.input: s for s in loaded.specs}
        else:
            self.model = None
            self.graph = loaded
            self._runtime = create_runtime(loaded, device, gpu_context)
            self._input_dtypes = {t.name: t.dtype for t in loaded.inputs}
            self._specs = {t.name: ShapeSpec(t.name, tuple(Dim(v, v) for v in t.shape)) for t in loaded.inputs}
            if settings.tuning_at_start() and self._runtime.name == "opencl":
                self.tune()

    # -- what the model takes and gives -----------------------------------------------------------------------------
    @property
    def dynamic(self) -> bool:
        return self._specializations is not None

    @property
    def input_specs(self) -> dict[str, ShapeSpec]:
        """The admissible shapes of each input (all fixed for a static model)."""
        return dict(self._specs)

    @property
    def inputs(self) -> list[TensorInfo]:
        """Name, shape and dtype of each input; a dynamic model lists its smallest admissible shapes."""
        if self.graph is not None and not self.dynamic:
            return list(self.graph.inputs)
        return [TensorInfo(name, spec.example(), self._input_dtypes[name]) for name, spec in self._specs.items()]

    @property
    def outputs(self) -> list[TensorInfo]:
        if self.graph is not None:
            return list(self.graph.outputs)
        assert self.model is not None
        return [TensorInfo(name, (), "float32") for name in self.model.outputs]

    @property
    def stats(self) -> dict[str, Any]:
        """What happened: programs from source / from cache, build seconds, cache files read and written, warnings,
        memory, tuned variants and launches; for a dynamic model also the resident shapes and the counters summed
        over every specialization made."""
        if self._specializations is not None:
            return self._specializations.stats()
        assert self._runtime is not None
        return self._runtime.stats

    # -- running ----------------------------------------------------------------------------------------------------
    def warm_up(self, shapes: Sequence[Shapes] | None = None) -> None:
        """Build (or load) everything the model needs and run it once, so the first real run is fast. A dynamic
        model builds one specialization per entry of ``shapes`` (input name -> shape)."""
        if self._specializations is None:
            assert self._runtime is not None
            self._runtime.warm_up()
            return
        if not shapes:
            raise MaceError(f"{self._specializations.model.name} is a dynamic model: warm_up(shapes=[{{input: shape, "
                            "...}, ...]) names the shapes to build")
        for entry in shapes:
            self._specialized(self._complete(entry))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model: input name -> array in, output name -> array out."""
        self._check_feeds(feeds)
        graph, runtime = self._select({name: value.shape for name, value in feeds.items()})
        constant_outputs = {t.name: np.array(graph.constants[t.name]) for t in graph.outputs
                            if t.name in graph.constants}
        if len(constant_outputs) == len(graph.outputs):
            return constant_outputs
        outputs = runtime.run({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        outputs.update(constant_outputs)
        return {t.name: outputs[t.name] for t in graph.outputs}

    def tune(self, repeats: int = 5, progress: Callable[[int, int, Any], None] | None = None,
             variants: bool = True, shapes: Shapes | None = None) -> dict[str, Any]:
        """Measure kernel variants (tilings) per node and work-group sizes per launch, keep the fastest, and save
        them to the tuned-parameters file; the next engine for this model and device plans them in. Returns a
        summary (variants chosen, launches tuned, device time before and after). ``progress(index, total, what)``
        is called as it goes. A dynamic model tunes the specialization of ``shapes``. OpenCL only."""
        _, runtime = self._select(self._complete(shapes) if shapes is not None else None)
        tune = getattr(runtime, "tune", None)
        if tune is None:
            raise TuningError(f"device {self.device!r} has nothing to tune: tuning is for OpenCL devices")
        summary: dict[str, Any] = tune(repeats=repeats, progress=progress, variants=variants)
        return summary

    def profile(self, feeds: dict[str, np.ndarray] | None = None, repeats: int = 10) -> list[dict[str, Any]]:
        """Median device time of every kernel launch over ``repeats`` runs (OpenCL profiling events): one row per
        launch with node, op, kernel, global/local size and microseconds. ``feeds`` default to seeded random
        inputs (a dynamic model: of its smallest shapes). OpenCL only."""
        if feeds is None:
            feeds = sample_inputs(self.inputs)
        self._check_feeds(feeds)
        _, runtime = self._select({name: value.shape for name, value in feeds.items()})
        profile = getattr(runtime, "profile", None)
        if profile is None:
            raise TuningError(f"device {self.device!r} has no per-launch profile: profiling is for OpenCL devices")
        rows: list[dict[str, Any]] = profile(feeds, repeats)
        return rows

    # -- internals --------------------------------------------------------------------------------------------------
    def _select(self, shapes: Shapes | None) -> tuple[Graph, Runtime]:
        if self._specializations is None:
            assert self.graph is not None and self._runtime is not None
            return self.graph, self._runtime
        if shapes is None:
            if self.graph is None or self._specializations.last is None:
                raise MaceError("this dynamic model has not run yet: pass shapes={input: shape, ...}")
            return self.graph, self._specializations.last
        return self._specialized(shapes)

    def _specialized(self, shapes: Shapes) -> tuple[Graph, Runtime]:
        assert self._specializations is not None
        graph, runtime = self._specializations.get(shapes)
        self.graph = graph
        return graph, runtime

    def _complete(self, shapes: Shapes) -> dict[str, tuple[int, ...]]:
        """Shapes for every input: ``shapes`` names the varying ones at least; fixed inputs may be left out."""
        out = {}
        for name, spec in self._specs.items():
            if name in shapes:
                out[name] = tuple(int(v) for v in shapes[name])
            elif spec.fixed:
                out[name] = spec.example()
            else:
                raise InputError(f"no shape given for input {name!r} ({spec.describe()})")
        unknown = sorted(set(shapes) - set(self._specs))
        if unknown:
            raise InputError(f"unknown input(s) {unknown}; the model takes {sorted(self._specs)}")
        return out

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        def listing() -> str:
            return ", ".join(f"{name}: {self._input_dtypes[name]}{spec.describe()}"
                             for name, spec in self._specs.items())

        if not isinstance(feeds, dict):
            raise InputError(f"inputs must be a dict of name -> numpy array; expected {listing()}")
        unknown = sorted(set(feeds) - set(self._specs))
        missing = sorted(set(self._specs) - set(feeds))
        if unknown or missing:
            parts = ([f"unknown input(s) {unknown}"] if unknown else []) + (
                [f"missing input(s) {missing}"] if missing else [])
            raise InputError(f"{'; '.join(parts)}; expected {listing()}")
        for name, value in feeds.items():
            if not isinstance(value, np.ndarray):
                raise InputError(f"input {name!r} must be a numpy array, got {type(value).__name__}")
            spec = self._specs[name]
            # a varying input's shape is checked against its ranges by Specializations.get, once per new shape
            if spec.fixed and tuple(value.shape) != spec.example():
                raise InputError(f"input {name!r} has shape {list(value.shape)}, expected {list(spec.example())}")
            dtype = self._input_dtypes[name]
            if value.dtype != np.dtype(dtype):
                raise InputError(f"input {name!r} has dtype {value.dtype}, expected {dtype} "
                                 f"(convert with x.astype(np.{dtype}))")

