"""Gemm and MatMul on gemm.cl: one batched kernel, its operands addressed by strides (gemm_shape.GemmShape), so
transposes and broadcast batch dims cost no copies. ``gemm`` is also the lowering of 1x1 convolutions (conv.py). GPU
targets take gemm_tiled.py's kernels instead, CPU targets gemm_cpu.py's where it applies.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from mace.model.ir import Node
from mace.opencl.plan.gemm_cpu import cpu_gemm
from mace.opencl.plan.gemm_shape import GemmShape
from mace.opencl.plan.gemm_tiled import gpu_gemm
from mace.opencl.plan.planner import Arg, Planner, View, epilogue_split, lowers, optional, prepass
from mace.opencl.plan.templates import FLOAT_TAGS, broadcast_strides, collapse, contiguous_strides, prod
from mace.opencl.plan.tiling import WORK_ITEM_FLOOR_VARIANTS, gemm_tiling, variant_floor


def gemm(
    p: Planner, node: Node, a: str, b: str, bias: str | None, residual: str | None, out: str, g: GemmShape
) -> None:
    """out[b][m][n] = act(alpha * A.B + beta * bias + residual), the operands addressed as ``g`` says; on a GPU
    target an ``out`` that fold_output_transposes permutes is written where it says instead."""
    if p.gpu:
        out, permute, added = p.permuted_outputs.get(out, (out, 1, None))
        gpu_gemm(p, node, a, b, bias, residual or added, out, replace(g, y_permute=permute))
        return
    if p.cpu and cpu_gemm(p, node, a, b, bias, residual, out, g):
        return
    bshape, (a_bs, b_bs, c_bs) = collapse(g.batch, g.a_batch, g.b_batch, g.c_batch)
    nbatch = prod(bshape)
    least = variant_floor(p.variant(node, WORK_ITEM_FLOOR_VARIANTS), p.policy.min_work_items)
    tm, tn, vec_n, vec_k = gemm_tiling(g, p.tag(a) in FLOAT_TAGS and p.tag(b) in FLOAT_TAGS, least)
    defines: dict[str, Any] = {"A_T": p.tag(a), "B_T": p.tag(b), "Y_T": p.tag(out)}
    defines.update({"M": g.m, "N": g.n, "K": g.k, "TM": tm, "TN": tn, "VEC_N": vec_n, "VEC_K": vec_k})
    defines.update({"AS_M": g.a_strides[0], "AS_K": g.a_strides[1], "BS_K": g.b_strides[0]})
    defines.update({"BS_N": g.b_strides[1], "BATCH": nbatch, "BATCH_RANK": len(bshape) if nbatch > 1 else 0})
    if nbatch > 1:
        defines.update({"BATCH_SHAPE": bshape, "A_BSTRIDES": a_bs, "B_BSTRIDES": b_bs, "C_BSTRIDES": c_bs})
    defines.update({"ALPHA": g.alpha, "BETA": g.beta, "HAS_BIAS": bias is not None})
    args: list[Arg] = [p.use(a), p.use(b)]
    if bias is not None:
        defines.update({"C_T": p.tag(bias), "CS_M": g.c_strides[0], "CS_N": g.c_strides[1]})
        args.append(p.use(bias))
    p.epilogue(node, defines, args, residual)
    args.append(p.define(out))
    grid = [-(-g.n // tn), -(-g.m // tm), nbatch]
    p.launch(node, p.kernel("gemm", defines), grid, args)


@lowers("Gemm")
def _lower_gemm(p: Planner, node: Node) -> None:
    core, residual = epilogue_split(node)
    a, b, bias, y = core[0], core[1], optional(core, 2), node.outputs[0]
    (ra, ca), (rb, cb) = p.shape(a), p.shape(b)
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    m, k = (ca, ra) if trans_a else (ra, ca)
    n = rb if trans_b else cb
    a_strides = (1, m) if trans_a else (k, 1)
    b_strides = (1, k) if trans_b else (n, 1)
    c_strides = (0, 0)
    if bias:
        bs = broadcast_strides(p.shape(bias), (m, n))
        c_strides = (bs[0], bs[1])
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    shape = GemmShape(m, n, k, a_strides, b_strides, c_strides, alpha=alpha, beta=beta)
    gemm(p, node, a, b, bias, residual, y, shape)


@prepass
def fold_transposes(p: Planner) -> None:
    """A Transpose (not a graph output) that only MatMuls read, as A or B, costs no launch: they read its input
    through the permuted strides (Planner.views), as K^T in attention's Q.K^T (on GPU and portable targets; on CPU
    targets an attention's Q, K^T and V count as MatMul operands)."""
    for node in p.graph.nodes:
        out = node.outputs[0] if node.op == "Transpose" and node.outputs else ""
        users = p.consumers.get(out, [])
        if not users or out in p.graph_outputs or len(p.shape(out)) < 2:
            continue
        slots = [_product_slots(p, u) for u in users]
        if all(out in a + b and out not in rest for a, b, rest in slots):
            source = node.inputs[0]
            own = contiguous_strides(p.shape(source))
            perm = node.attrs.get("perm") or list(range(len(own)))[::-1]
            strides = tuple(own[int(d)] for d in perm)
            # gemm_cpu.cl loads B in vectors along n: on a CPU target one copy (copy_cpu.cl) that makes a run-time B
            # n-contiguous beats gemm.cl on a strided one (K^T in attention: 11.5 -> ~1 ms of a ViT layer on 2 cores)
            as_b = any(out in b for _, b, _ in slots)
            if p.cpu and as_b and strides[-1] != 1 and p.tag(out) == "F32":
                continue
            p.views[out] = View(source, strides)


def _product_slots(p: Planner, user: Node) -> tuple[list[str], list[str], list[str]]:
    """(A operands, B operands, its other inputs) of ``user`` as matrix products read them: a MatMul's first two
    inputs; on a CPU target an attention's Q (A), K^T and V (B), which it computes as two MatMuls there
    (attention.py); any other node reads all its inputs otherwise."""
    if user.op == "MatMul":
        return [user.inputs[0]], [user.inputs[1]], list(user.inputs[2:])
    if user.op == "ScaledDotProductAttention" and p.cpu:
        return [user.inputs[0]], list(user.inputs[1:3]), list(user.inputs[3:])
    return [], [], list(user.inputs)


def _matrix_operand(
    p: Planner, value: str, full: list[int], batch: list[int]
) -> tuple[str, tuple[int, int], list[int]]:
    """(buffer value, strides over the two matrix dims, strides over ``batch``) of a MatMul operand of shape ``full``
    (rank >= 2): contiguous, or a view (fold_transposes)."""
    if value not in p.views:
        return value, (full[-1], 1), broadcast_strides(full, [*batch, *full[-2:]])[: len(batch)]
    view = p.views[value]
    source, strides = view.source, view.strides
    assert view.offset == 0, "MatMul operands are views without an offset (fold_transposes)"
    pad = len(batch) - (len(full) - 2)
    bs = [0] * pad + [0 if dim == 1 else s for dim, s in zip(full[:-2], strides[:-2])]
    return source, (strides[-2], strides[-1]), bs


@lowers("MatMul")
def _lower_matmul(p: Planner, node: Node) -> None:
    core, residual = epilogue_split(node)
    a, b, bias, y = core[0], core[1], optional(core, 2), node.outputs[0]
    a, b, shape = matmul_operands(p, a, b, bias, y)
    gemm(p, node, a, b, bias, residual, y, shape)


@prepass
def fold_output_transposes(p: Planner) -> None:
    """GPU targets: a 2-D product (Gemm, MatMul) of [R * Q, N] whose output only a Reshape to [R, Q, N] reads, and
    that only a Transpose to [Q, R, N], writes the Transpose's output itself, its rows permuted as it stores them
    (gemm_tiled.cl Y_PERMUTE): torch's sequence-first attention output (torchvision's ViT at batch > 1), where the
    Transpose was a copy kernel. An Add that is the Transpose's only reader, of a tensor of its shape computed
    before the product, becomes the product's residual (where neither has an activation): no launch for it either.
    A product with a residual of its own is left as it is. Sets ``p.permuted_outputs`` and absorbs the nodes
    (policy ``gpu_fold_output_transposes``)."""
    if not (p.gpu and p.policy.gpu_fold_output_transposes):
        return
    producers = p.graph.producers()
    order = {node.name: i for i, node in enumerate(p.graph.nodes)}
    for node in p.graph.nodes:
        # (not one with a residual of its own: that lies in the product's rows, which the epilogue would read
        # permuted)
        y = node.outputs[0] if node.op in ("Gemm", "MatMul") and node.outputs and not node.attrs.get("residual") else ""
        reshape = _sole_reader(p, y, "Reshape") if y and len(p.shape(y)) == 2 else None
        transpose = _sole_reader(p, reshape.outputs[0], "Transpose") if reshape else None
        if reshape is None or transpose is None or [int(d) for d in transpose.attrs.get("perm", [])] != [1, 0, 2]:
            continue
        if transpose.outputs[0] in p.views:  # (MatMuls read it through strides: fold_transposes)
            continue
        (rows, cols), split = p.shape(y), p.shape(reshape.outputs[0])
        if len(split) != 3 or split[0] * split[1] != rows or split[2] != cols or min(split[0], split[1], cols) < 2:
            continue
        final, residual, absorbed = transpose.outputs[0], None, [reshape, transpose]
        add = _sole_reader(p, final, "Add")
        if add is not None and not node.attrs.get("activation") and not add.attrs.get("activation") \
                and len(add.inputs) == 2:
            other = add.inputs[1] if add.inputs[0] == final else add.inputs[0]
            source = producers.get(other)
            if (other != final and p.shape(other) == p.shape(final) and p.tag(other) == p.tag(final)
                    and (source is None or order[source.name] < order[node.name])):
                final, residual = add.outputs[0], other
                absorbed.append(add)
        p.permuted_outputs[y] = (final, split[1], residual)
        p.absorbed.update(a.name for a in absorbed)


def _sole_reader(p: Planner, value: str, op: str) -> Node | None:
    """The node of type ``op`` that is ``value``'s only reader, where ``value`` is no graph output."""
    users = p.consumers.get(value, [])
    if value in p.graph_outputs or len(users) != 1 or users[0].op != op:
        return None
    return users[0]


def matmul_operands(
    p: Planner, a: str, b: str, bias: str | None, y: str, alpha: float = 1.0
) -> tuple[str, str, GemmShape]:
    """(A's buffer value, B's, how gemm addresses them and the bias) for y = alpha * MatMul(a, b) + bias (numpy's
    matmul: batched, broadcast, 1-D operands promoted), the operands contiguous or views (fold_transposes)."""
    a_shape, b_shape = list(p.shape(a)), list(p.shape(b))
    a_vec, b_vec = len(a_shape) == 1, len(b_shape) == 1
    a_full = [1, *a_shape] if a_vec else a_shape
    b_full = [*b_shape, 1] if b_vec else b_shape
    m, k = a_full[-2:]
    n = b_full[-1]
    batch = list(np.broadcast_shapes(tuple(a_full[:-2]), tuple(b_full[:-2])))
    a, a_strides, a_bs = _matrix_operand(p, a, a_full, batch)
    b, b_strides, b_bs = _matrix_operand(p, b, b_full, batch)
    c_bs, c_strides = [0] * len(batch), (0, 0)
    if bias:
        # Bias broadcasts against the IR output shape; re-insert the dims a 1-D operand removed.
        out_shape = list(p.shape(y))
        bstr = broadcast_strides(p.shape(bias), out_shape)
        if b_vec:
            bstr.append(0)
        if a_vec:
            bstr.insert(len(bstr) - 1, 0)
        c_bs, c_strides = bstr[: len(batch)], (bstr[-2], bstr[-1])
    shape = GemmShape(m, n, k, a_strides, b_strides, c_strides, tuple(batch), tuple(a_bs), tuple(b_bs), tuple(c_bs),
                      alpha=alpha)
    return a, b, shape
