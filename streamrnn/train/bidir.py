"""Backpropagation through a bidirectional model, and its whole-sequence training runner.

The forward pass is ``streamrnn.nn.bidir.BidirForward`` (the runtime kernel per
direction, activations saved).  The backward pass reuses ``backward.backward_kernel``
unchanged for every direction of every layer: the reverse direction is a
forward-running RNN on the per-lane reversed sequence, so its BPTT is the
ordinary BPTT on that reversed sequence, with its gradient reversed back
afterwards.  Per layer, from the top::

    dcat (T, B, 2H)  --split-->  d fwd (T, B, H),  d rev (T, B, H) on the reversed clock
    each direction:  backward_kernel on a one-layer view of theta (its 4 tensors, contiguous)
                     -> its weight gradients, and dgi (T, B, G*H)
                     d input = dgi @ W_ih           <- gi = x_in @ W_ih^T + b_ih
    d layer input = d input (fwd) + reversed(d input (rev))  -> dcat of the layer below

The head (y = cat_top @ W^T + b) and the input normalisation are differentiated
here with NumPy.  Lanes start from zero state (a bidirectional model has no
carried state) and are padded at the end; the padding has zero loss weight and
never reaches a valid frame, so its gradient is exactly zero.

Training uses whole sequences, not TBPTT chunks: the reverse direction's state at
frame t summarises frames t..T-1, so a chunk that ends before the sequence does
would give it a future that is cut short (and a different one at run time).
"""

from __future__ import annotations

import numpy as np

from streamrnn.errors import ShapeError
from streamrnn.nn.bidir import BidirForward, reverse_lanes_kernel, save_shape, split_directions_kernel
from streamrnn.nn.cells import CELL_CODES, Architecture, PackedLayout
from streamrnn.train.backward import BPTT, backward_kernel
from streamrnn.train.losses import loss_and_dlogits

_NO_EXTRA = np.full(4, -1, np.int64)


class BidirBPTT:
    """Forward (saving activations) and backward of a bidirectional model over B padded lanes.

    Buffers grow with the longest block seen, never per frame.
    """

    def __init__(self, arch: Architecture, lanes: int, dtype=np.float32):
        if not arch.bidirectional:
            raise ShapeError("BidirBPTT needs a bidirectional architecture")
        self.arch, self.B, self.dtype = arch, int(lanes), np.dtype(dtype)
        self.layout = PackedLayout(arch)
        self.fwd = BidirForward(arch, self.B, self.dtype, fast=self.dtype == np.float32)
        H, I = arch.hidden_size, arch.input_size
        # the scratch of one direction's backward_kernel call (a one-layer model; input up to max(I, 2H))
        self.eng = BPTT(Architecture(arch.cell, max(I, 2 * H), H, 1), self.B, self.dtype)
        self.cell_code = CELL_CODES[arch.cell]
        self.t_cap = 0
        self._grow(1)

    def _grow(self, T):
        a, B, dt = self.arch, self.B, self.dtype
        H, I, L = a.hidden_size, a.input_size, a.num_layers
        self.t_cap = Tc = max(T, 2 * self.t_cap)
        self._save = np.zeros(save_shape(a, Tc, B), dt)
        self._dcat = np.zeros(Tc * B * 2 * H, dt)
        self._din = np.zeros(Tc * B * max(I, 2 * H), dt)
        self._dtmp = np.zeros(Tc * B * max(I, 2 * H), dt)
        self._dd = (np.zeros(Tc * B * H, dt), np.zeros(Tc * B * H, dt))
        self._zero_state = np.zeros((1, B, H), dt)
        self._dh0 = np.zeros((1, B, H), dt)
        self._dc0 = np.zeros((1, B, H), dt)
        self._no_reset = np.zeros((Tc, B), np.uint8)

    def forward(self, theta, x, lens, y):
        """x (T, B, I) padded lanes of lens[b] frames -> logits y (T, B, O), saving what backward needs."""
        T = x.shape[0]
        if T > self.t_cap:
            self._grow(T)
        self._T = T
        self.fwd.forward(theta, x, lens, y, apply_act=False, save=self._save[:, :T])

    def backward(self, theta, lens, dy, grad):
        """Fill ``grad`` (P,) with dLoss/dtheta given dy = dLoss/dlogits (T, B, O) of the last forward."""
        a, T, B = self.arch, self._T, self.B
        H, I, G, L = a.hidden_size, a.input_size, a.gates, a.num_layers
        GH, TB = G * H, T * B
        offs, extra = self.layout.offsets, self.layout.extra
        grad[:] = 0.0
        dcat = self._dcat[:TB * 2 * H].reshape(T, B, 2 * H)
        if extra[0] >= 0:
            O = dy.shape[2]
            w = theta[extra[0]:extra[0] + 2 * H * O].reshape(2 * H, O)  # head W^T
            dy2 = dy.reshape(TB, O)
            # d W^T (2H, O) = cat_top^T @ dy                 <- y = cat_top @ W^T + b
            np.dot(self.fwd.cat(L - 1).reshape(TB, 2 * H).T, dy2, grad[extra[0]:extra[0] + 2 * H * O].reshape(2 * H, O))
            grad[extra[1]:extra[1] + O] = dy2.sum(axis=0)     # <- y = ... + b
            np.dot(dy2, w.T, dcat.reshape(TB, 2 * H))        # d cat_top = dy @ W
        else:
            dcat[...] = dy
        eng = self.eng
        if T > eng.t_cap:
            eng._grow(T)
        dd = tuple(v[:TB * H].reshape(T, B, H) for v in self._dd)
        for layer in range(L - 1, -1, -1):
            Ik = a.layer_input(layer)
            split_directions_kernel(dcat, lens, dd[0], dd[1])  # d fwd, d rev (reversed clock)
            inp = self.fwd.xn if layer == 0 else self.fwd.cat(layer - 1)  # (T, B, Ik)
            din = self._din[:TB * Ik].reshape(T, B, Ik)
            for d in range(2):
                row = 2 * layer + d
                lo, hi = offs[row, 0], offs[row, 3] + GH  # this direction's 4 tensors, contiguous in theta
                src = np.ascontiguousarray(inp) if d == 0 else self.fwd.reversed(inp, lens)
                backward_kernel(self.cell_code, theta[lo:hi], offs[row:row + 1] - lo, _NO_EXTRA, src,
                                self._zero_state, self._zero_state, self._no_reset[:T], self._save[row:row + 1, :T],
                                dd[d], grad[lo:hi], self._dh0, self._dc0,
                                eng._dcur[:T], eng._dnext[:TB * eng.arch.input_size], eng._dgi[:T], eng._dgh[:T],
                                eng._hprev[:T], eng._cprev[:T], eng._xin[:T], eng.wpt, eng.carry_h, eng.carry_c,
                                eng.dhp, eng.no_hist)  # no per-step gradient-flow record (dh_sq)
                w_ih = theta[lo:lo + Ik * GH].reshape(Ik, GH)
                # d x_in = dgi @ W_ih  (T*B, Ik)                <- gi = x_in @ W_ih^T + b_ih
                if d == 0:
                    np.dot(eng._dgi[:T].reshape(TB, GH), w_ih.T, din.reshape(TB, Ik))
                else:
                    tmp = self._dtmp[:TB * Ik].reshape(T, B, Ik)
                    np.dot(eng._dgi[:T].reshape(TB, GH), w_ih.T, tmp.reshape(TB, Ik))
                    reverse_lanes_kernel(tmp.copy(), lens, tmp)  # back on the lane's own clock
                    din += tmp
            if layer > 0:
                dcat[...] = din
        if extra[2] >= 0:  # input normalisation: xn = (x - mean) / std
            dxn = self._din[:TB * I].reshape(TB, I)
            sd = theta[extra[3]:extra[3] + I]
            grad[extra[2]:extra[2] + I] = -dxn.sum(axis=0) / sd
            grad[extra[3]:extra[3] + I] = -(dxn * self.fwd.xn.reshape(TB, I)).sum(axis=0) / sd


def bidir_loss_and_grads(arch: Architecture, theta, xs, ys, mask, lens=None, *, loss="mse"):
    """Loss and gradient of a bidirectional model on B padded lanes (each from zero state).

    xs (T, B, I); ys (T, B, O) or (T, B) class indices for "ce"; mask (T, B) weights (0 in the padding);
    lens (B,) frames per lane (default: all T).  Returns (mean loss, grads (P,)).
    """
    theta = np.asarray(theta)
    xs = np.ascontiguousarray(xs, theta.dtype)
    T, B, _ = xs.shape
    lens = np.full(B, T, np.int64) if lens is None else np.asarray(lens, np.int64)
    eng = BidirBPTT(arch, B, theta.dtype)
    y = np.zeros((T, B, arch.out_size), theta.dtype)
    eng.forward(theta, xs, lens, y)
    val, dy, _ = loss_and_dlogits(loss, y, ys, np.asarray(mask, theta.dtype))
    grads = np.zeros_like(theta)
    eng.backward(theta, lens, np.ascontiguousarray(dy, theta.dtype), grads)
    return val, grads


class SequenceRunner:
    """Whole-sequence updates for a bidirectional model: each step forwards and backpropagates a batch of
    up to B complete sequences (padded to the longest), the trainer's counterpart of ``TBPTTRunner``."""

    def __init__(self, arch: Architecture, lanes: int, loss: str, dtype=np.float32):
        self.arch, self.B, self.loss, self.dtype = arch, lanes, loss, np.dtype(dtype)
        self.eng = BidirBPTT(arch, lanes, dtype)
        self.grad = None

    def step(self, theta, X, Y, M, lens):
        """X (T, B, I), Y, M (T, B): one batch of whole sequences -> (loss, weight, grad (P,))."""
        if self.grad is None or self.grad.shape != theta.shape:
            self.grad = np.zeros_like(theta)
        y = np.zeros((X.shape[0], self.B, self.arch.out_size), self.dtype)
        self.eng.forward(theta, np.ascontiguousarray(X, self.dtype), lens, y)
        loss, dy, w = loss_and_dlogits(self.loss, y, Y, M)
        self.eng.backward(theta, lens, np.ascontiguousarray(dy, self.dtype), self.grad)
        return loss, w, self.grad

    # no state carried between updates: nothing to clear, drop or checkpoint
    def clear(self):
        pass

    def drop_bad_state(self):
        return 0

    def state_arrays(self) -> dict:
        return {}

    def load_state(self, arrays: dict):
        pass
