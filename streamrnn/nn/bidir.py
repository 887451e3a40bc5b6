"""Bidirectional models (PyTorch's ``bidirectional=True``) over whole sequences.

Each layer runs two directions with their own weights (PyTorch's ``*_l{k}`` and
``*_l{k}_reverse`` tensors): the forward direction reads frames 0..T-1, the
reverse direction reads T-1..0.  Layer l's output at frame t is the two hidden
states side by side, ``[h_fwd_t, h_rev_t]`` (2H), the input of layer l+1 and
of the head (as PyTorch concatenates them)::

    x (T, I) --> fwd: forward kernel on x          --> (T, H) --+
             \\-> rev: forward kernel on x[::-1], then flip back --+--> [fwd, rev] (T, 2H) --> next layer / head

No new cell code: every direction is the runtime's ``forward_kernel`` with a
one-layer model table pointing into the shared ``theta``; the reverse direction
is that kernel on the time-reversed input (``reverse_lanes_kernel``), and the
head is the kernel's head with no layers (a table with L = 0 and input 2H).
The reverse direction at frame t depends on every later frame, so a
bidirectional model needs the whole sequence: it has no ``stream()``; bounded
look-ahead (a unidirectional model trained with ``delay``) is the streaming
alternative.

Lanes of different lengths (training, evaluation) are padded at the end; each
lane is reversed over its own length (``lens``), so the padding never reaches
a valid frame of either direction.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamrnn.compiling import announce_compiles
from streamrnn.nn.cells import ACT_CODES, ACT_IDENTITY, CELL_CODES, SAVE_WIDTH, Architecture, PackedLayout
from streamrnn.nn.kernels import MODE_APPLY_ACT, MODE_SAVE, forward_kernel, model_table, workspace_size

announce_compiles()  # the first compile of a kernel says so on stderr (cold cache)


@njit(cache=True)
def reverse_lanes_kernel(x, lens, out):
    """out[t, b] = x[lens[b] - 1 - t, b] for t < lens[b], 0 after; x, out (T, B, K), lens (B,) int64.

    Its own adjoint: the gradient of a reversed sequence is reversed the same way.
    """
    T, B, K = x.shape
    for t in range(T):
        for b in range(B):
            n = lens[b]
            if t < n:
                for k in range(K):
                    out[t, b, k] = x[n - 1 - t, b, k]
            else:
                for k in range(K):
                    out[t, b, k] = 0.0


@njit(cache=True)
def join_directions_kernel(yf, yr, lens, out):
    """out (T, B, 2H) = [yf[t], yr[lens[b] - 1 - t]]: the reverse direction's outputs, computed on the
    reversed lane, put back on the lane's own clock (0 in the padding)."""
    T, B, H = yf.shape
    for t in range(T):
        for b in range(B):
            n = lens[b]
            for j in range(H):
                out[t, b, j] = yf[t, b, j]
            if t < n:
                for j in range(H):
                    out[t, b, H + j] = yr[n - 1 - t, b, j]
            else:
                for j in range(H):
                    out[t, b, H + j] = 0.0


@njit(cache=True)
def split_directions_kernel(dout, lens, df, dr):
    """The adjoint of ``join_directions_kernel``: dout (T, B, 2H) -> df, dr (T, B, H), dr on the reversed clock."""
    T, B, H = df.shape
    for t in range(T):
        for b in range(B):
            n = lens[b]
            for j in range(H):
                df[t, b, j] = dout[t, b, j]
            if t < n:
                for j in range(H):
                    dr[t, b, j] = dout[n - 1 - t, b, H + j]
            else:
                for j in range(H):
                    dr[t, b, j] = 0.0


class BidirForward:
    """Run a bidirectional model over B padded lanes of up to T frames (buffers grow on demand, never per frame).

    ``tables[r]`` is the one-layer model table of direction row r = 2l + d (d = 0 forward, 1 reverse);
    layer 0's rows also carry the input normalisation.  After ``forward`` the concatenated outputs
    of every layer stay in ``cat(l)`` (T, B, 2H) and the normalised input in ``xn`` (T, B, I): the
    backward pass (``streamrnn.train.bidir``) reads them.
    """

    def __init__(self, arch: Architecture, lanes: int, dtype, fast: bool):
        assert arch.bidirectional
        self.arch, self.B, self.dtype = arch, int(lanes), np.dtype(dtype)
        layout = PackedLayout(arch)
        self.layout = layout
        cell, G, H, I = CELL_CODES[arch.cell], arch.gates, arch.hidden_size, arch.input_size
        ex = layout.extra
        self.tables = []
        for row in range(2 * arch.num_layers):
            layer = row // 2
            extra = np.array([-1, -1, ex[2], ex[3]] if layer == 0 else [-1, -1, -1, -1], np.int64)
            self.tables.append(model_table(cell, ACT_IDENTITY, fast, 1, arch.layer_input(layer), H, -1, G,
                                           layout.offsets[row:row + 1], extra))
        # the head alone: no layers, input = the top layer's two directions (2H)
        self.head_table = None
        if arch.output_size is not None:
            self.head_table = model_table(cell, ACT_CODES[arch.activation], fast, 0, 2 * H, 2 * H,
                                          arch.output_size, G, np.zeros((0, 4), np.int64),
                                          np.array([ex[0], ex[1], -1, -1], np.int64))
        self.t_cap = 0
        self.no_lens = np.zeros(0, np.int64)
        self.no_save = np.zeros((1, 1, 1, 1), self.dtype)
        self.ensure(1)

    def ensure(self, T: int) -> None:
        """Grow the buffers to hold T frames of every lane."""
        if T <= self.t_cap:
            return
        a, B, dt = self.arch, self.B, self.dtype
        H, I, G, L = a.hidden_size, a.input_size, a.gates, a.num_layers
        self.t_cap = Tc = max(T, 2 * self.t_cap)
        K = max(I, 2 * H)
        self._ws = np.zeros(max(workspace_size(Tc, B, K, H, G), workspace_size(Tc, B, 2 * H, 2 * H, G)), dt)
        self._xr = np.zeros(Tc * B * K, dt)  # one direction's (reversed) input
        self._yf = np.zeros(Tc * B * H, dt)
        self._yr = np.zeros(Tc * B * H, dt)
        self._cat = np.zeros(L * Tc * B * 2 * H, dt)  # every layer's [fwd, rev] output, kept for backprop
        self._xn = np.zeros(Tc * B * I, dt)
        self._h = np.zeros((1, B, H), dt)
        self._c = np.zeros((1, B, H), dt)
        self._T = 0

    def cat(self, layer: int) -> np.ndarray:
        """Layer ``layer``'s output (T, B, 2H) of the last forward call."""
        n = self._T * self.B * 2 * self.arch.hidden_size
        return self._cat[layer * n:(layer + 1) * n].reshape(self._T, self.B, 2 * self.arch.hidden_size)

    @property
    def xn(self) -> np.ndarray:
        """The normalised input (T, B, I) of the last forward call."""
        return self._xn[:self._T * self.B * self.arch.input_size].reshape(self._T, self.B, self.arch.input_size)

    def reversed(self, x: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """x (T, B, K) reversed per lane into the scratch buffer (a view, valid until the next call)."""
        T, B, K = x.shape
        xr = self._xr[:T * B * K].reshape(T, B, K)
        reverse_lanes_kernel(x, lens, xr)
        return xr

    def forward(self, theta, x, lens, y, *, apply_act: bool = True, save=None) -> None:
        """x (T, B, I) -> y (T, B, O), every lane from zero state; lane b holds lens[b] frames (rest padding).

        ``save`` (2L, T, B, SAVE_WIDTH*H): per direction row, the activations backprop needs
        (the reverse rows on the reversed clock).
        """
        T, B, I = x.shape
        a = self.arch
        H, L = a.hidden_size, a.num_layers
        self.ensure(T)
        self._T = T
        TBH = T * B * H
        yd = (self._yf[:TBH].reshape(T, B, H), self._yr[:TBH].reshape(T, B, H))
        ws = self._ws
        mode = MODE_SAVE if save is not None else 0
        for layer in range(L):
            inp = x if layer == 0 else self.cat(layer - 1)
            for d in range(2):
                src = inp if d == 0 else self.reversed(inp, lens)
                self._h[...] = 0.0
                self._c[...] = 0.0
                row = 2 * layer + d
                forward_kernel(self.tables[row], mode, theta, src, self.no_lens, self._h, self._c, ws, yd[d],
                               self.no_save if save is None else save[row:row + 1])
                if layer == 0 and d == 0:
                    self.xn[...] = ws[:T * B * I].reshape(T, B, I)  # the kernel's normalised input
            join_directions_kernel(yd[0], yd[1], lens, self.cat(layer))
        top = self.cat(L - 1)
        if self.head_table is None:
            y[...] = top
        else:
            forward_kernel(self.head_table, MODE_APPLY_ACT if apply_act else 0, theta, top, self.no_lens,
                           self._h, self._c, ws, y, self.no_save)


def save_shape(arch: Architecture, T: int, B: int) -> tuple[int, int, int, int]:
    """Shape of the ``save`` buffer of ``BidirForward.forward``: (2L, T, B, SAVE_WIDTH*H)."""
    return (2 * arch.num_layers, T, B, SAVE_WIDTH[arch.cell] * arch.hidden_size)
