"""Inputs and outputs through page-locked host memory (staging.HostStaging, the default on discrete GPUs): the same
results as pageable numpy arrays, every input form accepted as before, and no run's arrays shared with the caller
or with another run."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

from mace.errors import InputError
from mace.model.ir import Graph, Node, TensorInfo


def _graph() -> Graph:
    """y = relu(x) * 3 + i (an int input cast to float), and z: y as [6, 4] (an output that aliases y's buffer)."""
    t = {"x": TensorInfo("x", (2, 3, 4), "float32"), "i": TensorInfo("i", (1, 4), "int64"),
         "r": TensorInfo("r", (2, 3, 4), "float32"), "s": TensorInfo("s", (2, 3, 4), "float32"),
         "f": TensorInfo("f", (1, 4), "float32"), "y": TensorInfo("y", (2, 3, 4), "float32"),
         "shape": TensorInfo("shape", (2,), "int64"), "z": TensorInfo("z", (6, 4), "float32"),
         "three": TensorInfo("three", (), "float32")}
    nodes = [Node("Relu", "relu", ["x"], ["r"]), Node("Mul", "mul", ["r", "three"], ["s"]),
             Node("Cast", "cast", ["i"], ["f"], {"to": 1}), Node("Add", "add", ["s", "f"], ["y"]),
             Node("Reshape", "reshape", ["y", "shape"], ["z"])]
    constants = {"three": np.asarray(3.0, np.float32), "shape": np.asarray([6, 4], np.int64)}
    return Graph("staged", [t["x"], t["i"]], [t["y"], t["z"]], nodes, constants, t)


def _executor(opencl_queue: Any, staging: bool | None) -> Any:
    import pyopencl as cl

    from mace.opencl.executor import Executor

    ctx = opencl_queue.context
    return Executor(_graph(), ctx, opencl_queue, lambda s, o: cl.Program(ctx, s).build(options=o),
                    host_staging=staging)


def _expected(x: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (np.maximum(x.astype(np.float32), 0) * 3 + i.astype(np.float32)).astype(np.float32)


@pytest.mark.parametrize("piece_bytes", [None, 16])
def test_staged_runs_match_pageable_ones_and_own_their_outputs(opencl_queue: Any, monkeypatch: Any,
                                                               piece_bytes: int | None) -> None:
    """Whole arrays copied at once, and (piece_bytes 16) in pieces by the copy threads, each uploaded at its offset
    (a float64 input cast piece by piece; a transposed one is copied whole)."""
    from mace.opencl import staging

    if piece_bytes:
        monkeypatch.setattr(staging, "PIECE_BYTES", piece_bytes)
        assert len(staging.pieces(24, 4)) == 6
    staged, plain = _executor(opencl_queue, True), _executor(opencl_queue, False)
    assert staged.staging is not None and plain.staging is None
    assert sorted(staged.staging.arrays) == ["i", "x", "y", "z"]
    rng = np.random.default_rng(3)
    # float64 and a transposed (non-contiguous) view: cast and copied as ascontiguousarray(dtype=) does
    x = rng.standard_normal((4, 3, 2)).transpose(2, 1, 0)
    i = np.asarray([[1, -2, 3, 40]], np.int64)
    first = staged.run({"x": x, "i": i})
    np.testing.assert_array_equal(first["y"], plain.run({"x": x, "i": i})["y"])
    np.testing.assert_allclose(first["y"], _expected(x, i), rtol=1e-6)
    np.testing.assert_array_equal(first["z"], first["y"].reshape(6, 4))
    assert first["y"].dtype == np.float32 and first["z"].shape == (6, 4)
    kept = first["y"].copy()
    x2 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    contiguous = staged.run({"x": x2.astype(np.float64), "i": i})
    np.testing.assert_array_equal(contiguous["y"], plain.run({"x": x2, "i": i})["y"])
    second = staged.run({"x": x2, "i": np.zeros((1, 4), np.int64)})
    np.testing.assert_array_equal(first["y"], kept)  # the next run wrote its own arrays, not the first run's
    for out in (*first.values(), *second.values()):
        assert not any(np.shares_memory(out, a) for a in staged.staging.arrays.values())
    np.testing.assert_allclose(second["y"], _expected(x2, np.zeros((1, 4))), rtol=1e-6)
    # an input of shape (4,) for (1, 4) is accepted as before; a wrong shape is refused, naming the input
    np.testing.assert_array_equal(staged.run({"x": x2, "i": np.zeros(4, np.int64)})["y"], second["y"])
    with pytest.raises(InputError, match=r"input 'x' has shape \(3, 2, 4\)"):
        staged.run({"x": np.zeros((3, 2, 4), np.float32), "i": i})


def test_staging_is_the_default_only_where_device_memory_is_not_the_hosts(opencl_queue: Any) -> None:
    executor = _executor(opencl_queue, None)
    assert (executor.staging is not None) == (not opencl_queue.device.host_unified_memory)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_makes_its_own_copy_threads() -> None:
    """The copy threads are the process's: a child forked after they started has none of them, and would wait on its
    first staged copy for ever if it took its parent's pool."""
    from mace.opencl import staging

    assert staging.copy_pool().submit(lambda: 1).result(timeout=5) == 1
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if its pool runs work
        try:
            os._exit(0 if staging.copy_pool().submit(lambda: 42).result(timeout=5) == 42 else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_each_piece_is_uploaded_once_its_copy_has_landed(opencl_queue: Any, monkeypatch: Any) -> None:
    """An upload is enqueued only after its piece's copy is done: each piece as enqueued (slow copies on the
    threads, 16-byte pieces) already holds its share of the input, and the pieces cover it."""
    import pyopencl as cl

    from mace.opencl import staging

    monkeypatch.setattr(staging, "PIECE_BYTES", 16)
    executor = _executor(opencl_queue, True)
    stage = executor.staging.arrays["x"]
    copyto, enqueue_copy = np.copyto, cl.enqueue_copy
    uploads: list[tuple[int, np.ndarray]] = []

    def slow_copyto(dst: np.ndarray, src: np.ndarray, **kwargs: Any) -> None:
        time.sleep(0.01)
        copyto(dst, src, **kwargs)

    def spy(queue: Any, dest: Any, src: Any, **kwargs: Any) -> Any:
        if isinstance(src, np.ndarray) and np.shares_memory(src, stage):
            uploads.append((kwargs.get("dst_offset", 0) // stage.itemsize, src.copy()))
        return enqueue_copy(queue, dest, src, **kwargs)

    monkeypatch.setattr(np, "copyto", slow_copyto)
    monkeypatch.setattr(cl, "enqueue_copy", spy)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) + 1
    got = executor.run({"x": x, "i": np.zeros((1, 4), np.int64)})
    flat = x.reshape(-1)
    assert len(uploads) == 6 and sum(piece.size for _, piece in uploads) == flat.size
    for start, piece in uploads:
        np.testing.assert_array_equal(piece, flat[start:start + piece.size])
    np.testing.assert_allclose(got["y"], _expected(x, np.zeros((1, 4))), rtol=1e-6)


def test_a_refused_page_locked_allocation_leaves_its_tensor_pageable(opencl_queue: Any, monkeypatch: Any,
                                                                       caplog: Any) -> None:
    import pyopencl as cl

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("no page-locked memory left")

    monkeypatch.setattr(cl, "enqueue_map_buffer", refuse)
    with caplog.at_level("WARNING", logger="mace.opencl"):
        executor = _executor(opencl_queue, True)
    assert executor.staging is not None and executor.staging.arrays == {}
    assert "tensor x: no page-locked host memory for its 0.0 MB" in caplog.text
    x, i = np.ones((2, 3, 4), np.float32), np.asarray([[1, 2, 3, 4]], np.int64)
    np.testing.assert_allclose(executor.run({"x": x, "i": i})["y"], _expected(x, i), rtol=1e-6)
