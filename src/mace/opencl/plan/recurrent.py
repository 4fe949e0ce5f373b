"""LSTM on recurrent.cl: the whole recurrence in one launch, a work-group per (batch entry, direction).

Absent optional inputs (biases, sequence lengths, initial states, peepholes) are uploaded as the zeros (or full
lengths) they mean, so the kernel has one signature; absent outputs are not written.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mace.errors import DeviceError
from mace.model.ir import Node
from mace.opencl.plan.planner import Planner, lowers, optional
from mace.opencl.plan.templates import FLOAT_TAGS, c_float
from mace.ops.recurrent import DIRECTIONS, lstm_attrs

# work items of a work-group: up to this many, one per hidden unit (the portable plan's, without a device target)
LSTM_ITEMS = 256
PORTABLE_LSTM_ITEMS = 64


@lowers("LSTM")
def _lower_lstm(p: Planner, node: Node) -> None:
    try:
        direction, hidden, clip, input_forget, layout = lstm_attrs(node.attrs)
    except NotImplementedError as exc:
        raise DeviceError(f"OpenCL runtime: {exc} (node {node.name})") from exc
    x, w, r = node.inputs[:3]
    xs = p.shape(x)
    seq, batch = (xs[1], xs[0]) if layout else (xs[0], xs[1])
    size_in, dirs = xs[2], DIRECTIONS[direction]
    hidden = hidden or p.shape(r)[-1]
    if p.tag(x) not in FLOAT_TAGS:
        raise DeviceError(f"OpenCL runtime has no kernel for LSTM of {p.tag(x)} values (node {node.name})")
    local_floats = 3 * hidden + size_in
    if p.target is not None and 4 * local_floats > p.target.local_mem_bytes:
        raise DeviceError(f"LSTM {node.name}: hidden size {hidden} and input size {size_in} need {4 * local_floats} "
                          f"bytes of local memory, the device has {p.target.local_mem_bytes}")
    states = (batch, dirs, hidden) if layout else (dirs, batch, hidden)

    def given(index: int, what: str, default: np.ndarray) -> tuple[str, str]:
        """(the buffer of optional input ``index``, its storage tag), or of the ``default`` it means when absent."""
        name = optional(node.inputs, index)
        if name:
            return p.use(name), p.tag(name)
        tag = "I32" if default.dtype.kind == "i" else "F32"
        return p.derived(f"{node.name}@{what}", default, tag), tag

    (b, b_t), (lens, l_t), (h0, h0_t), (c0, c0_t), (peep, p_t) = (
        given(3, "bias", np.zeros((dirs, 8 * hidden), np.float32)),
        given(4, "lens", np.full(batch, seq, np.int32)),
        given(5, "h0", np.zeros(states, np.float32)),
        given(6, "c0", np.zeros(states, np.float32)),
        given(7, "peepholes", np.zeros((dirs, 3 * hidden), np.float32)))
    if h0_t != c0_t:
        raise DeviceError(f"LSTM {node.name}: initial_h stored as {h0_t}, initial_c as {c0_t}")
    args = [p.use(x), p.use(w), p.use(r), b, lens, h0, c0, peep]
    outputs = [node.outputs[i] if len(node.outputs) > i else "" for i in range(3)]
    written = [o for o in outputs if o and p.is_used(o)]
    tags = {p.tag(o) for o in written}
    if len(tags) > 1:
        raise DeviceError(f"LSTM {node.name}: its outputs are stored as {sorted(tags)}, the kernel writes one type")
    defines: dict[str, Any] = {"X_T": p.tag(x), "W_T": p.tag(w), "R_T": p.tag(r), "B_T": b_t, "L_T": l_t,
                               "S_T": h0_t, "P_T": p_t, "Y_T": tags.pop() if tags else "F32"}
    defines.update({"SEQ": seq, "BATCH": batch, "IN": size_in, "HID": hidden, "DIRS": dirs,
                    "REVERSE": direction == "reverse", "LAYOUT": layout, "HAS_CLIP": clip > 0,
                    "CLIP": c_float(clip),
                    "INPUT_FORGET": input_forget})
    for key, out in zip(("HAS_Y", "HAS_YH", "HAS_YC"), outputs):
        defines[key] = bool(out) and out in written
        if defines[key]:
            args.append(p.define(out))
    most = PORTABLE_LSTM_ITEMS if p.target is None else min(LSTM_ITEMS, p.target.max_work_group_size)
    items = min(hidden, most)
    p.launch(node, p.kernel("lstm", defines), [items, batch * dirs], args, [items, 1])
