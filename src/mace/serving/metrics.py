"""The server's Prometheus metrics, in a registry of their own (one per app, so that tests can make several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mace_requests", "Inference requests by model and HTTP status code",
                                ["model", "code"], registry=r)
        self.latency = Histogram("mace_request_latency_seconds", "Inference request latency, body read to answer",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("mace_batch_size", "Requests run together in one engine run",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("mace_queue_depth", "Requests waiting for the model's worker", ["model"], registry=r)
        self.programs = Gauge("mace_programs", "Programs the model's engine got at warm-up, by origin "
                              "(source: compiled from OpenCL C; cache: loaded from a program cache file)",
                              ["model", "origin"], registry=r)
        self.model_ready = Gauge("mace_model_ready", "1 once the model is loaded and warm", ["model"], registry=r)
        self.start_to_ready = Gauge("mace_start_to_ready_seconds",
                                    "Seconds from process start until every model was ready", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
