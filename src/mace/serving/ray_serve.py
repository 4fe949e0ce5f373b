"""Ray Serve: the same KServe v2 app as ``mace serve``, one copy per Ray Serve replica.

Each replica builds the app from plain ``ModelSource`` data, loads every model and warms it (programs from the shipped
read-only cache file, named by ``binary_paths``) inside its startup, so Ray routes nothing to it before it is warm.
Batching, the bounded queue, errors and /metrics are the app's own, per replica; every response names the replica
that answered in its ``Mace-Replica`` header.

In a Ray app of your own::

    from ray import serve
    from mace.serving.models import ModelSource
    from mace.serving.ray_serve import mace_app

    model = ModelSource("/models/resnet50.mace", "resnet50", device="gpu",
                        binary_paths=("/models/mace_cl_compiled_program.bin",))
    serve.run(mace_app([model], autoscaling={"min_replicas": 1, "max_replicas": 8}, replica_gpus=1),
              name="mace", route_prefix="/")

or ``serve.deployment(MaceDeployment).options(...).bind(models, settings)`` for full control of the options.
Needs ``ray[serve]`` (the ``ray`` extra).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ray import serve
from ray.serve.deployment import Application, Deployment
from starlette.applications import Starlette

from mace.serving.app import ServeSettings, create_app
from mace.serving.models import ModelSource

DEPLOYMENT_NAME = "mace"


@serve.ingress()  # the app is built per replica, from the constructor's arguments: __serve_build_asgi_app__
class MaceDeployment:
    """A Ray Serve replica serving ``models`` with ``settings`` (ServeSettings; warm before serving, always)."""

    def __init__(self, models: Sequence[ModelSource], settings: ServeSettings | None = None) -> None:
        if not models:
            raise ValueError("MaceDeployment: no models to serve")
        self.models = list(models)
        self.settings = settings or ServeSettings()
        self.server_app: Starlette | None = None  # (not `app`: the ingress wrapper's property)

    def __serve_build_asgi_app__(self) -> Starlette:
        replica = serve.get_replica_context().replica_id.unique_id
        settings = dataclasses.replace(self.settings, warm_before_serving=True, replica=replica)
        self.server_app = create_app([m.config() for m in self.models], settings)
        return self.server_app

    def check_health(self) -> None:
        """Ray's periodic health check: a replica whose model failed to load is replaced."""
        if self.server_app is not None:
            self.server_app.state.server.check_loaded()


def mace_app(models: Sequence[ModelSource], settings: ServeSettings | None = None, *, replicas: int | None = None,
             autoscaling: Mapping[str, Any] | None = None, replica_cpus: float = 1.0, replica_gpus: float = 0.0,
             name: str = DEPLOYMENT_NAME) -> Application:
    """The bound Ray Serve application: ``replicas`` fixed replicas, or ``autoscaling`` (Ray Serve's
    autoscaling_config, passed through as given); Ray's own request limits are set from the app's queue bound, so
    an overloaded replica set answers 503 instead of queueing without end."""
    if replicas is not None and autoscaling is not None:
        raise ValueError("give replicas or autoscaling, not both")
    settings = settings or ServeSettings()
    queue = settings.batch.max_queue
    options: dict[str, Any] = {
        "name": name,
        "ray_actor_options": {"num_cpus": replica_cpus, "num_gpus": replica_gpus},
        # requests a replica takes at once: its own queue then bounds them (Ray's default, 5, would cap batches)
        "max_ongoing_requests": queue + settings.batch.max_batch,
        "max_queued_requests": queue,  # waiting for a replica beyond this: 503 from Ray's proxy
        # a model can take a while to warm when it is compiled from source: Ray's default waits are too short
        "health_check_timeout_s": 60,
        "graceful_shutdown_timeout_s": settings.timeout_s + 5,
    }
    if autoscaling is not None:
        options["autoscaling_config"] = dict(autoscaling)
    else:
        options["num_replicas"] = replicas if replicas is not None else 1
    deployment: Deployment = serve.deployment(MaceDeployment)  # type: ignore[assignment]  # (typed as a decorator)
    return deployment.options(**options).bind(list(models), settings)
