"""Shape, layout and indexing ops. Shape-like inputs (Slice starts, Pad pads, Reshape shape, ...) are int tensors.

Outputs may be views of the inputs (Reshape, Transpose, Identity, ...): treat them as read-only.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from mace.model import rules
from mace.ops.common import Attrs, Inputs, OpFn, Outputs, arg, ints, normalize_axis, registrar, required

OPS: dict[str, OpFn] = {}
register = registrar(OPS)

PadMode = Literal["constant", "reflect", "edge", "wrap"]
PAD_MODES: dict[str, PadMode] = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@register("Identity", "Dropout")
def identity(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Dropout is the identity at inference; its optional mask output is not produced."""
    return [required(inputs, 0)]


@register("Shape")
def shape(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Dims [start:end] with Python slice clamping (opset 15 start/end)."""
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    return [np.array(required(inputs, 0).shape[start : None if end is None else int(end)], np.int64)]


@register("Size")
def size(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [np.array(required(inputs, 0).size, np.int64)]


@register("Reshape")
def reshape(inputs: Inputs, attrs: Attrs) -> Outputs:
    """A 0 in ``shape`` copies the input dim unless allowzero=1; one -1 is inferred."""
    x, target = required(inputs, 0), ints(required(inputs, 1))
    if not int(attrs.get("allowzero", 0)):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return [x.reshape(target)]


@register("Flatten")
def flatten(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    axis = int(attrs.get("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@register("Transpose")
def transpose(inputs: Inputs, attrs: Attrs) -> Outputs:
    perm = attrs.get("perm")
    return [np.transpose(required(inputs, 0), None if perm is None else ints(perm))]


@register("Squeeze")
def squeeze(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Without ``axes`` every dim of size 1 goes."""
    x, axes = required(inputs, 0), arg(inputs, 1)
    if axes is None or axes.size == 0:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(normalize_axis(a, x.ndim) for a in ints(axes)))]


@register("Unsqueeze")
def unsqueeze(inputs: Inputs, attrs: Attrs) -> Outputs:
    """``axes`` index the output (negative ones count from the output's end)."""
    x, axes = required(inputs, 0), ints(required(inputs, 1))
    rank = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(normalize_axis(a, rank) for a in axes))]


@register("Concat")
def concat(inputs: Inputs, attrs: Attrs) -> Outputs:
    values = [x for x in inputs if x is not None]
    return [np.concatenate(values, axis=normalize_axis(int(attrs["axis"]), values[0].ndim))]


@register("Split")
def split(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Sizes from the ``split`` input, else ``num_outputs`` chunks of ceil(dim / n) (the last one smaller)."""
    x, sizes = required(inputs, 0), arg(inputs, 1)
    axis = normalize_axis(int(attrs.get("axis", 0)), x.ndim)
    dim = x.shape[axis]
    if sizes is not None and sizes.size:
        lengths = ints(sizes)
    elif "num_outputs" in attrs:
        count = int(attrs["num_outputs"])
        chunk = -(-dim // count)
        lengths = [chunk] * (count - 1) + [dim - chunk * (count - 1)]
    else:
        raise NotImplementedError("Split: needs the 'split' input or the 'num_outputs' attribute")
    if sum(lengths) != dim:
        raise ValueError(f"Split: sizes {lengths} do not add up to dim {dim}")
    return list(np.split(x, np.cumsum(lengths)[:-1], axis=axis))


@register("Slice")
def slice_(inputs: Inputs, attrs: Attrs) -> Outputs:
    """ONNX clamping: starts/ends are clamped to [0, dim] ([0, dim-1] and [-1, dim-1] for negative steps)."""
    x, starts, ends = required(inputs, 0), ints(required(inputs, 1)), ints(required(inputs, 2))
    axes_in, steps_in = arg(inputs, 3), arg(inputs, 4)
    axes = ints(axes_in) if axes_in is not None else list(range(len(starts)))
    steps = ints(steps_in) if steps_in is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = normalize_axis(axis, x.ndim)
        dim = x.shape[axis]
        if step == 0:
            raise ValueError("Slice: step 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return [x[tuple(index)]]


@register("Gather")
def gather(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Negative indices count from the end of ``axis``."""
    x, indices = required(inputs, 0), required(inputs, 1)
    return [np.asarray(np.take(x, indices.astype(np.int64), axis=normalize_axis(int(attrs.get("axis", 0)), x.ndim)))]


@register("GatherElements")
def gather_elements(inputs: Inputs, attrs: Attrs) -> Outputs:
    x, indices = required(inputs, 0), required(inputs, 1).astype(np.int64)
    axis = normalize_axis(int(attrs.get("axis", 0)), x.ndim)
    indices = np.where(indices < 0, indices + x.shape[axis], indices)
    return [np.take_along_axis(x, indices, axis=axis)]


def _index_rows(op: str, indices: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """GatherND's and ScatterND's indices as rows of len(dims) coordinates into ``dims``, negative ones counted from
    the end; a coordinate outside is an IndexError naming its row."""
    k = len(dims)
    rows = indices.reshape(int(np.prod(indices.shape[:-1], dtype=np.int64)), k)
    bounds = np.asarray(dims, np.int64)
    rows = np.where(rows < 0, rows + bounds, rows)
    outside = np.nonzero(((rows < 0) | (rows >= bounds)).any(axis=1))[0]
    if outside.size:
        raise IndexError(f"{op}: index {indices.reshape(rows.shape)[outside[0]].tolist()} is outside data's {dims}")
    return rows


@register("GatherND")
def gather_nd(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Slices of data picked by index rows of K coordinates into data's dims after the first ``batch_dims`` (which
    indices shares with data); negative coordinates count from the end."""
    data, indices = required(inputs, 0), required(inputs, 1).astype(np.int64)
    b = int(attrs.get("batch_dims", 0))
    k = indices.shape[-1] if indices.ndim else 0
    if indices.ndim == 0 or not 0 <= b < min(indices.ndim, data.ndim) or b + k > data.ndim \
            or tuple(indices.shape[:b]) != tuple(data.shape[:b]):
        raise ValueError(f"GatherND: data {data.shape}, indices {indices.shape}, batch_dims {b}: indices must share "
                         f"data's first batch_dims dims and index at most {data.ndim - b} more")
    rows = _index_rows("GatherND", indices, tuple(data.shape[b:b + k]))
    out_shape = tuple(indices.shape[:-1]) + tuple(data.shape[b + k:])
    batches = int(np.prod(data.shape[:b], dtype=np.int64))
    if batches == 0 or rows.shape[0] == 0:
        return [np.zeros(out_shape, data.dtype)]
    per_batch = data.reshape((batches, *data.shape[b:]))
    by_batch = rows.reshape(batches, rows.shape[0] // batches, k)
    if k:
        picked = np.stack([per_batch[i][tuple(by_batch[i].T)] for i in range(batches)])
    else:  # each (empty) row picks all of its batch's data
        picked = np.repeat(per_batch[:, None], by_batch.shape[1], axis=1)
    return [picked.reshape(out_shape)]


_SCATTER_UFUNCS = dict(zip(rules.SCATTER_REDUCTIONS[1:], (np.add, np.multiply, np.maximum, np.minimum), strict=True))


@register("ScatterND")
def scatter_nd(inputs: Inputs, attrs: Attrs) -> Outputs:
    """A copy of data whose slices at ``indices`` (each row K coordinates into data's first K dims; negative ones
    count from the end) are ``updates``, or are combined with them (``reduction`` add, mul, max, min: in the order
    of the rows, repeated positions included). Repeated positions without a reduction, which ONNX leaves undefined:
    here the last row's update (on OpenCL any one of them)."""
    data, indices, updates = required(inputs, 0), required(inputs, 1).astype(np.int64), required(inputs, 2)
    reduction = str(attrs.get("reduction", "none"))
    if reduction not in rules.SCATTER_REDUCTIONS:
        raise NotImplementedError(f"ScatterND: reduction={reduction!r} is not supported")
    k = indices.shape[-1] if indices.ndim else 0
    expected = tuple(indices.shape[:-1]) + tuple(data.shape[k:])
    if indices.ndim == 0 or k > data.ndim or tuple(updates.shape) != expected:
        raise ValueError(f"ScatterND: data {data.shape}, indices {indices.shape}: updates must have shape {expected}, "
                         f"not {updates.shape}")
    rows = _index_rows("ScatterND", indices, tuple(data.shape[:k]))
    out = data.copy()
    slices = updates.reshape((rows.shape[0], *data.shape[k:])).astype(data.dtype, copy=False)
    if k == 0:  # every row is all of data
        for value in slices:
            out[...] = value if reduction == "none" else _SCATTER_UFUNCS[reduction](out, value)
    elif reduction == "none":
        out[tuple(rows.T)] = slices
    else:
        _SCATTER_UFUNCS[reduction].at(out, tuple(rows.T), slices)
    return [out]


@register("ScatterElements")
def scatter_elements(inputs: Inputs, attrs: Attrs) -> Outputs:
    """A copy of data where each element of ``updates`` goes to its own position with the ``axis`` coordinate
    replaced by ``indices`` there (negative ones count from the end), or is combined with what is there
    (``reduction`` add, mul, max, min, in index order). Repeated positions without a reduction: the last update."""
    data, indices, updates = required(inputs, 0), required(inputs, 1).astype(np.int64), required(inputs, 2)
    axis = normalize_axis(int(attrs.get("axis", 0)), data.ndim)
    reduction = str(attrs.get("reduction", "none"))
    if reduction not in rules.SCATTER_REDUCTIONS:
        raise NotImplementedError(f"ScatterElements: reduction={reduction!r} is not supported")
    if indices.shape != updates.shape or indices.ndim != data.ndim:
        raise ValueError(f"ScatterElements: indices {list(indices.shape)} and updates {list(updates.shape)} must "
                         f"have one shape, of data's rank {data.ndim}")
    if any(i > d for k, (i, d) in enumerate(zip(indices.shape, data.shape)) if k != axis):
        raise ValueError(f"ScatterElements: indices {list(indices.shape)} reach past data {list(data.shape)} off "
                         f"axis {axis}")
    dim = data.shape[axis]
    index = np.where(indices < 0, indices + dim, indices)
    if index.size and (index.min() < 0 or index.max() >= dim):
        raise ValueError(f"ScatterElements: an index is outside [-{dim}, {dim - 1}] along axis {axis}")
    coords: list[np.ndarray] = [np.asarray(c) for c in np.indices(indices.shape)]
    coords[axis] = index
    out = data.copy()
    values = updates.astype(data.dtype, copy=False)
    if reduction == "none":
        out[tuple(coords)] = values
    else:
        _SCATTER_UFUNCS[reduction].at(out, tuple(coords), values)
    return [out]


@register("OneHot")
def one_hot(inputs: Inputs, attrs: Attrs) -> Outputs:
    """values[1] where the new ``axis`` (of ``depth`` classes) equals indices (negative ones count from the end;
    ones outside [-depth, depth - 1] match nothing), values[0] elsewhere."""
    indices, depth_in, values = required(inputs, 0), required(inputs, 1), required(inputs, 2)
    if depth_in.size != 1 or values.size != 2:
        raise ValueError(f"OneHot: depth must have one element and values two, got {list(depth_in.shape)} and "
                         f"{list(values.shape)}")
    depth = int(np.asarray(depth_in).reshape(()))
    axis = normalize_axis(int(attrs.get("axis", -1)), indices.ndim + 1)
    index = np.asarray(indices).astype(np.int64)
    index = np.where(index < 0, index + depth, index)
    classes = np.arange(depth).reshape([depth if d == axis else 1 for d in range(indices.ndim + 1)])
    hot = np.expand_dims(index, axis) == classes
    off, on = values.reshape(-1)
    return [np.where(hot, on, off).astype(values.dtype)]


@register("Trilu")
def trilu(inputs: Inputs, attrs: Attrs) -> Outputs:
    """The upper (``upper`` 1, the default) or lower triangle of the two innermost dims, from diagonal ``k`` (an
    optional one-element input: 0 the main one, > 0 above it), the rest zero."""
    x, k_in = required(inputs, 0), arg(inputs, 1)
    if x.ndim < 2:
        raise ValueError(f"Trilu needs at least 2 dimensions, got shape {list(x.shape)}")
    k = int(np.asarray(k_in).reshape(())) if k_in is not None and np.asarray(k_in).size else 0
    return [np.triu(x, k) if int(attrs.get("upper", 1)) else np.tril(x, k)]


@register("Pad")
def pad(inputs: Inputs, attrs: Attrs) -> Outputs:
    """``pads`` is [begin of each axis..., end of each axis...] over ``axes`` (default all); negative pads crop."""
    x, pads = required(inputs, 0), ints(required(inputs, 1))
    value, axes_in = arg(inputs, 2), arg(inputs, 3)
    mode = attrs.get("mode", "constant")
    if mode not in PAD_MODES:
        raise NotImplementedError(f"Pad: mode={mode!r} is not supported")
    axes = [normalize_axis(a, x.ndim) for a in ints(axes_in)] if axes_in is not None else list(range(x.ndim))
    n = len(axes)
    widths = [(0, 0)] * x.ndim
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[i + n])
    # Negative pads crop first (as onnxruntime does), so reflect/edge/wrap read the cropped tensor.
    x = x[tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(widths))]
    grow = [(max(b, 0), max(e, 0)) for b, e in widths]
    if mode == "constant":
        fill = 0 if value is None or value.size == 0 else value.reshape(-1)[0]
        return [np.pad(x, grow, mode="constant", constant_values=np.asarray(fill).astype(x.dtype))]
    return [np.pad(x, grow, mode=PAD_MODES[mode])]


@register("ConstantOfShape")
def constant_of_shape(inputs: Inputs, attrs: Attrs) -> Outputs:
    """``value``: a 1-element array (its dtype is kept) or a Python number (float -> float32); default float32 0."""
    value = attrs.get("value")
    fill: np.generic
    if value is None:
        fill = np.float32(0)
    elif isinstance(value, np.ndarray):
        fill = value.reshape(-1)[0]
    elif isinstance(value, bool):
        fill = np.bool_(value)
    elif isinstance(value, int):
        fill = np.int64(value)
    else:
        fill = np.float32(np.asarray(value).reshape(-1)[0])
    return [np.full(ints(required(inputs, 0)), fill, dtype=fill.dtype)]


@register("Range")
def range_(inputs: Inputs, attrs: Attrs) -> Outputs:
    """output[i] = start + i * delta for i < max(ceil((limit - start) / delta), 0), in start's dtype."""
    start, limit, delta = (np.asarray(required(inputs, i)).reshape(()) for i in range(3))
    dtype = start.dtype
    count = max(math.ceil(float(limit - start) / float(delta)), 0)
    return [(start + np.arange(count, dtype=dtype) * delta).astype(dtype, copy=False)]


@register("Expand")
def expand(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Bidirectional broadcast of X with ``shape`` (a 1 in ``shape`` keeps X's dim)."""
    x = required(inputs, 0)
    return [np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(ints(required(inputs, 1))))).copy()]


@register("Tile")
def tile(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [np.tile(required(inputs, 0), ints(required(inputs, 1)))]


@register("DepthToSpace")
def depth_to_space(inputs: Inputs, attrs: Attrs) -> Outputs:
    """mode DCR (default): depth is (block_y, block_x, C'); CRD: (C', block_y, block_x)."""
    x = required(inputs, 0)
    bs = int(attrs["blocksize"])
    mode = attrs.get("mode", "DCR")
    n, c, h, w = x.shape
    if mode == "DCR":
        y = x.reshape(n, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        y = x.reshape(n, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise NotImplementedError(f"DepthToSpace: mode={mode!r} is not supported")
    return [y.reshape(n, c // (bs * bs), h * bs, w * bs)]


@register("SpaceToDepth")
def space_to_depth(inputs: Inputs, attrs: Attrs) -> Outputs:
    x = required(inputs, 0)
    bs = int(attrs["blocksize"])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bs, bs, w // bs, bs).transpose(0, 3, 5, 1, 2, 4)
    return [y.reshape(n, c * bs * bs, h // bs, w // bs)]


@register("NonZero")
def non_zero(inputs: Inputs, attrs: Attrs) -> Outputs:
    return [np.array(np.nonzero(required(inputs, 0)), dtype=np.int64).reshape(required(inputs, 0).ndim, -1)]
