"""Plain-NumPy references written straight from the PyTorch equations.

Slow on purpose: one frame at a time, float64, no shared code with the
kernels, so a test that compares the two checks the kernels' equations.
"""

from __future__ import annotations

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def cell_step(cell, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One step of one layer; returns (h', c').  Shapes: x (I,), h, c (H,)."""
    gi = w_ih @ x + b_ih  # (G*H,)
    gh = w_hh @ h + b_hh  # (G*H,)
    H = h.shape[0]
    if cell == "rnn_tanh":
        return np.tanh(gi + gh), c
    if cell == "rnn_relu":
        return np.maximum(gi + gh, 0.0), c
    if cell == "gru":
        r = sigmoid(gi[:H] + gh[:H])
        z = sigmoid(gi[H:2 * H] + gh[H:2 * H])
        n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
        return (1 - z) * n + z * h, c
    if cell == "lstm":
        i = sigmoid(gi[:H] + gh[:H])
        f = sigmoid(gi[H:2 * H] + gh[H:2 * H])
        g = np.tanh(gi[2 * H:3 * H] + gh[2 * H:3 * H])
        o = sigmoid(gi[3 * H:] + gh[3 * H:])
        c2 = f * c + i * g
        return o * np.tanh(c2), c2
    raise ValueError(cell)


def head(y, w, b, activation):
    z = w @ y + b
    if activation == "sigmoid":
        return sigmoid(z)
    if activation == "softmax":
        e = np.exp(z - z.max())
        return e / e.sum()
    return z


def forward(cell, tensors, x, num_layers, activation="identity", h0=None, c0=None):
    """Run (T, I) frames from state h0/c0 (L, H) (zeros if None); returns (y (T, O), h (L, H), c (L, H))."""
    t = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
    H = t["rnn.weight_hh_l0"].shape[1]
    h = np.zeros((num_layers, H)) if h0 is None else np.array(h0, np.float64)
    c = np.zeros((num_layers, H)) if c0 is None else np.array(c0, np.float64)
    ys = []
    for xt in np.asarray(x, np.float64):
        if "norm.mean" in t:
            xt = (xt - t["norm.mean"]) / t["norm.std"]
        inp = xt
        for k in range(num_layers):
            h[k], c[k] = cell_step(cell, inp, h[k], c[k], t[f"rnn.weight_ih_l{k}"], t[f"rnn.weight_hh_l{k}"],
                                   t[f"rnn.bias_ih_l{k}"], t[f"rnn.bias_hh_l{k}"])
            inp = h[k]
        ys.append(head(inp, t["head.weight"], t["head.bias"], activation) if "head.weight" in t else inp.copy())
    return np.array(ys), h, c


def forward_bidirectional(cell, tensors, x, num_layers, activation="identity"):
    """A bidirectional stack as PyTorch defines it: per layer a forward pass over frames 0..T-1 and a
    reverse pass (``*_reverse`` tensors) over T-1..0, outputs concatenated [fwd, rev] (T, 2H) as the next
    layer's input; the head on the top layer's concatenation.  Zero initial states.  Returns y (T, O)."""
    t = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
    H = t["rnn.weight_hh_l0"].shape[1]
    inp = np.asarray(x, np.float64)
    if "norm.mean" in t:
        inp = (inp - t["norm.mean"]) / t["norm.std"]
    T = inp.shape[0]
    for k in range(num_layers):
        out = np.zeros((T, 2 * H))
        for d, sfx in enumerate(("", "_reverse")):
            w = [t[f"rnn.{n}_l{k}{sfx}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h, c = np.zeros(H), np.zeros(H)
            for s in (range(T) if d == 0 else range(T - 1, -1, -1)):
                h, c = cell_step(cell, inp[s], h, c, *w)
                out[s, d * H:(d + 1) * H] = h
        inp = out
    if "head.weight" not in t:
        return inp
    return np.array([head(v, t["head.weight"], t["head.bias"], activation) for v in inp])
