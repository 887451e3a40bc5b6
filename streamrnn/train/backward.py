"""Backpropagation through time, the engine: the Numba backward kernel over B lanes and ``BPTT``
(its forward and backward over blocks of T frames).  ``streamrnn.train.bptt`` builds
``loss_and_grads`` and the gradient check on it (and re-exports both names); the bidirectional
backward (``streamrnn.train.bidir``) runs the same kernel per direction.

The forward pass is *the runtime kernel* (``streamrnn.nn.kernels.forward_kernel``,
called through ``streamrnn.nn.model.run_forward`` by :class:`BPTT`), run with ``do_save=True`` so it keeps the
per-step activations (layout in ``cells.SAVE_WIDTH``)::

    rnn:  [h_t]
    gru:  [r, z, n, ghn, h_t]        ghn = W_hn h_{t-1} + b_hn
    lstm: [i, f, g, o, c_t, h_t]

The backward kernel walks those saved values from the last step to the first.
Every parameter lives in the flat vector ``theta`` (``cells.PackedLayout``,
weights transposed (in, G*H)); the gradient is one flat vector of the same
layout, so clipping, optimisers and checkpoints see a single array.

Per-lane *resets*: ``reset[t, b] = 1`` means lane ``b`` started a new sequence
at step ``t`` (its state was zeroed before the step).  The forward runs the
block in segments between reset points (the runtime kernel has no reset of its
own; any chunking gives identical outputs), the backward uses a zero previous
state at such steps and stops the gradient there.

What is computed where: the per-step recurrence (gate derivatives and
``dh_{t-1} = dgh_t @ W_hh``) runs in fixed-order Numba loops; the weight
gradients, summed over all T*B steps, are one BLAS product per weight matrix
after the time loop (``np.dot`` inside Numba: not bit-exact across BLAS builds,
which does not matter for gradients).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamrnn.compiling import announce_compiles
from streamrnn.nn.cells import ACT_CODES, CELL_CODES, GRU, LSTM, RNN_RELU, SAVE_WIDTH, Architecture, PackedLayout
from streamrnn.nn.model import Workspace, forward_table, run_forward

announce_compiles()  # the first compile of a kernel says so on stderr (cold cache)


@njit(cache=True)
def backward_kernel(cell, theta, offs, extra, xn, h0, c0, reset, save, dy, grad, dh0, dc0,
                    dcur, dnext, dgi, dgh, hprev, cprev, xin, wpt, carry_h, carry_c, dhp, dh_sq):
    """Gradients of sum(dy * y) with respect to theta and the initial state.

    cell           int code (cells.py)
    theta          (P,) flat parameters; offs (L, 4), extra (4,) offsets into theta
    xn             (T, B, I) layer-0 input (normalised frames) from the forward pass
    h0, c0         (L, B, H) state before step 0
    reset          (T, B) uint8: 1 = lane state zeroed before step t (sequence start)
    save           (L, T, B, SAVE_WIDTH*H) activations saved by forward_kernel
    dy             (T, B, O) dLoss/dy, y the head's logits (or the top h without a head)
    grad           (P,) output: dLoss/dtheta (overwritten)
    dh0, dc0       (L, B, H) output: dLoss/dh0, dLoss/dc0
    scratch        dcur (T, B, H); dnext (T*B, max(I, H)) flat-prefix views; dgi, dgh (T, B, G*H);
                   hprev, cprev (T, B, H); xin (T, B, H); wpt (G*H, H); carry_h, carry_c, dhp (B, H)
    dh_sq          (T, B) float64: if not empty, receives the squared norm of dLoss/d(state at step t)
                   summed over layers: |dLoss/dh_t|^2 (plus |dLoss/dc_t|^2 for LSTM), the per-lag
                   gradient flow that ``streamrnn.train.gradflow`` reads; shape (0, 0) skips it
    """
    T, B, I = xn.shape
    L, _, H = h0.shape
    GH = dgi.shape[2]
    W = save.shape[3] // H
    hoff = (W - 1) * H  # h_t is the last block of every saved row
    TB = T * B
    rec = dh_sq.shape[0] > 0
    for p in range(grad.shape[0]):
        grad[p] = 0.0

    # ---- head: y = h_top @ head_wT + head_b  # (T, B, O)
    if extra[0] >= 0:
        O = dy.shape[2]
        hw = theta[extra[0]: extra[0] + H * O].reshape((H, O))
        for t in range(T):  # xin <- h_top, contiguous for the product below
            for bb in range(B):
                for j in range(H):
                    xin[t, bb, j] = save[L - 1, t, bb, hoff + j]
        dy2 = dy.reshape((TB, O))
        # d head_wT (H, O) = h_top^T @ dy           <- y = h_top @ head_wT
        np.dot(xin.reshape((TB, H)).T, dy2, grad[extra[0]: extra[0] + H * O].reshape((H, O)))
        # d head_b = sum_t,b dy                      <- y = ... + head_b
        for r in range(TB):
            for o in range(O):
                grad[extra[1] + o] += dy2[r, o]
        # dh_top = dy @ head_wT^T  # (T*B, H)       <- y = h_top @ head_wT
        np.dot(dy2, hw.T, dcur.reshape((TB, H)))
    else:
        dcur[:, :, :] = dy  # no head: y = h_top

    for l in range(L - 1, -1, -1):
        Ik = I if l == 0 else H
        w_ih = theta[offs[l, 0]: offs[l, 0] + Ik * GH].reshape((Ik, GH))
        w_hh = theta[offs[l, 1]: offs[l, 1] + H * GH].reshape((H, GH))
        for k in range(H):  # wpt = W_hh in PyTorch layout (G*H, H): row updates below stay unit-stride
            for j in range(GH):
                wpt[j, k] = w_hh[k, j]
        # h_{t-1} (and c_{t-1}) of every step: h0 at t = 0, 0 after a reset, else the saved h_{t-1}
        for t in range(T):
            for bb in range(B):
                for j in range(H):
                    if reset[t, bb]:
                        hprev[t, bb, j] = 0.0
                        cprev[t, bb, j] = 0.0
                    elif t == 0:
                        hprev[t, bb, j] = h0[l, bb, j]
                        cprev[t, bb, j] = c0[l, bb, j]
                    else:
                        hprev[t, bb, j] = save[l, t - 1, bb, hoff + j]
                        if cell == LSTM:
                            cprev[t, bb, j] = save[l, t - 1, bb, 4 * H + j]
        carry_h[:, :] = 0.0  # dLoss/dh_t flowing back from step t+1
        carry_c[:, :] = 0.0  # dLoss/dc_t flowing back from step t+1 (LSTM)
        for t in range(T - 1, -1, -1):
            if rec:  # |dLoss/dh_t|^2 of this layer: the gradient from above plus the one from step t+1
                for bb in range(B):
                    acc = 0.0
                    for j in range(H):
                        d = dcur[t, bb, j] + carry_h[bb, j]
                        acc += d * d
                    dh_sq[t, bb] += acc
            for bb in range(B):
                s = save[l, t, bb]
                gi = dgi[t, bb]
                gh = dgh[t, bb]
                if cell == GRU:
                    for j in range(H):
                        r = s[j]
                        z = s[H + j]
                        n = s[2 * H + j]
                        ghn = s[3 * H + j]
                        hp = hprev[t, bb, j]
                        dh = dcur[t, bb, j] + carry_h[bb, j]
                        dn = dh * (1.0 - z)           # <- h' = (1 - z) * n + z * h
                        dz = dh * (hp - n)            # <- h' = (1 - z) * n + z * h
                        dan = dn * (1.0 - n * n)      # <- n = tanh(an), an = gi_n + r * ghn
                        dr = dan * ghn                # <- an = gi_n + r * ghn
                        dar = dr * r * (1.0 - r)      # <- r = sigmoid(gi_r + gh_r)
                        daz = dz * z * (1.0 - z)      # <- z = sigmoid(gi_z + gh_z)
                        gi[j] = dar
                        gi[H + j] = daz
                        gi[2 * H + j] = dan           # <- an = gi_n + ...
                        gh[j] = dar
                        gh[H + j] = daz
                        gh[2 * H + j] = dan * r       # <- an = ... + r * ghn
                        carry_h[bb, j] = dh * z       # <- h' = ... + z * h (direct path)
                elif cell == LSTM:
                    for j in range(H):
                        ig = s[j]
                        fg = s[H + j]
                        gg = s[2 * H + j]
                        og = s[3 * H + j]
                        cn = s[4 * H + j]
                        tc = math.tanh(cn)
                        dh = dcur[t, bb, j] + carry_h[bb, j]
                        do = dh * tc                                  # <- h' = o * tanh(c')
                        dc = carry_c[bb, j] + dh * og * (1.0 - tc * tc)  # <- h' = o * tanh(c')
                        if rec:
                            dh_sq[t, bb] += dc * dc  # the LSTM state is (h, c)
                        di = dc * gg                                  # <- c' = f * c + i * g
                        dg = dc * ig                                  # <- c' = f * c + i * g
                        df = dc * cprev[t, bb, j]                     # <- c' = f * c + i * g
                        a_i = di * ig * (1.0 - ig)                    # <- i = sigmoid(.)
                        a_f = df * fg * (1.0 - fg)                    # <- f = sigmoid(.)
                        a_g = dg * (1.0 - gg * gg)                    # <- g = tanh(.)
                        a_o = do * og * (1.0 - og)                    # <- o = sigmoid(.)
                        gi[j] = a_i
                        gi[H + j] = a_f
                        gi[2 * H + j] = a_g
                        gi[3 * H + j] = a_o
                        gh[j] = a_i
                        gh[H + j] = a_f
                        gh[2 * H + j] = a_g
                        gh[3 * H + j] = a_o
                        carry_c[bb, j] = dc * fg                      # <- c' = f * c + ...
                        carry_h[bb, j] = 0.0                          # h enters only through W_hh h
                else:
                    for j in range(H):
                        hn = s[j]
                        dh = dcur[t, bb, j] + carry_h[bb, j]
                        if cell == RNN_RELU:
                            da = dh if hn > 0.0 else 0.0  # <- h' = relu(a)
                        else:
                            da = dh * (1.0 - hn * hn)     # <- h' = tanh(a)
                        gi[j] = da
                        gh[j] = da
                        carry_h[bb, j] = 0.0
            # dh_{t-1} += dgh_t @ W_hh  # (B, H)         <- gh = h_{t-1} @ W_hhT + b_hh
            # (BLAS: the one product per step; gradients need not be bit-exact)
            np.dot(dgh[t], wpt, dhp)
            for bb in range(B):
                for k in range(H):
                    carry_h[bb, k] += dhp[bb, k]
            for bb in range(B):  # a reset cuts the graph: nothing flows into the previous sequence
                if reset[t, bb]:
                    for k in range(H):
                        carry_h[bb, k] = 0.0
                        carry_c[bb, k] = 0.0
        for bb in range(B):
            for k in range(H):
                dh0[l, bb, k] = carry_h[bb, k]
                dc0[l, bb, k] = carry_c[bb, k] if cell == LSTM else 0.0

        # layer input: normalised frames for layer 0, else the h_t of layer l-1
        if l == 0:
            xin2 = xn.reshape((TB, I))
        else:
            for t in range(T):
                for bb in range(B):
                    for j in range(H):
                        xin[t, bb, j] = save[l - 1, t, bb, hoff + j]
            xin2 = xin.reshape((TB, H))
        dgi2 = dgi.reshape((TB, GH))
        dgh2 = dgh.reshape((TB, GH))
        # d W_ihT (Ik, G*H) = x_in^T @ dgi           <- gi = x_in @ W_ihT + b_ih
        np.dot(xin2.T, dgi2, grad[offs[l, 0]: offs[l, 0] + Ik * GH].reshape((Ik, GH)))
        # d W_hhT (H, G*H) = h_prev^T @ dgh          <- gh = h_{t-1} @ W_hhT + b_hh
        np.dot(hprev.reshape((TB, H)).T, dgh2, grad[offs[l, 1]: offs[l, 1] + H * GH].reshape((H, GH)))
        # d b_ih, d b_hh = sums over steps and lanes
        gb_ih = grad[offs[l, 2]: offs[l, 2] + GH]
        gb_hh = grad[offs[l, 3]: offs[l, 3] + GH]
        for r in range(TB):
            for j in range(GH):
                gb_ih[j] += dgi2[r, j]
                gb_hh[j] += dgh2[r, j]
        # dx_in = dgi @ W_ih  # (T*B, Ik)             <- gi = x_in @ W_ihT
        # (layer 0 only needs it for the normalisation's gradient)
        if l > 0 or extra[2] >= 0:
            dn2 = dnext[: TB * Ik].reshape((TB, Ik))
            np.dot(dgi2, w_ih.T, dn2)
            if l > 0:
                dcur[:, :, :] = dn2.reshape((T, B, H))

    # ---- input normalisation: xn = (x - mean) / std
    if extra[2] >= 0:
        dxn = dnext[: TB * I].reshape((TB, I))
        xn2 = xn.reshape((TB, I))
        for r in range(TB):
            for i in range(I):
                sd = theta[extra[3] + i]
                grad[extra[2] + i] -= dxn[r, i] / sd             # <- xn = (x - mean) / std
                grad[extra[3] + i] -= dxn[r, i] * xn2[r, i] / sd  # <- xn = (x - mean) / std


class BPTT:
    """Forward (runtime kernel, saving activations) and backward over B lanes.

    Owns every buffer; allocation happens only when a longer block than
    before arrives.  ``theta`` is passed per call, so the optimiser can update
    it in place between calls.
    """

    def __init__(self, arch: Architecture, lanes: int, dtype=np.float32):
        self.arch = arch
        self.layout = PackedLayout(arch)
        self.B = int(lanes)
        self.dtype = np.dtype(dtype)
        self.ws = Workspace(arch, self.B, self.dtype)
        self.t_cap = 0
        # the kernel's table for these weights' layout: the forward goes through run_forward with
        # the caller's parameters, the very kernel the runtime uses (fast tanh/sigmoid in float32, as a Model)
        self.mi = forward_table(arch, self.layout, self.dtype == np.float32)
        self.cell_code = CELL_CODES[arch.cell]
        self.act_code = ACT_CODES[arch.activation]
        H, B, GH = arch.hidden_size, self.B, arch.gates * arch.hidden_size
        self.wpt = np.zeros((GH, H), self.dtype)
        self.carry_h = np.zeros((B, H), self.dtype)
        self.carry_c = np.zeros((B, H), self.dtype)
        self.dhp = np.zeros((B, H), self.dtype)
        self.no_hist = np.zeros((0, 0), np.float64)
        self._grow(1)

    def _grow(self, T):
        a, B, dt = self.arch, self.B, self.dtype
        H, GH, I = a.hidden_size, a.gates * a.hidden_size, a.input_size
        self.t_cap = max(T, 2 * self.t_cap)
        Tc = self.t_cap
        self._dcur = np.zeros((Tc, B, H), dt)
        self._dnext = np.zeros(Tc * B * max(I, H), dt)
        self._dgi = np.zeros((Tc, B, GH), dt)
        self._dgh = np.zeros((Tc, B, GH), dt)
        self._hprev = np.zeros((Tc, B, H), dt)
        self._cprev = np.zeros((Tc, B, H), dt)
        self._xin = np.zeros((Tc, B, H), dt)

    def forward(self, theta, x, h, c, reset, y, save, xn):
        """Run the runtime kernel over x (T, B, I) from state h, c (L, B, H), in place.

        ``reset`` (T, B) uint8 zeroes a lane's state before a step; the block is
        cut into segments at reset steps.  Writes logits y (T, B, O), the saved
        activations ``save`` (L, T, B, W) and the normalised input xn (T, B, I).
        """
        T = x.shape[0]
        rows = np.flatnonzero(reset.any(axis=1))
        cuts = sorted(set([0, *rows.tolist(), T]))
        for t0, t1 in zip(cuts[:-1], cuts[1:]):
            lanes = np.flatnonzero(reset[t0])
            if lanes.size:
                h[:, lanes] = 0.0
                c[:, lanes] = 0.0
            run_forward(self.mi, theta, x[t0:t1], h, c, self.ws, y[t0:t1], None if save is None else save[:, t0:t1],
                        apply_act=False)
            xn[t0:t1] = self.ws.views(t1 - t0)[0]  # the kernel's normalised input (layer-0 input)

    def backward(self, theta, xn, h0, c0, reset, save, dy, grad, dh0, dc0, dh_sq=None):
        """Fill ``grad`` (P,) with dL/dtheta and dh0, dc0 (L, B, H) given dy = dL/dlogits (T, B, O).

        ``dh_sq`` (T, B) float64, if given, accumulates the squared norm of dL/d(state at step t)
        over layers (see ``backward_kernel``).
        """
        T = xn.shape[0]
        if T > self.t_cap:
            self._grow(T)
        H, I = self.arch.hidden_size, self.arch.input_size
        backward_kernel(self.cell_code, theta, self.layout.offsets, self.layout.extra,
                        np.ascontiguousarray(xn), h0, c0, np.ascontiguousarray(reset), save,
                        np.ascontiguousarray(dy), grad, dh0, dc0,
                        self._dcur[:T], self._dnext[: T * self.B * max(I, H)], self._dgi[:T],
                        self._dgh[:T], self._hprev[:T], self._cprev[:T], self._xin[:T],
                        self.wpt, self.carry_h, self.carry_c, self.dhp,
                        self.no_hist if dh_sq is None else dh_sq)

    def input_grad(self, theta, T) -> np.ndarray:
        """dL/d(layer-0 input) (T, B, I) of the last ``backward`` over T steps: ``dgi @ W_ih``.

        (The kernel leaves layer 0's gate gradients in its ``dgi`` scratch; a token model
        scatters these rows into its embedding's gradient.)
        """
        a = self.arch
        w_ih = self.layout.view(np.asarray(theta), "rnn.weight_ih_l0")  # (I, G*H)
        dgi = self._dgi[:T].reshape(T * self.B, a.gates * a.hidden_size)
        return (dgi @ w_ih.T).reshape(T, self.B, a.input_size)  # <- gi = x_in @ W_ihT

    def alloc(self, T):
        """Fresh (y, save, xn) buffers for blocks of T frames."""
        a, B, dt = self.arch, self.B, self.dtype
        return (np.zeros((T, B, a.out_size), dt),
                np.zeros((a.num_layers, T, B, SAVE_WIDTH[a.cell] * a.hidden_size), dt),
                np.zeros((T, B, a.input_size), dt))
