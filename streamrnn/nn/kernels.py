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

from streamrnn.audio.kernels import _push_many_kernel
from streamrnn.compiling import announce_compiles
from streamrnn.nn.cells import ACT_SIGMOID, ACT_SOFTMAX, GRU, LSTM, RNN_TANH

announce_compiles()  # the first compile of a kernel says so on stderr (cold cache)


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


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _affine_kernel(src, R, wT, b, out):
    """out[r] = b + src[r] @ wT for every row r < R; each weight row read once for all rows.

    Flat row-major arrays: src (R*K,), wT (K*N,) holding (K, N), b (N,), out (R*N,).  Rows are
    taken as slices (free) rather than reshapes, which cost about 40 ns each in Numba and
    were a fifth of a one-frame step.
    Eight rows of wT per pass: ``o = ((o + h0 w0) + h1 w1) + ... + h7 w7`` keeps the exact
    summation order of the one-row loop (k ascending; no reassociation) while loading and
    storing ``out`` an eighth as often (13 % faster than four rows at H=128 and 256, equal at
    64; the weights stream from L2 beyond H=64, which bounds this loop).  ``contract`` lets
    each ``o + h w`` be one fused multiply-add (one rounding instead of two).  The vector body
    and the remainder loops are fused alike, so a row's result depends neither on R nor on
    which loop computed it.
    """
    N = b.shape[0]
    K = wT.shape[0] // N
    for r in range(R):
        o = out[r * N : r * N + N]
        for j in range(N):
            o[j] = b[j]
    K8 = K - K % 8
    for k in range(0, K8, 8):
        w0 = wT[k * N : k * N + N]
        w1 = wT[k * N + N : k * N + 2 * N]
        w2 = wT[k * N + 2 * N : k * N + 3 * N]
        w3 = wT[k * N + 3 * N : k * N + 4 * N]
        w4 = wT[k * N + 4 * N : k * N + 5 * N]
        w5 = wT[k * N + 5 * N : k * N + 6 * N]
        w6 = wT[k * N + 6 * N : k * N + 7 * N]
        w7 = wT[k * N + 7 * N : k * N + 8 * N]
        for r in range(R):
            o = out[r * N : r * N + N]
            hr = src[r * K + k : r * K + k + 8]
            h0, h1, h2, h3, h4, h5, h6, h7 = hr[0], hr[1], hr[2], hr[3], hr[4], hr[5], hr[6], hr[7]
            for j in range(N):
                o[j] = (((((((o[j] + h0 * w0[j]) + h1 * w1[j]) + h2 * w2[j]) + h3 * w3[j])
                          + h4 * w4[j]) + h5 * w5[j]) + h6 * w6[j]) + h7 * w7[j]
    for k in range(K8, K):
        w0 = wT[k * N : k * N + N]
        for r in range(R):
            o = out[r * N : r * N + N]
            h0 = src[r * K + k]
            for j in range(N):
                o[j] += h0 * w0[j]


# The model table ``mi`` (int64) that every kernel takes, built once per model by ``model_table``:
MI_CELL, MI_ACT, MI_FAST, MI_L, MI_I, MI_H, MI_O, MI_G, MI_OFFS = range(9)
# then offs (L, 4) flattened, then extra (4,): head w, head b, norm mean, norm std offsets (-1 = absent)
MODE_APPLY_ACT, MODE_SAVE = 1, 2


def model_table(cell, act, fast, num_layers, input_size, hidden_size, out_size, gates, offsets, extra):
    """Pack a model's constants into the int64 table the kernels read (Python side, once per model)."""
    head = [cell, act, int(fast), num_layers, input_size, hidden_size, out_size, gates]
    return np.array(head + list(np.ravel(offsets)) + list(extra), dtype=np.int64)


def workspace_size(T, B, I, H, G):
    """Elements of scratch the forward kernel needs for T frames of B lanes."""
    return T * B * I + T * B * G * H + B * G * H + 2 * T * B * H


@njit(cache=True, error_model="numpy")
def forward_kernel(mi, mode, theta, x, lens, h, c, ws, y, save):
    """Advance B lanes by up to T frames.

    mi             int64 model table (``model_table``): cell, activation, fast, sizes, offsets
    mode           bit 0: apply the head activation (else logits); bit 1: save activations
    theta          (P,) flat parameters
    x              (T, B, I) input frames, not modified
    lens           (B,) int64 frames per lane (lane b advances only for t < lens[b]); empty = all T
    h, c           (L, B, H) state, updated in place (c unused unless LSTM); C-contiguous
    ws             flat scratch of at least ``workspace_size(T, B, I, H, G)`` elements
    y              (T, B, O) output (O = H without a head); rows t >= lens[b] are undefined
    save           (L, T, B, SAVE_WIDTH*H) per-step activations when mode bit 1 is set
    """
    T, B, I = x.shape
    _forward_flat(mi, mode, theta, T, B, x.reshape(x.size), lens, h.reshape(h.size), c.reshape(c.size), ws,
                  y.reshape(y.size), save)


@njit(cache=True, error_model="numpy")
def _forward_flat(mi, mode, theta, T, B, x, lens, h, c, ws, y, save):
    """``forward_kernel`` on flat row-major arrays: x (T*B*I,), h, c (L*B*H,), y (T*B*O,).

    Every vector is a slice of a flat array (slices are free, reshapes are not): this is
    what the one-frame path of a stream (``stream_push_kernel``) calls directly.
    """
    L, I, H = mi[MI_L], mi[MI_I], mi[MI_H]
    cell, act, fast, G = mi[MI_CELL], mi[MI_ACT], mi[MI_FAST] != 0, mi[MI_G]
    apply_act, do_save = (mode & MODE_APPLY_ACT) != 0, (mode & MODE_SAVE) != 0
    e0 = MI_OFFS + 4 * L
    GH = G * H
    TB = T * B
    BH = B * H
    if TB == 0:
        return
    # carve the scratch: normalised input, input projections, recurrent projection, ping-pong outputs
    p0 = TB * I
    p1 = p0 + TB * GH
    p2 = p1 + B * GH
    p3 = p2 + TB * H
    xn = ws[:p0]  # (T, B, I)
    gi = ws[p0:p1]  # (T, B, G*H)
    gh = ws[p1:p2]  # (B, G*H)
    buf_a = ws[p2:p3]  # (T, B, H)
    buf_b = ws[p3 : p3 + TB * H]  # (T, B, H)
    masked = lens.shape[0] > 0

    # Input normalisation: (x - mean) / std, per feature.
    if mi[e0 + 2] >= 0:
        mean = theta[mi[e0 + 2] : mi[e0 + 2] + I]
        std = theta[mi[e0 + 3] : mi[e0 + 3] + I]
        for q in range(TB):
            for i in range(I):
                xn[q * I + i] = (x[q * I + i] - mean[i]) / std[i]
    else:
        for q in range(TB * I):
            xn[q] = x[q]

    layer_in = xn
    Ik = I
    for l in range(L):
        o_ih, o_hh, o_bi, o_bh = mi[MI_OFFS + 4 * l], mi[MI_OFFS + 4 * l + 1], mi[MI_OFFS + 4 * l + 2], mi[MI_OFFS + 4 * l + 3]
        w_ih = theta[o_ih : o_ih + Ik * GH]  # (Ik, G*H)
        w_hh = theta[o_hh : o_hh + H * GH]  # (H, G*H)
        b_ih = theta[o_bi : o_bi + GH]
        b_hh = theta[o_bh : o_bh + GH]
        out = buf_a if l % 2 == 0 else buf_b
        # gi = x @ w_ih.T + b_ih for the whole block  # (T*B, G*H)
        _affine_kernel(layer_in, TB, w_ih, b_ih, gi)
        hl = h[l * BH : l * BH + BH]  # (B, H)
        cl = c[l * BH : l * BH + BH]
        for t in range(T):
            _affine_kernel(hl, B, w_hh, b_hh, gh)  # gh = h @ w_hh.T + b_hh  # (B, G*H)
            for bb in range(B):
                if masked and t >= lens[bb]:
                    continue  # this lane has no frame t: its state stays put
                q = t * B + bb
                g = gi[q * GH : q * GH + GH]  # (G*H,) pre-activations, then activations, in place
                r_ = gh[bb * GH : bb * GH + GH]  # (G*H,) recurrent part
                hb = hl[bb * H : bb * H + H]
                ob = out[q * H : q * H + H]
                if cell == GRU:
                    # two passes (r and z; then n and h' of output j together) rather than one loop per
                    # equation: the same operations on the same values, so bit-identical, and the bank
                    # step of the VAD 8 % faster; one single pass was faster still for many lanes but
                    # 12 % slower for one stream's frame (a longer dependent chain per element)
                    if fast:
                        for j in range(2 * H):  # r, z
                            g[j] = _HALF * _tanh_fast(_HALF * (g[j] + r_[j])) + _HALF
                        for j in range(H):  # n, then h' = (1 - z) n + z h
                            n = _tanh_fast(g[2 * H + j] + g[j] * r_[2 * H + j])
                            g[2 * H + j] = n
                            z = g[H + j]
                            hn = (_ONE - z) * n + z * hb[j]
                            hb[j] = hn
                            ob[j] = hn
                    else:
                        for j in range(2 * H):
                            g[j] = _sigmoid_exact(g[j] + r_[j])
                        for j in range(H):
                            n = math.tanh(g[2 * H + j] + g[j] * r_[2 * H + j])
                            g[2 * H + j] = n
                            z = g[H + j]
                            hn = (_ONE - z) * n + z * hb[j]
                            hb[j] = hn
                            ob[j] = hn
                    if do_save:  # element loops: a slice assignment compiles Numba's broadcast
                        s = save[l, t, bb]  # checks and their message formatting (4 s of first compile)
                        for j in range(3 * H):
                            s[j] = g[j]  # r, z, n
                        for j in range(H):
                            s[3 * H + j] = r_[2 * H + j]  # ghn
                            s[4 * H + j] = hb[j]
                elif cell == LSTM:
                    for j in range(4 * H):
                        g[j] += r_[j]
                    sigmoid_vec(g[: 2 * H], fast)  # i, f
                    tanh_vec(g[2 * H : 3 * H], fast)  # g
                    sigmoid_vec(g[3 * H :], fast)  # o
                    cb = cl[bb * H : bb * H + H]
                    for j in range(H):  # c' = f c + i g
                        cb[j] = g[H + j] * cb[j] + g[j] * g[2 * H + j]
                        r_[j] = cb[j]
                    tanh_vec(r_[:H], fast)  # tanh(c'), in the free recurrent scratch
                    for j in range(H):  # h' = o tanh(c')
                        hb[j] = g[3 * H + j] * r_[j]
                        ob[j] = hb[j]
                    if do_save:
                        s = save[l, t, bb]
                        for j in range(4 * H):
                            s[j] = g[j]  # i, f, g, o
                        for j in range(H):
                            s[4 * H + j] = cb[j]
                            s[5 * H + j] = hb[j]
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
                        s = save[l, t, bb]
                        for j in range(H):
                            s[j] = hb[j]
        layer_in = out
        Ik = H

    # Dense head: y = act(h_top @ head_w.T + head_b)  # (T, B, O)
    if mi[e0] >= 0:
        O = y.shape[0] // TB
        hw = theta[mi[e0] : mi[e0] + H * O]  # (H, O)
        hb_ = theta[mi[e0 + 1] : mi[e0 + 1] + O]
        _affine_kernel(layer_in, TB, hw, hb_, y)
        if apply_act:
            for q in range(TB):
                yv = y[q * O : q * O + O]
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
        for q in range(TB * H):
            y[q] = layer_in[q]


# A stream's frames go through the forward kernel in chunks of at most this many frames, so
# its scratch has a fixed size (any chunking gives bit-identical outputs: each row of the
# input projection and each recurrent step computes the same way whatever the block length).
STREAM_CHUNK = 32


def stream_buffer_size(L, I, H, G):
    """Elements of a stream's one flat buffer: h (L*H), c (L*H), then scratch for STREAM_CHUNK frames."""
    return 2 * L * H + workspace_size(STREAM_CHUNK, 1, I, H, G)


@njit(cache=True, error_model="numpy")
def stream_push_kernel(mi, theta, x, buf, y):
    """One stream: x (T, I) -> y (T, O), in one compiled call.

    buf is the stream's flat buffer (``stream_buffer_size``): h (L, 1, H), c (L, 1, H),
    updated in place, then scratch.  One buffer instead of three arrays because every
    array argument costs about 0.15 us of dispatch, a fifth of a small cell's step.
    Returns the number of non-finite values in x; if it is not 0 nothing is computed and
    the state is untouched (the Python wrapper raises).  Checking here saves a second
    dispatch on the live, frame-by-frame path.
    """
    n_bad = count_nonfinite(x)
    if n_bad == 0:
        T, I = x.shape
        O = y.shape[1]
        L, H = mi[MI_L], mi[MI_H]
        LH = L * H
        h = buf[:LH]  # (L, 1, H)
        c = buf[LH : 2 * LH]  # (L, 1, H)
        ws = buf[2 * LH :]
        xf = x.reshape(T * I)
        yf = y.reshape(T * O)
        nolens = mi[:0]  # an empty int64 array without an allocation
        nosave = ws[:1].reshape((1, 1, 1, 1))  # never written: mode has no MODE_SAVE
        one = np.int64(1)  # B as a plain int64, not the literal 1: the bank's compiled specialisation serves both
        for t0 in range(0, T, STREAM_CHUNK):
            t1 = min(t0 + STREAM_CHUNK, T)
            _forward_flat(mi, MODE_APPLY_ACT, theta, t1 - t0, one, xf[t0 * I : t1 * I], nolens, h, c, ws,
                          yf[t0 * O : t1 * O], nosave)
    return n_bad


# A bank call advances its streams in groups of this many lanes: one group's frames, states and
# scratch stay in the L2 cache through every layer (a call of 500 streams x 10 frames as one
# block would stream a 3 MB input projection through L2 many times: measured 20 % slower).
BANK_GROUP = 64


# Every region a group carves from its scratch starts on a multiple of this many elements (64 bytes
# in float32): with the scratch itself on a cache line (``Bank`` allocates it so), the rows of the
# projections the affine loop reads and writes start on cache lines whenever G*H is a multiple of
# 16, and no 512-bit load or store splits across two lines (measured 15-18 % faster on the affine
# loop at G*H = 144 than 16 or 32 bytes off).  Padding changes no value.
ALIGN = 16


@njit(cache=True, inline="always")
def _round_up(n):
    """n rounded up to a multiple of ``ALIGN``."""
    return (n + ALIGN - 1) // ALIGN * ALIGN


def bank_part_size(T, L, I, H, G, O, group=BANK_GROUP):
    """Elements of one group's flat scratch for blocks of up to T frames: its frames, outputs,
    states and the forward kernel's workspace, each region padded to ``ALIGN`` elements (so a
    part is a multiple of ``ALIGN`` and parts laid end to end all start aligned)."""
    def up(n):  # _round_up in Python: a compiled call from here costs about 0.5 us of dispatch
        return -(-n // ALIGN) * ALIGN

    return up(group * T * I) + up(group * T * O) + 2 * up(group * L * H) + up(workspace_size(T, group, I, H, G))


@njit(cache=True, error_model="numpy")
def _bank_group(mi, theta, x, offs, slots, h_all, c_all, y, lo, hi, part, lf):
    """Lanes lo..hi of a bank call: gather their frames (zero-padded to the longest; the padding
    is masked by the lengths) and states into ``part``, run the forward pass, scatter outputs and
    states back.  Each lane computes exactly what it computes alone."""
    L, I, H = mi[MI_L], mi[MI_I], mi[MI_H]
    O = y.shape[1]
    m = hi - lo
    T = 0
    for i in range(m):
        lf[i] = offs[lo + i + 1] - offs[lo + i]
        T = max(T, lf[i])
    if T == 0:
        return
    p1 = _round_up(T * m * I)  # regions on ALIGN boundaries, as bank_part_size counts them
    p2 = p1 + _round_up(T * m * O)
    p3 = p2 + _round_up(L * m * H)
    p4 = p3 + _round_up(L * m * H)
    # exact lengths (the forward kernel reads the head's width from len(ys)), padding between them
    xs, ys = part[: T * m * I], part[p1 : p1 + T * m * O]
    hs, cs, ws = part[p2 : p2 + L * m * H], part[p3 : p3 + L * m * H], part[p4:]
    # element loops, not slice assignments: Numba's generic slice copy has a fixed cost that a
    # 40-element row does not amortise (measured 2 % of a VAD bank call of 1000 streams x 10 frames)
    xf = x.reshape(x.size)  # (N*I,)
    yf = y.reshape(y.size)  # (N*O,)
    for i in range(m):
        o, n_i = offs[lo + i], lf[i]
        for t in range(T):
            r = (t * m + i) * I
            if t < n_i:
                q = (o + t) * I
                for k in range(I):
                    xs[r + k] = xf[q + k]
            else:
                for k in range(I):
                    xs[r + k] = 0
        s = slots[lo + i]
        for l in range(L):
            r = (l * m + i) * H
            hl, cl = h_all[l, s], c_all[l, s]
            for k in range(H):
                hs[r + k] = hl[k]
                cs[r + k] = cl[k]
    nosave = ws[:1].reshape((1, 1, 1, 1))  # never written: mode has no MODE_SAVE
    _forward_flat(mi, MODE_APPLY_ACT, theta, np.int64(T), np.int64(m), xs, lf[:m], hs, cs, ws, ys, nosave)
    for i in range(m):
        o = offs[lo + i]
        for t in range(lf[i]):
            r = (t * m + i) * O
            q = (o + t) * O
            for k in range(O):
                yf[q + k] = ys[r + k]
        s = slots[lo + i]
        for l in range(L):
            r = (l * m + i) * H
            hl, cl = h_all[l, s], c_all[l, s]
            for k in range(H):
                hl[k] = hs[r + k]
                cl[k] = cs[r + k]

@njit(cache=True, error_model="numpy")
def bank_step_kernel(mi, theta, x, offs, slots, h_all, c_all, ws, y, group):
    """Many streams of one bank in one call, in groups of ``group`` lanes (weights read once per group).

    x (N, I): the frames of the n streams advanced now, one after the other; stream i owns rows
    offs[i]:offs[i+1] (offs (n+1,) int64).  slots (n,) their rows in the bank state
    h_all, c_all (L, capacity, H), updated in place; y (N, O) the outputs in x's layout.
    ws: one group's scratch (``bank_part_size``).  Returns the number of NaN/Inf values in x;
    if it is not 0 nothing is computed and no state changes.
    """
    n_bad = count_nonfinite(x)
    if n_bad:
        return n_bad
    n = slots.shape[0]
    lf = np.empty(group, np.int64)
    for lo in range(0, n, group):
        _bank_group(mi, theta, x, offs, slots, h_all, c_all, y, lo, min(n, lo + group), ws, lf)
    return 0


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


@njit(cache=True, error_model="numpy")
def audio_bank_one_kernel(x, fone, fbad, fpeak, states, n_left, skip, hop, a, use_fft, itab, ftab, data, fscratch,
                          frames, mi, theta, bone, h_all, c_all, ws, y, group):
    """One mono stream's new samples through its front-end row and its bank slot in one call: a
    ``FeatureBank.push_one`` then a one-stream ``bank_step_kernel``, with no Python between them
    (a paced live stream pays every Python and NumPy call on cold caches after each sleep).

    x (n,) float32/float64 samples.  fone (6,) int64 the front end's index arrays as ``push_one``
    fills them ([row, 0, n, 0, t, t]: slots, offs, fo, t of ``_push_many_kernel``); fbad (1,)
    int64, fpeak (1,) float64 its NaN/Inf count and peak |sample|; states .. fscratch the
    ``FeatureBank``'s arrays; frames (t, n_features) float32 written.  bone (3,) int64 the bank's
    one-stream [slot, 0, T] (T set here to t); h_all, c_all, ws, y, group as ``bank_step_kernel``
    (y (t, O) written).  Returns 0; the front end's NaN/Inf count (> 0: nothing computed, no state
    changed); or minus the frames' NaN/Inf count (the front end advanced, the model did not).
    Each stage runs exactly the operations of its own kernel: outputs are bit-identical.
    """
    _push_many_kernel(x, fone[1:3], fone[:1], states, n_left, skip, fone[5:6], fone[3:5], hop, a, use_fft, itab,
                      ftab, data, fscratch, frames, fbad, fpeak)
    if fbad[0]:
        return fbad[0]
    t = fone[5]
    if t == 0:
        return 0
    bone[2] = t
    return -bank_step_kernel(mi, theta, frames, bone[1:], bone[:1], h_all, c_all, ws, y, group)
