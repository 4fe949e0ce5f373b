"""LSTM (ONNX semantics: gates in i, o, f, c order; forward, reverse or bidirectional; optional biases, sequence
lengths, initial states, peepholes; ``clip``, ``input_forget``, ``layout``), the recurrence step by step in float32.

Activations are ONNX's defaults (f = Sigmoid, g = h = Tanh) for every direction; other lists raise
NotImplementedError. Past its sequence length a batch entry's outputs are zero and its states stay as they were.
"""

from __future__ import annotations

import numpy as np

from mace.ops.common import Attrs, Inputs, OpFn, Outputs, arg, registrar, required

OPS: dict[str, OpFn] = {}
register = registrar(OPS)

LSTM_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def lstm_attrs(attrs: Attrs) -> tuple[str, int, float, bool, int]:
    """(direction, hidden_size, clip or 0, input_forget, layout), checked."""
    direction = str(attrs.get("direction", "forward"))
    if direction not in DIRECTIONS:
        raise NotImplementedError(f"LSTM: direction={direction!r} is not supported")
    activations = [str(a) for a in attrs.get("activations", [])]
    if activations and activations != list(LSTM_ACTIVATIONS) * DIRECTIONS[direction]:
        raise NotImplementedError(f"LSTM: activations={activations} is not supported (Sigmoid, Tanh, Tanh)")
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise NotImplementedError(f"LSTM: layout={layout} is not supported")
    clip = float(attrs.get("clip", 0.0) or 0.0)
    return direction, int(attrs.get("hidden_size", 0)), clip, bool(int(attrs.get("input_forget", 0))), layout


def _clip(x: np.ndarray, clip: float) -> np.ndarray:
    """An activation's input held to [-clip, clip] (clip 0: as it is)."""
    return np.clip(x, -clip, clip) if clip else x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


@register("LSTM")
def lstm(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Inputs X, W, R, B, sequence_lens, initial_h, initial_c, P; outputs Y, Y_h, Y_c."""
    direction, hidden, clip, input_forget, layout = lstm_attrs(attrs)
    x, w, r = required(inputs, 0), required(inputs, 1), required(inputs, 2)
    b, lens, h0, c0, p = (arg(inputs, i) for i in range(3, 8))
    f32 = np.float32
    x = x.astype(f32)
    if layout:  # [batch, seq, input] -> [seq, batch, input]; the states [batch, dirs, H]
        x = x.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    seq, batch, _ = x.shape
    dirs = DIRECTIONS[direction]
    hidden = hidden or r.shape[-1]
    lengths = np.full(batch, seq, np.int64) if lens is None or not lens.size else lens.astype(np.int64)
    y = np.zeros((seq, dirs, batch, hidden), f32)
    y_h = np.zeros((dirs, batch, hidden), f32)
    y_c = np.zeros((dirs, batch, hidden), f32)
    for d in range(dirs):
        wd, rd = w[d].astype(f32), r[d].astype(f32)
        bias = np.zeros(8 * hidden, f32) if b is None or not b.size else b[d].astype(f32)
        peep = np.zeros(3 * hidden, f32) if p is None or not p.size else p[d].astype(f32)
        pi, po, pf = peep[:hidden], peep[hidden : 2 * hidden], peep[2 * hidden :]
        h = np.zeros((batch, hidden), f32) if h0 is None or not h0.size else h0[d].astype(f32)
        c = np.zeros((batch, hidden), f32) if c0 is None or not c0.size else c0[d].astype(f32)
        backward = direction == "reverse" or d == 1
        for step in range(seq):
            # each entry's position this step (reversed: from its own last element), and whether it has one
            t_of = np.clip(lengths - 1 - step, 0, seq - 1) if backward else np.full(batch, step)
            live = (step < lengths)[:, None]
            xt = x[t_of, np.arange(batch)]
            gates = xt @ wd.T + h @ rd.T + bias[: 4 * hidden] + bias[4 * hidden :]
            gi, go, gf, gc = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
            i = _sigmoid(_clip(gi + pi * c, clip))
            f = 1.0 - i if input_forget else _sigmoid(_clip(gf + pf * c, clip))
            c_new = f * c + i * np.tanh(_clip(gc, clip))
            o = _sigmoid(_clip(go + po * c_new, clip))
            h_new = o * np.tanh(c_new)
            c = np.where(live, c_new, c).astype(f32)
            h = np.where(live, h_new, h).astype(f32)
            y[t_of, d, np.arange(batch)] = np.where(live, h_new, y[t_of, d, np.arange(batch)])
        y_h[d], y_c[d] = h, c
    dtype = required(inputs, 0).dtype
    if layout:  # Y [batch, seq, dirs, H], the states [batch, dirs, H]
        return [y.transpose(2, 0, 1, 3).astype(dtype), y_h.transpose(1, 0, 2).astype(dtype),
                y_c.transpose(1, 0, 2).astype(dtype)]
    return [y.astype(dtype), y_h.astype(dtype), y_c.astype(dtype)]
