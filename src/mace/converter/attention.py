"""Attention as exporters write it, fused into one ScaledDotProductAttention node (ir.py), and the layout moves around
it that are no moves at all.

``fuse_attention`` matches, per head group, the chain torch.onnx writes for softmax(Q.K^T / sqrt(d)) . V:

    MatMul(Q [* a], K^T [* b]) [* c or / c] [+ mask] [Where(keep, ., fill)] -> Softmax(last axis)
        [-> Where(IsNaN(p), 0, p)] -> MatMul(., V)

with a, b, c one-element constants (nn.MultiheadAttention scales Q and K^T by sqrt(scale) each, BERT divides the
scores, scaled_dot_product_attention multiplies them), the mask any float tensor that broadcasts to the scores, a
Where of a constant condition and a very negative fill (GPT-2's causal mask, inside the mask Add if there is one)
taken as the additive mask it equals, and transformers' NaN guard on the probabilities. Every intermediate
must have the chain as its only reader; Q, K^T and V keep whatever layout their producers give them (the OpenCL
planner reads them through strides).

``fuse_qkv_projections``: the three products that make one attention's Q, K and V from the same input (BERT's
query, key and value Linears) become one product with the weights side by side, sliced: one launch instead of three,
and the slices are views where they only feed the attention (the OpenCL planner).

``transposes_as_reshapes``: a Transpose that only moves dimensions of size 1 keeps the element order, so it is a
Reshape (an alias on every runtime): ViT's [S, 1, D] -> [1, S, D] after the attention block.
"""

from __future__ import annotations

import numpy as np

from mace.converter.matching import Match, constant_scalar, other_operand
from mace.model.ir import Graph, Node, TensorInfo


def _scalar_factor(m: Match, node: Node, name: str) -> float | None:
    """The factor a Mul or Div ``node`` applies to ``name`` when the other operand is a one-element constant."""
    other = other_operand(node, name)
    if other is None or node.op not in ("Mul", "Div") or (node.op == "Div" and node.inputs[0] != name):
        return None
    value = constant_scalar(m.graph, other, 1.0)
    if value is None or not np.isfinite(value) or (node.op == "Div" and value == 0.0):
        return None
    return value if node.op == "Mul" else 1.0 / value


def _scaled_input(m: Match, name: str, user: Node) -> tuple[str, float, list[Node]]:
    """(the value before a scalar Mul/Div that only ``user`` reads, its factor, that node) or (name, 1, [])."""
    node = m.producers.get(name)
    if node is not None and m.sole(name) is user and len(node.inputs) == 2 and _same_shape(m.graph, node):
        for operand in node.inputs:
            factor = _scalar_factor(m, node, operand)
            if factor is not None and operand not in m.graph.constants:
                return operand, factor, [node]
    return name, 1.0, []


def _same_shape(graph: Graph, node: Node, operand: str = "") -> bool:
    """``node``'s output has the shape of ``operand`` (of every non-constant input when none is named): a one-element
    constant of a higher rank would broadcast it up, which a fused scale or mask cannot."""
    out = graph.tensors[node.outputs[0]].shape
    names = [operand] if operand else [n for n in node.inputs if n and n not in graph.constants]
    return all(graph.tensors[n].shape == out for n in names)


def _nan_guard(m: Match, probs: str) -> Node | None:
    """Where(IsNaN(p), 0, p), when those two nodes are the only readers of ``probs``: the Where node."""
    users = m.users.get(probs, [])
    if len(users) != 2 or probs in m.outputs:
        return None
    isnan = next((u for u in users if u.op == "IsNaN"), None)
    where = next((u for u in users if u.op == "Where"), None)
    if isnan is None or where is None or m.sole(isnan.outputs[0]) is not where:
        return None
    if where.inputs[0] != isnan.outputs[0] or where.inputs[2] != probs or constant_scalar(m.graph, where.inputs[1],
                                                                                         1.0) != 0.0:
        return None
    return where if _same_shape(m.graph, where, probs) else None


# A Where's fill at or below this is "masked": in float32, s + fill is fill for any |s| below half the spacing of
# floats there (about 5e29 at -1e37; finfo.min's spacing is 2e31), so the fill equals an additive mask of it.
WHERE_FILL_MAX = -1e37


def _where_mask(m: Match, where: Node) -> tuple[str, np.ndarray] | None:
    """(the scores, the additive mask: 0 where kept, the fill elsewhere) of Where(keep, scores, fill) or
    Where(masked, fill, scores), the condition a constant and the fill one very negative constant (GPT-2's causal
    mask, a finfo.min fill)."""
    if len(where.inputs) != 3 or where.inputs[0] not in m.graph.constants:
        return None
    cond = np.asarray(m.graph.constants[where.inputs[0]]).astype(bool)
    forms = ((where.inputs[1], where.inputs[2], cond), (where.inputs[2], where.inputs[1], ~cond))
    for scores, fill_name, keep in forms:
        fill = constant_scalar(m.graph, fill_name, 0.0) if fill_name in m.graph.constants else None
        if (fill is not None and fill <= WHERE_FILL_MAX and scores not in m.graph.constants
                and _same_shape(m.graph, where, scores)):
            return scores, np.where(keep, np.float32(0.0), np.float32(fill)).astype(np.float32)
    return None


def _with_constant_mask(graph: Graph, name: str, mask: str, constant: np.ndarray) -> tuple[str, list[Node]]:
    """The mask that adds ``constant`` to ``mask`` (none: ""): a new constant, or an Add node to insert."""
    if mask and mask in graph.constants:
        constant = (graph.float_constant(mask) + constant).astype(np.float32)
        mask = ""
    cname = graph.add_constant(graph.fresh_name(f"{name}__mask"), constant)
    if not mask:
        return cname, []
    total = graph.fresh_name(f"{name}__masks")
    shape = np.broadcast_shapes(constant.shape, graph.tensors[mask].shape)
    graph.tensors[total] = TensorInfo(total, shape, "float32")
    return total, [Node("Add", f"{name}__mask_add", [mask, cname], [total])]


def _float32(graph: Graph, *names: str) -> bool:
    return all(graph.tensors[n].dtype == "float32" for n in names)


def _match(m: Match, softmax: Node) -> tuple[Node, list[str], dict[str, float | int], list[Node]] | None:
    """(the final MatMul, the fused node's inputs, its attributes, the nodes it replaces) for one Softmax."""
    graph = m.graph
    x = softmax.inputs[0]
    rank = len(graph.tensors[x].shape)
    if rank < 2 or int(softmax.attrs.get("axis", -1)) not in (-1, rank - 1):
        return None
    gone: list[Node] = [softmax]
    mask, where_mask = "", None
    for _ in range(2):  # an additive mask, a Where's constant one, or the Where inside the mask's Add
        node = m.producers.get(x)
        if node is None or m.sole(x) is not gone[-1]:
            break
        # Where(keep, scores + mask, fill) is not scores + mask + where-mask: a very negative mask at a masked place
        # would add to the fill (-inf) where the Where gives the fill itself; only the Where inside the Add is fused
        if node.op == "Add" and not mask and where_mask is None and len(node.inputs) == 2:
            out_shape = graph.tensors[node.outputs[0]].shape
            pairs = [(a, b) for a, b in (node.inputs, node.inputs[::-1]) if a != b and
                     getattr(m.producers.get(a), "op", "") in ("MatMul", "Mul", "Div", "Where")]
            # the scores have the full shape; of two, a Mul is rather the mask ((1 - mask) * min)
            pairs.sort(key=lambda ab: (graph.tensors[ab[0]].shape != out_shape, m.producers[ab[0]].op == "Mul"))
            if not pairs:
                break
            x, mask = pairs[0]
        elif node.op == "Where" and where_mask is None and (found := _where_mask(m, node)) is not None:
            x, where_mask = found
        else:
            break
        gone.append(node)
    scale = 1.0
    user = gone[-1]
    while True:  # scalar Muls and Divs of the scores
        before, factor, scaled = _scaled_input(m, x, user)
        if not scaled:
            break
        scale, x, user = scale * factor, before, scaled[0]
        gone += scaled
    qk = m.producers.get(x)
    if qk is None or qk.op != "MatMul" or len(qk.inputs) != 2 or qk.attrs or m.sole(x) is not user:
        return None
    gone.append(qk)
    q, qs, qn = _scaled_input(m, qk.inputs[0], qk)
    kt, ks, kn = _scaled_input(m, qk.inputs[1], qk)
    scale *= qs * ks
    gone += qn + kn
    probs = softmax.outputs[0]
    guard = _nan_guard(m, probs)
    if guard is not None:
        isnan = m.producers[guard.inputs[0]]
        gone.append(isnan)
        gone.append(guard)
        probs = guard.outputs[0]
    pv = m.sole(probs)
    if pv is None or pv.op != "MatMul" or len(pv.inputs) != 2 or pv.attrs or pv.inputs[0] != probs:
        return None
    v = pv.inputs[1]
    if not _float32(graph, q, kt, v, x, pv.outputs[0]) or (mask and not _float32(graph, mask)):
        return None
    qshape, kshape, vshape = (graph.tensors[n].shape for n in (q, kt, v))
    if not (len(qshape) == len(kshape) == len(vshape) >= 2 and qshape[:-2] == kshape[:-2] == vshape[:-2]
            and qshape[-1] == kshape[-2] and kshape[-1] == vshape[-2]):
        return None
    scores_shape = (*qshape[:-1], kshape[-1])
    for shape in ([graph.tensors[mask].shape] if mask else []) + ([where_mask.shape] if where_mask is not None else []):
        if len(shape) > len(scores_shape) or np.broadcast_shapes(shape, scores_shape) != scores_shape:
            return None
    if where_mask is not None:  # matched: now the graph may change
        mask, extra = _with_constant_mask(graph, softmax.name, mask, where_mask)
        for node in extra:  # the masks' sum, computed where the fused node goes (its inputs all before it)
            graph.nodes.insert(graph.nodes.index(pv), node)
    if mask and mask in graph.constants and not np.any(graph.float_constant(mask)):
        mask = ""  # an all-zero mask (no attention_mask given) adds nothing
    attrs: dict[str, float | int] = {"scale": float(np.float32(scale))}
    if guard is not None:
        attrs["nan_to_zero"] = 1
    return pv, [q, kt, v, *([mask] if mask else [])], attrs, gone


def fuse_attention(graph: Graph) -> int:
    """Each attention chain (module docstring) becomes one ScaledDotProductAttention at the final MatMul's place."""
    count = 0
    for softmax in [n for n in graph.nodes if n.op == "Softmax"]:
        if softmax not in graph.nodes:
            continue
        found = _match(Match(graph), softmax)
        if found is None:
            continue
        pv, inputs, attrs, gone = found
        fused = Node("ScaledDotProductAttention", pv.name, inputs, list(pv.outputs), attrs)
        graph.nodes[graph.nodes.index(pv)] = fused
        for node in gone:
            graph.nodes.remove(node)
            graph.tensors.pop(node.outputs[0], None)
        count += 1
    return count


def transposes_as_reshapes(graph: Graph) -> int:
    """A Transpose whose dimensions longer than 1 keep their order becomes a Reshape to its output shape."""
    count = 0
    for i, node in enumerate(graph.nodes):
        if node.op != "Transpose" or len(node.inputs) != 1:
            continue
        shape = graph.tensors[node.inputs[0]].shape
        perm = [int(d) for d in node.attrs.get("perm", list(range(len(shape)))[::-1])]
        moved = [d for d in perm if shape[d] != 1]
        if moved != sorted(moved):
            continue
        out_shape = graph.tensors[node.outputs[0]].shape
        target = graph.add_constant(graph.fresh_name(f"{node.name}__shape"), np.asarray(out_shape, np.int64))
        graph.nodes[i] = Node("Reshape", node.name, [node.inputs[0], target], list(node.outputs), {})
        count += 1
    return count


_MOVES = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


def _projection(m: Match, value: str) -> Node | None:
    """The MatMul(x, W[, b]) (W a constant matrix, b a constant vector) whose output reaches ``value`` through
    data moves that nothing else reads."""
    node = m.producers.get(value)
    while node is not None and node.op in _MOVES and m.sole(node.inputs[0]) is node:
        node = m.producers.get(node.inputs[0])
    if node is None or node.op != "MatMul" or set(node.attrs) or len(node.inputs) not in (2, 3):
        return None
    weight, bias = node.inputs[1], node.inputs[2] if len(node.inputs) == 3 else ""
    if weight not in m.graph.constants or m.graph.constants[weight].ndim != 2 or node.inputs[0] in m.graph.constants:
        return None
    if bias and (bias not in m.graph.constants or m.graph.constants[bias].ndim != 1):
        return None
    users = m.users.get(node.outputs[0], [])
    return node if len(users) == 1 and node.outputs[0] not in m.outputs else None


def fuse_qkv_projections(graph: Graph) -> int:
    """Q, K and V of one attention made by three MatMuls of one input (module docstring) become one MatMul and three
    Slices of its last axis."""
    count = 0
    for attention in [n for n in graph.nodes if n.op == "ScaledDotProductAttention"]:
        m = Match(graph)
        products = [_projection(m, value) for value in attention.inputs[:3]]
        if any(p is None for p in products) or len({id(p) for p in products}) != 3:
            continue
        nodes: list[Node] = products  # type: ignore[assignment]
        weights = [graph.constants[n.inputs[1]] for n in nodes]
        if (len({n.inputs[0] for n in nodes}) != 1 or len({w.shape[0] for w in weights}) != 1
                or len({len(n.inputs) for n in nodes}) != 1 or any(w.dtype != np.float32 for w in weights)):
            continue
        first = min(nodes, key=graph.nodes.index)
        name = graph.fresh_name(f"{first.name}__qkv")
        fused = np.concatenate(weights, axis=1)
        inputs = [first.inputs[0], graph.add_constant(graph.fresh_name(f"{name}.weight"), fused)]
        if len(first.inputs) == 3:
            bias = np.concatenate([graph.float_constant(n.inputs[2]) for n in nodes]).astype(np.float32)
            inputs.append(graph.add_constant(graph.fresh_name(f"{name}.bias"), bias))
        out_shape = (*graph.tensors[first.outputs[0]].shape[:-1], fused.shape[1])
        graph.tensors[name] = TensorInfo(name, out_shape, "float32")
        replacement = [Node("MatMul", name, inputs, [name])]
        start = 0
        for i, node in enumerate(nodes):
            stop = start + weights[i].shape[1]
            slice_inputs = [name, *(graph.add_constant(graph.fresh_name(f"{name}.{i}.{suffix}"),
                                                       np.asarray([value], np.int64))
                                    for suffix, value in (("starts", start), ("ends", stop), ("axes", -1)))]
            replacement.append(Node("Slice", f"{node.name}__slice", slice_inputs, list(node.outputs)))
            start = stop
        at = graph.nodes.index(first)
        for node in nodes:
            graph.nodes.remove(node)
        graph.nodes[at:at] = replacement
        count += 1
    return count
