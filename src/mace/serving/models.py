"""What a server serves, as plain data: a model file, its name, the device and the program caches to use.

``ModelSource`` is what ``mace serve MODEL.mace[:NAME]`` and a Ray Serve replica both start from: the CLI builds it
from its arguments, Ray ships it to every replica (it is a frozen dataclass of strings), and ``config()`` turns it
into the ``ModelConfig`` whose ``load`` makes the engine on the model's worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mace.errors import MaceError
from mace.serving.batcher import ModelConfig


@dataclass(frozen=True)
class ModelSource:
    """A model to serve. ``storage_path``: the writable program cache directory (None: the default, from
    MACE_STORAGE_PATH); ``binary_paths``: read-only precompiled program files, searched after it."""

    path: str
    name: str
    device: str = "cpu"
    storage_path: str | None = None
    binary_paths: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, **options: Any) -> ModelSource:
        """``MODEL.mace[:NAME]``: NAME defaults to the file's stem.

        >>> ModelSource.parse("models/squeezenet.mace:sq").name
        'sq'
        >>> ModelSource.parse("models/squeezenet.mace").name
        'squeezenet'
        """
        path, sep, name = text.rpartition(":")
        if not sep or not name or "/" in name or not path:
            path, name = text, Path(text).stem
        return cls(path, name, **options)

    def check(self) -> None:
        if not Path(self.path).is_file():
            raise MaceError(f"model {self.name!r}: no such file {self.path!r}")

    def describe(self) -> str:
        return f"{self.path} on {self.device}"

    def load(self) -> Any:
        """The engine, warm-up left to the worker. Imports the runtime here: a Ray driver that only binds a
        deployment needs none of it."""
        from mace.runtime.engine import Engine
        from mace.runtime.registry import device_kind

        context = None
        if device_kind(self.device) == "opencl":  # (only then pyopencl is imported)
            from mace.opencl.context import context_for

            context = context_for(self.device, self.storage_path, self.binary_paths)
        return Engine(self.path, device=self.device, gpu_context=context)

    def config(self) -> ModelConfig:
        return ModelConfig(self.name, self.load, self.describe())
