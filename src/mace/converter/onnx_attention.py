"""ONNX's Attention (opset 23 on) as IR nodes: the heads split and moved where the inputs are 3-D, K and V repeated
for grouped-query attention, K transposed, the masks made one additive float mask, then one
ScaledDotProductAttention (mace.model.ir), the same node the converter fuses exported attention into.

Taken: 3-D inputs (``q_num_heads``, ``kv_num_heads``) and 4-D ones, ``scale`` (default 1/sqrt(head size)), a KV
cache (``past_key``, ``past_value``: concatenated in front of K and V, which are then ``present_key`` and
``present_value``), ``is_causal`` (bottom-right aligned: query i sees keys j <= i + the cached length), a boolean
(True: attend) or float (added) ``attn_mask`` broadcast to [batch, heads, queries, keys], ``softmax_precision`` (mace
computes in float32 anyway). A query row with every key masked gives 0, as the operator defines (``nan_to_zero``).
Refused, each with its reason: ``nonpad_kv_seqlen``, only one of the two caches, ``softcap``, and
``qk_matmul_output``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mace.model.ir import Node

AddConstant = Callable[[str, np.ndarray], None]


class AttentionUnsupported(ValueError):
    """What of an Attention node mace does not take (the message), raised before any node is made."""


def _optional(node: Node, index: int) -> str:
    return node.inputs[index] if len(node.inputs) > index else ""


def expand_attention(node: Node, shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str],
                     add_constant: AddConstant, fresh: Callable[[str], str]) -> list[Node]:
    """The IR nodes that compute ``node`` (an ONNX Attention), in order; constants they need go to
    ``add_constant(name, value)``, and every value they make is named ``fresh(node's name + suffix)`` (a name no
    value has yet). Raises AttentionUnsupported for what the module docstring refuses."""
    attrs: dict[str, Any] = node.attrs
    if _optional(node, 6):
        raise AttentionUnsupported("input nonpad_kv_seqlen (a padded static cache) is not supported")
    past_key, past_value = _optional(node, 4), _optional(node, 5)
    if bool(past_key) != bool(past_value):
        raise AttentionUnsupported("past_key and past_value come together (one of them is missing)")
    if len(node.outputs) > 3 and node.outputs[3]:
        raise AttentionUnsupported("output qk_matmul_output is not supported")
    presents = [node.outputs[i] if len(node.outputs) > i else "" for i in (1, 2)]
    if float(attrs.get("softcap", 0.0)) != 0.0:
        raise AttentionUnsupported("softcap is not supported")
    name, (q, k, v) = node.name, node.inputs[:3]
    qs, ks, vs = shapes[q], shapes[k], shapes[v]
    nodes: list[Node] = []

    def const(suffix: str, value: Any, dtype: Any = np.int64) -> str:
        cname = fresh(f"{name}__{suffix}")
        add_constant(cname, np.asarray(value, dtype))
        return cname

    def add(op: str, inputs: list[str], suffix: str, **node_attrs: Any) -> str:
        out = fresh(f"{name}__{suffix}")
        nodes.append(Node(op, f"{name}__{suffix}", inputs, [out], dict(node_attrs)))
        return out

    if len(qs) == 3:
        if "q_num_heads" not in attrs or "kv_num_heads" not in attrs:
            raise AttentionUnsupported("3-D inputs need the q_num_heads and kv_num_heads attributes")
        hq, hkv = int(attrs["q_num_heads"]), int(attrs["kv_num_heads"])
        batch, queries, keys = qs[0], qs[1], ks[1]
        d, dv = qs[2] // hq, vs[2] // hkv

        def heads(x: str, seq: int, heads_: int, size: int, what: str) -> str:
            split = add("Reshape", [x, const(f"{what}_shape", [batch, seq, heads_, size])], f"{what}_split")
            return add("Transpose", [split], f"{what}_heads", perm=[0, 2, 1, 3])

        q4, k4, v4 = heads(q, queries, hq, d, "q"), heads(k, keys, hkv, d, "k"), heads(v, keys, hkv, dv, "v")
    elif len(qs) == 4:
        batch, hq, queries, d = qs
        hkv, keys, dv = ks[1], ks[2], vs[3]
        q4, k4, v4 = q, k, v
    else:
        raise AttentionUnsupported(f"Q of rank {len(qs)} (3 or 4 are)")
    cached = shapes[past_key][2] if past_key else 0
    if past_key:  # the cache first along the sequence; the result is what present_key / present_value name
        for i, (past, what) in enumerate(((past_key, "k"), (past_value, "v"))):
            whole = presents[i] or fresh(f"{name}__{what}_present")
            nodes.append(Node("Concat", f"{name}__{what}_cache", [past, k4 if what == "k" else v4], [whole],
                              {"axis": 2}))
            k4, v4 = (whole, v4) if what == "k" else (k4, whole)
        keys += cached
    elif any(presents):
        for i, (x, what) in enumerate(((k4, "k"), (v4, "v"))):
            if presents[i]:  # no cache: the present is K (V) itself, in [batch, heads, keys, size]
                nodes.append(Node("Identity", f"{name}__{what}_present", [x], [presents[i]]))
    if hkv < 1 or hq % hkv:
        raise AttentionUnsupported(f"{hq} query heads are not a multiple of {hkv} key/value heads")
    if hq != hkv:  # grouped-query attention: query head h reads key/value head h // (hq / hkv)
        group = hq // hkv

        def repeat(x: str, size: int, what: str) -> str:
            one = add("Unsqueeze", [x, const(f"{what}_axis", [2])], f"{what}_group")
            wide = add("Expand", [one, const(f"{what}_wide", [batch, hkv, group, keys, size])], f"{what}_repeat")
            return add("Reshape", [wide, const(f"{what}_heads_shape", [batch, hq, keys, size])], f"{what}_all")

        k4, v4 = repeat(k4, d, "k"), repeat(v4, dv, "v")
    kt = add("Transpose", [k4], "kt", perm=[0, 1, 3, 2])
    mask = _optional(node, 3)
    if mask and dtypes[mask] == "bool":
        mask = add("Where", [mask, const("attend", 0.0, np.float32), const("masked", -np.inf, np.float32)], "mask")
    if int(attrs.get("is_causal", 0)):
        causal = np.where(np.tril(np.ones((queries, keys), bool), cached), np.float32(0.0), np.float32(-np.inf))
        causal_name = const("causal", causal, np.float32)
        mask = add("Add", [mask, causal_name], "masks") if mask else causal_name
    scale = float(attrs["scale"]) if "scale" in attrs else 1.0 / math.sqrt(d)
    y = node.outputs[0]
    out4 = y if len(qs) == 4 else fresh(f"{name}__y_heads")
    nodes.append(Node("ScaledDotProductAttention", name, [q4, kt, v4, *([mask] if mask else [])], [out4],
                      {"scale": float(np.float32(scale)), "nan_to_zero": 1}))
    if len(qs) == 3:
        tokens = add("Transpose", [out4], "y_tokens", perm=[0, 2, 1, 3])
        nodes.append(Node("Reshape", f"{name}__y", [tokens, const("y_shape", [batch, queries, hq * dv])], [y]))
    return nodes
