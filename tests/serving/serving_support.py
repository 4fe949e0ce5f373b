"""Helpers of the serving tests: a server in a thread, model configs."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

import mace

ROOT = Path(__file__).resolve().parents[2]
SQUEEZENET_ONNX = ROOT / "examples" / "models" / "squeezenet1_1.onnx"
RNG = np.random.default_rng(0)


def tiny_onnx() -> onnx.ModelProto:
    """y = relu(x @ w + b), x: [batch, 4] with a named (varying) batch dim; also z = x * 2 (a second output)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], RNG.standard_normal(12).astype(np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], RNG.standard_normal(3).astype(np.float32))
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"]), helper.make_node("Mul", ["x", "two"], ["z"])]
    graph = helper.make_graph(nodes, "tiny", [x], [y, z], [w, b, two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def follow_stderr(proc: Any, until: Any) -> list[str]:
    """The lines of ``proc``'s stderr up to the first for which ``until(line)`` holds (all, if none does); a thread
    keeps appending the rest to the same list."""
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if until(line):
            break
    threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True).start()
    return lines


def listening_url(lines: list[str]) -> str:
    found = re.search(r"listening on (http://\S+)", "".join(lines))
    return found.group(1) if found else ""


class ThreadServer:
    """uvicorn serving create_app(models, settings) on a free port of 127.0.0.1, in a thread."""

    def __init__(self, models: Sequence[Any], settings: Any = None) -> None:
        import uvicorn

        from mace.serving.app import create_app

        self.app = create_app(models, settings)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, ready: bool = True, timeout: float = 60.0) -> ThreadServer:
        import httpx

        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://{self.url}/v2/health/ready", timeout=2)
                if not ready or r.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("the server did not get ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def engine_config(path: Path, name: str | None = None, device: str = "cpu", wrap: Any = None) -> Any:
    from mace.serving.batcher import ModelConfig

    def load() -> Any:
        engine = mace.Engine(path, device=device)
        return wrap(engine) if wrap is not None else engine

    return ModelConfig(name or path.stem, load, str(path))
