"""Backpropagation through time: Numba backward kernels over B lanes.

Shaped like Karpathy's min-char-rnn::

    loss, grads, h_last = loss_and_grads(model, xs, ys, mask, h0)

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

from streamrnn.errors import ShapeError
from streamrnn.nn.cells import ACT_CODES, CELL_CODES, GRU, LSTM, RNN_RELU, SAVE_WIDTH, Architecture, PackedLayout
from streamrnn.nn.model import Model, Workspace, forward_table, run_forward
from streamrnn.train.losses import loss_and_dlogits


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


def _as_params(model_or_params):
    if isinstance(model_or_params, Model):
        return model_or_params.arch, np.asarray(model_or_params.theta), model_or_params.dtype
    arch, theta = model_or_params
    theta = np.asarray(theta)
    return arch, theta, theta.dtype


def loss_and_grads(model_or_params, xs, ys, mask, h0=None, *, loss="mse", reset=None,
                   state_grads: dict | None = None):
    """Loss of one block of B lanes, its gradient and the final state.

    model_or_params  a ``Model`` or ``(Architecture, theta)``; theta's dtype is the compute dtype
    xs               (T, B, I) input frames
    ys               targets: (T, B, O) for "bce"/"mse", (T, B) class indices for "ce"
    mask             (T, B) per-frame weights (0 = frame not in the loss)
    h0               None (zeros), (L, B, H), or (h0, c0) for LSTM
    loss             "bce" (logits), "ce" (softmax logits) or "mse"
    reset            optional (T, B) 0/1: lane state zeroed before step t
    state_grads      optional dict receiving "h0" and "c0" (dLoss/dh0, dLoss/dc0)

    Returns (loss, grads, h_last): mean loss over the masked frames (float),
    grads (P,) in the packed layout of theta, h_last (L, B, H) — or
    (h_last, c_last) for LSTM.  A bidirectional model (``streamrnn.train.bidir``)
    takes whole lanes from zero state: no h0, reset or state_grads, and h_last is None.

    >>> import numpy as np, streamrnn
    >>> m = streamrnn.Model.random("gru", 3, 4, output_size=1, dtype=np.float64)
    >>> xs = np.zeros((5, 2, 3)); ys = np.zeros((5, 2, 1)); mask = np.ones((5, 2))
    >>> loss, grads, h = loss_and_grads(m, xs, ys, mask, loss="bce")
    >>> grads.shape == m.theta.shape, h.shape
    (True, (1, 2, 4))
    """
    arch, theta, dtype = _as_params(model_or_params)
    xs = np.asarray(xs)
    if xs.ndim != 3 or xs.shape[2] != arch.input_size:
        raise ShapeError(f"xs must have shape (T, B, {arch.input_size}), got {xs.shape}")
    if arch.bidirectional:
        if h0 is not None or reset is not None or state_grads is not None:
            raise ShapeError("a bidirectional model runs whole sequences from zero state: no h0, reset or state_grads")
        from streamrnn.train.bidir import bidir_loss_and_grads

        val, grads = bidir_loss_and_grads(arch, theta, xs, ys, mask, loss=loss)
        return val, grads, None
    T, B, _ = xs.shape
    L, H = arch.num_layers, arch.hidden_size
    mask = np.asarray(mask, dtype)
    if mask.shape != (T, B):
        raise ShapeError(f"mask must have shape {(T, B)}, got {mask.shape}")
    h = np.zeros((L, B, H), dtype)
    c = np.zeros((L, B, H), dtype)
    if h0 is not None:
        if isinstance(h0, tuple):
            h[...] = h0[0]
            c[...] = h0[1]
        else:
            h[...] = h0
    h_init, c_init = h.copy(), c.copy()
    rs = np.zeros((T, B), np.uint8) if reset is None else (np.asarray(reset) != 0).astype(np.uint8)
    eng = BPTT(arch, B, dtype)
    y, save, xn = eng.alloc(T)
    x = np.ascontiguousarray(xs, dtype)
    eng.forward(theta, x, h, c, rs, y, save, xn)
    L_val, dy, _ = loss_and_dlogits(loss, y, ys, mask)
    grads = np.zeros_like(theta)
    dh0 = np.zeros((L, B, H), dtype)
    dc0 = np.zeros((L, B, H), dtype)
    eng.backward(theta, xn, h_init, c_init, rs, save, dy.astype(dtype, copy=False), grads, dh0, dc0)
    if state_grads is not None:
        state_grads["h0"] = dh0
        state_grads["c0"] = dc0
    return L_val, grads, ((h, c) if arch.cell == "lstm" else h)


def _targets(loss, rng, T, B, O):
    if loss == "ce":
        return rng.integers(0, O, size=(T, B))
    if loss == "bce":
        return (rng.random((T, B, O)) < 0.5).astype(np.float64)
    return rng.standard_normal((T, B, O))


def gradcheck(cell: str = "gru", num_layers: int = 2, loss: str = "bce", *, T: int = 6, B: int = 3,
              input_size: int = 3, hidden_size: int = 4, output_size: int = 3, eps: float = 1e-4,
              seed: int = 0, floor: float = 1e-4, bidirectional: bool = False) -> dict:
    """Float64 central-difference check of the backward kernel.

    Random model (with input normalisation and a head), random frames, a mask
    with holes, a non-zero h0 (and c0), a per-lane reset in the middle.
    For ``rnn_relu`` an entry off by more than 1e-6 is checked again with
    10x and 100x smaller steps (relu's kink at 0 breaks a difference that straddles it).
    ``bidirectional``: a bidirectional model (``streamrnn.train.bidir``) on
    lanes of different lengths (padded, zero state), parameters only.
    Checks every parameter and every initial-state entry against the
    fourth-order central difference ``(8 (f(+e) - f(-e)) - (f(+2e) - f(-2e))) / 12e``
    (truncation error O(e^4), so rounding noise stays far below the
    tolerance); the relative error is
    ``|analytic - numeric| / max(|analytic|, |numeric|, floor)``.

    Returns {"worst": float, "where": name, "n_checked": int}.

    >>> r = gradcheck("rnn_tanh", 1, "mse", T=3, B=2, hidden_size=2)
    >>> r["worst"] < 1e-6
    True
    """
    rng = np.random.default_rng(seed)
    arch = Architecture(cell, input_size, hidden_size, num_layers, output_size,
                        "identity", has_norm=True, bidirectional=bidirectional)
    from streamrnn.nn.cells import init_tensors

    tensors = init_tensors(arch, rng, "pytorch")
    for k in tensors:  # larger than PyTorch's init so the gates leave their linear range
        if not k.startswith("norm."):
            tensors[k] = tensors[k] * 2.0
    tensors["norm.mean"] = rng.standard_normal(input_size) * 0.3
    tensors["norm.std"] = rng.uniform(0.7, 1.5, input_size)
    layout = PackedLayout(arch)
    theta = layout.pack(tensors, np.float64)
    L, H = num_layers, hidden_size
    xs = rng.standard_normal((T, B, input_size))
    ys = _targets(loss, rng, T, B, output_size)
    mask = (rng.random((T, B)) < 0.75).astype(np.float64)
    mask[-1] = 1.0
    reset = np.zeros((T, B), np.uint8)
    reset[T // 2, 0] = 1  # lane 0 starts a new sequence mid-block
    h0 = rng.standard_normal((L, B, H)) * 0.5
    c0 = rng.standard_normal((L, B, H)) * 0.5
    start = (h0, c0) if cell == "lstm" else h0
    sg: dict = {}
    if bidirectional:
        from streamrnn.train.bidir import bidir_loss_and_grads

        lens = np.array([T] + [int(rng.integers(T // 2, T + 1)) for _ in range(B - 1)], np.int64)
        for b in range(B):
            mask[lens[b]:, b] = 0.0  # padding: not in the loss
        _, g = bidir_loss_and_grads(arch, theta, xs, ys, mask, lens, loss=loss)

        def f(th, hh, cc):
            return bidir_loss_and_grads(arch, th, xs, ys, mask, lens, loss=loss)[0]
    else:
        _, g, _ = loss_and_grads((arch, theta), xs, ys, mask, start, loss=loss, reset=reset, state_grads=sg)

        def f(th, hh, cc):
            st = (hh, cc) if cell == "lstm" else hh
            return loss_and_grads((arch, th), xs, ys, mask, st, loss=loss, reset=reset)[0]

    worst, where = 0.0, ""

    def central(fn, e=eps):  # fn(delta) -> loss with the checked entry moved by delta
        return (8.0 * (fn(e) - fn(-e)) - (fn(2 * e) - fn(-2 * e))) / (12.0 * e)

    def rel(a, n):
        return abs(a - n) / max(abs(a), abs(n), floor)

    n_checked = 0
    names = {}
    for name, (off, shape, _) in layout.entries.items():
        for p in range(off, off + int(np.prod(shape))):
            names[p] = name
    for p in range(theta.size):
        def fp(d, p=p):
            tp = theta.copy()
            tp[p] += d
            return f(tp, h0, c0)

        num = central(fp)
        e = rel(g[p], num)
        if e > 1e-6 and cell == "rnn_relu":
            # relu has a kink at 0: a step of +-2 eps that crosses it is no derivative at all; a
            # 10x or 100x smaller step stays on one side (a wrong analytic gradient fails all three)
            e = min(e, rel(g[p], central(fp, eps / 10)), rel(g[p], central(fp, eps / 100)))
        n_checked += 1
        if e > worst:
            worst, where = e, names[p]
    states = [] if bidirectional else [("h0", h0, sg["h0"])] + ([("c0", c0, sg["c0"])] if cell == "lstm" else [])
    for label, arr, ga in states:
        for idx in np.ndindex(arr.shape):
            def fs(d, idx=idx, label=label, arr=arr):
                ap = arr.copy()
                ap[idx] += d
                return f(theta, ap, c0) if label == "h0" else f(theta, h0, ap)

            num = central(fs)
            e = rel(ga[idx], num)
            n_checked += 1
            if e > worst:
                worst, where = e, label
    return {"worst": float(worst), "where": where, "n_checked": n_checked}
