"""A run's inputs and outputs through page-locked host memory, the executor's default on discrete GPUs.

From numpy's pageable memory a discrete GPU's driver first copies through bounce buffers of its own, at about one
CPU core's memcpy speed, before its DMA can start; from page-locked (pinned) memory the DMA reads and writes directly.
So each input is copied into a pinned array of its own by a few threads, piece by piece, and each piece's upload is
enqueued as soon as it is there (the DMA of one overlaps the copies of the next); each output is read into its pinned
array and copied out by the same threads. The arrays are the staging's, written again by the next run: a run
returns copies of them. A tensor whose page-locked allocation fails stays on the pageable path (a warning).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

import numpy as np
import pyopencl as cl

log = logging.getLogger("mace.opencl")

# A copy thread's piece of an array; one under two pieces is copied by the caller's thread alone (a thread hand-off
# costs tens of microseconds, the copy of a piece about 0.1-0.3 ms)
PIECE_BYTES = 2 << 20
COPY_THREADS = 8  # at most; memcpy bandwidth saturates well before a server's core count

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()  # a forked child has none of its parent's threads: it makes its own


os.register_at_fork(after_in_child=_forget_pool)


def copy_pool() -> ThreadPoolExecutor:
    """The process's copy threads, made on first use (numpy releases the GIL while it copies)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(min(COPY_THREADS, os.cpu_count() or 1), thread_name_prefix="mace-copy")
        return _pool


def pieces(size: int, itemsize: int) -> list[tuple[int, int]]:
    """[start, stop) element ranges of about PIECE_BYTES that cover ``size`` elements.

        >>> pieces(10, 4), len(pieces(3 << 20, 4)), pieces(0, 4)
        ([(0, 10)], 6, [(0, 0)])
    """
    count = max(1, size * itemsize // PIECE_BYTES)
    if count < 2:
        return [(0, size)]
    bounds = [size * i // count for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


class HostStaging:
    """Pinned host arrays (``arrays[name]``) for the tensors named in ``tensors``: ALLOC_HOST_PTR buffers, each mapped
    once for the staging's life. Tensors of no bytes get none, nor those whose allocation the driver refuses."""

    def __init__(self, context: cl.Context, queue: cl.CommandQueue,
                 tensors: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._buffers: list[cl.Buffer] = []  # the mapped buffers, alive as long as their arrays
        flags = cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR
        access = cast(cl.map_flags, cl.map_flags.READ | cl.map_flags.WRITE)
        for name, (shape, dtype) in tensors.items():
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if not nbytes:
                continue
            try:
                buffer = cl.Buffer(context, flags, nbytes)
                array, _ = cl.enqueue_map_buffer(queue, buffer, access, 0, tuple(shape), dtype, is_blocking=True)
            except (cl.Error, MemoryError) as exc:  # (page-locked memory is a scarce resource; pageable still works)
                log.warning("tensor %s: no page-locked host memory for its %.1f MB (%s); it is copied from pageable "
                            "memory", name, nbytes / 1e6, exc)
                continue
            self._buffers.append(buffer)
            self.arrays[name] = array

    def write(self, queue: cl.CommandQueue, buffer: cl.Buffer, name: str, data: np.ndarray) -> None:
        """Copies ``data`` (of the tensor's shape; cast as ``np.copyto(casting="unsafe")`` does) into ``name``'s array
        and enqueues its upload to ``buffer``, non-blocking: the array is not written again before the next run."""
        stage = self.arrays[name]
        spans = pieces(stage.size, stage.itemsize) if data.flags.c_contiguous else [(0, stage.size)]
        if len(spans) == 1:
            np.copyto(stage, data, casting="unsafe")
            cl.enqueue_copy(queue, buffer, stage, is_blocking=False)
            return
        into = stage.reshape(-1)
        copies = _copy_pieces(into, data.reshape(-1), spans)
        try:
            for (start, stop), copy in zip(spans, copies):
                copy.result()
                cl.enqueue_copy(queue, buffer, into[start:stop], dst_offset=start * stage.itemsize, is_blocking=False)
        finally:
            _wait(copies)  # (after a failure too: no thread may still write the array when the next run starts)

    def read(self, name: str, dtype: str | np.dtype) -> np.ndarray:
        """A copy of ``name``'s array as ``dtype``, once its read has completed (the next run overwrites the array)."""
        stage = self.arrays[name]
        out = np.empty(stage.shape, dtype)
        spans = pieces(stage.size, max(stage.itemsize, out.itemsize))
        if len(spans) == 1:
            np.copyto(out, stage, casting="unsafe")
            return out
        copies = _copy_pieces(out.reshape(-1), stage.reshape(-1), spans)
        _wait(copies)
        for copy in copies:
            copy.result()  # (re-raises a copy's failure)
        return out


def _copy_pieces(into: np.ndarray, source: np.ndarray, spans: list[tuple[int, int]]) -> list[Future[None]]:
    """into[a:b] = source[a:b] (cast as casting="unsafe" does) for each span, on the copy threads."""
    return [copy_pool().submit(np.copyto, into[a:b], source[a:b], casting="unsafe") for a, b in spans]


def _wait(copies: list[Future[None]]) -> None:
    for copy in copies:
        copy.exception()  # waits; the caller re-raises what matters
