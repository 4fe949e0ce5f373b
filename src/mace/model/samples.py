"""Inputs to measure a model with, when the caller has none: seeded, of the model's shapes and dtypes.

    >>> from mace.model.ir import TensorInfo
    >>> inputs = [TensorInfo("x", (2, 3), "float32"), TensorInfo("i", (4,), "int64")]
    >>> {name: (a.shape, str(a.dtype)) for name, a in sample_inputs(inputs).items()}
    {'x': ((2, 3), 'float32'), 'i': ((4,), 'int64')}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mace.model.ir import TensorInfo


def sample_inputs(inputs: Sequence[TensorInfo], seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal floats; zeros for integers and booleans (valid as indices, shapes and masks)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in inputs:
        dtype = np.dtype(info.dtype)
        feeds[info.name] = (rng.standard_normal(info.shape).astype(dtype) if dtype.kind == "f"
                            else np.zeros(info.shape, dtype))
    return feeds
