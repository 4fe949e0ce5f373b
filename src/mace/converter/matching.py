"""What the graph passes' pattern matchers share: who consumes a value, one node taking over another's output, the
constants a pattern tests (passes.py, attention.py)."""

from __future__ import annotations

import math

from mace.model.ir import Graph, Node


def single_consumer(graph: Graph, name: str) -> Node | None:
    """The only consumer of ``name`` (None if it has several, or is a graph output)."""
    users = graph.consumers().get(name, [])
    outputs = {t.name for t in graph.outputs}
    return users[0] if len(users) == 1 and name not in outputs else None


def replace(graph: Graph, producer: Node, consumer: Node) -> None:
    """The producer takes over the consumer's output (and position), the consumer disappears."""
    old = producer.outputs[0]
    producer.outputs = [consumer.outputs[0]]
    graph.nodes.remove(producer)
    graph.nodes[graph.nodes.index(consumer)] = producer
    graph.tensors.pop(old, None)


def constant_scalar(graph: Graph, name: str, default: float) -> float | None:
    """The value of a one-element constant; ``default`` for an absent input (""); None for anything else."""
    if not name:
        return default
    if name not in graph.constants or graph.constants[name].size != 1:
        return None
    return float(graph.constants[name].reshape(()))


def other_operand(node: Node, name: str) -> str | None:
    """The other operand of a binary node that reads ``name`` once."""
    if len(node.inputs) != 2 or node.inputs.count(name) != 1:
        return None
    return node.inputs[1] if node.inputs[0] == name else node.inputs[0]


class Match:
    """Lookups for a pattern matcher, valid until the graph changes."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.producers = graph.producers()
        self.users = graph.consumers()
        self.outputs = {t.name for t in graph.outputs}

    def sole(self, name: str) -> Node | None:
        """The only consumer of ``name`` (None if it has several, or is a graph output)."""
        users = self.users.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def made_by(self, name: str, op: str, user: Node) -> Node | None:
        """The ``op`` node computing ``name`` when ``user`` is its only consumer."""
        node = self.producers.get(name)
        return node if node is not None and node.op == op and self.sole(name) is user else None

    def near(self, name: str, value: float) -> bool:
        """``name`` is a one-element constant equal to ``value`` (to float32 rounding of a printed constant)."""
        if name not in self.graph.constants or self.graph.constants[name].size != 1:
            return False
        got = float(self.graph.float_constant(name).reshape(()))
        return math.isclose(got, value, rel_tol=1e-5)

    def scalar_other(self, node: Node, value: float) -> str | None:
        """For a binary ``node`` with a constant operand equal to ``value``: the other operand."""
        if len(node.inputs) != 2:
            return None
        a, b = node.inputs
        return a if self.near(b, value) else b if self.near(a, value) else None
