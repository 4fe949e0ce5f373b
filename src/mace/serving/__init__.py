"""`mace serve`: the Open Inference Protocol (KServe v2) over HTTP/REST, with per-model dynamic batching.

``protocol`` is the pure codec, ``batcher`` the per-model queue and worker thread, ``metrics`` the Prometheus
metrics, ``app`` the Starlette app (``create_app``). Needs the ``serve`` extra (starlette, uvicorn,
prometheus-client); importing this package alone needs none of them.
"""
