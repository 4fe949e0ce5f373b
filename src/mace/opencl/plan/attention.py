"""ScaledDotProductAttention (the converter's fusion, converter/attention.py) on attention.cl: one launch per
attention, its operands read where their producers wrote them.

``view_attention_operands`` (a prepass) turns the data-movement chains that feed an attention (views.VIEW_OPS) into
views: no launch computes them when every reader of every value on the chain is the chain or an attention. It also
lets an attention write its output through the Transpose that is its only reader (the heads back to tokens), so that
Transpose is lowered to nothing.

Which kernel: GPU targets take attention.cl's tiled form where D and DV are multiples of 4 (tiling_gpu.attention_rows),
else its per-row form, as the portable plan does; CPU targets compute the attention as two products and a softmax
on their own kernels (_decomposed), from plain operands.
"""

from __future__ import annotations

from typing import Any

from mace.model.ir import Node
from mace.opencl.plan.gemm import gemm, matmul_operands
from mace.opencl.plan.planner import Arg, Planner, View, lowers, optional, prepass
from mace.opencl.plan.reduce import softmax
from mace.opencl.plan.templates import FLOAT_TAGS, broadcast_strides, contiguous_strides, prod, row_offset
from mace.opencl.plan.tiling import ATTENTION_VARIANTS
from mace.opencl.plan.tiling_gpu import attention_rows
from mace.opencl.plan.views import VIEW_OPS, Refined, compose, view_of

OP = "ScaledDotProductAttention"


def _chain_nodes(p: Planner) -> dict[str, Node]:
    """The view-op nodes on the chains that end in an attention's operands (name -> node); a chain starts after a
    node another launch writes the output of (Planner.absorbed: gemm.fold_output_transposes)."""
    producers = p.graph.producers()
    found: dict[str, Node] = {}
    for node in p.graph.nodes:
        if node.op != OP:
            continue
        for value in node.inputs[:4]:
            while (value and (producer := producers.get(value)) is not None and producer.op in VIEW_OPS
                   and producer.name not in p.absorbed):
                found[producer.name] = producer
                value = producer.inputs[0]
    return found


def _readers_allow(p: Planner, node: Node, chain: dict[str, Node]) -> bool:
    out = node.outputs[0]
    if out in p.graph_outputs:
        return False
    return all(u.name in chain or u.op == OP for u in p.consumers.get(out, []))


@prepass
def view_attention_operands(p: Planner) -> None:
    if p.cpu:
        return  # a CPU target computes attention as two products and a softmax (_decomposed), from plain operands
    chain = _chain_nodes(p)
    while True:
        shrunk = True
        while shrunk:  # a node that must be computed needs its input computed too
            kept = {name: node for name, node in chain.items() if _readers_allow(p, node, chain)}
            shrunk, chain = len(kept) < len(chain), kept
        views: dict[str, Refined] = {}
        failed = None
        for node in p.graph.nodes:
            if node.name in chain:
                source = views.get(node.inputs[0]) or Refined.of(view_of(p, node.inputs[0]), p.shape(node.inputs[0]))
                view = compose(p, node, source)
                # what an attention reads needs a stride a dim; a value only the chain reads may be finer
                read = any(u.op == OP for u in p.consumers.get(node.outputs[0], []))
                if view is None or (read and view.exact() is None):
                    failed = node.name
                    break
                views[node.outputs[0]] = view
        if failed is None:
            break
        del chain[failed]
    for node in chain.values():
        plain = views[node.outputs[0]].exact()
        if plain is None:
            p.absorbed.add(node.name)  # no kernel reads it: the chain's end reads its source
        else:
            p.views[node.outputs[0]] = plain
    for node in p.graph.nodes:
        if node.op == OP:
            writer = _output_transpose(p, node)
            # not one that MatMuls already read through strides (gemm.fold_transposes): the attention's own output
            # must then be written
            if writer is not None and writer.name not in chain and writer.outputs[0] not in p.views:
                p.absorbed.add(writer.name)


def _output_transpose(p: Planner, node: Node) -> Node | None:
    """The Transpose that is the only reader of an attention's output (not itself a graph output)."""
    out = node.outputs[0]
    users = p.consumers.get(out, [])
    if out in p.graph_outputs or len(users) != 1 or users[0].op != "Transpose":
        return None
    return users[0]


def _addressing(prefix: str, lead_shape: list[int], view: View, names: tuple[str, str]) -> dict[str, Any]:
    """The defines that address one operand: its offset, batch-head offset expression and the two inner strides."""
    lead = len(lead_shape)
    return {f"{prefix}_OFF": view.offset, f"{prefix}_BH(r)": f"({row_offset(lead_shape, view.strides[:lead])})",
            f"{prefix}S_{names[0]}": view.strides[lead], f"{prefix}S_{names[1]}": view.strides[lead + 1]}


def _vector_rows(view: View, lead_shape: list[int], along: int, length: int) -> int:
    """4 where the operand's rows are contiguous along dim ``along`` (one of its two inner dims, ``length`` long) and
    each starts at a multiple of 4 elements (aligned float4 loads), else 1."""
    lead = len(lead_shape)
    across = 2 * lead + 1 - along  # the other inner dim
    starts = [s for s, n in zip(view.strides[:lead], lead_shape) if n > 1] + [view.strides[across], view.offset]
    return 4 if view.strides[along] == 1 and length % 4 == 0 and all(s % 4 == 0 for s in starts) else 1


def _decomposed(p: Planner, node: Node, q: str, kt: str, v: str, mask: str | None) -> None:
    """The attention as scale * Q.K^T + mask (one product, the mask its bias), a softmax, and P.V: on pocl the
    CPU kernels of those (gemm_cpu.cl, softmax_cpu.cl) beat attention.cl, whose private row arrays pocl keeps in
    memory (a ViT-B/16 layer on 2 cores: 56 ms unfused, 152 ms with attention.cl's per-row form)."""
    qshape = p.shape(q)
    scores = p.intermediate(f"{node.name}__scores", (*qshape[:-1], p.shape(kt)[-1]))
    probs = p.intermediate(f"{node.name}__probs", p.shape(scores))
    a, b, shape = matmul_operands(p, q, kt, mask, scores, alpha=float(node.attrs.get("scale", 1.0)))
    gemm(p, node, a, b, mask, None, scores, shape)
    softmax(p, node, scores, probs, len(qshape) - 1, False, bool(node.attrs.get("nan_to_zero", 0)))
    a, b, shape = matmul_operands(p, probs, v, None, node.outputs[0])
    gemm(p, node, a, b, None, None, node.outputs[0], shape)


@lowers(OP)
def _lower_attention(p: Planner, node: Node) -> None:
    q, kt, v, mask = node.inputs[0], node.inputs[1], node.inputs[2], optional(node.inputs, 3)
    if p.cpu:
        _decomposed(p, node, q, kt, v, mask)
        return
    qshape = list(p.shape(q))
    lead_shape, (sq, d) = qshape[:-2], qshape[-2:]
    sk, dv = p.shape(kt)[-1], p.shape(v)[-1]
    lead = len(lead_shape)
    qv, kv, vv = (view_of(p, x) for x in (q, kt, v))
    defines: dict[str, Any] = {"Q_T": p.tag(q), "K_T": p.tag(kt), "V_T": p.tag(v)}
    defines.update({"SQ": sq, "SK": sk, "D": d, "DV": dv, "SCALE": float(node.attrs.get("scale", 1.0))})
    defines.update({"HAS_MASK": bool(mask), "NAN_TO_ZERO": bool(node.attrs.get("nan_to_zero", 0))})
    defines.update(_addressing("Q", lead_shape, qv, ("I", "D")))
    defines.update(_addressing("K", lead_shape, kv, ("D", "J")))
    defines.update(_addressing("V", lead_shape, vv, ("J", "E")))
    args: list[Arg] = [p.use(view.source) for view in (qv, kv, vv)]
    if mask:
        mview = view_of(p, mask)
        scores = [*lead_shape, sq, sk]
        # broadcast the mask's own strides (its view's) to the scores' dims
        own = broadcast_strides(p.shape(mask), scores)
        pad = len(scores) - len(p.shape(mask))
        strides = tuple(0 if o == 0 else mview.strides[i - pad] for i, o in enumerate(own))
        defines["M_T"] = p.tag(mask)
        defines.update(_addressing("M", lead_shape, View(mview.source, strides, mview.offset), ("I", "J")))
        args.append(p.use(mview.source))
    writer = _output_transpose(p, node)
    if writer is not None and writer.name in p.absorbed:
        out = writer.outputs[0]
        perm = [int(x) for x in writer.attrs.get("perm", list(range(lead + 2))[::-1])]
        final = contiguous_strides(p.shape(out))
        ystrides = [0] * (lead + 2)
        for j, dim in enumerate(perm):
            ystrides[dim] = final[j]
    else:
        out = node.outputs[0]
        ystrides = contiguous_strides(p.shape(out))
    defines["Y_T"] = p.tag(out)
    defines.update(_addressing("Y", lead_shape, View(out, tuple(ystrides)), ("I", "E")))
    args.append(p.define(out))
    floats = all(p.tag(x) in FLOAT_TAGS for x in (q, kt, v))
    defines["KVEC"] = _vector_rows(kv, lead_shape, lead, d) if floats else 1
    defines["VVEC"] = _vector_rows(vv, lead_shape, lead + 1, dv) if floats else 1
    heads = prod(lead_shape)
    variant = p.variant(node, ATTENTION_VARIANTS) if p.gpu else 0
    rows = attention_rows(sq, heads, d, dv, p.target, p.policy, variant) if p.gpu and p.target else 0
    if rows:
        defines["BQ"] = rows
        p.launch(node, p.kernel("attention", defines), [64, -(-sq // rows), heads], args, local_size=[64, 1, 1])
    else:
        defines["KB"] = 8 if p.gpu else 4
        p.launch(node, p.kernel("attention", defines), [sq, heads], args)
