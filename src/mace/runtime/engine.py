"""mace.Engine: load a model, pick a runtime, check inputs, run; tune and profile where the runtime can."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mace import settings
from mace.errors import InputError, TuningError
from mace.model import modelfile
from mace.model.ir import Graph, TensorInfo
from mace.model.samples import sample_inputs
from mace.runtime.registry import Runtime, create_runtime


class Engine:
    """Runs a converted model on a device.

    >>> import mace, numpy as np
    >>> engine = mace.Engine("mobilenet_v2.mace", device="opencl")          # doctest: +SKIP
    >>> out = engine.run({"input": np.zeros((1, 3, 224, 224), np.float32)})  # doctest: +SKIP
    >>> out["output"].shape                                                  # doctest: +SKIP
    (1, 1000)

    device: "cpu" (numpy reference), "opencl" / "gpu" (a GPU if one is listed, else pocl's CPU device),
    or "opencl:<platform substring>[:<device index>]". With MACE_TUNING=1 an OpenCL engine tunes itself once it is
    built (see tune()).
    """

    def __init__(self, model: str | os.PathLike[str] | Graph, device: str = "cpu", gpu_context: Any = None) -> None:
        self.graph = model if isinstance(model, Graph) else modelfile.load(Path(model))
        self.device = device
        self._runtime: Runtime = create_runtime(self.graph, device, gpu_context)
        if settings.tuning_at_start() and self._runtime.name == "opencl":
            self.tune()

    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self.graph.inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self.graph.outputs)

    @property
    def stats(self) -> dict[str, Any]:
        """What happened: programs from source / from cache, build seconds, cache files read and written, warnings,
        memory, tuned variants and launches."""
        return self._runtime.stats

    def warm_up(self) -> None:
        """Build (or load) everything the model needs and run it once, so the first real run is fast."""
        self._runtime.warm_up()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model: input name -> array in, output name -> array out."""
        self._check_feeds(feeds)
        constant_outputs = {t.name: np.array(self.graph.constants[t.name]) for t in self.graph.outputs
                            if t.name in self.graph.constants}
        if len(constant_outputs) == len(self.graph.outputs):
            return constant_outputs
        outputs = self._runtime.run({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        outputs.update(constant_outputs)
        return {t.name: outputs[t.name] for t in self.graph.outputs}

    def tune(self, repeats: int = 5, progress: Callable[[int, int, Any], None] | None = None,
             variants: bool = True) -> dict[str, Any]:
        """Measure kernel variants (tilings) per node and work-group sizes per launch, keep the fastest, and save
        them to the tuned-parameters file; the next engine for this model and device plans them in. Returns a
        summary (variants chosen, launches tuned, device time before and after). ``progress(index, total, what)``
        is called as it goes. OpenCL only."""
        tune = getattr(self._runtime, "tune", None)
        if tune is None:
            raise TuningError(f"device {self.device!r} has nothing to tune: tuning is for OpenCL devices")
        summary: dict[str, Any] = tune(repeats=repeats, progress=progress, variants=variants)
        return summary

    def profile(self, feeds: dict[str, np.ndarray] | None = None, repeats: int = 10) -> list[dict[str, Any]]:
        """Median device time of every kernel launch over ``repeats`` runs (OpenCL profiling events): one row per
        launch with node, op, kernel, global/local size and microseconds. ``feeds`` default to seeded random
        inputs. OpenCL only."""
        profile = getattr(self._runtime, "profile", None)
        if profile is None:
            raise TuningError(f"device {self.device!r} has no per-launch profile: profiling is for OpenCL devices")
        if feeds is None:
            feeds = sample_inputs(self.graph)
        self._check_feeds(feeds)
        rows: list[dict[str, Any]] = profile(feeds, repeats)
        return rows

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        expected = {t.name: t for t in self.graph.inputs}

        def listing() -> str:
            return ", ".join(f"{t.name}: {t.dtype}{list(t.shape)}" for t in self.graph.inputs)

        if not isinstance(feeds, dict):
            raise InputError(f"inputs must be a dict of name -> numpy array; expected {listing()}")
        unknown = sorted(set(feeds) - set(expected))
        missing = sorted(set(expected) - set(feeds))
        if unknown or missing:
            parts = ([f"unknown input(s) {unknown}"] if unknown else []) + (
                [f"missing input(s) {missing}"] if missing else [])
            raise InputError(f"{'; '.join(parts)}; expected {listing()}")
        for name, value in feeds.items():
            info = expected[name]
            if not isinstance(value, np.ndarray):
                raise InputError(f"input {name!r} must be a numpy array, got {type(value).__name__}")
            if tuple(value.shape) != info.shape:
                raise InputError(f"input {name!r} has shape {list(value.shape)}, expected {list(info.shape)}")
            if value.dtype != np.dtype(info.dtype):
                raise InputError(f"input {name!r} has dtype {value.dtype}, expected {info.dtype} "
                                 f"(convert with x.astype(np.{info.dtype}))")

