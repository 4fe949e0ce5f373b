"""plan/views.py's refined views against numpy: random chains of reshapes and transposes (and Gathers of one index)
of a tensor with gaps between its rows; wherever the chain's value has a stride a dim (Refined.exact), reading the
source buffer through it gives what numpy computes, and a chain that nests (its dims split and merged back) always
does."""

from __future__ import annotations

import numpy as np
import pytest

from mace.opencl.plan.planner import View
from mace.opencl.plan.views import Refined, refine_reshape


def read(buffer: np.ndarray, view: View, shape: tuple[int, ...]) -> np.ndarray:
    index = np.full(shape, view.offset, dtype=np.int64)
    for d, (n, s) in enumerate(zip(shape, view.strides)):
        index += (np.arange(n) * s).reshape([n if i == d else 1 for i in range(len(shape))])
    return buffer[index]


def factor_shape(rng: np.random.Generator, total: int) -> tuple[int, ...]:
    dims: list[int] = []
    while total > 1:
        divisors = [d for d in range(2, total + 1) if total % d == 0]
        d = int(rng.choice(divisors))
        dims.append(d)
        total //= d
    rng.shuffle(dims)
    if rng.random() < 0.3:
        dims.insert(int(rng.integers(0, len(dims) + 1)), 1)
    return tuple(dims) or (1,)


@pytest.mark.parametrize("seed", range(200))
def test_refined_chains_read_what_numpy_computes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = factor_shape(rng, int(rng.choice([24, 36, 60, 96, 120])))
    # the value is a slice of a bigger buffer: rows padded, so merged dims really lie apart
    pad = int(rng.integers(0, 3))
    outer = (*shape[:-1], shape[-1] + pad)
    buffer = np.arange(int(np.prod(outer)), dtype=np.int64)
    value = buffer.reshape(outer)[..., : shape[-1]]
    strides = tuple(s // 8 for s in value.strides)
    ref = Refined.of(View("x", strides), shape)
    for _ in range(int(rng.integers(1, 6))):
        step = rng.random()
        if step < 0.4:
            perm = tuple(int(i) for i in rng.permutation(value.ndim))
            value, ref = value.transpose(perm), ref.permuted(perm)
        else:
            new_shape = factor_shape(rng, value.size)
            got = refine_reshape(ref, new_shape)
            if got is None:
                return  # the shapes do not nest: the planner copies (numpy's reshape copies too)
            value, ref = value.reshape(new_shape), got
        assert len(ref.groups) == value.ndim and int(np.prod(ref.dims)) == value.size
        plain = ref.exact()
        if plain is not None:
            np.testing.assert_array_equal(read(buffer, plain, value.shape), value)


def test_a_split_merged_and_parted_again_is_exact() -> None:
    """[S, B, E] slice -> [S, B * H, D] (B and H lie apart: not exact) -> [B * H, S, D] -> [B, H, S, D] (exact)."""
    s, b, h, d = 5, 3, 2, 4
    qkv = np.arange(s * b * 3 * h * d).reshape(s, b, 3 * h * d)
    part = qkv[:, :, h * d: 2 * h * d]
    ref = Refined.of(View("x", (b * 3 * h * d, 3 * h * d, 1), h * d), (s, b, h * d))
    merged = refine_reshape(ref, [s, b * h, d])
    assert merged is not None and merged.exact() is None
    heads = refine_reshape(merged.permuted([1, 0, 2]), [b, h, s, d])
    assert heads is not None
    plain = heads.exact()
    assert plain is not None
    expected = part.reshape(s, b * h, d).transpose(1, 0, 2).reshape(b, h, s, d)
    np.testing.assert_array_equal(read(qkv.ravel(), plain, expected.shape), expected)
