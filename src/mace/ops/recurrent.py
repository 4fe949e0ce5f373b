"""LSTM, GRU and RNN (ONNX semantics), the recurrence step by step in float32.

All: forward, reverse or bidirectional; optional biases, sequence lengths and initial states; ``clip`` (each
activation's input held to [-clip, clip]); ``layout`` 1 (batch first). LSTM's gates are i, o, f, c, with optional
peepholes and ``input_forget``; GRU's z, r, h, with ``linear_before_reset``. Activations are ONNX's defaults (LSTM:
Sigmoid, Tanh, Tanh; GRU: Sigmoid, Tanh; RNN: Tanh) for every direction; other lists raise NotImplementedError.
Past its sequence length a batch entry's outputs are zero and its states stay as they were; reversed directions
start at each entry's own last element.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mace.ops.common import Attrs, Inputs, OpFn, Outputs, arg, registrar, required

OPS: dict[str, OpFn] = {}
register = registrar(OPS)

ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
# a cell: (x_t . W^T, h, the cell's other states, direction) -> (new h, new other states)
Cell = Callable[[np.ndarray, np.ndarray, list[np.ndarray], int], tuple[np.ndarray, list[np.ndarray]]]


@dataclass(frozen=True)
class RecurrentAttrs:
    direction: str
    hidden: int  # 0: from R's shape
    clip: float  # 0: none
    layout: int
    input_forget: bool = False  # LSTM
    linear_before_reset: bool = False  # GRU

    @property
    def dirs(self) -> int:
        return DIRECTIONS[self.direction]


def recurrent_attrs(op: str, attrs: Attrs) -> RecurrentAttrs:
    """The attributes of an LSTM or GRU node, checked (NotImplementedError for what mace does not compute)."""
    direction = str(attrs.get("direction", "forward"))
    if direction not in DIRECTIONS:
        raise NotImplementedError(f"{op}: direction={direction!r} is not supported")
    activations = [str(a) for a in attrs.get("activations", [])]
    if activations and activations != list(ACTIVATIONS[op]) * DIRECTIONS[direction]:
        raise NotImplementedError(f"{op}: activations={activations} is not supported ({', '.join(ACTIVATIONS[op])})")
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise NotImplementedError(f"{op}: layout={layout} is not supported")
    return RecurrentAttrs(direction, int(attrs.get("hidden_size", 0)), float(attrs.get("clip", 0.0) or 0.0), layout,
                          bool(int(attrs.get("input_forget", 0))), bool(int(attrs.get("linear_before_reset", 0))))


def _clip(x: np.ndarray, clip: float) -> np.ndarray:
    return np.clip(x, -clip, clip) if clip else x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _run(x: np.ndarray, w: np.ndarray, a: RecurrentAttrs, lens: np.ndarray | None, states0: list[np.ndarray | None],
         hidden: int, cell: Cell) -> list[np.ndarray]:
    """The recurrence over x (in its layout) for every direction: [Y, then each state's final value], in x's layout.
    ``states0``: the initial states (h first; None: zeros), in the layout too. The outputs have x's type."""
    f32, dtype = np.float32, x.dtype
    if a.layout:  # [batch, seq, ...] -> [seq, batch, ...]; the states [batch, dirs, H] -> [dirs, batch, H]
        x = x.transpose(1, 0, 2)
        states0 = [None if s is None else s.transpose(1, 0, 2) for s in states0]
    x = x.astype(f32)
    seq, batch, _ = x.shape
    lengths = np.full(batch, seq, np.int64) if lens is None or not lens.size else lens.astype(np.int64)
    y = np.zeros((seq, a.dirs, batch, hidden), f32)
    finals = [np.zeros((a.dirs, batch, hidden), f32) for _ in states0]
    rows = np.arange(batch)
    for d in range(a.dirs):
        states = [np.zeros((batch, hidden), f32) if s is None or not s.size else s[d].astype(f32) for s in states0]
        backward = a.direction == "reverse" or d == 1
        wd = w[d].astype(f32)
        for step in range(seq):
            # each entry's position this step (reversed: from its own last element), and whether it has one
            t_of = np.clip(lengths - 1 - step, 0, seq - 1) if backward else np.full(batch, step)
            live = (step < lengths)[:, None]
            h_new, rest = cell(x[t_of, rows] @ wd.T, states[0], states[1:], d)
            states = [np.where(live, new, old).astype(f32) for new, old in zip([h_new, *rest], states)]
            y[t_of, d, rows] = np.where(live, h_new, y[t_of, d, rows])
        for final, state in zip(finals, states):
            final[d] = state
    if a.layout:  # Y [batch, seq, dirs, H], the states [batch, dirs, H]
        y, finals = y.transpose(2, 0, 1, 3), [f.transpose(1, 0, 2) for f in finals]
    return [v.astype(dtype) for v in (y, *finals)]


def _bias(b: np.ndarray | None, d: int, size: int) -> np.ndarray:
    return np.zeros(size, np.float32) if b is None or not b.size else b[d].astype(np.float32)


def _operands(op: str, inputs: Inputs, attrs: Attrs) -> tuple[RecurrentAttrs, np.ndarray, np.ndarray, np.ndarray,
                                                                 np.ndarray | None, np.ndarray | None, int]:
    """What LSTM, GRU and RNN read alike: (attributes, X, W, R, B, sequence_lens, hidden size)."""
    a = recurrent_attrs(op, attrs)
    x, w, r = required(inputs, 0), required(inputs, 1), required(inputs, 2)
    return a, x, w, r, arg(inputs, 3), arg(inputs, 4), a.hidden or r.shape[-1]


@register("LSTM")
def lstm(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Inputs X, W, R, B, sequence_lens, initial_h, initial_c, P; outputs Y, Y_h, Y_c."""
    a, x, w, r, b, lens, hidden = _operands("LSTM", inputs, attrs)
    h0, c0, p = (arg(inputs, i) for i in range(5, 8))

    def cell(xw: np.ndarray, h: np.ndarray, rest: list[np.ndarray], d: int) -> tuple[np.ndarray, list[np.ndarray]]:
        (c,) = rest
        bias, peep = _bias(b, d, 8 * hidden), _bias(p, d, 3 * hidden)
        gates = xw + h @ r[d].astype(np.float32).T + bias[: 4 * hidden] + bias[4 * hidden :]
        gi, go, gf, gc = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
        pi, po, pf = (peep[k * hidden : (k + 1) * hidden] for k in range(3))
        i = _sigmoid(_clip(gi + pi * c, a.clip))
        f = 1.0 - i if a.input_forget else _sigmoid(_clip(gf + pf * c, a.clip))
        c_new = f * c + i * np.tanh(_clip(gc, a.clip))
        o = _sigmoid(_clip(go + po * c_new, a.clip))
        return o * np.tanh(c_new), [c_new]

    return _run(x, w, a, lens, [h0, c0], hidden, cell)


@register("GRU")
def gru(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Inputs X, W, R, B, sequence_lens, initial_h; outputs Y, Y_h."""
    a, x, w, r, b, lens, hidden = _operands("GRU", inputs, attrs)

    def cell(xw: np.ndarray, h: np.ndarray, rest: list[np.ndarray], d: int) -> tuple[np.ndarray, list[np.ndarray]]:
        bias, rd = _bias(b, d, 6 * hidden), r[d].astype(np.float32)
        wb, rb = bias[: 3 * hidden], bias[3 * hidden :]
        part = [slice(k * hidden, (k + 1) * hidden) for k in range(3)]
        z = _sigmoid(_clip(xw[:, part[0]] + h @ rd[part[0]].T + wb[part[0]] + rb[part[0]], a.clip))
        reset = _sigmoid(_clip(xw[:, part[1]] + h @ rd[part[1]].T + wb[part[1]] + rb[part[1]], a.clip))
        if a.linear_before_reset:
            recurrent = reset * (h @ rd[part[2]].T + rb[part[2]])
        else:
            recurrent = (reset * h) @ rd[part[2]].T + rb[part[2]]
        candidate = np.tanh(_clip(xw[:, part[2]] + recurrent + wb[part[2]], a.clip))
        return (1.0 - z) * candidate + z * h, []

    return _run(x, w, a, lens, [arg(inputs, 5)], hidden, cell)


@register("RNN")
def rnn(inputs: Inputs, attrs: Attrs) -> Outputs:
    """Inputs X, W, R, B, sequence_lens, initial_h; outputs Y, Y_h: h = tanh(W . x_t + R . h + Wb + Rb)."""
    a, x, w, r, b, lens, hidden = _operands("RNN", inputs, attrs)

    def cell(xw: np.ndarray, h: np.ndarray, rest: list[np.ndarray], d: int) -> tuple[np.ndarray, list[np.ndarray]]:
        bias = _bias(b, d, 2 * hidden)
        return np.tanh(_clip(xw + h @ r[d].astype(np.float32).T + bias[:hidden] + bias[hidden:], a.clip)), []

    return _run(x, w, a, lens, [arg(inputs, 5)], hidden, cell)
