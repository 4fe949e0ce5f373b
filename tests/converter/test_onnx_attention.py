"""ONNX's Attention operator (opset 23) imported as IR nodes around one ScaledDotProductAttention
(converter/onnx_attention.py): 4-D and 3-D inputs, grouped-query heads, causal, boolean and float masks with fully
masked rows, an explicit scale, a KV cache and the present outputs, each against onnxruntime on the CPU reference and
on OpenCL (portable, CPU-target and GPU-target plans); what it refuses fails conversion with one error naming the
node and the reason."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper
from targets import OpenCLCheck

import mace
from mace.converter import convert_onnx
from mace.errors import UnsupportedOpError
from support import run_onnxruntime


def attention_model(qs: list[int], ks: list[int], vs: list[int], mask: list[int] | None = None,
                    mask_type: int = TensorProto.FLOAT, extra_inputs: int = 0, outputs: int = 1, **attrs: Any) -> Any:
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("q", qs), ("k", ks), ("v", vs))]
    names = ["q", "k", "v"]
    if mask is not None or extra_inputs:
        names.append("m" if mask is not None else "")
        if mask is not None:
            inputs.append(helper.make_tensor_value_info("m", mask_type, mask))
    for i in range(extra_inputs):  # past_key, past_value
        names.append(f"past{i}")
        inputs.append(helper.make_tensor_value_info(f"past{i}", TensorProto.FLOAT, [ks[0], ks[1], 2, ks[-1]]))
    outs = ["y", "present_key", "present_value", "qk"][:outputs]
    graph = helper.make_graph([helper.make_node("Attention", names, outs, name="attn", **attrs)], "g", inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    return model


CASES = {
    "4d": (attention_model([2, 3, 5, 8], [2, 3, 7, 8], [2, 3, 7, 32]), None),
    "causal_scaled": (attention_model([1, 2, 7, 16], [1, 2, 9, 16], [1, 2, 9, 32], is_causal=1, scale=0.3), None),
    "3d_grouped": (attention_model([2, 5, 4 * 8], [2, 6, 2 * 8], [2, 6, 2 * 32], q_num_heads=4, kv_num_heads=2),
                   None),
    "bool_mask": (attention_model([1, 2, 5, 8], [1, 2, 6, 8], [1, 2, 6, 8], mask=[5, 6],
                                  mask_type=TensorProto.BOOL), "bool"),
    "float_mask_causal": (attention_model([1, 2, 6, 8], [1, 2, 6, 8], [1, 2, 6, 8], mask=[1, 2, 6, 6], is_causal=1),
                          "float"),
    # a KV cache of 2 positions: causal from the cached length on, the presents asked for
    "cache_causal": (attention_model([1, 2, 3, 8], [1, 2, 3, 8], [1, 2, 3, 8], extra_inputs=2, outputs=3,
                                     is_causal=1), None),
    "presents_without_cache": (attention_model([1, 2, 3, 8], [1, 2, 4, 8], [1, 2, 4, 8], outputs=3), None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_operator_matches_onnxruntime(case: str, opencl_check: OpenCLCheck) -> None:
    model, mask_kind = CASES[case]
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input if i.name != "m"}
    if mask_kind == "bool":
        keep = rng.random((5, 6)) < 0.6
        keep[2, :] = False  # a row with every key masked: 0, as the operator says
        feeds["m"] = keep
    elif mask_kind == "float":
        mask = np.where(rng.random((1, 2, 6, 6)) < 0.3, -np.inf, 0.25).astype(np.float32)
        mask[0, 1, 4, :] = -np.inf
        feeds["m"] = mask
    graph = convert_onnx(model)
    assert [n.op for n in graph.nodes].count("ScaledDotProductAttention") == 1
    expected = run_onnxruntime(model, feeds)
    assert not np.isnan(expected["y"]).any()
    got = mace.Engine(graph, device="cpu").run(feeds)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    opencl_check(graph, feeds, expected)


@pytest.mark.parametrize("model,reason", [
    (attention_model([1, 2, 5, 8], [1, 2, 6, 8], [1, 2, 6, 8], extra_inputs=1), "past_value"),
    (attention_model([1, 2, 5, 8], [1, 2, 6, 8], [1, 2, 6, 8], softcap=30.0), "softcap"),
    (attention_model([1, 2, 5, 8], [1, 2, 6, 8], [1, 2, 6, 8], outputs=4), "qk_matmul_output"),
    (attention_model([1, 5, 16], [1, 6, 16], [1, 6, 16]), "q_num_heads"),
    (attention_model([1, 6, 5, 8], [1, 4, 6, 8], [1, 4, 6, 8]), "not a multiple"),
])
def test_what_the_import_refuses_is_one_clear_error(model: Any, reason: str) -> None:
    with pytest.raises(UnsupportedOpError, match=reason) as info:
        convert_onnx(model)
    assert "attn" in str(info.value) and "Attention" in str(info.value)
