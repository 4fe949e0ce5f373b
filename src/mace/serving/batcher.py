"""One model being served: a bounded queue and the one worker thread that owns its engine.

The engine is not thread-safe, so everything that touches it (loading, warming, running) happens on the worker.
Requests whose inputs carry the batch on axis 0 (a dynamic model whose every input has a varying dim 0) are grouped:
the worker takes the first queued request, then waits up to ``max_delay_ms`` for more with the same per-item shapes,
up to ``max_batch`` rows, concatenates them (padded with zeros to the smallest ``batch_sizes`` entry that fits, when
given), runs once and splits the outputs back. Anything else runs one request at a time.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mace.serving.metrics import ServerMetrics
from mace.serving.protocol import TensorMeta, datatype_of

log = logging.getLogger("mace.serving")

Feeds = dict[str, np.ndarray]


class QueueFull(Exception):
    """The model's queue holds --max-queue requests already."""


@dataclass(frozen=True)
class BatchSettings:
    max_batch: int = 8
    max_delay_ms: float = 2.0
    batch_sizes: tuple[int, ...] = ()  # precompiled batch sizes: pad up to the nearest; empty: exact batches
    max_queue: int = 256


@dataclass(frozen=True)
class ModelConfig:
    """A model to serve: its name and a function that makes its engine (called on the model's worker thread)."""

    name: str
    load: Callable[[], Any]
    description: str = ""


@dataclass
class ModelInfo:
    """What the protocol says about a loaded model."""

    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    batchable: bool
    admits: dict[str, Callable[[Sequence[int]], str | None]] = field(default_factory=dict)


@dataclass
class _Item:
    feeds: Feeds
    future: concurrent.futures.Future[Feeds]
    rows: int
    key: tuple[Any, ...]


_STOP = object()


def _padded_size(rows: int, sizes: Sequence[int], limit: int | None) -> int:
    fitting = [s for s in sizes if s >= rows and (limit is None or s <= limit)]
    return min(fitting) if fitting else rows


class ModelWorker:
    def __init__(self, config: ModelConfig, settings: BatchSettings, metrics: ServerMetrics) -> None:
        self.config = config
        self.name = config.name
        self.settings = settings
        self.metrics = metrics
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(settings.max_queue, 1))
        self.ready = threading.Event()
        self.done = threading.Event()  # loading ended, ready or failed
        self.error: str | None = None
        self.info: ModelInfo | None = None
        self.engine: Any = None
        self._pending: deque[Any] = deque()
        self._batch_limit: int | None = None
        self._thread = threading.Thread(target=self._main, name=f"mace-serve-{config.name}", daemon=True)

    # -- the server's side ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, feeds: Feeds) -> concurrent.futures.Future[Feeds]:
        assert self.info is not None
        future: concurrent.futures.Future[Feeds] = concurrent.futures.Future()
        if self.info.batchable:
            first = next(iter(feeds.values()))
            rows = int(first.shape[0])
            key: tuple[Any, ...] = tuple((n, v.shape[1:]) for n, v in sorted(feeds.items()))
        else:
            rows, key = 1, ()
        try:
            self.queue.put_nowait(_Item(feeds, future, rows, key))
        except queue.Full:
            raise QueueFull(f"model {self.name!r}: {self.settings.max_queue} requests queued already") from None
        self.metrics.queue_depth.labels(self.name).set(self.queue.qsize() + len(self._pending))
        return future

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the worker."""
        if self._thread.is_alive():
            self.queue.put(_STOP)
            self._thread.join(timeout)

    # -- the worker thread ------------------------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._load()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", self.name, self.error)
            self.done.set()
            self._drain_failed()
            return
        self.ready.set()
        self.done.set()
        self.metrics.model_ready.labels(self.name).set(1)
        self._loop()

    def _load(self) -> None:
        start = time.perf_counter()
        log.info("warming %s: loading %s", self.name, self.config.description or "the model")
        engine = self.config.load()
        self.engine = engine
        specs = engine.input_specs
        dtypes = {t.name: t.dtype for t in engine.inputs}
        batchable = bool(engine.dynamic) and all(spec.dims and not spec.dims[0].fixed for spec in specs.values())
        if batchable:
            highs = [spec.dims[0].hi for spec in specs.values() if spec.dims[0].hi is not None]
            self._batch_limit = min(highs) if highs else None
        if engine.dynamic:
            sizes = list(self.settings.batch_sizes) or [1]
            shapes = []
            for size in sizes if batchable else [None]:
                entry = {}
                for name, spec in specs.items():
                    example = list(spec.example())
                    if size is not None:
                        if not spec.dims[0].admits(size):
                            break
                        example[0] = size
                    entry[name] = tuple(example)
                else:
                    shapes.append(entry)
            for index, entry in enumerate(shapes, 1):
                log.info("warming %s: shape %d/%d %s", self.name, index, len(shapes),
                         ", ".join(f"{k}={list(v)}" for k, v in entry.items()))
                engine.warm_up(shapes=[entry])
        else:
            log.info("warming %s: building or loading its programs", self.name)
            engine.warm_up()
        inputs = []
        for name, spec in specs.items():
            dims = tuple(d.lo if d.fixed else -1 for d in spec.dims)
            inputs.append(TensorMeta(name, datatype_of(dtypes[name]), dims))
        outputs = []
        for t in engine.outputs:
            shape = tuple(t.shape)
            if engine.dynamic:
                shape = (-1, *shape[1:]) if batchable and shape else tuple(-1 for _ in shape)
                if not batchable and not shape:
                    shape = (-1,)
            outputs.append(TensorMeta(t.name, datatype_of(t.dtype), shape))
        admits = {name: spec.check for name, spec in specs.items()}
        self.info = ModelInfo(inputs, outputs, batchable and self.settings.max_batch > 1, admits)
        stats = engine.stats
        from_source = int(stats.get("programs_from_source", 0) or 0)
        from_cache = int(stats.get("programs_from_cache", 0) or 0)
        self.metrics.programs.labels(self.name, "source").set(from_source)
        self.metrics.programs.labels(self.name, "cache").set(from_cache)
        log.info("warm %s in %.2f s: %d program(s) from cache, %d from source%s", self.name,
                 time.perf_counter() - start, from_cache, from_source,
                 f", batches of up to {self.settings.max_batch}" if self.info.batchable else "")

    def _next(self, timeout: float | None = None) -> Any:
        if self._pending:
            return self._pending.popleft()
        return self.queue.get(timeout=timeout) if timeout is not None else self.queue.get()

    def _loop(self) -> None:
        assert self.info is not None
        batching = self.info.batchable
        limit = self.settings.max_batch
        while True:
            first = self._next()
            if first is _STOP:
                break
            batch = [first]
            rows = first.rows
            stop = False
            if batching and rows < limit:
                deadline = time.monotonic() + self.settings.max_delay_ms / 1e3
                while rows < limit:
                    remaining = deadline - time.monotonic()
                    try:
                        item = self._next(max(remaining, 0.0)) if remaining > 0 or self.queue.qsize() else None
                    except queue.Empty:
                        item = None
                    if item is None:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    if item.key != first.key or rows + item.rows > limit:
                        self._pending.appendleft(item)
                        break
                    batch.append(item)
                    rows += item.rows
            self.metrics.queue_depth.labels(self.name).set(self.queue.qsize() + len(self._pending))
            self._run(batch)
            if stop:
                self._pending.append(_STOP)

    def _run(self, batch: list[_Item]) -> None:
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]  # timed out: skipped
        if not live:
            return
        self.metrics.batch_size.labels(self.name).observe(len(live))
        try:
            if len(live) == 1 and not (self.info and self.info.batchable and self.settings.batch_sizes):
                live[0].future.set_result(self.engine.run(live[0].feeds))
                return
            rows = sum(item.rows for item in live)
            size = _padded_size(rows, self.settings.batch_sizes, self._batch_limit)
            feeds = {}
            for name in live[0].feeds:
                parts = [item.feeds[name] for item in live]
                if size > rows:
                    first = parts[0]
                    parts.append(np.zeros((size - rows, *first.shape[1:]), dtype=first.dtype))
                feeds[name] = np.concatenate(parts, axis=0)
            outputs = self.engine.run(feeds)
            for name, value in outputs.items():
                if value.ndim == 0 or value.shape[0] != size:
                    raise RuntimeError(f"output {name!r} has shape {list(value.shape)}: its dim 0 is not the "
                                       f"batch of {size}, so a batch cannot be split back")
            start = 0
            for item in live:
                item.future.set_result({name: value[start:start + item.rows] for name, value in outputs.items()})
                start += item.rows
        except Exception as exc:
            log.error("model %s: a batch of %d request(s) failed: %s: %s", self.name, len(live),
                      type(exc).__name__, exc)
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)

    def _drain_failed(self) -> None:
        """After a failed load: answer whatever is queued (nothing should be) until stopped."""
        while True:
            item = self._next()
            if item is _STOP:
                return
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(RuntimeError(f"model {self.name!r} failed to load: {self.error}"))
