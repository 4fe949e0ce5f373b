"""gemm_tiled.cl's tensor-core form (MMA: 3xTF32 mma.sync through inline PTX) for DeviceTarget.tensor_cores, with
TilingPolicy.gpu_mma_tiles = MMA_TILES (the default) for convolutions of at least gpu_mma_min_k terms whose blocks
alone make gpu_mma_min_groups_per_cu work-groups per compute unit.

What is planned is checked everywhere: convolutions and products take the MMA tiles on a tensor-core target and
nothing else changes on any other (the same sources, the same variant keys). The numbers need an NVIDIA device of
compute capability 8.0 or later, the only one that compiles the PTX: they are checked there, at fp32 accuracy
against onnxruntime, and skipped elsewhere (pocl in CI)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pytest
from onnx import helper

from mace.converter import convert_onnx
from mace.model.ir import Graph
from mace.opencl.plan import DeviceTarget, plan_graph
from mace.opencl.plan.tiling import DEFAULT_POLICY, MMA_TILES
from mace.opencl.plan.tiling_gpu import gpu_gemm_tile
from mace.opencl.tuning.variants import variant_key
from support import onnx_model, opencl_devices, random_array, run_onnxruntime

H200 = DeviceTarget(is_gpu=True, compute_units=132, local_mem_bytes=49152, max_work_group_size=1024)
H200_TC = dataclasses.replace(H200, tensor_cores=True)
# the tensor-core tiles on convolutions and matrix products of any k, and every product on the first tile that
# fits however few blocks it makes: the MMA tiles, on these small layers
MMA_ON = DEFAULT_POLICY  # its own rules: K >= 128, convolutions, blocks enough to fill the device
assert MMA_ON.gpu_mma_tiles == MMA_TILES
WITH_MMA = dataclasses.replace(MMA_ON, gpu_mma_min_k=0, gpu_mma_products=True, gpu_mma_min_groups_per_cu=0,
                               gpu_mma_min_macs=0)
FIRST_FIT = dataclasses.replace(WITH_MMA, gpu_groups_per_cu=0, gpu_product_groups_per_cu=0, gpu_min_fill=0.0)


def conv_and_product_model() -> Any:
    """A 3x3 conv with bias and ReLU, a strided 1x1 conv with a residual-free output, then a MatMul with odd sizes:
    shapes that are not multiples of the 64 x 64 blocks, so every edge of the fragments is exercised."""
    init = {"w1": random_array(70, 13, 3, 3, seed=1, low=-0.3, high=0.3), "b1": random_array(70, seed=2),
            "w2": random_array(96, 70, 1, 1, seed=3, low=-0.2, high=0.2),
            "w3": random_array(21, 75, seed=4, low=-0.3, high=0.3), "shape": np.asarray([96 * 21, 21], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2]),
             helper.make_node("Reshape", ["c2", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w3"], ["y"])]
    return onnx_model(nodes, {"x": [1, 13, 41, 41]}, {"y": None}, init)


def test_tensor_core_targets_plan_mma_tiles_and_others_do_not_change() -> None:
    graph = convert_onnx(conv_and_product_model())
    plain, tc = plan_graph(graph, H200, policy=FIRST_FIT), plan_graph(graph, H200_TC, policy=FIRST_FIT)
    assert "#define MMA 1" not in plain.source
    assert tc.source.count("#define MMA 1") == 3  # both convolutions and the product
    for node in graph.nodes:  # keys without the field: tuned files keep their meaning on every other target
        assert variant_key(graph, node, H200) != variant_key(graph, node, H200_TC)
        assert variant_key(graph, node, H200) == variant_key(graph, node, dataclasses.replace(H200))
    # a tensor-core target still takes the SIMT tiles where an MMA block would be mostly padding (M 16)
    assert not gpu_gemm_tile(16, 4096, 512, 1, H200_TC, WITH_MMA, conv=True).mma
    assert gpu_gemm_tile(256, 4096, 512, 1, H200_TC, WITH_MMA, conv=True).mma
    assert gpu_gemm_tile(256, 8192, 512, 1, H200_TC, MMA_ON, conv=True).mma  # on (2^30 multiply-adds) ...
    assert not gpu_gemm_tile(256, 8192 * 8, 64, 1, H200_TC, MMA_ON, conv=True).mma  # ... where k is enough
    assert not gpu_gemm_tile(256, 8192, 512, 1, H200_TC, MMA_ON).mma  # ... for convolutions
    assert not gpu_gemm_tile(64, 1024, 16384, 1, H200_TC, MMA_ON, conv=True).mma  # ... whose blocks fill the GPU
    assert gpu_gemm_tile(64, 1024, 16384, 9, H200_TC, MMA_ON, conv=True).mma  # (16 x 9 >= 132)
    assert not gpu_gemm_tile(256, 8192, 256, 1, H200_TC, MMA_ON, conv=True).mma  # ... big enough to pay
    off = dataclasses.replace(DEFAULT_POLICY, gpu_mma_tiles=())
    assert not gpu_gemm_tile(256, 8192, 512, 1, H200_TC, off, conv=True).mma


def test_narrow_convolutions_take_the_32_row_tensor_core_block() -> None:
    # 32 or 96 output channels: a 64-row block would be a quarter or half padding; 64, 128, 192 stay on 64 x 64, and
    # 160 (a sixth padding there) too: the 32-row block is taken where it is more than gpu_mma_fill_gain as full
    blocks = {m: gpu_gemm_tile(m, 32 * 35 * 35, 864, 1, H200_TC, MMA_ON, conv=True) for m in (32, 64, 96, 160, 192)}
    assert all(tile.mma for tile in blocks.values())
    assert {m: (t.bm, t.bn) for m, t in blocks.items()} == {32: (32, 128), 64: (64, 64), 96: (32, 128),
                                                            160: (64, 64), 192: (64, 64)}
    assert not gpu_gemm_tile(48, 32 * 35 * 35, 864, 1, H200_TC, MMA_ON, conv=True).mma  # a quarter padding in both
    # ... where n fills whole blocks too (32 images of 56 x 56: the 64-row block exactly at the floor of a quarter
    # padding) 96 still takes 32 rows, and 48, as full on either, the 64 x 64 block
    assert gpu_gemm_tile(96, 32 * 56 * 56, 576, 1, H200_TC, MMA_ON, conv=True).bm == 32
    assert gpu_gemm_tile(48, 32 * 56 * 56, 576, 1, H200_TC, MMA_ON, conv=True).bm == 64


@pytest.fixture(scope="module")
def nvidia_sm80() -> Any:
    cl = pytest.importorskip("pyopencl")
    for device in opencl_devices():
        target = DeviceTarget.from_device(device)
        if target.tensor_cores and target.tiled:
            return cl.CommandQueue(cl.Context([device])), target
    pytest.skip("no NVIDIA OpenCL device of compute capability 8.0 or later (tensor cores)")


def run(graph: Graph, queue: Any, target: DeviceTarget, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import pyopencl as cl

    from mace.opencl.executor import Executor

    ctx = queue.context
    return Executor(graph, ctx, queue, lambda s, o: cl.Program(ctx, s).build(options=o), target=target).run(feeds)


def conv_and_product_case() -> tuple[Graph, dict[str, np.ndarray], np.ndarray]:
    """conv_and_product_model converted, an input, and onnxruntime's output for it."""
    model = conv_and_product_model()
    feeds = {"x": random_array(1, 13, 41, 41, seed=7)}
    return convert_onnx(model), feeds, run_onnxruntime(model, feeds)["y"]


def test_mma_tiles_compute_at_fp32_accuracy(nvidia_sm80: Any) -> None:
    queue, target = nvidia_sm80
    graph, feeds, expected = conv_and_product_case()
    # and k split in two on 50 compute units, the splits summed by the last work-group (SPLIT_SUM) and by ksum (the
    # uniform split: this conv's 54 blocks are too few for the tail split to pay)
    split = dataclasses.replace(WITH_MMA, gpu_min_fill=0.0, gpu_split_round_up=True, gpu_tail_split=False)
    # (every MMA tile alone: the 32 x 128 block too, which FIRST_FIT's order leaves behind the 64 x 64 one)
    alone = [dataclasses.replace(FIRST_FIT, gpu_mma_tiles=(tile,)) for tile in MMA_TILES[1:]]
    targets = [dataclasses.replace(target, policy=policy)
               for policy in (FIRST_FIT, dataclasses.replace(FIRST_FIT, gpu_mma_tiles=()), WITH_MMA, *alone)]
    targets += [dataclasses.replace(target, compute_units=50,
                                    policy=dataclasses.replace(split, gpu_split_sum_most=most)) for most in (64, 0)]
    for tiled in targets:
        got = run(graph, queue, tiled, feeds)["y"]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    chunks = [plan_graph(graph, tiled).source.split("// ---- ") for tiled in targets[-2:]]
    assert any("#define SPLIT_SUM 1" in c and "#define MMA 1" in c for c in chunks[0])  # an MMA block's splits summed
    assert any("#define SPLITS 2" in c and "#define MMA 1" in c and "#define SPLIT_SUM 1" not in c for c in chunks[1])


def test_tf32_targets_plan_one_pass_and_products_on_the_tensor_cores() -> None:
    """DeviceTarget.tf32 (GPUContextBuilder.set_tf32, MACE_TF32): every MMA specialization in one TF32 pass, the
    matrix products on the tensor cores under the default policy too (one pass beats the SIMT tiles), variant keys
    of its own; without tensor cores the same program as fp32's."""
    graph = convert_onnx(conv_and_product_model())
    tf32 = dataclasses.replace(H200_TC, tf32=True)
    exact, fast = plan_graph(graph, H200_TC, policy=FIRST_FIT), plan_graph(graph, tf32, policy=FIRST_FIT)
    assert exact.source.count("#define MMA_PASSES 3") == 3 and "#define MMA_PASSES 1" not in exact.source
    assert fast.source.count("#define MMA_PASSES 1") == 3 and "#define MMA_PASSES 3" not in fast.source
    assert gpu_gemm_tile(256, 8192, 512, 1, tf32, MMA_ON).mma
    assert not gpu_gemm_tile(256, 8192, 512, 1, H200_TC, MMA_ON).mma
    for node in graph.nodes:
        assert variant_key(graph, node, tf32) != variant_key(graph, node, H200_TC)
    assert plan_graph(graph, dataclasses.replace(H200, tf32=True)).source == plan_graph(graph, H200).source


def test_tf32_is_asked_for_by_setting_or_builder_and_taken_only_with_tensor_cores(monkeypatch: Any) -> None:
    cl = pytest.importorskip("pyopencl")
    import mace

    monkeypatch.setenv("MACE_TF32", "1")
    try:
        ctx = mace.GPUContextBuilder().disable_storage().finalize()
    except (mace.MaceError, cl.Error):
        pytest.skip("no OpenCL device")
    assert ctx.tf32 and not mace.GPUContextBuilder().set_tf32(False).disable_storage().finalize().tf32
    monkeypatch.setenv("MACE_TF32", "sometimes")
    with pytest.raises(mace.MaceError, match="MACE_TF32='sometimes' is not a yes/no value"):
        mace.GPUContextBuilder()
    from mace.opencl import runtime

    asked, from_device = [], DeviceTarget.from_device

    def spy(device: Any, *args: Any, **kwargs: Any) -> DeviceTarget:
        asked.append(kwargs.get("tf32"))
        return from_device(device, *args, **kwargs)

    monkeypatch.setattr(runtime.DeviceTarget, "from_device", spy)
    graph = convert_onnx(conv_and_product_model())
    engine = mace.Engine(graph, device="opencl", gpu_context=ctx)
    assert engine.stats["tf32"] == from_device(ctx.device).tensor_cores
    runtime.program_plan(graph, ctx.device, tf32=True)  # (what mace cache build plans with)
    assert asked == [True, True]


def test_tf32_runs_at_tf32_accuracy(nvidia_sm80: Any) -> None:
    """One pass: an error of TF32's order against onnxruntime (10-bit mantissas), well above the three passes'."""
    queue, target = nvidia_sm80
    graph, feeds, expected = conv_and_product_case()
    scale = np.abs(expected).max()
    errors = []
    for tf32 in (False, True):
        got = run(graph, queue, dataclasses.replace(target, tf32=tf32, policy=FIRST_FIT), feeds)["y"]
        errors.append(float(np.abs(got - expected).max() / scale))
    assert errors[0] < 1e-5 and 1e-5 < errors[1] < 5e-3, errors


def test_mma_tiles_keep_infinities(nvidia_sm80: Any) -> None:
    """IEEE semantics on the tensor cores too (MMA_SPLIT's hold of hi): an infinite input gives +-inf of the right
    sign, 0 . inf and inf - inf NaN, as onnxruntime and the SIMT tiles do; finite values agree as usual. A 3x3 conv
    of K 144 (16 channels), inputs with +-inf and NaN at fixed places, weights with exact zeros and TF32-exact
    values (whose low parts are zero: the cross products of the split)."""
    queue, target = nvidia_sm80
    w = random_array(40, 16, 3, 3, seed=3, low=-0.5, high=0.5)
    w[0] = 0.0
    w[1] = np.round(w[1] * 8) / 8
    model = onnx_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], {"x": [1, 16, 12, 12]},
                       {"y": None}, {"w": w})
    x = random_array(1, 16, 12, 12, seed=4)
    flat = x.reshape(-1)
    flat[[5, 300, 1000]] = np.inf
    flat[[77, 1500]] = -np.inf
    flat[[900]] = np.nan
    flat[[2000]] = 3.4028e38
    expected = run_onnxruntime(model, {"x": x})["y"]
    graph = convert_onnx(model)
    finite = np.isfinite(expected)
    scale = np.abs(expected[finite & (np.abs(expected) < 1e30)]).max()  # not the outputs the huge input reaches
    # (and the tiles copied by cp.async: a C_INNER conv of float operands)
    for policy in (FIRST_FIT, dataclasses.replace(FIRST_FIT, gpu_mma_async=True),
                   dataclasses.replace(FIRST_FIT, gpu_mma_tiles=())):
        tiled = dataclasses.replace(target, policy=policy)
        source = plan_graph(graph, tiled).source
        assert ("#define MMA 1" in source) == bool(policy.gpu_mma_tiles)
        assert ("#define MMA_ASYNC 1" in source) == policy.gpu_mma_async
        got = run(graph, queue, tiled, {"x": x})["y"]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_array_equal(got[np.isinf(expected)], expected[np.isinf(expected)])
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-4 * scale)


def test_mma_policy_keeps_products_and_fused_loaders_off_the_tensor_cores() -> None:
    """Turned on (measured on an H200), the MMA tiles are for convolutions of K >= 128: not for a matrix product,
    not for a 1x1 conv whose loader computes a depthwise conv (CONV 2), not for K below gpu_mma_min_k."""
    init = {"dw": random_array(160, 1, 3, 3, seed=1), "pw": random_array(192, 160, 1, 1, seed=2, low=-0.1, high=0.1),
            "pw2": random_array(256, 192, 1, 1, seed=3, low=-0.1, high=0.1),
            "small": random_array(64, 256, 1, 1, seed=4, low=-0.1, high=0.1),
            "few": random_array(96, 64, 1, 1, seed=5, low=-0.1, high=0.1),
            "shape": np.asarray([96 * 28, 28], np.int64), "mm": random_array(28, 300, seed=6)}
    nodes = [helper.make_node("Conv", ["x", "dw"], ["d"], group=160, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["d", "pw"], ["p"]),       # reads the depthwise conv: CONV 2, K 160
             helper.make_node("Conv", ["p", "pw2"], ["q"]),      # K 192: the tensor cores
             helper.make_node("Conv", ["q", "small"], ["r"]),    # K 256: the tensor cores
             helper.make_node("Conv", ["r", "few"], ["s"]),      # K 64: too few terms
             helper.make_node("Reshape", ["s", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "mm"], ["y"])]  # a product (K 28)
    graph = convert_onnx(onnx_model(nodes, {"x": [1, 160, 28, 28]}, {"y": None}, init))
    policy = dataclasses.replace(MMA_ON, gpu_groups_per_cu=0, gpu_product_groups_per_cu=0,
                                 gpu_fused_groups_per_cu=0, gpu_min_fill=0.0, gpu_mma_min_groups_per_cu=0,
                                 gpu_mma_min_macs=0)
    plan = plan_graph(graph, H200_TC, policy=policy)
    chunks = {c.split("#define KERNEL_NAME ", 1)[1].split("\n", 1)[0]: c
              for c in plan.source.split("// ---- ")[1:] if "#define TILED_GEMM 1" in c}
    by_k = {}
    for chunk in chunks.values():
        k, conv = (re.search(rf"^#define {name} (\d+)$", chunk, re.M) for name in ("K", "CONV"))
        assert k is not None and conv is not None
        by_k[k[1]] = ("#define MMA 1" in chunk, conv[1])
    assert by_k == {"160": (False, "2"), "192": (True, "1"), "256": (True, "1"), "64": (False, "1"), "28": (False, "0")}


def test_channels_inner_and_async_copies_where_they_apply() -> None:
    """On the tensor-core tiles a conv takes k with the channels inner (C_INNER) where C is a multiple of BK (16) and
    the weights are constant or 1x1, and with gpu_mma_async its tiles by cp.async (MMA_ASYNC) where it does; the
    SIMT tiles keep k in window order (gpu_channels_inner_simt off). C_INNER reorders the constant weights' k."""
    init = {"w16": random_array(64, 16, 3, 3, seed=1), "w13": random_array(64, 13, 3, 3, seed=2)}
    nodes = [helper.make_node("Conv", ["x", "w16"], ["a"], pads=[1, 1, 1, 1]),   # C 16: C_INNER
             helper.make_node("Conv", ["x13", "w13"], ["b"], pads=[1, 1, 1, 1]),  # C 13: window order
             helper.make_node("Conv", ["x", "wr"], ["c"], pads=[1, 1, 1, 1])]     # weights at run time: window order
    model = onnx_model(nodes, {"x": [2, 16, 20, 20], "x13": [2, 13, 20, 20], "wr": [64, 16, 3, 3]},
                       {"a": None, "b": None, "c": None}, init)
    graph = convert_onnx(model)

    def kernels(policy: Any, target: DeviceTarget = H200_TC) -> list[tuple[bool, bool, bool]]:
        plan = plan_graph(graph, target, policy=policy)
        chunks = [c for c in plan.source.split("// ---- ")[1:] if "#define TILED_GEMM 1" in c]
        return [tuple(f"#define {name} 1" in c for name in ("MMA", "C_INNER", "MMA_ASYNC")) for c in chunks]

    first_fit = dataclasses.replace(FIRST_FIT, gpu_mma_products=False)
    assert kernels(first_fit) == [(True, True, False), (True, False, False), (True, False, False)]
    assert kernels(dataclasses.replace(first_fit, gpu_mma_async=True)) == [
        (True, True, True), (True, False, False), (True, False, False)]
    assert kernels(first_fit, H200) == [(False, False, False)] * 3  # no tensor cores: the SIMT tiles, window order
    plan = plan_graph(graph, H200_TC, policy=first_fit)
    relaid = next(v for name, v in plan.constants.items() if name.endswith("@kcm"))
    w16 = init["w16"]
    np.testing.assert_array_equal(relaid, w16.transpose(0, 2, 3, 1).reshape(64, -1).T)


def test_kernel_variants_edit_what_the_nvidia_plans_hold() -> None:
    """benchmarks/kernel_variants.py replaces text of the planned source: each of its variants must still find its
    text in a tensor-core NVIDIA plan with k splits summed in-kernel (else its measurements silently stop)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    try:
        import kernel_variants
    finally:
        sys.path.pop(0)
    # 50 compute units: the first conv's 54 blocks of 64 x 64 take a k split in two, which the last work-group sums
    target = dataclasses.replace(H200_TC, nvidia_ptx=True, compute_units=50)
    policy = dataclasses.replace(WITH_MMA, gpu_min_fill=0.0, gpu_split_round_up=True, gpu_tail_split=False)
    source = plan_graph(convert_onnx(conv_and_product_model()), target, policy=policy).source
    assert "#define SPLIT_SUM 1" in source and "#define MMA 1" in source
    for name, (edit, _) in kernel_variants.VARIANTS.items():
        edited = edit(source)
        assert edited is not None and (edited != source) == (name != "default"), name
