"""Einsum as the nodes every runtime has: ReduceSum, Transpose, Reshape and MatMul.

``lower_einsum`` rewrites each float Einsum (MaxViT's attention, bilinear layers, exporters' own contractions) into

    [ReduceSum of labels no one else needs] -> Transpose to [batch, free, contracted] -> Reshape to [batch, M, K]
    -> MatMul with the other operand as [batch, K, N] -> Reshape to [batch, free A, free B]

per pair of operands, left to right, then ReduceSum and Transpose to the output's labels. Batch labels (in both
operands and needed after) stay dimensions of their own, so MatMul broadcasts them where one operand has size 1.
Transposes and Reshapes that change nothing are left out: "bhid,bhjd->bhij" is one Transpose of the second operand
and a MatMul. An Einsum that takes a diagonal (a label twice in one operand: "ii->i"), or of integers, is left as it
is (the numpy reference computes it; the OpenCL runtime names it as an op it lacks).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from mace.errors import ConversionError
from mace.model.ir import Graph, Node, TensorInfo

# labels for the dimensions an ellipsis stands for, numbered from the right (the operands broadcast there)
_ELLIPSIS_BASE = 0x2460


def parse_equation(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """(each operand's labels, the output's labels), an ellipsis spelled out as one label per dimension and an
    implicit output ("ij,jk") made explicit: the labels used once, in alphabetical order, after the ellipsis's."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ConversionError(f"Einsum equation {equation!r} has {len(terms)} operands, the node {len(ranks)}")
    if not re.fullmatch(r"[A-Za-z.,]*", lhs) or not re.fullmatch(r"[A-Za-z.]*", rhs):
        raise ConversionError(f"Einsum equation {equation!r}: labels are letters, '...' and ','")
    spelled, most = [], 0
    for term, rank in zip(terms, ranks):
        letters = term.replace("...", "")
        if term.count("...") > 1 or "." in letters:
            raise ConversionError(f"Einsum equation {equation!r}: {term!r} is not letters around one '...'")
        extra = rank - len(letters)
        if extra < 0 or (extra and "..." not in term):
            raise ConversionError(f"Einsum equation {equation!r}: {term!r} does not label a tensor of rank {rank}")
        most = max(most, extra)
        spelled.append(term.replace("...", _ellipsis(extra)))
    if not arrow:
        counts = {c: "".join(terms).count(c) for c in set(lhs) if c.isalpha()}
        rhs = "..." * (most > 0) + "".join(sorted(c for c, n in counts.items() if n == 1))
    if rhs.count("...") > 1 or "." in rhs.replace("...", ""):
        raise ConversionError(f"Einsum equation {equation!r}: the output {rhs!r} is not letters around one '...'")
    out = rhs.replace("...", _ellipsis(most))
    unknown = set(out) - set("".join(spelled))
    if unknown or len(set(out)) != len(out):
        raise ConversionError(f"Einsum equation {equation!r}: output labels {rhs!r} repeat or are in no operand")
    return spelled, out


def _ellipsis(count: int) -> str:
    return "".join(chr(_ELLIPSIS_BASE + count - 1 - i) for i in range(count))


class _Lowering:
    """The nodes replacing one Einsum, built operand by operand."""

    def __init__(self, graph: Graph, node: Node) -> None:
        self.graph, self.node = graph, node
        self.nodes: list[Node] = []
        self.dtype = graph.tensors[node.inputs[0]].dtype

    def shape(self, name: str) -> tuple[int, ...]:
        return self.graph.tensors[name].shape

    def emit(self, op: str, inputs: list[str], shape: tuple[int, ...], attrs: dict[str, Any] | None = None,
             out: str = "") -> str:
        """A new node computing a new value of ``shape`` (or into ``out``); returns the value's name."""
        name = out or self.graph.fresh_name(f"{self.node.name}__{op.lower()}")
        self.graph.tensors[name] = TensorInfo(name, shape, self.dtype)
        self.nodes.append(Node(op, f"{self.node.name}/{op}{len(self.nodes)}", inputs, [name], attrs or {}))
        return name

    def constant(self, values: list[int]) -> str:
        return self.graph.add_constant(self.graph.fresh_name(f"{self.node.name}__const"), np.asarray(values, np.int64))

    def reduce(self, x: str, labels: str, keep: set[str]) -> tuple[str, str]:
        """Sum out of ``x`` the labels not in ``keep``."""
        axes = [i for i, c in enumerate(labels) if c not in keep]
        if not axes:
            return x, labels
        shape = tuple(d for i, d in enumerate(self.shape(x)) if i not in axes)
        y = self.emit("ReduceSum", [x, self.constant(axes)], shape, {"keepdims": 0})
        return y, "".join(c for c in labels if c in keep)

    def transpose(self, x: str, labels: str, order: str) -> str:
        perm = [labels.index(c) for c in order]
        if perm == sorted(perm):
            return x
        return self.emit("Transpose", [x], tuple(self.shape(x)[i] for i in perm), {"perm": perm})

    def reshape(self, x: str, shape: tuple[int, ...]) -> str:
        if self.shape(x) == shape:
            return x
        return self.emit("Reshape", [x, self.constant(list(shape))], shape)

    def contract(self, a: str, la: str, b: str, lb: str, keep: set[str]) -> tuple[str, str]:
        """a . b over the labels both have and ``keep`` lacks: (the product, its labels)."""
        a, la = self.reduce(a, la, keep | set(lb))
        b, lb = self.reduce(b, lb, keep | set(la))
        batch = "".join(c for c in la if c in lb and c in keep)
        summed = "".join(c for c in la if c in lb and c not in keep)
        free_a = "".join(c for c in la if c not in lb)
        free_b = "".join(c for c in lb if c not in la)
        size_a, size_b = dict(zip(la, self.shape(a))), dict(zip(lb, self.shape(b)))
        k = math.prod(size_a[c] for c in summed)
        m, n = math.prod(size_a[c] for c in free_a), math.prod(size_b[c] for c in free_b)
        a = self.reshape(self.transpose(a, la, batch + free_a + summed), (*(size_a[c] for c in batch), m, k))
        b = self.reshape(self.transpose(b, lb, batch + summed + free_b), (*(size_b[c] for c in batch), k, n))
        batch_shape = tuple(max(size_a[c], size_b[c]) for c in batch)
        y = self.emit("MatMul", [a, b], (*batch_shape, m, n))
        size = {**size_a, **size_b, **dict(zip(batch, batch_shape))}
        return self.reshape(y, tuple(size[c] for c in batch + free_a + free_b)), batch + free_a + free_b

    def finish(self, x: str, labels: str, out: str) -> None:
        """``x`` summed and moved to the output's labels, into the Einsum's output value."""
        x, labels = self.reduce(x, labels, set(out))
        x = self.transpose(x, labels, out)
        target = self.node.outputs[0]
        if not self.nodes:  # nothing computed ("ij->ij"): the input as the output
            self.emit("Reshape", [x, self.constant(list(self.shape(x)))], self.shape(x), out=target)
        else:  # the last node writes the output itself
            last = self.nodes[-1]
            self.graph.tensors.pop(last.outputs[0])
            last.outputs = [target]


def _lowerable(graph: Graph, node: Node) -> tuple[list[str], str] | None:
    inputs = [graph.tensors[x] for x in node.inputs]
    if not inputs or any(not t.dtype.startswith("float") for t in inputs):
        return None
    terms, out = parse_equation(str(node.attrs.get("equation", "")), [len(t.shape) for t in inputs])
    if any(len(set(term)) != len(term) for term in terms):
        return None  # a diagonal
    sizes: dict[str, set[int]] = {}
    for term, t in zip(terms, inputs):
        for c, d in zip(term, t.shape):
            sizes.setdefault(c, set()).add(d)
    for c, found in sizes.items():  # a label's sizes agree, or a batch label's broadcast from 1
        if len(found - {1}) > 1 or (len(found) > 1 and not _batch_label(c, terms, out)):
            return None
    # ... and the output's shape is the one the importer gave it (ONNX's shape inference broadcasts only the
    # ellipsis: "bij,bjk->bik" of b 1 and 3 it takes as b 1, where onnxruntime computes 3)
    if tuple(max(sizes[c]) for c in out) != graph.tensors[node.outputs[0]].shape:
        return None
    return terms, out


def _batch_label(label: str, terms: list[str], out: str) -> bool:
    return label in out and sum(label in t for t in terms) > 1


def lower_einsum(graph: Graph) -> int:
    """Every float Einsum that is products and sums (no diagonal) as ReduceSum/Transpose/Reshape/MatMul nodes."""
    count = 0
    for node in list(graph.nodes):
        if node.op != "Einsum" or len(node.outputs) != 1:
            continue
        try:
            parsed = _lowerable(graph, node)
        except ConversionError as exc:
            raise ConversionError(f"node {node.name!r}: {exc}") from exc
        if parsed is None:
            continue
        terms, out = parsed
        lowering = _Lowering(graph, node)
        x, labels = node.inputs[0], terms[0]
        for i in range(1, len(terms)):
            keep = set(out).union(*terms[i + 1 :])
            x, labels = lowering.contract(x, labels, node.inputs[i], terms[i], keep)
        lowering.finish(x, labels, out)
        at = graph.nodes.index(node)
        graph.nodes[at : at + 1] = lowering.nodes
        count += 1
    return count
