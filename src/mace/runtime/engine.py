"""mace.Engine: load a model, pick a runtime, check inputs, run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mace.errors import InputError
from mace.model import modelfile
from mace.model.ir import Graph, TensorInfo
from mace.runtime.registry import Backend, create_backend


class Engine:
    """Runs a converted model on a device.

    >>> import mace, numpy as np
    >>> engine = mace.Engine("mobilenet_v2.mace", device="opencl")          # doctest: +SKIP
    >>> out = engine.run({"input": np.zeros((1, 3, 224, 224), np.float32)})  # doctest: +SKIP
    >>> out["output"].shape                                                  # doctest: +SKIP
    (1, 1000)

    device: "cpu" (numpy reference), "opencl" / "gpu" (a GPU if one is listed, else pocl's CPU device),
    or "opencl:<platform substring>[:<device index>]".
    """

    def __init__(self, model: str | os.PathLike[str] | Graph, device: str = "cpu", gpu_context: Any = None) -> None:
        self.graph = model if isinstance(model, Graph) else modelfile.load(Path(model))
        self.device = device
        self.backend: Backend = create_backend(self.graph, device, gpu_context)

    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self.graph.inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self.graph.outputs)

    @property
    def stats(self) -> dict[str, Any]:
        return self.backend.stats

    def warm_up(self) -> None:
        """Build (or load) everything the model needs and run it once, so the first real run is fast."""
        self.backend.warm_up()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model: input name -> array in, output name -> array out."""
        self._check_feeds(feeds)
        constant_outputs = {t.name: np.array(self.graph.constants[t.name]) for t in self.graph.outputs
                             if t.name in self.graph.constants}
        if len(constant_outputs) == len(self.graph.outputs):
            return constant_outputs
        outputs = self.backend.run({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        outputs.update(constant_outputs)
        return {t.name: outputs[t.name] for t in self.graph.outputs}

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
