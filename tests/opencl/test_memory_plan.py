"""The memory planner (mace.opencl.memory): lifetimes and slot sharing on synthetic launch lists and on the plans of
the shared models (no OpenCL needed), then the shared models on OpenCL with activations sharing memory."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mace
from mace.opencl.memory import MemoryPlan, plan_memory, program_memory
from mace.opencl.plan import plan_graph
from support import relative_error, shared_model

KB = 1024


def check_invariants(plan: MemoryPlan, launches: list[list[str]], sizes: dict[str, int]) -> None:
    """No two values live at once share a slot, a slot holds its biggest value, and the figures are ordered."""
    for name, slot in plan.slot_of.items():
        assert plan.slot_bytes[slot] >= sizes[name]
    by_slot: dict[int, list[tuple[int, int]]] = {}
    for name, slot in plan.slot_of.items():
        by_slot.setdefault(slot, []).append(plan.live[name])
    for spans in by_slot.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans)), spans
    for names in launches:  # a kernel's buffers never overlap
        planned = {n for n in names if n in plan.slot_of}
        assert len({plan.slot_of[n] for n in planned}) == len(planned)
    assert plan.lower_bound_bytes <= plan.peak_bytes <= plan.naive_bytes


def test_chain_reuses_two_slots() -> None:
    launches = [["x", "a"], ["a", "b"], ["b", "c"], ["c", "d"], ["d", "y"]]
    sizes = dict.fromkeys(["x", "a", "b", "c", "d", "y"], 4 * KB)
    plan = plan_memory(launches, sizes, inputs=["x"], outputs=["y"])
    check_invariants(plan, launches, sizes)
    assert plan.slot_count == 2
    assert plan.peak_bytes == plan.lower_bound_bytes == 8 * KB
    assert plan.naive_bytes == 24 * KB
    assert plan.live["x"] == (-1, 0) and plan.live["y"] == (4, 5)


def test_residual_keeps_the_skip_value_alive() -> None:
    # a feeds the branch b -> c and is added back at the end: it may share with none of them.
    launches = [["x", "a"], ["a", "b"], ["b", "c"], ["c", "a", "d"], ["d", "y"]]
    sizes = dict.fromkeys(["x", "a", "b", "c", "d", "y"], 4 * KB)
    plan = plan_memory(launches, sizes, inputs=["x"], outputs=["y"])
    check_invariants(plan, launches, sizes)
    assert plan.live["a"] == (0, 3)
    assert plan.slot_of["a"] not in {plan.slot_of[v] for v in ("b", "c", "d")}
    assert plan.slot_count == 3 and plan.lower_bound_bytes == 12 * KB


def test_alias_extends_its_roots_life() -> None:
    # r is a Reshape of a (no launch of its own); reading r at launch 3 keeps a alive until then.
    launches = [["x", "a"], ["a", "b"], ["b", "c"], ["c", "r", "y"]]
    sizes = dict.fromkeys(["x", "a", "b", "c", "y"], 4 * KB)
    plan = plan_memory(launches, sizes, inputs=["x"], outputs=["y", "out_alias"], aliases={"r": "a", "out_alias": "b"})
    assert plan.live["a"] == (0, 3) and "r" not in plan.slot_of
    assert plan.live["b"] == (1, 4)  # a graph output through an alias: its root lives to the end
    check_invariants(plan, [[{"r": "a"}.get(n, n) for n in names] for names in launches], sizes)


def test_outputs_are_not_reused() -> None:
    launches = [["x", "a"], ["a", "y1"], ["a", "b"], ["b", "c"], ["c", "y2"]]
    sizes = dict.fromkeys(["x", "a", "b", "c", "y1", "y2"], 4 * KB)
    plan = plan_memory(launches, sizes, inputs=["x"], outputs=["y1", "y2"])
    check_invariants(plan, launches, sizes)
    assert plan.live["y1"] == (1, 5)
    assert plan.slot_of["y1"] not in {plan.slot_of[v] for v in ("a", "b", "c", "y2")}  # x died before y1 began


def test_same_launch_never_shares() -> None:
    # x dies at the launch that writes y: their lifetimes meet there, so they must not share.
    launches = [["x", "y"]]
    plan = plan_memory(launches, {"x": 64, "y": 64}, inputs=["x"], outputs=["y"])
    assert plan.slot_of["x"] != plan.slot_of["y"]
    # an in-place accumulation (Sum of many inputs) is one value over several launches
    launches = [["p", "q", "s"], ["s", "r", "s"], ["s", "t"]]
    sizes = dict.fromkeys("pqrst", 64)
    plan = plan_memory(launches, sizes, inputs=["p", "q", "r"], outputs=["t"])
    check_invariants(plan, launches, sizes)
    assert plan.live["s"] == (0, 2)


def test_constants_are_not_planned_and_reuse_can_be_off() -> None:
    launches = [["x", "w", "a"], ["a", "w", "b"], ["b", "y"]]
    sizes = dict.fromkeys(["x", "a", "b", "y"], 100)
    plan = plan_memory(launches, sizes, inputs=["x"], outputs=["y"])
    assert "w" not in plan.slot_of and plan.slot_count == 2
    naive = plan_memory(launches, sizes, inputs=["x"], outputs=["y"], reuse=False)
    assert naive.slot_count == 4 and naive.peak_bytes == naive.naive_bytes == 400


def test_bigger_value_takes_the_bigger_slot() -> None:
    launches = [["x", "big"], ["big", "small"], ["small", "big2"], ["big2", "y"]]
    sizes = {"x": 10, "big": 1000, "small": 10, "big2": 1000, "y": 10}
    plan = plan_memory(launches, sizes, inputs=["x"], outputs=["y"])
    check_invariants(plan, launches, sizes)
    assert plan.slot_of["big"] == plan.slot_of["big2"]
    assert plan.peak_bytes == plan.lower_bound_bytes == 1010


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_graphs_keep_the_invariants(data: st.DataObject) -> None:
    """Random DAGs: each launch reads some earlier values and writes a new one; some values are outputs."""
    count = data.draw(st.integers(1, 30))
    sizes = {"in0": data.draw(st.integers(0, 4096))}
    launches = []
    for i in range(count):
        earlier = sorted(sizes)
        reads = data.draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3, unique=True))
        out = f"v{i}"
        sizes[out] = data.draw(st.integers(0, 4096))
        launches.append([*reads, out])
    outputs = data.draw(st.lists(st.sampled_from(sorted(sizes)), min_size=1, max_size=3, unique=True))
    plan = plan_memory(launches, sizes, inputs=["in0"], outputs=outputs)
    check_invariants(plan, launches, sizes)
    for name in outputs:
        assert plan.live[name][1] == len(launches)


@pytest.mark.parametrize("name", ["mobilenet_v2", "squeezenet1_1", "shufflenet_v2_x1_0"])
def test_shared_model_plans(name: str) -> None:
    graph = mace.converter.convert_onnx(shared_model(name))
    plan = plan_graph(graph)
    outputs = [plan.buffer_of(t.name) for t in graph.outputs]
    memory = program_memory(plan, [t.name for t in graph.inputs], outputs)
    sizes = {n: b.nbytes for n, b in plan.buffers.items() if n not in plan.constants}
    launches = [[a for a in launch.args if isinstance(a, str)] for launch in plan.launches]
    check_invariants(memory, launches, sizes)
    assert memory.peak_bytes < 0.5 * memory.naive_bytes
    assert not set(memory.slot_of) & set(plan.constants)


@pytest.mark.parametrize("name", ["mobilenet_v2", "squeezenet1_1"])
def test_shared_model_on_opencl_with_reuse(name: str, make_executor) -> None:
    graph = mace.converter.convert_onnx(shared_model(name))
    executor = make_executor(graph)
    report = executor.memory_report()
    print(name, report)
    assert report["lower_bound_bytes"] <= report["peak_bytes"] < 0.5 * report["naive_bytes"]
    activations = {id(executor.buffers[n]) for n in executor.memory_plan.slot_of}
    assert len(activations) == report["allocations"] < report["values"]
    x = np.random.default_rng(5).standard_normal((1, 3, 224, 224)).astype(np.float32)
    reference = mace.Engine(graph, device="cpu").run({"input": x})["output"]
    first = executor.run({"input": x})["output"]
    assert relative_error(first, reference) <= 1e-4
    np.testing.assert_array_equal(executor.run({"input": x})["output"], first)  # no run reads another's leftovers
