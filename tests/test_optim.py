"""Optimisers, clipping and schedules against scalar references written from the equations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrnn.train.optim import Optimizer, clip_gradients, scheduled_lr


def _ref_adam(theta, grads, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    """torch.optim.Adam/AdamW, element by element."""
    th = [float(v) for v in theta]
    m = [0.0] * len(th)
    v = [0.0] * len(th)
    for t, g in enumerate(grads, start=1):
        for i in range(len(th)):
            gi = float(g[i])
            if decoupled:
                th[i] -= lr * wd * th[i]
            else:
                gi += wd * th[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            mh = m[i] / (1 - b1 ** t)
            vh = v[i] / (1 - b2 ** t)
            th[i] -= lr * mh / (math.sqrt(vh) + eps)
    return np.array(th)


def _ref_sgd(theta, grads, lr, mu, wd=0.0):
    th = [float(v) for v in theta]
    buf = [0.0] * len(th)
    for g in grads:
        for i in range(len(th)):
            gi = float(g[i]) + wd * th[i]
            buf[i] = mu * buf[i] + gi
            th[i] -= lr * buf[i]
    return np.array(th)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    return rng.standard_normal(6), [rng.standard_normal(6) for _ in range(5)]


def test_adam(problem):
    theta0, grads = problem
    th = theta0.copy()
    opt = Optimizer("adam", 6)
    for g in grads:
        opt.step(th, g, 0.01)
    np.testing.assert_allclose(th, _ref_adam(theta0, grads, 0.01), rtol=1e-10, atol=1e-8 * 1e-3)


def test_adamw_decouples_decay_and_skips_undecayed(problem):
    theta0, grads = problem
    decay = np.array([1, 1, 1, 0, 0, 0], bool)
    th = theta0.copy()
    opt = Optimizer("adamw", 6, weight_decay=0.1, decay=decay)
    for g in grads:
        opt.step(th, g, 0.01)
    # the reference applies decay th -= lr*wd*th before the Adam step; ours adds it to the same update
    ref_d = _ref_adam(theta0[:3], [g[:3] for g in grads], 0.01, wd=0.1, decoupled=True)
    ref_n = _ref_adam(theta0[3:], [g[3:] for g in grads], 0.01)
    np.testing.assert_allclose(th[3:], ref_n, rtol=1e-10)
    np.testing.assert_allclose(th[:3], ref_d, rtol=1e-5)
    assert not np.allclose(th[:3], _ref_adam(theta0[:3], [g[:3] for g in grads], 0.01), rtol=1e-7)


def test_adam_l2_weight_decay(problem):
    theta0, grads = problem
    th = theta0.copy()
    opt = Optimizer("adam", 6, weight_decay=0.05, decay=np.ones(6, bool))
    for g in grads:
        opt.step(th, g, 0.01)
    np.testing.assert_allclose(th, _ref_adam(theta0, grads, 0.01, wd=0.05), rtol=1e-10)


def test_sgd_momentum(problem):
    theta0, grads = problem
    th = theta0.copy()
    opt = Optimizer("sgd", 6, momentum=0.9, weight_decay=0.01, decay=np.ones(6, bool))
    for g in grads:
        opt.step(th, g, 0.1)
    np.testing.assert_allclose(th, _ref_sgd(theta0, grads, 0.1, 0.9, 0.01), rtol=1e-12)


def test_frozen_entries_never_move(problem):
    theta0, grads = problem
    trainable = np.array([1, 0, 1, 0, 1, 1], bool)
    th = theta0.copy()
    opt = Optimizer("adamw", 6, weight_decay=0.5, trainable=trainable, decay=np.ones(6, bool))
    for g in grads:
        opt.step(th, g, 0.1)
    assert np.array_equal(th[~trainable], theta0[~trainable])
    assert not np.any(th[trainable] == theta0[trainable])


def test_global_norm_clipping_keeps_direction_and_reports_preclip_norm():
    g = np.array([3.0, 0.0, -4.0], np.float32)
    n = clip_gradients(g, "norm", 1.0)
    assert n == pytest.approx(5.0)
    np.testing.assert_allclose(g, [0.6, 0.0, -0.8], rtol=1e-6)
    g2 = np.array([0.3, 0.4])
    assert clip_gradients(g2, "norm", 1.0) == pytest.approx(0.5) and np.array_equal(g2, [0.3, 0.4])


def test_per_element_clipping_and_nonfinite_passthrough():
    g = np.array([3.0, -0.5, -4.0])
    assert clip_gradients(g, "value", max_value=1.0) == pytest.approx(math.sqrt(25.25))
    assert g.tolist() == [1.0, -0.5, -1.0]
    bad = np.array([1.0, np.nan])
    assert math.isnan(clip_gradients(bad, "norm", 1.0)) and bad[0] == 1.0


def test_schedules():
    kw = dict(warmup_steps=4)
    assert [scheduled_lr(1.0, s, 0, 100, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert scheduled_lr(1.0, 50, 0, 100, name="constant") == 1.0
    assert scheduled_lr(1.0, 0, 0, 100, name="cosine") == 1.0
    assert scheduled_lr(1.0, 50, 0, 100, name="cosine", min_lr=0.1) == pytest.approx(0.55)
    assert scheduled_lr(1.0, 100, 0, 100, name="cosine", min_lr=0.1) == pytest.approx(0.1)
    assert [scheduled_lr(1.0, 0, e, 1, name="step", step_epochs=2, gamma=0.5) for e in (0, 1, 2, 5)] == \
        [1.0, 1.0, 0.5, 0.25]
