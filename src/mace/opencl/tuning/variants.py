"""Kernel variants chosen by measurement: for each node whose lowering offers several tilings (plan/tiling.py,
"kernel variants"), the one whose launches take the least device time on this device.

The model is planned and built once per variant number (every node that offers that number takes it at once), each
build's launches are timed with profiling events on the same inputs, and every node keeps its fastest variant: the
default unless another is faster by more than VARIANT_TOLERANCE. The runtime then checks the combination as a whole
(same outputs as the default plan, faster end to end) before keeping it. Choices are stored per node in the
tuned-parameters file, keyed by ``variant_key`` (the node's name, op, attributes and shapes, and the device class),
and planned in at the next start by ``load_variants``.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyopencl as cl

from mace.cachefiles import tuned_params
from mace.model.ir import Graph, Node
from mace.opencl.executor import Executor
from mace.opencl.plan import DEFAULT_POLICY, DeviceTarget, plan_graph
from mace.opencl.profiling import profile_launches
from mace.opencl.tuning.params import TunedParamsStore

VARIANT_TOLERANCE = 0.03  # a variant must beat the default by this fraction: noise must not pick it
VARIANT_GLOBAL_SIZE = (1,)  # variant entries describe a node, not a launch; the format wants a global size


def _kernel_name(node: Node) -> str:
    return f"variant {node.name}"


def _specialization(graph: Graph, node: Node, target: DeviceTarget | None) -> str:
    """What a node's variants mean: its op, attributes, operand shapes and dtypes, the data type, the device class."""

    def describe(value: str) -> Any:
        if value in graph.tensors:
            info = graph.tensors[value]
            return [list(info.shape), str(info.dtype)]
        if value in graph.constants:
            data = graph.constants[value]
            return [list(data.shape), str(data.dtype)]
        return None

    identity = _target_identity(target)
    if identity is not None and target is not None and graph.data_type == "fp16_fp32":
        identity["half_storage"] = target.half_storage  # what fp16_fp32 plans as on this target
    return json.dumps({
        "op": node.op, "attrs": node.attrs, "inputs": [describe(v) for v in node.inputs],
        "outputs": [describe(v) for v in node.outputs], "data_type": graph.data_type,
        "target": identity,
    }, sort_keys=True, default=str)


def _target_identity(target: DeviceTarget | None) -> dict[str, Any] | None:
    """The device class as variant keys have always spelled it; a tiling policy other than the default is added
    (variant i means policy.gpu_tiles[i - 1]), so files tuned under the default policy keep their keys."""
    if target is None:
        return None
    fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)
              if f.name not in ("policy", "half_storage", "tensor_cores", "nvidia_ptx", "tf32", "cpu_simd_floats")}
    # (half_storage: fp16_fp32's, in _specialization)
    for flag in ("tensor_cores", "nvidia_ptx", "tf32"):  # added only where true: older keys keep their meaning
        if getattr(target, flag):
            fields[flag] = True
    if target.cpu_simd_floats != 16:  # likewise only where not 16
        fields["cpu_simd_floats"] = target.cpu_simd_floats
    if target.policy != DEFAULT_POLICY:
        fields["policy"] = dataclasses.asdict(target.policy)
    return fields


def variant_key(graph: Graph, node: Node, target: DeviceTarget | None) -> str:
    """The tuning key of ``node``'s variant entry."""
    return tuned_params.tuning_key(_kernel_name(node), _specialization(graph, node, target), VARIANT_GLOBAL_SIZE)


def load_variants(store: TunedParamsStore, graph: Graph, target: DeviceTarget | None) -> dict[str, int]:
    """Node name -> tuned variant (non-zero ones) stored for this device. The planner re-checks each against what the
    node's lowering offers now; one that is not offered plans as the default."""
    chosen: dict[str, int] = {}
    if not store.load() and not store.has_pending:
        return chosen
    for node in graph.nodes:
        entry = store.lookup(variant_key(graph, node, target))
        if entry is not None and len(entry.variant) == 1 and entry.variant[0] != 0:
            chosen[node.name] = int(entry.variant[0])
    return chosen


def record_variants(
    store: TunedParamsStore, graph: Graph, target: DeviceTarget | None, choice: Mapping[str, int],
    times: Mapping[str, float],
) -> None:
    """Stores ``choice`` (every tuned node, 0 included, so a re-tune replaces an older choice) with its time."""
    nodes = {node.name: node for node in graph.nodes}
    for name, variant in choice.items():
        node = nodes[name]
        store.record(store.new_entry(_kernel_name(node), _specialization(graph, node, target), VARIANT_GLOBAL_SIZE,
                                     None, times.get(name, 0.0), (variant,)))


@dataclass
class VariantTuning:
    """What tune_variants measured: per node its best variant (``choice``, 0 = default) and that variant's device
    microseconds (``times``), each variant's total, and the variants whose outputs differed (``rejected``)."""

    choice: dict[str, int] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    default_times: dict[str, float] = field(default_factory=dict)
    totals_us: dict[int, float] = field(default_factory=dict)
    rejected: list[int] = field(default_factory=list)


def outputs_agree(graph: Graph, got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> bool:
    """Whether two plans' outputs agree: another tiling sums in another order, nothing more."""
    tolerance = 1e-2 if graph.data_type.startswith("fp16") else 1e-3
    for name, ref in want.items():
        ref64, out64 = np.asarray(ref, np.float64), np.asarray(got[name], np.float64)
        scale = max(float(np.max(np.abs(ref64))) if ref64.size else 0.0, 1e-6)
        if ref64.shape != out64.shape or not np.all(np.abs(out64 - ref64) <= tolerance * scale):
            return False
    return True


def node_times(executor: Executor, feeds: Mapping[str, np.ndarray], repeats: int) -> dict[str, float]:
    """Device microseconds per node (all its launches), medians over ``repeats`` profiled runs."""
    totals: dict[str, float] = {}
    for row in profile_launches(executor, dict(feeds), repeats):
        totals[row["node"]] = totals.get(row["node"], 0.0) + row["us"]
    return totals


def steady_seconds(executor: Executor, feeds: Mapping[str, np.ndarray], runs: int) -> float:
    """Median wall time of a whole run, numpy in -> numpy out."""
    executor.run(dict(feeds))
    samples = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        executor.run(dict(feeds))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def tune_variants(
    graph: Graph,
    context: cl.Context,
    queue: cl.CommandQueue,
    target: DeviceTarget | None,
    default: Executor,
    feeds: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    repeats: int = 5,
    progress: Callable[[int, int, str], None] | None = None,
) -> VariantTuning:
    """Builds the model once per variant number beyond the default (from source, outside the program cache: these
    programs are thrown away), times every node on ``feeds``, and picks each node's fastest variant. A variant whose
    outputs disagree with ``reference`` (the default plan's outputs on ``feeds``) is rejected."""
    counts = default.plan.variant_counts
    result = VariantTuning()
    if not counts:
        return result
    times = {0: node_times(default, feeds, repeats)}
    most = max(counts.values())

    def build(source: str, options: str) -> cl.Program:
        return cl.Program(context, source).build(options=options)

    seen = {default.plan.source}
    for variant in range(1, most):
        if progress is not None:
            progress(variant, most, f"kernel variant {variant} of {most - 1}")
        chosen = {name: variant for name, count in counts.items() if count > variant}
        source = plan_graph(graph, target, chosen).source
        if source in seen:  # on this model the variant changes no kernel: nothing to time
            continue
        seen.add(source)
        trial = Executor(graph, context, queue, build, target=target, variants=chosen, host_staging=False)
        if not outputs_agree(graph, trial.run(dict(feeds)), reference):
            result.rejected.append(variant)
            continue
        times[variant] = node_times(trial, feeds, repeats)
        del trial  # its buffers go before the next variant's are allocated
    result.totals_us = {v: sum(t.values()) for v, t in times.items()}
    for name, count in counts.items():
        base = times[0].get(name)
        if base is None:
            continue
        best, best_us = 0, base
        for variant, measured in times.items():
            us = measured.get(name)
            if variant and variant < count and us is not None and us < best_us and us < base * (1 - VARIANT_TOLERANCE):
                best, best_us = variant, us
        result.choice[name] = best
        result.times[name] = best_us
        result.default_times[name] = base
    return result
