"""Fixtures of the serving tests: converted models, a fresh cache directory, servers in threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx
import pytest

import mace

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from serving_support import SQUEEZENET_ONNX, ThreadServer, tiny_onnx


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("serving")
    onnx.save(tiny_onnx(), folder / "tiny.onnx")
    out = folder / "tiny.mace"
    mace.convert(folder / "tiny.onnx", out)
    return out


@pytest.fixture(scope="session")
def squeezenet_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serving_sq") / "squeezenet.mace"
    mace.convert(SQUEEZENET_ONNX, out)
    return out


@pytest.fixture(autouse=True)
def _storage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MACE_STORAGE_PATH", str(tmp_path / "cache"))


@pytest.fixture
def serve() -> Iterator[Callable[..., ThreadServer]]:
    servers: list[ThreadServer] = []

    def start(models: Sequence[Any], settings: Any = None, ready: bool = True) -> ThreadServer:
        server = ThreadServer(models, settings).start(ready)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


