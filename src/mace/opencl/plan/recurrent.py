"""LSTM, GRU and RNN on recurrent.cl: the whole recurrence in one launch, a work-group per (batch entry, direction).

Absent optional inputs (biases, sequence lengths, initial states, peepholes) are uploaded as the zeros (or full
lengths) they mean, so each kernel has one signature; absent outputs are not written. The work items of a
work-group share the hidden units, each reading its units' rows of W and R: meant for the small recurrent layers
of vision and speech models, not tuned.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mace.errors import DeviceError
from mace.model.ir import Node
from mace.opencl.plan.planner import Planner, lowers, optional
from mace.opencl.plan.templates import FLOAT_TAGS, c_float
from mace.ops.recurrent import recurrent_attrs

# work items of a work-group: up to this many, one per hidden unit (the portable plan's, without a device target)
RECURRENT_ITEMS = 256
PORTABLE_RECURRENT_ITEMS = 64
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@lowers("LSTM", "GRU", "RNN")
def _lower_recurrent(p: Planner, node: Node) -> None:
    try:
        a = recurrent_attrs(node.op, node.attrs)
    except NotImplementedError as exc:
        raise DeviceError(f"OpenCL runtime: {exc} (node {node.name})") from exc
    lstm = node.op == "LSTM"
    x, w, r = node.inputs[:3]
    xs = p.shape(x)
    seq, batch = (xs[1], xs[0]) if a.layout else (xs[0], xs[1])
    size_in, hidden = xs[2], a.hidden or p.shape(r)[-1]
    if p.tag(x) not in FLOAT_TAGS:
        raise DeviceError(f"OpenCL runtime has no kernel for {node.op} of {p.tag(x)} values (node {node.name})")
    local_floats = {"LSTM": 3, "GRU": 4, "RNN": 2}[node.op] * hidden + size_in
    if p.target is not None and 4 * local_floats > p.target.local_mem_bytes:
        raise DeviceError(f"{node.op} {node.name}: hidden size {hidden} and input size {size_in} need "
                          f"{4 * local_floats} bytes of local memory, the device has {p.target.local_mem_bytes}")
    states = (batch, a.dirs, hidden) if a.layout else (a.dirs, batch, hidden)
    gates = GATES[node.op]

    def given(index: int, what: str, default: np.ndarray) -> tuple[str, str]:
        """(the buffer of optional input ``index``, its storage tag), or of the ``default`` it means when absent."""
        name = optional(node.inputs, index)
        if name:
            return p.use(name), p.tag(name)
        tag = "I32" if default.dtype.kind == "i" else "F32"
        return p.derived(f"{node.name}@{what}", default, tag), tag

    optional_inputs = [given(3, "bias", np.zeros((a.dirs, 2 * gates * hidden), np.float32)),
                       given(4, "lens", np.full(batch, seq, np.int32)),
                       given(5, "h0", np.zeros(states, np.float32))]
    if lstm:
        optional_inputs += [given(6, "c0", np.zeros(states, np.float32)),
                            given(7, "peepholes", np.zeros((a.dirs, 3 * hidden), np.float32))]
        if optional_inputs[2][1] != optional_inputs[3][1]:
            raise DeviceError(f"LSTM {node.name}: initial_h stored as {optional_inputs[2][1]}, initial_c as "
                              f"{optional_inputs[3][1]}")
    args = [p.use(x), p.use(w), p.use(r), *(buffer for buffer, _ in optional_inputs)]
    outputs = [node.outputs[i] if len(node.outputs) > i else "" for i in range(3 if lstm else 2)]
    written = [o for o in outputs if o and p.is_used(o)]
    tags = {p.tag(o) for o in written}
    if len(tags) > 1:
        raise DeviceError(f"{node.op} {node.name}: its outputs are stored as {sorted(tags)}, the kernel writes one "
                          "type")
    defines: dict[str, Any] = {"X_T": p.tag(x), "W_T": p.tag(w), "R_T": p.tag(r), "B_T": optional_inputs[0][1],
                               "L_T": optional_inputs[1][1], "S_T": optional_inputs[2][1],
                               "Y_T": tags.pop() if tags else "F32"}
    defines.update({"SEQ": seq, "BATCH": batch, "IN": size_in, "HID": hidden, "DIRS": a.dirs,
                    "REVERSE": a.direction == "reverse", "LAYOUT": a.layout, "HAS_CLIP": a.clip > 0,
                    "CLIP": c_float(a.clip)})
    if lstm:
        defines.update({"P_T": optional_inputs[4][1], "INPUT_FORGET": a.input_forget})
    elif node.op == "GRU":
        defines["LINEAR_BEFORE_RESET"] = a.linear_before_reset
    for key, out in zip(("HAS_Y", "HAS_YH", "HAS_YC"), outputs):
        defines[key] = out in written
        if defines[key]:
            args.append(p.define(out))
    most = PORTABLE_RECURRENT_ITEMS if p.target is None else min(RECURRENT_ITEMS, p.target.max_work_group_size)
    items = min(hidden, most)
    p.launch(node, p.kernel(node.op.lower(), defines), [items, batch * a.dirs], args, [items, 1])
