"""mace.model.rules, the one home of the shared op rules (pads, windows, activation defaults, Resize coordinates),
against hand-computed values; and that the layers that restated them (converter, reference ops, OpenCL planner) now
read the same table."""

from __future__ import annotations

import numpy as np
import pytest

from mace.model import rules
from mace.model.ir import ACTIVATIONS

# --- pads ------------------------------------------------------------------------------------------------------------


def test_split_pad_odd_total_goes_to_the_end_for_same_upper() -> None:
    assert rules.split_pad(3, "SAME_UPPER") == (1, 2)
    assert rules.split_pad(3, "SAME_LOWER") == (2, 1)
    assert rules.split_pad(4, "SAME_UPPER") == rules.split_pad(4, "SAME_LOWER") == (2, 2)
    assert rules.split_pad(0, "SAME_UPPER") == (0, 0)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "upper", "lower"),
    [
        (5, 4, 1, 1, ([1], [2]), ([2], [1])),  # out 5, total 3
        (7, 3, 2, 1, ([1], [1]), ([1], [1])),  # out 4, total 2
        (8, 3, 2, 1, ([0], [1]), ([1], [0])),  # out 4, total 1
        (5, 3, 1, 2, ([2], [2]), ([2], [2])),  # span 5, total 4
        (6, 1, 4, 1, ([0], [0]), ([0], [0])),  # out 2: (2 - 1) * 4 + 1 - 6 < 0, no padding
    ],
)
def test_same_pads(size: int, kernel: int, stride: int, dilation: int, upper: tuple, lower: tuple) -> None:
    assert rules.same_pads([size], [kernel], [stride], [dilation], "SAME_UPPER") == upper
    assert rules.same_pads([size], [kernel], [stride], [dilation], "SAME_LOWER") == lower


def test_resolve_pads() -> None:
    args = ([5, 8], [4, 3], [1, 2], [1, 1])
    assert rules.resolve_pads({"auto_pad": "SAME_UPPER"}, *args) == ([1, 0], [2, 1])
    assert rules.resolve_pads({"auto_pad": "SAME_LOWER"}, *args) == ([2, 1], [1, 0])
    assert rules.resolve_pads({"auto_pad": "VALID", "pads": [1, 1, 1, 1]}, *args) == ([0, 0], [0, 0])
    assert rules.resolve_pads({"pads": [1, 2, 3, 4]}, *args) == ([1, 2], [3, 4])
    assert rules.resolve_pads({"auto_pad": "", "pads": [1, 2, 3, 4]}, *args) == ([1, 2], [3, 4])
    assert rules.resolve_pads({}, *args) == ([0, 0], [0, 0])
    with pytest.raises(NotImplementedError, match="auto_pad='SAME'"):
        rules.resolve_pads({"auto_pad": "SAME"}, *args, op="Conv")


def test_window_attrs_defaults() -> None:
    assert rules.window_attrs({}, 2, [3, 1]) == ([3, 1], [1, 1], [1, 1])
    attrs = {"kernel_shape": [2, 2], "strides": [2, 1], "dilations": [1, 3]}
    assert rules.window_attrs(attrs, 2, [3, 1]) == ([2, 2], [2, 1], [1, 3])
    with pytest.raises(ValueError, match="kernel_shape"):
        rules.window_attrs({}, 2)


# --- windows ---------------------------------------------------------------------------------------------------------


def test_pool_output_size_ceil_mode() -> None:
    # 6 wide, kernel 3, stride 2: windows at 0, 2 (floor); ceil adds the one at 4 (reaching one past the end)
    assert rules.pool_output_size(6, 3, 2, 1, 0, 0, ceil_mode=False) == 2
    assert rules.pool_output_size(6, 3, 2, 1, 0, 0, ceil_mode=True) == 3
    # 3 wide + end pad 1, kernel 1, stride 2: ceil would add a window at 4, which starts in the end pad: dropped
    assert rules.pool_output_size(3, 1, 2, 1, 0, 1, ceil_mode=True) == 2
    # dilation 2 makes a 3-tap kernel span 5: 7 - 5 + 1 = 3 positions
    assert rules.pool_output_size(7, 3, 1, 2, 0, 0, ceil_mode=False) == 3
    assert rules.conv_output_size(7, 3, 1, 2, 1, 1) == 5
    assert rules.conv_output_size(224, 3, 2, 1, 0, 1) == 112


def test_same_pads_give_ceil_size_over_stride_in_any_ceil_mode() -> None:
    for size in range(1, 20):
        for kernel in range(1, 6):
            for stride in range(1, 5):
                for dilation in (1, 2):
                    for mode in rules.SAME:
                        (b,), (e,) = rules.same_pads([size], [kernel], [stride], [dilation], mode)
                        for ceil_mode in (False, True):
                            out = rules.pool_output_size(size, kernel, stride, dilation, b, e, ceil_mode)
                            assert out == -(-size // stride), (size, kernel, stride, dilation, mode, ceil_mode)


def test_conv_transpose_pads() -> None:
    k, s, d = [3], [2], [1]
    # full output: 2 * (3 - 1) + 3 = 7
    assert rules.conv_transpose_pads({}, [3], k, s, d) == ([0], [0], [7])
    assert rules.conv_transpose_pads({"pads": [1, 1]}, [3], k, s, d) == ([1], [1], [5])
    assert rules.conv_transpose_pads({"pads": [1, 1], "output_padding": [1]}, [3], k, s, d) == ([1], [1], [6])
    # SAME: output in * stride = 6, total 1, SAME_UPPER puts it at the end
    assert rules.conv_transpose_pads({"auto_pad": "SAME_UPPER"}, [3], k, s, d) == ([0], [1], [6])
    assert rules.conv_transpose_pads({"auto_pad": "SAME_LOWER"}, [3], k, s, d) == ([1], [0], [6])
    # output_shape overrides pads; without SAME_UPPER the larger half goes in front (ONNX)
    assert rules.conv_transpose_pads({"output_shape": [6], "pads": [2, 2]}, [3], k, s, d) == ([1], [0], [6])
    assert rules.conv_transpose_pads({"output_shape": [1, 1, 5]}, [3], k, s, d) == ([1], [1], [5])
    assert rules.conv_transpose_pads({"output_shape": [8], "output_padding": [1]}, [3], k, s, d) == ([0], [0], [8])


def test_sliding_windows() -> None:
    x = np.arange(7, dtype=np.float32).reshape(1, 1, 7)
    win = rules.sliding_windows(x, [2], [3], [2])  # taps i, i + 2 at i = 0, 3
    assert win.shape == (1, 1, 2, 2)
    assert win[0, 0].tolist() == [[0, 2], [3, 5]]


# --- activations -----------------------------------------------------------------------------------------------------


def test_activation_defaults() -> None:
    assert rules.activation_attr("LeakyRelu", {}, "alpha") == 0.01
    assert rules.activation_params("HardSigmoid", {}) == [0.2, 0.5]
    assert rules.activation_params("HardSigmoid", {"beta": 0.25}) == [0.2, 0.25]
    assert rules.activation_params("Selu", {}) == [1.67326319217681884765625, 1.05070102214813232421875]
    assert rules.activation_params("Elu", {}) == rules.activation_params("Celu", {}) == [1.0]
    assert rules.activation_params("ThresholdedRelu", {"alpha": 2}) == [2.0]
    assert rules.activation_params("Relu", {}) == []
    assert rules.fused_params("HardSigmoid", [0.3]) == [0.3, 0.5]
    # Clip's absent bounds are ONNX's numeric_limits (as onnxruntime): float32 lowest and max, so Clip(inf) is finite
    assert rules.fused_params("Clip", [0.0]) == [0.0, rules.FLOAT32_MAX]
    assert rules.fused_params("Clip", []) == [-rules.FLOAT32_MAX, rules.FLOAT32_MAX] == [-3.4028234663852886e38,
                                                                                       3.4028234663852886e38]
    assert rules.fused_params("SiLU", []) == []


def test_fused_activation_params_are_named_as_in_the_ir() -> None:
    for name, params in ACTIVATIONS.items():
        assert tuple(rules.ACTIVATION_DEFAULTS.get(name, {})) == params, name


def test_every_layer_uses_the_defaults() -> None:
    """A LeakyRelu / HardSigmoid without attributes: the converter's fusion, the reference op, the fused epilogue
    and the OpenCL expressions all take alpha 0.01 / 0.2, beta 0.5."""
    from mace.converter.passes import _activation_of
    from mace.model.ir import Graph, Node
    from mace.opencl.plan.elementwise import UNARY
    from mace.opencl.plan.templates import activation_macro, c_float
    from mace.ops import apply_activation
    from mace.ops.reference import run_node

    x = np.array([-2.0, 0.0, 1.0, 4.0], np.float32)
    graph = Graph("g", [], [], [], {}, {})
    for op, want in (("LeakyRelu", [-0.02, 0.0, 1.0, 4.0]), ("HardSigmoid", [0.1, 0.5, 0.7, 1.0])):
        node = Node(op, op, ["x"], ["y"], {})
        np.testing.assert_allclose(run_node(op, [x], {})[0], want, rtol=1e-6)
        name, params = _activation_of(graph, node)  # type: ignore[misc]
        assert (name, params) == (op, rules.activation_params(op, {}))
        np.testing.assert_allclose(apply_activation(x, op), want, rtol=1e-6)
        for value in params:
            assert c_float(value) in UNARY[op]({})
            assert c_float(value) in activation_macro({"activation": op})
    selu = UNARY["Selu"]({})
    assert c_float(rules.SELU_ALPHA) in selu and c_float(rules.SELU_GAMMA) in selu


# --- Resize ----------------------------------------------------------------------------------------------------------


def coords(mode: str, out: int, size: int, scale: float, roi: tuple[float, float] = (0.0, 1.0)) -> list[float]:
    values = rules.source_coordinates(mode, out, size, scale, roi)
    assert values.dtype == np.float32
    return values.tolist()


def test_coordinate_transforms_by_hand() -> None:
    assert coords("half_pixel", 8, 4, 2.0) == [-0.25, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25]
    assert coords("asymmetric", 8, 4, 2.0) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert coords("tf_half_pixel_for_nn", 4, 4, 2.0) == [0.25, 0.75, 1.25, 1.75]
    assert coords("align_corners", 7, 4, 7 / 4) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert coords("align_corners", 1, 4, 0.25) == [0.0]
    assert coords("pytorch_half_pixel", 8, 4, 2.0) == coords("half_pixel", 8, 4, 2.0)
    assert coords("half_pixel", 1, 4, 0.25) == [1.5]
    assert coords("pytorch_half_pixel", 1, 4, 0.25) == [0.0]
    np.testing.assert_allclose(coords("tf_crop_and_resize", 3, 5, 0.6, (0.2, 0.6)), [0.8, 1.6, 2.4], rtol=1e-6)
    np.testing.assert_allclose(coords("tf_crop_and_resize", 1, 5, 0.2, (0.2, 0.6)), [1.6], rtol=1e-6)
    with pytest.raises(NotImplementedError):
        rules.source_coordinates("corner", 2, 2, 1.0)


def test_half_pixel_symmetric_by_hand() -> None:
    # 5 -> floor(2.5) = 2: adjustment 2 / 2.5, offset 2.5 * 0.2 = 0.5: x = 2 o + 1, centred on the input's centre 2
    assert coords("half_pixel_symmetric", 2, 5, 0.5) == [1.0, 3.0]
    assert coords("half_pixel", 2, 5, 0.5) == [0.5, 2.5]
    # 3 -> floor(4.5) = 4: offset 1/6, x = 2 o / 3: the first and last output sit on the input's ends
    np.testing.assert_allclose(coords("half_pixel_symmetric", 4, 3, 1.5), [0, 2 / 3, 4 / 3, 2], atol=1e-6)


def test_half_pixel_symmetric_is_half_pixel_for_whole_output_sizes() -> None:
    """ONNX: the two differ only when the output width scale * in is not whole. Computed all in float32 they are
    then the same numbers; onnxruntime's mix of float32 and float64 (what ops/resize.py used to copy) gave
    5 -> 3: x(1) = 1.9999999, not 2 (the centre of the output must map to the centre of the input, 2), so nearest
    'floor' picked input 1."""
    f = np.float32
    five_to_three = rules.source_coordinates("half_pixel_symmetric", 3, 5, f(3) / f(5))
    assert five_to_three[1] == 2.0
    assert rules.nearest_index(five_to_three, "floor").tolist() == [0, 2, 3]  # x = 1/3, 2, 11/3
    for size in range(1, 40):
        for out in range(1, 80):
            scale = f(out) / f(size)
            if scale * f(size) != f(out):
                continue
            np.testing.assert_array_equal(
                rules.source_coordinates("half_pixel_symmetric", out, size, scale),
                rules.source_coordinates("half_pixel", out, size, scale),
            )


def test_nearest_index() -> None:
    c = np.array([0.5, 1.5, -0.5, 1.2, 1.7], np.float32)
    assert rules.nearest_index(c, "round_prefer_floor").tolist() == [0, 1, -1, 1, 2]
    assert rules.nearest_index(c, "round_prefer_ceil").tolist() == [1, 2, 0, 1, 2]
    assert rules.nearest_index(c, "floor").tolist() == [0, 1, -1, 1, 1]
    assert rules.nearest_index(c, "ceil").tolist() == [1, 2, 0, 2, 2]
    with pytest.raises(NotImplementedError):
        rules.nearest_index(c, "nearest")


def test_cubic_weights() -> None:
    w = rules.cubic_weights(np.array([0.0, 0.5]), -0.75)
    np.testing.assert_allclose(w[0], [0, 1, 0, 0], atol=1e-12)  # through the samples
    np.testing.assert_allclose(w[1], [-0.09375, 0.59375, 0.59375, -0.09375])


def test_resize_taps() -> None:
    idx, w, outside = rules.resize_taps("linear", "half_pixel", 4, 8, 2.0)
    assert idx[:3].tolist() == [[0, 1], [0, 1], [0, 1]] and idx[7].tolist() == [3, 3]
    np.testing.assert_allclose(w[:3], [[1, 0], [0.75, 0.25], [0.25, 0.75]])
    np.testing.assert_allclose(w[7], [0.5, 0.5])  # both taps on the last index, as onnxruntime (inf * 0 is NaN)
    assert not outside.any()

    idx, w, _ = rules.resize_taps("nearest", "asymmetric", 4, 8, 2.0, nearest_mode="floor")
    assert idx[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and (w == 1).all()

    # cubic at coordinate 0.5 (asymmetric, scale 2, output 1): taps -1..2, the -1 one clamped to 0 or excluded
    idx, w, _ = rules.resize_taps("cubic", "asymmetric", 4, 8, 2.0)
    assert idx[1].tolist() == [0, 0, 1, 2]
    np.testing.assert_allclose(w[1], [-0.09375, 0.59375, 0.59375, -0.09375])
    _, w, _ = rules.resize_taps("cubic", "asymmetric", 4, 8, 2.0, exclude_outside=True)
    np.testing.assert_allclose(w[1], np.array([0, 0.59375, 0.59375, -0.09375]) / 1.09375)

    _, _, outside = rules.resize_taps("linear", "tf_crop_and_resize", 5, 3, 0.6, roi=(0.0, 1.5))
    assert outside.tolist() == [False, False, True]  # coordinates 0, 3, 6 on 0..4


def test_resize_output() -> None:
    assert rules.resize_output([5], [2.0], None) == ([2.0], [10])
    assert rules.resize_output([6], [0.6], None)[1] == [3]  # floor(3.6)
    scales, outs = rules.resize_output([5, 6], None, [10, 9], "stretch")
    assert outs == [10, 9] and scales == [2.0, 1.5]
    assert rules.resize_output([5, 6], None, [10, 9], "not_larger") == ([1.5, 1.5], [8, 9])  # 7.5 rounds up
    assert rules.resize_output([5, 6], None, [10, 9], "not_smaller") == ([2.0, 2.0], [10, 12])
    with pytest.raises(ValueError):
        rules.resize_output([5], [], [])


def test_resize_attr() -> None:
    assert rules.resize_attr({}, "coordinate_transformation_mode") == "half_pixel"
    assert rules.resize_attr({"mode": "bilinear"}, "mode") == "linear"
    assert rules.resize_attr({}, "cubic_coeff_a") == -0.75
    with pytest.raises(NotImplementedError, match="nearest_mode"):
        rules.resize_attr({"nearest_mode": "round"}, "nearest_mode")
