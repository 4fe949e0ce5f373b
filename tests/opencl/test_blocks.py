"""Inverted residual blocks (1x1 expand conv -> depthwise conv -> 1x1 project conv) as one launch of block.cl on GPU
targets (conv.fuse_blocks, tiling_gpu.gpu_block_tile), run on whatever device the tests have and checked against
onnxruntime: window shapes, biases and activations or none, a residual, 1D, expanded channels that are no multiple of
a chunk, output channels split into blocks, the expanded channels split between work-groups and summed by a second
launch or (NVIDIA targets) by the last work-group, and blocks that must stay apart."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from onnx import helper

from mace.converter import convert_onnx
from mace.opencl import plan as planning
from mace.opencl.plan import DEFAULT_POLICY, DeviceTarget
from mace.opencl.plan.tiling_gpu import BlockWindow, block_local_floats, gpu_block_tile
from support import onnx_model, random_array, run_onnxruntime

# every block that has a blocking, however many chunks a work-group takes and partial sums the last one adds
ANY = replace(DEFAULT_POLICY, gpu_block_most_chunks=1 << 30, gpu_block_most_sums=1 << 30)
WHOLE = replace(ANY, gpu_block_groups_per_cu=0)  # no split: each work-group takes every chunk
SMALL_BLOCKS = replace(WHOLE, gpu_block_most_accumulators=1)  # output channels in blocks
ONE_CU = DeviceTarget(True, 1, 48 << 10, 1024, policy=WHOLE)
MANY_CUS = DeviceTarget(True, 100_000, 48 << 10, 1024, policy=ANY)  # as many splits as chunks


def _block(prefix: str, x: str, cin: int, ce: int, cout: int, k: list[int], seed: int, biases: bool = True,
           **dw: Any) -> tuple[list[Any], dict[str, np.ndarray]]:
    """The nodes (named ``{prefix}expand``, ``{prefix}depthwise``, ``{prefix}project``) and weights of one block
    reading ``x``: expand, ReLU6, depthwise (``dw``'s attributes), ReLU6, project; with or without biases."""
    ones = [1] * len(k)
    init = {f"{prefix}we": random_array(ce, cin, *ones, seed=seed, low=-0.5, high=0.5),
            f"{prefix}dw": random_array(ce, 1, *k, seed=seed + 2, low=-0.5, high=0.5),
            f"{prefix}wp": random_array(cout, ce, *ones, seed=seed + 4, low=-0.3, high=0.3),
            f"{prefix}lo": np.array(0.0, np.float32), f"{prefix}hi": np.array(6.0, np.float32)}
    if biases:
        init.update({f"{prefix}eb": random_array(ce, seed=seed + 1, low=-0.2, high=0.2),
                     f"{prefix}db": random_array(ce, seed=seed + 3, low=-0.2, high=0.2),
                     f"{prefix}pb": random_array(cout, seed=seed + 5, low=-0.2, high=0.2)})
    bias = (lambda name: [f"{prefix}{name}"]) if biases else (lambda name: [])
    relu6 = [f"{prefix}lo", f"{prefix}hi"]
    nodes = [
        helper.make_node("Conv", [x, f"{prefix}we", *bias("eb")], [f"{prefix}e"], name=f"{prefix}expand"),
        helper.make_node("Clip", [f"{prefix}e", *relu6], [f"{prefix}e6"]),
        helper.make_node("Conv", [f"{prefix}e6", f"{prefix}dw", *bias("db")], [f"{prefix}d"], group=ce,
                         kernel_shape=k, name=f"{prefix}depthwise", **dw),
        helper.make_node("Clip", [f"{prefix}d", *relu6], [f"{prefix}d6"]),
        helper.make_node("Conv", [f"{prefix}d6", f"{prefix}wp", *bias("pb")], [f"{prefix}p"], name=f"{prefix}project"),
    ]
    return nodes, init


def blocks_model() -> tuple[Any, dict[str, np.ndarray]]:
    """Five blocks that fuse (a: a residual; b: a 5x3 window of stride 2, asymmetric pads and dilation, 40 expanded
    channels into 70; c: 1D, HardSwish after; d: no biases, strides 2 x 1, 33 expanded channels; f: written into its
    slice of a Concat) and one that does not (e: its expanded tensor has another reader)."""
    nodes, init = [], {}
    for part in (
        _block("a", "x", 16, 48, 16, [3, 3], 10, pads=[1, 1, 1, 1]),
        _block("b", "x", 16, 40, 70, [5, 3], 20, strides=[2, 2], pads=[2, 0, 3, 1], dilations=[1, 2]),
        _block("c", "x1", 12, 36, 20, [3], 30, strides=[2], pads=[1, 1]),
        _block("d", "x", 16, 33, 9, [3, 3], 40, biases=False, strides=[2, 1]),
        _block("e", "x", 16, 24, 8, [3, 3], 50, pads=[1, 1, 1, 1]),
        _block("f", "x", 16, 32, 8, [3, 3], 60, pads=[1, 1, 1, 1]),
    ):
        nodes += part[0]
        init.update(part[1])
    nodes.append(helper.make_node("Add", ["ap", "x"], ["ya"]))  # a residual: the projection's epilogue
    nodes.append(helper.make_node("HardSwish", ["cp"], ["yc"]))
    nodes.append(helper.make_node("Sigmoid", ["ee6"], ["ye"]))  # a second reader of block e's expanded tensor
    nodes.append(helper.make_node("Relu", ["x"], ["xr"]))
    nodes.append(helper.make_node("Concat", ["xr", "fp"], ["yf"], axis=1))  # block f writes its slice of yf
    outputs = {"ya": None, "bp": None, "yc": None, "dp": None, "ep": None, "ye": None, "yf": None}
    model = onnx_model(nodes, {"x": [2, 16, 13, 11], "x1": [2, 12, 30]}, outputs, init)
    feeds = {"x": random_array(2, 16, 13, 11, seed=1), "x1": random_array(2, 12, 30, seed=2)}
    return model, feeds


def _irblocks(plan: Any) -> list[Any]:
    return [launch for launch in plan.launches if launch.kernel.startswith("irblock")]


@pytest.mark.parametrize(("target", "policy"), [(ONE_CU, WHOLE), (MANY_CUS, ANY),
                                                (ONE_CU, SMALL_BLOCKS)], ids=["whole", "split", "channel-blocks"])
def test_blocks_fuse_and_match_onnxruntime(make_executor: Any, target: DeviceTarget, policy: Any) -> None:
    model, feeds = blocks_model()
    graph = convert_onnx(model)
    executor = make_executor(graph, target=replace(target, policy=policy))
    plan = executor.plan
    fused = _irblocks(plan)
    assert sorted(launch.node for launch in fused if launch.kernel.startswith("irblock")) == [
        "aproject", "bproject", "cproject", "dproject", "fproject"]
    launched = {launch.node for launch in plan.launches}
    assert not {"aexpand", "adepthwise", "bexpand", "cexpand", "dexpand", "fexpand"} & launched
    assert [launch.args[-1] for launch in fused if launch.node == "fproject"] == ["yf"]  # its slice, no copy
    assert not any(launch.kernel.startswith("copy") and "fp" in launch.args for launch in plan.launches)
    assert {"eexpand", "eproject"} <= launched
    got = executor.run(feeds)
    want = run_onnxruntime(model, feeds)
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()), err_msg=name)
    splits = [int(re.search(r"#define SPLITS (\d+)", chunk).group(1))
              for chunk in plan.source.split("// ---- ")[1:] if chunk.startswith("irblock")]
    assert (max(splits) > 1) == (target is MANY_CUS)
    assert (target is MANY_CUS) == any(launch.kernel.startswith("ksum") for launch in plan.launches)
    if policy is SMALL_BLOCKS:
        assert any(int(re.search(r"#define BCO (\d+)", c).group(1)) < int(re.search(r"#define COUT (\d+)", c).group(1))
                   for c in plan.source.split("// ---- ")[1:] if c.startswith("irblock"))


def test_blocks_summed_by_their_last_work_group(opencl_queue: Any, fence_free_build: Any) -> None:
    """On NVIDIA targets the last work-group of a tile sums the splits (SPLIT_SUM): one launch per block, counting
    in the shared zeroed counters, which every run must leave zero for the next (three runs)."""
    from mace.opencl.executor import Executor

    model, feeds = blocks_model()
    target = replace(MANY_CUS, nvidia_ptx=True)
    executor = Executor(convert_onnx(model), opencl_queue.context, opencl_queue, fence_free_build, target=target)
    plan = executor.plan
    assert len(_irblocks(plan)) == 5 and not any(launch.kernel.startswith("ksum") for launch in plan.launches)
    assert plan.source.count("#define SPLIT_SUM 1") >= 1 and "@counters" in plan.writable
    want = run_onnxruntime(model, feeds)
    for _ in range(3):
        got = executor.run(feeds)
        for name, ref in want.items():
            np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()), err_msg=name)


def test_mobilenet_v2_blocks_on_a_gpu_plan(opencl_queue: Any, fence_free_build: Any) -> None:
    """MobileNet-v2 planned for an H200-shaped NVIDIA target, every block that has a blocking fused: its 16 blocks
    with an expand conv are one launch each (the first block has none: its depthwise conv stays in the projection's
    loader), and the outputs stay within 1e-4 of onnxruntime's. The default policy fuses only some of them."""
    from mace.opencl.executor import Executor
    from support import onnxruntime_outputs, relative_error, shared_model

    path = shared_model("mobilenet_v2")
    graph = convert_onnx(path)
    h200 = DeviceTarget(True, 132, 48 << 10, 1024, policy=ANY, nvidia_ptx=True)
    executor = Executor(graph, opencl_queue.context, opencl_queue, fence_free_build, target=h200)
    assert len(_irblocks(executor.plan)) == 16
    assert 0 < len(_irblocks(planning.plan_graph(graph, replace(h200, policy=DEFAULT_POLICY)))) < 16
    unfused = planning.plan_graph(graph, replace(h200, policy=replace(ANY, gpu_fuse_blocks=False)))
    assert len(executor.plan.launches) <= len(unfused.launches) - 16  # (and the split sums some products launch)
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    got = executor.run({"input": image})["output"]
    assert relative_error(got, onnxruntime_outputs(path, {"input": image})["output"]) <= 1e-4


@pytest.mark.parametrize("seed", range(40))
def test_block_tiles_fit_and_cover(seed: int) -> None:
    """gpu_block_tile's blockings, over random block shapes: within the local memory and accumulator budgets, the
    work items' layouts covering each product, the splits covering the expanded channels."""
    rng = np.random.default_rng(seed)
    k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    s, d = (int(rng.integers(1, 3)), int(rng.integers(1, 3))), (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    pads = (int(rng.integers(0, k[0])), int(rng.integers(0, k[1])))
    ih, iw = int(rng.integers(max(k) * 2, 60)), int(rng.integers(max(k) * 2, 60))
    oh = (ih + 2 * pads[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (iw + 2 * pads[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    b = BlockWindow(int(rng.integers(1, 200)), int(rng.integers(1, 1000)), int(rng.integers(1, 400)), (ih, iw),
                    (oh, ow), k, s, d, pads, int(rng.integers(1, 33)))
    target = DeviceTarget(True, int(rng.choice([1, 16, 132])), int(rng.choice([32 << 10, 48 << 10])), 1024)
    policy = DEFAULT_POLICY if seed % 2 else ANY
    tile = gpu_block_tile(b, target, policy)
    if tile is None:
        return
    sums = tile.splits * -(-tile.bco * tile.th * tile.tw // tile.nt) if tile.splits > 1 else 0
    assert tile.ks // tile.ck <= policy.gpu_block_most_chunks and sums <= policy.gpu_block_most_sums
    assert 4 * block_local_floats(b, tile.th, tile.tw, tile.ck, tile.bki, tile.bco) <= target.local_mem_bytes
    assert tile.th * tile.tw <= policy.gpu_block_most_positions
    assert tile.tac * tile.tap <= policy.gpu_block_most_accumulators
    assert tile.tco * tile.tcp <= policy.gpu_block_most_accumulators
    hh, hw = b.halo(tile.th, tile.tw)
    assert tile.lac * tile.tac == tile.ck and tile.lac * tile.lap == tile.nt and tile.lap * tile.tap >= hh * hw
    assert tile.lco * tile.lcp == tile.nt and tile.lco * tile.tco >= tile.bco
    assert tile.lcp * tile.tcp >= tile.th * tile.tw
    assert tile.bco * -(-b.cout // tile.bco) >= b.cout
    assert tile.ks % tile.ck == 0 and (tile.splits - 1) * tile.ks < b.ce <= tile.splits * max(tile.ks, b.ce)


def test_blocks_with_half_storage(make_executor: Any) -> None:
    """fp16_fp32 on a GPU with cl_khr_fp16: half weights and tensors read and written through LOAD/STORE, float sums
    (within 1e-2 of onnxruntime: half rounding at each stored tensor)."""
    model, feeds = blocks_model()
    graph = convert_onnx(model, data_type="fp16_fp32")
    executor = make_executor(graph, target=ONE_CU)
    assert len(_irblocks(executor.plan)) == 5 and "#define WE_T F16" in executor.plan.source
    got = executor.run(feeds)
    for name, ref in run_onnxruntime(model, feeds).items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-2, atol=1e-2 * float(np.abs(ref).max()), err_msg=name)


def test_fusing_blocks_is_a_policy() -> None:
    model, _ = blocks_model()
    graph = convert_onnx(model)
    off = planning.plan_graph(graph, replace(ONE_CU, policy=replace(ANY, gpu_fuse_blocks=False)))
    on = planning.plan_graph(graph, ONE_CU)
    assert not _irblocks(off) and "KERNEL_NAME irblock" not in off.source and len(off.launches) == len(on.launches) + 5


def _depthwise(name: str, x: str, c: int, seed: int) -> tuple[Any, dict[str, np.ndarray]]:
    """A 3 x 3 depthwise conv of ``c`` channels (pads 1, a bias) reading ``x``, writing ``name``."""
    init = {f"{name}w": random_array(c, 1, 3, 3, seed=seed, low=-0.5, high=0.5),
            f"{name}b": random_array(c, seed=seed + 1, low=-0.2, high=0.2)}
    node = helper.make_node("Conv", [x, f"{name}w", f"{name}b"], [name], group=c, kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1], name=name)
    return node, init


def test_blocks_that_chain_or_follow_a_depthwise_conv_stay_computed(make_executor: Any) -> None:
    """MobileNet-v4's shapes: a block's project conv that is the next one's expand (a -> depthwise y -> c: the second
    stays apart) and an expand conv that computed a depthwise conv in its loader (s -> e, ExtraDW: s is launched, the
    block fused). Every tensor a launch reads is computed before it, and the outputs match onnxruntime."""
    nodes, init = [], {}
    a = _block("a", "x", 16, 48, 16, [3, 3], 10, pads=[1, 1, 1, 1])
    y = _depthwise("y", "ap", 16, 20)
    c = _block("c", "y", 16, 32, 16, [3, 3], 30, pads=[1, 1, 1, 1])
    s = _depthwise("s", "x", 16, 40)
    e = _block("e", "s", 16, 48, 24, [3, 3], 50, pads=[1, 1, 1, 1])
    for part_nodes, part_init in (a, c, e):
        nodes += part_nodes
        init.update(part_init)
    for node, part_init in (y, s):
        nodes.append(node)
        init.update(part_init)
    nodes.sort(key=lambda n: ["a", "y", "c", "s", "e"].index(n.output[0][0]))
    model = onnx_model(nodes, {"x": [2, 16, 13, 11]}, {"cp": None, "ep": None}, init)
    feeds = {"x": random_array(2, 16, 13, 11, seed=1)}
    graph = convert_onnx(model)
    for target in (ONE_CU, MANY_CUS, replace(MANY_CUS, policy=DEFAULT_POLICY)):
        executor = make_executor(graph, target=target)
        blocks = sorted(launch.node for launch in _irblocks(executor.plan))
        launched = {launch.node for launch in executor.plan.launches}
        if target is ONE_CU:
            assert blocks == ["aproject", "cproject", "eproject"]  # y and s launched: their block's input
            assert {"y", "s"} <= launched and not {"aexpand", "cexpand", "eexpand"} & launched
        got = executor.run(feeds)
        for name, ref in run_onnxruntime(model, feeds).items():
            np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()),
                                       err_msg=f"{name} on {target}")
