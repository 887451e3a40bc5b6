"""Numba forward kernels: one call advances B lanes by T frames through every layer.

Design (see docs/architecture.md):

* Kernels only compute.  They take plain arrays, write into outputs they are
  given and allocate nothing; the wrappers in ``model.py`` validate and own the
  buffers.  ``cache=True`` everywhere so a second process compiles nothing.
* Parameters arrive as one flat vector ``theta`` plus an offset table (see
  ``cells.PackedLayout``); weights are stored transposed, (in, G*H), so every
  matrix product is a sequence of unit-stride row updates
  ``acc[j] += x[k] * wT[k, j]``.  That loop vectorises over ``j`` without
  reassociating any sum, so the summation order of every output is fixed
  (k ascending) whatever the number of lanes B: a lane of a batch of 32 is
  bit-identical to the same input run alone.  The trainer relies on this to
  prove that the runtime streams exactly like the training forward pass.
* The input projection of a whole block (T frames x B lanes) is one product
  before the time loop; only the recurrent product runs per step.
* The same kernel serves the runtime (``do_save=False``) and the trainer's
  forward pass (``do_save=True``: gate activations saved for backprop).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamrnn.nn.cells import ACT_SIGMOID, ACT_SOFTMAX, GRU, LSTM, RNN_RELU, RNN_TANH  # noqa: F401


@njit(cache=True, inline="always")
def _sigmoid(v):
    # 1 / (1 + e^-v); for v << 0 e^-v overflows to inf and the result is 0 exactly.
    return 1.0 / (1.0 + math.exp(-v))


@njit(cache=True)
def _project_kernel(xin, wT, b, out):
    """out[r, :] = b + xin[r, :] @ wT for every row r.  xin (R, K), wT (K, N), out (R, N)."""
    R, K = xin.shape
    N = wT.shape[1]
    for r in range(R):
        for j in range(N):
            out[r, j] = b[j]
        for k in range(K):
            xk = xin[r, k]
            for j in range(N):
                out[r, j] += xk * wT[k, j]


@njit(cache=True)
def _recurrent_kernel(h, wT, b, out):
    """out[b, :] = b + h[b, :] @ wT for all lanes; weights read once for all lanes.  h (B, H)."""
    B, K = h.shape
    N = wT.shape[1]
    for bb in range(B):
        for j in range(N):
            out[bb, j] = b[j]
    for k in range(K):
        for bb in range(B):
            hk = h[bb, k]
            for j in range(N):
                out[bb, j] += hk * wT[k, j]


@njit(cache=True)
def forward_kernel(cell, act, apply_act, theta, offs, extra, x, h, c, xn, gi, gh, buf_a, buf_b, y, save, do_save):
    """Advance B lanes by T frames.

    cell, act      int codes (cells.py); apply_act: apply the head activation (False: logits)
    theta          (P,) flat parameters; offs (L, 4), extra (4,) int64 offsets into theta
    x              (T, B, I) input frames, not modified
    h, c           (L, B, H) state, updated in place (c unused unless LSTM)
    xn             (T, B, I) scratch: normalised input
    gi             (T, B, G*H) scratch: input projections of one layer
    gh             (B, G*H) scratch: recurrent projection of one step
    buf_a, buf_b   (T, B, H) scratch: layer outputs (ping-pong)
    y              (T, B, O) output (O = H without a head)
    save           (L, T, B, SAVE_WIDTH*H) per-step activations when do_save
    """
    T, B, I = x.shape
    L, _, H = h.shape
    G = gi.shape[2] // H

    # Input normalisation: (x - mean) / std, per feature.
    if extra[2] >= 0:
        mean = theta[extra[2] : extra[2] + I]
        std = theta[extra[3] : extra[3] + I]
        for t in range(T):
            for bb in range(B):
                for i in range(I):
                    xn[t, bb, i] = (x[t, bb, i] - mean[i]) / std[i]
    else:
        xn[:, :, :] = x

    layer_in = xn
    for l in range(L):
        Ik = layer_in.shape[2]
        w_ih = theta[offs[l, 0] : offs[l, 0] + Ik * G * H].reshape((Ik, G * H))
        w_hh = theta[offs[l, 1] : offs[l, 1] + H * G * H].reshape((H, G * H))
        b_ih = theta[offs[l, 2] : offs[l, 2] + G * H]
        b_hh = theta[offs[l, 3] : offs[l, 3] + G * H]
        out = buf_a if l % 2 == 0 else buf_b
        # gi = x @ w_ih.T + b_ih for the whole block  # (T*B, G*H)
        _project_kernel(layer_in.reshape((T * B, Ik)), w_ih, b_ih, gi.reshape((T * B, G * H)))
        hl = h[l]
        cl = c[l]
        for t in range(T):
            _recurrent_kernel(hl, w_hh, b_hh, gh)  # gh = h @ w_hh.T + b_hh  # (B, G*H)
            for bb in range(B):
                if cell == GRU:
                    for j in range(H):
                        r = _sigmoid(gi[t, bb, j] + gh[bb, j])
                        z = _sigmoid(gi[t, bb, H + j] + gh[bb, H + j])
                        ghn = gh[bb, 2 * H + j]
                        n = math.tanh(gi[t, bb, 2 * H + j] + r * ghn)
                        hn = (1.0 - z) * n + z * hl[bb, j]
                        hl[bb, j] = hn
                        out[t, bb, j] = hn
                        if do_save:
                            s = save[l, t, bb]
                            s[j] = r
                            s[H + j] = z
                            s[2 * H + j] = n
                            s[3 * H + j] = ghn
                            s[4 * H + j] = hn
                elif cell == LSTM:
                    for j in range(H):
                        ig = _sigmoid(gi[t, bb, j] + gh[bb, j])
                        fg = _sigmoid(gi[t, bb, H + j] + gh[bb, H + j])
                        gg = math.tanh(gi[t, bb, 2 * H + j] + gh[bb, 2 * H + j])
                        og = _sigmoid(gi[t, bb, 3 * H + j] + gh[bb, 3 * H + j])
                        cn = fg * cl[bb, j] + ig * gg
                        hn = og * math.tanh(cn)
                        cl[bb, j] = cn
                        hl[bb, j] = hn
                        out[t, bb, j] = hn
                        if do_save:
                            s = save[l, t, bb]
                            s[j] = ig
                            s[H + j] = fg
                            s[2 * H + j] = gg
                            s[3 * H + j] = og
                            s[4 * H + j] = cn
                            s[5 * H + j] = hn
                else:
                    for j in range(H):
                        a = gi[t, bb, j] + gh[bb, j]
                        if cell == RNN_TANH:
                            hn = math.tanh(a)
                        else:
                            hn = a if a > 0.0 else 0.0
                        hl[bb, j] = hn
                        out[t, bb, j] = hn
                        if do_save:
                            save[l, t, bb, j] = hn
        layer_in = out

    # Dense head: y = act(h_top @ head_w.T + head_b)  # (T, B, O)
    if extra[0] >= 0:
        O = y.shape[2]
        hw = theta[extra[0] : extra[0] + H * O].reshape((H, O))
        hb = theta[extra[1] : extra[1] + O]
        _project_kernel(layer_in.reshape((T * B, H)), hw, hb, y.reshape((T * B, O)))
        if apply_act:
            if act == ACT_SIGMOID:
                for t in range(T):
                    for bb in range(B):
                        for o in range(O):
                            y[t, bb, o] = _sigmoid(y[t, bb, o])
            elif act == ACT_SOFTMAX:
                for t in range(T):
                    for bb in range(B):
                        m = y[t, bb, 0]
                        for o in range(1, O):
                            m = max(m, y[t, bb, o])
                        tot = 0.0
                        for o in range(O):
                            e = math.exp(y[t, bb, o] - m)
                            y[t, bb, o] = e
                            tot += e
                        for o in range(O):
                            y[t, bb, o] /= tot
    else:
        y[:, :, :] = layer_in
