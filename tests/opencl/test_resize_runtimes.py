"""Resize on both runtimes: the cpu reference (ops/resize.py) and OpenCL (plan/resize.py tap tables, resize.cl) take
their coordinates and taps from one function, mace.model.rules.resize_taps, so they agree to float32 rounding for
every coordinate_transformation_mode, mode and scale; both are compared with onnxruntime.

half_pixel_symmetric with nearest: onnxruntime computes its coordinates partly in float64 and so rounds some near-ties
the other way (the output centre of 9 -> 15 maps to 3.9999998, not 4): the rows and columns where its index differs
from mace's are left out of the comparison with onnxruntime (rules.source_coordinates, _onnxruntime_differs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

import mace
from mace.converter import convert_onnx
from mace.model import rules
from support import onnx_model, random_array, run_onnxruntime

SHAPE = (1, 2, 7, 9)
TARGETS: list[tuple[str, list[float]]] = [
    ("scales", [1, 1, 2.0, 3.0]),  # upsampling, whole
    ("scales", [1, 1, 1.5, 1.7]),  # upsampling, fractional widths (10.5 -> 10, 15.3 -> 15)
    ("scales", [1, 1, 0.6, 0.45]),  # downsampling, fractional (4.2 -> 4, 4.05 -> 4)
    ("scales", [1, 1, 0.5, 2.5]),  # down and up
    ("sizes", [1, 2, 3, 16]),
    ("sizes", [1, 2, 12, 5]),
]
MODES: list[dict[str, Any]] = [
    {"mode": "nearest"},
    {"mode": "nearest", "nearest_mode": "round_prefer_ceil"},
    {"mode": "nearest", "nearest_mode": "floor"},
    {"mode": "nearest", "nearest_mode": "ceil"},
    {"mode": "linear"},
    {"mode": "cubic"},
    {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5},
]
COORD_MODES = [m for m in rules.COORDINATE_MODES if m != "tf_crop_and_resize"]  # OpenCL has no roi input


def _convert(model: Any) -> Any:
    """The IR of ``model``; cubic Resize nodes, which the converter refuses (tests/converter/test_converter_errors.py)
    but both runtimes implement, are converted as linear (same output shape) and switched back in the IR."""
    cubic = set()
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "mode" and attr.s == b"cubic":
                attr.s = b"linear"
                cubic.add(node.output[0])
    graph = convert_onnx(model)
    for node in graph.nodes:
        if node.op == "Resize" and node.outputs[0] in cubic:
            node.attrs["mode"] = "cubic"
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "mode" and node.output[0] in cubic:
                attr.s = b"cubic"
    return graph


def _onnxruntime_differs(size: int, kind: str, value: float, nearest_mode: str) -> np.ndarray:
    """Output indices along one axis where onnxruntime's nearest half_pixel_symmetric picks another input index
    than mace's (rules.source_coordinates), found by resizing arange(size) on onnxruntime."""
    target = np.array([1, 1, value], np.float32 if kind == "scales" else np.int64)
    inputs = ["x", "", "t"] if kind == "scales" else ["x", "", "", "t"]
    node = helper.make_node(
        "Resize", inputs, ["y"], mode="nearest", nearest_mode=nearest_mode,
        coordinate_transformation_mode="half_pixel_symmetric",
    )
    model = onnx_model([node], {"x": (1, 1, size)}, {"y": None}, {"t": target}, opset=19)
    theirs = run_onnxruntime(model, {"x": np.arange(size, dtype=np.float32).reshape(1, 1, size)})["y"].reshape(-1)
    f = np.float32
    out = theirs.size
    scale = float(f(value)) if kind == "scales" else float(f(out) / f(size))
    coords = rules.source_coordinates("half_pixel_symmetric", out, size, scale)
    ours = np.clip(rules.nearest_index(coords, nearest_mode), 0, size - 1)
    return theirs.astype(np.int64) != ours


def resize_model(coord_mode: str) -> tuple[Any, list[tuple[str, dict[str, Any], str, list[float]]]]:
    """One Resize node per target x mode."""
    nodes, inits, cases = [], {}, []
    for t, (kind, values) in enumerate(TARGETS):
        name = f"{kind}{t}"
        inits[name] = np.asarray(values, np.float32 if kind == "scales" else np.int64)
        for m, attrs in enumerate(MODES):
            out = f"y{t}_{m}"
            inputs = ["x", "", name] if kind == "scales" else ["x", "", "", name]
            node = helper.make_node("Resize", inputs, [out], coordinate_transformation_mode=coord_mode, **attrs)
            nodes.append(node)
            cases.append((out, attrs, kind, values))
    outputs = {out: None for out, _, _, _ in cases}
    return onnx_model(nodes, {"x": SHAPE}, outputs, inits, opset=19), cases


@pytest.mark.parametrize("coord_mode", COORD_MODES)
def test_resize_cpu_opencl_onnxruntime(make_executor, coord_mode: str) -> None:
    model, cases = resize_model(coord_mode)
    feeds = {"x": random_array(*SHAPE, seed=3)}
    graph = _convert(model)
    cpu = mace.Engine(graph, device="cpu").run(feeds)
    opencl = make_executor(graph).run(feeds)
    expected = run_onnxruntime(model, feeds)
    for out, attrs, kind, values in cases:
        what = f"{out} {coord_mode} {attrs}"
        assert cpu[out].shape == opencl[out].shape == expected[out].shape, what
        if attrs["mode"] == "nearest":
            np.testing.assert_array_equal(opencl[out], cpu[out], err_msg=what)
            keep = np.ones(cpu[out].shape, bool)
            if coord_mode == "half_pixel_symmetric":
                nearest_mode = attrs.get("nearest_mode", "round_prefer_floor")
                rows, cols = (_onnxruntime_differs(SHAPE[a], kind, values[a], nearest_mode) for a in (2, 3))
                keep[..., rows, :] = False
                keep[..., cols] = False
            assert keep.mean() >= 0.75, what
            np.testing.assert_array_equal(cpu[out][keep], expected[out][keep], err_msg=what)
        else:
            np.testing.assert_allclose(opencl[out], cpu[out], rtol=1e-5, atol=1e-5, err_msg=what)
            np.testing.assert_allclose(cpu[out], expected[out], rtol=1e-5, atol=1e-5, err_msg=what)


def test_half_pixel_symmetric_tie_is_the_same_on_both_runtimes(make_executor) -> None:
    """5 -> 3 rows (scale 0.6 in float32): output row 1 is the centre, x = 2 exactly; 'floor' takes input row 2 on
    both runtimes (it took row 1 in the reference op, whose float64 arithmetic gave 1.9999999, while OpenCL took 2)."""
    node = helper.make_node(
        "Resize", ["x", "", "", "sizes"], ["y"], mode="nearest", nearest_mode="floor",
        coordinate_transformation_mode="half_pixel_symmetric",
    )
    sizes = np.array([1, 1, 3, 1], np.int64)
    model = onnx_model([node], {"x": (1, 1, 5, 1)}, {"y": None}, {"sizes": sizes}, opset=19)
    x = np.arange(5, dtype=np.float32).reshape(1, 1, 5, 1)
    graph = convert_onnx(model)
    cpu = mace.Engine(graph, device="cpu").run({"x": x})["y"]
    opencl = make_executor(graph).run({"x": x})["y"]
    assert cpu.reshape(-1).tolist() == opencl.reshape(-1).tolist() == [0.0, 2.0, 3.0]
