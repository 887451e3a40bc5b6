"""Masked losses on logits, with their gradients.

Every loss takes the model's *logits* y (T, B, O) (the head without its
activation), targets and a per-frame weight ``mask`` (T, B) (0 = frame not in
the loss), and returns the weighted mean over frames::

    loss = sum_{t,b} mask[t,b] * l(y[t,b], target[t,b]) / sum_{t,b} mask[t,b]

Per-frame losses:

* ``"bce"``  binary cross-entropy on logits, summed over the O labels (multi-label);
  l = sum_o max(z,0) - z*y + log(1 + exp(-|z|))   (stable for any z)
* ``"ce"``   softmax cross-entropy, target = class index (T, B);
  l = logsumexp(z) - z[target]
* ``"mse"``  mean squared error, averaged over the O outputs; l = mean_o (z - y)^2

Tasks (many-to-many, many-to-one on the last valid frame, next-frame
prediction) only change which frames the mask selects and what the targets
are; see ``streamrnn.train.lanes``.  The head activation that matches each
loss at run time is ``HEAD_ACTIVATION[loss]``.
"""

from __future__ import annotations

import numpy as np

from streamrnn.errors import ShapeError

LOSSES = ("bce", "ce", "mse")
HEAD_ACTIVATION = {"bce": "sigmoid", "ce": "softmax", "mse": "identity"}


def _sigmoid(z):
    # exp of a non-positive number only: no overflow for any z
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def frame_losses(kind: str, y, target, out=None):
    """Per-frame loss l(y[t,b], target[t,b]) (T, B) and dl/dy (T, B, O)."""
    y = np.asarray(y)
    T, B, O = y.shape
    if kind == "bce":
        tg = np.asarray(target, y.dtype).reshape(T, B, O)
        l = (np.maximum(y, 0) - y * tg + np.log1p(np.exp(-np.abs(y)))).sum(axis=2)
        d = _sigmoid(y) - tg
    elif kind == "ce":
        tg = np.asarray(target)
        if tg.shape == (T, B, 1):
            tg = tg[..., 0]
        if tg.shape != (T, B):
            raise ShapeError(f"ce targets must be class indices of shape {(T, B)}, got {tg.shape}")
        idx = tg.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= O):
            raise ShapeError(f"ce class index out of range [0, {O}): min {idx.min()}, max {idx.max()}")
        m = y.max(axis=2, keepdims=True)
        e = np.exp(y - m)
        s = e.sum(axis=2, keepdims=True)
        lse = (m + np.log(s))[..., 0]
        l = lse - np.take_along_axis(y, idx[..., None], axis=2)[..., 0]
        d = e / s
        np.put_along_axis(d, idx[..., None], np.take_along_axis(d, idx[..., None], axis=2) - 1.0, axis=2)
    elif kind == "mse":
        tg = np.asarray(target, y.dtype).reshape(T, B, O)
        diff = y - tg
        l = (diff * diff).mean(axis=2)
        d = (2.0 / O) * diff
    else:
        raise ShapeError(f"unknown loss {kind!r}; expected one of {', '.join(LOSSES)}")
    return l, d


def loss_and_dlogits(kind: str, y, target, mask, reduction: str = "mean"):
    """(loss, dloss/dy (T, B, O), total weight) of a masked block of logits.

    ``reduction="mean"`` divides by the total mask weight (0 frames -> loss 0,
    zero gradient); ``"sum"`` does not.

    >>> import numpy as np
    >>> y = np.zeros((2, 1, 1)); t = np.ones((2, 1, 1)); m = np.array([[1.0], [0.0]])
    >>> loss, d, w = loss_and_dlogits("bce", y, t, m)
    >>> round(loss, 6), d[:, 0, 0].tolist(), w
    (0.693147, [-0.5, 0.0], 1.0)
    """
    y = np.asarray(y)
    mask = np.asarray(mask, y.dtype)
    if mask.shape != y.shape[:2]:
        raise ShapeError(f"mask must have shape {y.shape[:2]}, got {mask.shape}")
    l, d = frame_losses(kind, y, target)
    w = float(mask.sum())
    scale = 1.0 if reduction == "sum" else (1.0 / w if w > 0 else 0.0)
    # masked frames may hold garbage targets (NaN labels of padding): never let them leak
    loss = float(np.where(mask > 0, l * mask, 0.0).sum() * scale)
    d = d * (mask * scale)[..., None]
    d[mask == 0] = 0.0
    return loss, d.astype(y.dtype, copy=False), w
