"""Backpropagation through time: ``loss_and_grads`` and the gradient check.

Shaped like Karpathy's min-char-rnn::

    loss, grads, h_last = loss_and_grads(model, xs, ys, mask, h0)

The engine (the Numba backward kernel and ``BPTT``, which runs the forward through the runtime
kernel and keeps what the backward needs) lives in ``streamrnn.train.backward`` and is
re-exported here; a bidirectional model goes through ``streamrnn.train.bidir``, which is built
on the same engine.
"""

from __future__ import annotations

import numpy as np

from streamrnn.errors import ShapeError
from streamrnn.nn.cells import Architecture, PackedLayout
from streamrnn.nn.model import Model
from streamrnn.train.backward import BPTT, backward_kernel  # noqa: F401 (re-exported)
from streamrnn.train.losses import loss_and_dlogits


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
