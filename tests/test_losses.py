"""Masked losses against the per-frame NumPy reference (tests/naive_bptt.py)."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn.errors import ShapeError
from streamrnn.train.losses import loss_and_dlogits

from naive_bptt import frame_loss


def _case(kind, rng, T=6, B=3, O=4):
    y = rng.standard_normal((T, B, O)) * 3
    if kind == "ce":
        tg = rng.integers(0, O, (T, B))
    elif kind == "bce":
        tg = (rng.random((T, B, O)) < 0.5).astype(float)
    else:
        tg = rng.standard_normal((T, B, O))
    mask = rng.random((T, B)) * (rng.random((T, B)) < 0.7)
    return y, tg, mask


@pytest.mark.parametrize("kind", ["bce", "ce", "mse"])
def test_matches_reference_with_weighted_mask(kind):
    rng = np.random.default_rng(0)
    y, tg, mask = _case(kind, rng)
    loss, d, w = loss_and_dlogits(kind, y, tg, mask)
    W = mask.sum()
    ref, dref = 0.0, np.zeros_like(y)
    for t in range(y.shape[0]):
        for b in range(y.shape[1]):
            l, dl = frame_loss(kind, y[t, b], tg[t, b])
            ref += mask[t, b] * l / W
            dref[t, b] = dl * mask[t, b] / W
    assert w == pytest.approx(W)
    assert loss == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(d, dref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["bce", "ce", "mse"])
def test_gradient_is_the_derivative_of_the_loss(kind):
    rng = np.random.default_rng(1)
    y, tg, mask = _case(kind, rng, T=3, B=2, O=3)
    _, d, _ = loss_and_dlogits(kind, y, tg, mask)
    eps = 1e-6
    for idx in np.ndindex(y.shape):
        yp, ym = y.copy(), y.copy()
        yp[idx] += eps
        ym[idx] -= eps
        num = (loss_and_dlogits(kind, yp, tg, mask)[0] - loss_and_dlogits(kind, ym, tg, mask)[0]) / (2 * eps)
        assert d[idx] == pytest.approx(num, rel=1e-6, abs=1e-9)


def test_masked_frames_with_garbage_targets_do_not_leak():
    y = np.zeros((2, 1, 1))
    tg = np.array([[[1.0]], [[np.nan]]])
    loss, d, w = loss_and_dlogits("mse", y, tg, np.array([[1.0], [0.0]]))
    assert loss == 1.0 and w == 1.0
    assert np.isfinite(d).all() and d[1, 0, 0] == 0.0


def test_extreme_logits_stay_finite():
    y = np.array([[[1000.0, -1000.0]]])
    loss, d, _ = loss_and_dlogits("bce", y, np.array([[[0.0, 1.0]]]), np.ones((1, 1)))
    assert loss == pytest.approx(2000.0) and np.array_equal(d, [[[1.0, -1.0]]])
    loss, d, _ = loss_and_dlogits("ce", y, np.array([[1]]), np.ones((1, 1)))
    assert loss == pytest.approx(2000.0) and np.isfinite(d).all()


def test_empty_mask_gives_zero_loss_and_gradient():
    loss, d, w = loss_and_dlogits("bce", np.ones((3, 2, 1)), np.ones((3, 2, 1)), np.zeros((3, 2)))
    assert loss == 0.0 and w == 0.0 and not d.any()


def test_errors_name_the_problem():
    with pytest.raises(ShapeError, match="class index out of range"):
        loss_and_dlogits("ce", np.zeros((1, 1, 3)), np.array([[3]]), np.ones((1, 1)))
    with pytest.raises(ShapeError, match="unknown loss"):
        loss_and_dlogits("hinge", np.zeros((1, 1, 3)), np.zeros((1, 1, 3)), np.ones((1, 1)))
    with pytest.raises(ShapeError, match="mask must have shape"):
        loss_and_dlogits("mse", np.zeros((2, 1, 3)), np.zeros((2, 1, 3)), np.ones(2))
