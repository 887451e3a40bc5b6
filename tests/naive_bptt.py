"""Plain-NumPy BPTT reference: forward and backward straight from the equations.

float64, one lane and one frame at a time, PyTorch-layout tensors, no code
shared with ``streamrnn.train.bptt``.  Used by the tests to check the Numba
backward kernel and, through central differences, itself.
"""

from __future__ import annotations

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def frame_loss(kind, z, target):
    """l(z, target) and dl/dz for one frame; z (O,)."""
    if kind == "bce":
        # -[y log s(z) + (1-y) log(1-s(z))] = log(1 + e^z) - y z, written without cancellation
        l = np.sum(np.logaddexp(0.0, z) - target * z)
        return l, sigmoid(z) - target
    if kind == "ce":
        e = np.exp(z - z.max())
        p = e / e.sum()
        k = int(target)
        d = p.copy()
        d[k] -= 1.0
        return -np.log(p[k]), d
    if kind == "mse":
        O = z.shape[0]
        return np.mean((z - target) ** 2), 2.0 * (z - target) / O
    raise ValueError(kind)


def forward_backward(cell, tensors, x, target, mask, loss, h0=None, c0=None, reset=None):
    """Loss (mean over masked frames, all lanes) and its gradients.

    x (T, B, I); target (T, B, O) or (T, B) for "ce"; mask (T, B); h0, c0 (L, B, H);
    reset (T, B) 0/1.  Returns (loss, grads {name: array}, dh0, dc0).
    """
    t = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
    T, B, _ = x.shape
    L = sum(1 for k in t if k.startswith("rnn.weight_ih_l"))
    H = t["rnn.weight_hh_l0"].shape[1]
    h0 = np.zeros((L, B, H)) if h0 is None else np.asarray(h0, np.float64)
    c0 = np.zeros((L, B, H)) if c0 is None else np.asarray(c0, np.float64)
    reset = np.zeros((T, B)) if reset is None else np.asarray(reset)
    wsum = float(np.sum(mask))
    g = {k: np.zeros_like(v) for k, v in t.items()}
    dh0 = np.zeros((L, B, H))
    dc0 = np.zeros((L, B, H))
    total = 0.0
    for b in range(B):
        # ---- forward, keeping every intermediate
        xs = np.asarray(x[:, b], np.float64)
        xn = (xs - t["norm.mean"]) / t["norm.std"] if "norm.mean" in t else xs.copy()
        hs = [[None] * T for _ in range(L)]
        cs = [[None] * T for _ in range(L)]
        gates = [[None] * T for _ in range(L)]
        hprev_all = [[None] * T for _ in range(L)]
        cprev_all = [[None] * T for _ in range(L)]
        for k in range(L):
            h, c = h0[k, b].copy(), c0[k, b].copy()
            for s in range(T):
                if reset[s, b]:
                    h, c = np.zeros(H), np.zeros(H)
                inp = xn[s] if k == 0 else hs[k - 1][s]
                hprev_all[k][s], cprev_all[k][s] = h, c
                gi = t[f"rnn.weight_ih_l{k}"] @ inp + t[f"rnn.bias_ih_l{k}"]
                gh = t[f"rnn.weight_hh_l{k}"] @ h + t[f"rnn.bias_hh_l{k}"]
                if cell in ("rnn_tanh", "rnn_relu"):
                    a = gi + gh
                    h = np.tanh(a) if cell == "rnn_tanh" else np.maximum(a, 0)
                    gates[k][s] = (a,)
                elif cell == "gru":
                    r = sigmoid(gi[:H] + gh[:H])
                    z = sigmoid(gi[H:2 * H] + gh[H:2 * H])
                    n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
                    gates[k][s] = (r, z, n, gh[2 * H:])
                    h = (1 - z) * n + z * h
                else:
                    i = sigmoid(gi[:H] + gh[:H])
                    f = sigmoid(gi[H:2 * H] + gh[H:2 * H])
                    gg = np.tanh(gi[2 * H:3 * H] + gh[2 * H:3 * H])
                    o = sigmoid(gi[3 * H:] + gh[3 * H:])
                    c = f * c + i * gg
                    gates[k][s] = (i, f, gg, o)
                    h = o * np.tanh(c)
                hs[k][s], cs[k][s] = h, c
        top = hs[L - 1]
        # ---- loss and its gradient per frame
        dtop = [np.zeros(H) for _ in range(T)]
        for s in range(T):
            if mask[s, b] == 0:
                continue
            if "head.weight" in t:
                zz = t["head.weight"] @ top[s] + t["head.bias"]
            else:
                zz = top[s]
            l, dz = frame_loss(loss, zz, target[s, b])
            total += mask[s, b] * l / wsum
            dz = dz * mask[s, b] / wsum
            if "head.weight" in t:
                g["head.weight"] += np.outer(dz, top[s])
                g["head.bias"] += dz
                dtop[s] = t["head.weight"].T @ dz
            else:
                dtop[s] = dz
        # ---- backward through layers and time
        dout = dtop
        for k in range(L - 1, -1, -1):
            Wih, Whh = t[f"rnn.weight_ih_l{k}"], t[f"rnn.weight_hh_l{k}"]
            dinp = [None] * T
            dh_next, dc_next = np.zeros(H), np.zeros(H)
            for s in range(T - 1, -1, -1):
                inp = xn[s] if k == 0 else hs[k - 1][s]
                hp, cp = hprev_all[k][s], cprev_all[k][s]
                dh = dout[s] + dh_next
                if cell in ("rnn_tanh", "rnn_relu"):
                    (a,) = gates[k][s]
                    da = dh * (1 - np.tanh(a) ** 2) if cell == "rnn_tanh" else dh * (a > 0)
                    dgi, dgh = da, da
                    dh_direct, dc_prev = np.zeros(H), np.zeros(H)
                elif cell == "gru":
                    r, z, n, ghn = gates[k][s]
                    dn = dh * (1 - z)
                    dz = dh * (hp - n)
                    dan = dn * (1 - n ** 2)
                    dar = dan * ghn * r * (1 - r)
                    daz = dz * z * (1 - z)
                    dgi = np.concatenate([dar, daz, dan])
                    dgh = np.concatenate([dar, daz, dan * r])
                    dh_direct, dc_prev = dh * z, np.zeros(H)
                else:
                    i, f, gg, o = gates[k][s]
                    c = cs[k][s]
                    do = dh * np.tanh(c)
                    dc = dc_next + dh * o * (1 - np.tanh(c) ** 2)
                    da = np.concatenate([dc * gg * i * (1 - i), dc * cp * f * (1 - f),
                                         dc * i * (1 - gg ** 2), do * o * (1 - o)])
                    dgi, dgh = da, da
                    dh_direct, dc_prev = np.zeros(H), dc * f
                g[f"rnn.weight_ih_l{k}"] += np.outer(dgi, inp)
                g[f"rnn.bias_ih_l{k}"] += dgi
                g[f"rnn.weight_hh_l{k}"] += np.outer(dgh, hp)
                g[f"rnn.bias_hh_l{k}"] += dgh
                dinp[s] = Wih.T @ dgi
                dh_next = dh_direct + Whh.T @ dgh
                dc_next = dc_prev
                if reset[s, b]:
                    dh_next, dc_next = np.zeros(H), np.zeros(H)
            dh0[k, b], dc0[k, b] = dh_next, (dc_next if cell == "lstm" else 0.0)
            dout = dinp
        if "norm.mean" in t:
            dxn = np.array(dout)  # (T, I)
            g["norm.mean"] += -(dxn / t["norm.std"]).sum(axis=0)
            g["norm.std"] += -(dxn * xn / t["norm.std"]).sum(axis=0)
    return total, g, dh0, dc0


def loss_only(cell, tensors, x, target, mask, loss, h0=None, c0=None, reset=None):
    return forward_backward(cell, tensors, x, target, mask, loss, h0, c0, reset)[0]
