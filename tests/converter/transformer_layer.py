"""A transformer encoder layer (ViT-B/16, BERT-base) built with onnx.helper the way torch.onnx.export (opset 17) writes
one: LayerNorm -> 3x Linear (MatMul + Add) -> Reshape/Transpose to heads -> MatMul QK^T -> Div by sqrt(d) -> Softmax
-> MatMul .V -> Transpose/Reshape back -> Linear -> residual Add -> LayerNorm -> Linear -> GELU (erf form) -> Linear
-> residual Add.

``PYTHONPATH=tests python tests/converter/transformer_layer.py`` prints the launches of the layer at ViT-B/16 size
(B=1, S=197, D=768, 12 heads) before and after the passes, for a portable and a GPU-target plan.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from onnx import helper

from support import onnx_model


def transformer_layer(seq: int = 197, dim: int = 768, heads: int = 12, ffn: int | None = None, seed: int = 0) -> Any:
    """The ONNX model of one encoder layer: input ``x`` [1, seq, dim], output ``y`` [1, seq, dim]."""
    ffn = 4 * dim if ffn is None else ffn
    head = dim // heads
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    nodes: list[Any] = []

    def weight(name: str, *shape: int, scale: float = 1.0) -> str:
        weights[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
        return name

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        weights[name] = np.asarray(value, dtype)
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(nodes)}", **attrs))
        return output

    def linear(x: str, name: str, k: int, n: int) -> str:
        """nn.Linear: MatMul(x, W^T) then Add(bias, .), torch's operand order."""
        mm = node("MatMul", [x, weight(f"{name}.weight", k, n, scale=1 / math.sqrt(k))], f"{name}/MatMul")
        return node("Add", [weight(f"{name}.bias", n, scale=0.1), mm], f"{name}/Add")

    def layer_norm(x: str, name: str) -> str:
        gamma = const(f"{name}.weight", 1 + 0.1 * rng.standard_normal(dim))
        beta = const(f"{name}.bias", 0.1 * rng.standard_normal(dim))
        return node("LayerNormalization", [x, gamma, beta], f"{name}/out", axis=-1, epsilon=1e-12)

    to_heads = const("shape.heads", [1, seq, heads, head], np.int64)
    to_tokens = const("shape.tokens", [1, seq, dim], np.int64)
    ln1 = layer_norm("x", "ln1")
    q, k, v = (linear(ln1, f"attn.{w}", dim, dim) for w in "qkv")
    qh = node("Transpose", [node("Reshape", [q, to_heads], "q/heads")], "q/t", perm=[0, 2, 1, 3])
    kh = node("Transpose", [node("Reshape", [k, to_heads], "k/heads")], "k/t", perm=[0, 2, 3, 1])  # K^T, one perm
    vh = node("Transpose", [node("Reshape", [v, to_heads], "v/heads")], "v/t", perm=[0, 2, 1, 3])
    scores = node("Div", [node("MatMul", [qh, kh], "scores"), const("sqrt_d", math.sqrt(head))], "scores/scaled")
    probs = node("Softmax", [scores], "probs", axis=-1)
    ctx = node("Transpose", [node("MatMul", [probs, vh], "ctx")], "ctx/t", perm=[0, 2, 1, 3])
    attn = linear(node("Reshape", [ctx, to_tokens], "ctx/tokens"), "attn.out", dim, dim)
    res1 = node("Add", ["x", attn], "res1")
    h = linear(layer_norm(res1, "ln2"), "mlp.fc1", dim, ffn)
    erf = node("Erf", [node("Div", [h, const("sqrt2", math.sqrt(2.0))], "gelu/div")], "gelu/erf")
    x_erf = node("Mul", [h, node("Add", [erf, const("one", 1.0)], "gelu/add")], "gelu/mul")
    gelu = node("Mul", [x_erf, const("half", 0.5)], "gelu/out")
    out = linear(gelu, "mlp.fc2", ffn, dim)
    node("Add", [res1, out], "y")
    return onnx_model(nodes, {"x": [1, seq, dim]}, {"y": [1, seq, dim]}, weights, opset=17, name="encoder_layer")


GPU_TARGET_ARGS = {"is_gpu": True, "compute_units": 132, "local_mem_bytes": 49152, "max_work_group_size": 1024}


def launch_counts(model: Any) -> dict[str, dict[str, int]]:
    """Launches of the model's portable and GPU-target (H200-like) plans, without and with the graph passes."""
    from mace.converter import convert_onnx
    from mace.converter.onnx_import import import_onnx
    from mace.opencl.plan import DeviceTarget, plan_graph

    gpu = DeviceTarget(**GPU_TARGET_ARGS)  # type: ignore[arg-type]
    counts: dict[str, dict[str, int]] = {}
    for label, graph in (("before", import_onnx(model)), ("after", convert_onnx(model))):
        counts[label] = {"nodes": len(graph.nodes), "portable": len(plan_graph(graph).launches),
                         "gpu": len(plan_graph(graph, gpu).launches)}
    return counts


if __name__ == "__main__":
    for when, row in launch_counts(transformer_layer()).items():
        print(when, row)
