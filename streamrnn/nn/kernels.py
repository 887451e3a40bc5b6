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


# --- nonlinearities ------------------------------------------------------------------------
# Fast mode: tanh as Eigen's rational minimax approximation (odd 13/even 6 polynomials on
# [-7.905, 7.905], clamped outside), sigmoid(v) = 0.5 * tanh(0.5 v) + 0.5.  Pure arithmetic, so the
# loops over a gate vector vectorise (libm's scalar expf/tanhf calls do not, and they dominate a
# small cell).  Maximum absolute error in float32: tanh 4e-7, sigmoid 2.3e-7 (measured over a dense
# grid of [-20, 20] in tests/test_fastmath.py; bound stated as 1e-6).  Exact mode calls libm.
_CLAMP = np.float32(7.90531110763549805)
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)


@njit(cache=True, inline="always", error_model="numpy")
def _tanh_fast(v):
    v = min(max(v, -_CLAMP), _CLAMP)
    v2 = v * v
    p = v2 * _A13 + _A11
    p = v2 * p + _A9
    p = v2 * p + _A7
    p = v2 * p + _A5
    p = v2 * p + _A3
    p = v2 * p + _A1
    p = v * p
    q = v2 * _B6 + _B4
    q = v2 * q + _B2
    q = v2 * q + _B0
    return p / q


@njit(cache=True, inline="always", error_model="numpy")
def _sigmoid_exact(v):
    # 1 / (1 + e^-v); for v << 0 e^-v overflows to inf and the result is 0 exactly.
    return _ONE / (_ONE + math.exp(-v))


@njit(cache=True, error_model="numpy")
def tanh_vec(a, fast):
    """In place over a contiguous 1-D array."""
    if fast:
        for j in range(a.shape[0]):
            a[j] = _tanh_fast(a[j])
    else:
        for j in range(a.shape[0]):
            a[j] = math.tanh(a[j])


@njit(cache=True, error_model="numpy")
def sigmoid_vec(a, fast):
    """In place over a contiguous 1-D array."""
    if fast:
        for j in range(a.shape[0]):
            a[j] = _HALF * _tanh_fast(_HALF * a[j]) + _HALF
    else:
        for j in range(a.shape[0]):
            a[j] = _sigmoid_exact(a[j])


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
def forward_kernel(cell, act, apply_act, fast, theta, offs, extra, x, h, c, xn, gi, gh, buf_a, buf_b, y, save,
                   do_save):
    """Advance B lanes by T frames.

    cell, act      int codes (cells.py); apply_act: apply the head activation (False: logits)
    fast           vectorised tanh/sigmoid approximations (max abs error 1e-6) instead of libm
    theta          (P,) flat parameters; offs (L, 4), extra (4,) int64 offsets into theta
    x              (T, B, I) input frames, not modified
    h, c           (L, B, H) state, updated in place (c unused unless LSTM)
    xn             (T, B, I) scratch: normalised input
    gi             (T, B, G*H) scratch: input projections of one layer, then the gate activations
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
                g = gi[t, bb]  # (G*H,) pre-activations, then activations, in place
                r_ = gh[bb]  # (G*H,) recurrent part
                hb = hl[bb]
                ob = out[t, bb]
                if cell == GRU:
                    for j in range(2 * H):  # r, z pre-activations
                        g[j] += r_[j]
                    sigmoid_vec(g[: 2 * H], fast)
                    for j in range(H):  # n pre-activation: the reset gate scales (W_hn h + b_hn)
                        g[2 * H + j] += g[j] * r_[2 * H + j]
                    tanh_vec(g[2 * H :], fast)
                    for j in range(H):  # h' = (1 - z) n + z h
                        z = g[H + j]
                        hb[j] = (_ONE - z) * g[2 * H + j] + z * hb[j]
                        ob[j] = hb[j]
                    if do_save:
                        s = save[l, t, bb]
                        s[: 3 * H] = g  # r, z, n
                        s[3 * H : 4 * H] = r_[2 * H :]  # ghn
                        s[4 * H :] = hb
                elif cell == LSTM:
                    for j in range(4 * H):
                        g[j] += r_[j]
                    sigmoid_vec(g[: 2 * H], fast)  # i, f
                    tanh_vec(g[2 * H : 3 * H], fast)  # g
                    sigmoid_vec(g[3 * H :], fast)  # o
                    cb = cl[bb]
                    for j in range(H):  # c' = f c + i g
                        cb[j] = g[H + j] * cb[j] + g[j] * g[2 * H + j]
                        r_[j] = cb[j]
                    tanh_vec(r_[:H], fast)  # tanh(c'), in the free recurrent scratch
                    for j in range(H):  # h' = o tanh(c')
                        hb[j] = g[3 * H + j] * r_[j]
                        ob[j] = hb[j]
                    if do_save:
                        s = save[l, t, bb]
                        s[: 4 * H] = g
                        s[4 * H : 5 * H] = cb
                        s[5 * H :] = hb
                else:
                    for j in range(H):
                        g[j] += r_[j]
                    if cell == RNN_TANH:
                        tanh_vec(g, fast)
                    else:
                        for j in range(H):
                            g[j] = max(g[j], _ZERO)
                    for j in range(H):
                        hb[j] = g[j]
                        ob[j] = g[j]
                    if do_save:
                        save[l, t, bb, :] = hb
        layer_in = out

    # Dense head: y = act(h_top @ head_w.T + head_b)  # (T, B, O)
    if extra[0] >= 0:
        O = y.shape[2]
        hw = theta[extra[0] : extra[0] + H * O].reshape((H, O))
        hb_ = theta[extra[1] : extra[1] + O]
        _project_kernel(layer_in.reshape((T * B, H)), hw, hb_, y.reshape((T * B, O)))
        if apply_act:
            for t in range(T):
                for bb in range(B):
                    yv = y[t, bb]
                    if act == ACT_SIGMOID:
                        sigmoid_vec(yv, fast)
                    elif act == ACT_SOFTMAX:
                        m = yv[0]
                        for o in range(1, O):
                            m = max(m, yv[o])
                        tot = _ZERO * m
                        for o in range(O):
                            yv[o] = math.exp(yv[o] - m)
                            tot += yv[o]
                        for o in range(O):
                            yv[o] /= tot
    else:
        y[:, :, :] = layer_in


@njit(cache=True, error_model="numpy")
def count_nonfinite(x):
    """Number of NaN/Inf values in a 2-D array (one pass, no temporaries)."""
    n = 0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            if not (v - v == 0):  # false exactly for NaN and +-Inf
                n += 1
    return n
