"""Recurrent layers: nn.RNN, nn.GRU and nn.LSTM run as one fused op over their flat weight list."""
from __future__ import annotations

import torch

from ..space import Space, block, find, refine
from ..tracer import OpCall, Tracer, tie, unhandled
from .base import rule
from .layers import role
from .shape import _pieces

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@rule("lstm", "gru", "rnn_tanh", "rnn_relu")
def recurrent(tr: Tracer, call: OpCall) -> None:
    """Input features tie to the first layer's input weights; the hidden size, shared by every layer
    and direction, ties the gate rows (gates x hidden), the recurrent weights and the output."""
    if len(call.args) < 9 or not isinstance(call.args[3], bool):
        raise unhandled("packed sequences")
    x, hx, weights, has_bias, layers, _, _, bidir, batch_first = call.args[:9]
    mod = tr.modules.get(call.module)
    if mod is None or getattr(mod, "proj_size", 0):
        raise unhandled("a recurrent op outside nn.RNN/GRU/LSTM, or with proj_size")
    gates, dirs = GATES[call.name], 2 if bidir else 1
    per = 4 if has_bias else 2
    if len(weights) != layers * dirs * per:
        raise unhandled("unexpected weight list")
    hidden = Space(weights[1].shape[1])
    rx = tr.rec(x)
    feat = rx.spaces[-1]
    for layer in range(layers):
        out_parts = []
        for d in range(dirs):
            w = weights[(layer * dirs + d) * per:(layer * dirs + d + 1) * per]
            rows = [tr.rec(t).spaces[0] for t in (w[0], w[1]) + ((w[2], w[3]) if has_bias else ())]
            for r in rows[1:]:
                tie(rows[0], r)
            gate, h = refine(rows[0], "prod", [gates, hidden.size]) if gates > 1 else (Space(1), rows[0])
            block(gate, "gate index")
            tie(h, hidden)
            tie(tr.rec(w[0]).spaces[1], feat)
            tie(tr.rec(w[1]).spaces[1], hidden)
            for t in w:
                role(tr, t, 0, "out")
            role(tr, w[0], 1, "in")
            role(tr, w[1], 1, "in")
            out_parts.append(hidden)
        feat = _pieces_cat(out_parts)
    tr.state.syncs.append((call.module, "hidden_size", [hidden]))
    tr.state.syncs.append((call.module, "input_size", [rx.spaces[-1]]))
    out, state = call.out[0], call.out[1:]
    tr.set(out, rx.spaces[:-1] + [feat])
    for t in [hx] if isinstance(hx, torch.Tensor) else list(hx):
        tie(tr.rec(t).spaces[-1], hidden)
    for t in [s for st in state for s in (st if isinstance(st, (tuple, list)) else (st,))]:
        spaces = [Space(n) for n in t.shape[:-1]] + [hidden]
        tr.set(t, spaces)


def _pieces_cat(parts: list[Space]) -> Space:
    """The output features: the hidden size, or forward and backward halves side by side."""
    if len(parts) == 1:
        return parts[0]
    whole = Space(sum(p.size for p in parts))
    for piece, p in zip(_pieces(whole, [q.size for q in parts]), parts):
        tie(piece, find(p))
    return whole
