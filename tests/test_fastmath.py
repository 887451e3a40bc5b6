"""The vectorised tanh/sigmoid stay within their documented error (1e-6 absolute, float32)."""

from __future__ import annotations

import numpy as np

from streamrnn.nn.kernels import sigmoid_vec, tanh_vec


def grid():
    # dense over the interesting range, plus extremes and specials
    x = np.linspace(-20, 20, 2_000_001, dtype=np.float32)
    return np.concatenate([x, np.float32([0.0, -0.0, 1e-8, -1e-8, 50, -50, 1e30, -1e30, 3.4e38, -3.4e38])])


def test_fast_tanh_error_bound():
    x = grid()
    y = x.copy()
    tanh_vec(y, True)
    err = np.abs(y.astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() <= 1e-6, (err.max(), x[err.argmax()])
    assert np.all(np.abs(y) <= 1.0)
    assert np.array_equal(np.sign(y[x != 0]), np.sign(x[x != 0]))  # odd, sign-preserving


def test_fast_sigmoid_error_bound():
    x = grid()
    y = x.copy()
    sigmoid_vec(y, True)
    with np.errstate(over="ignore"):  # exp(1e30) = inf is the right limit: 1 / (1 + inf) = 0
        ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    err = np.abs(y.astype(np.float64) - ref)
    assert err.max() <= 1e-6, (err.max(), x[err.argmax()])
    assert np.all((y >= 0.0) & (y <= 1.0))


def test_exact_mode_is_libm():
    x = np.linspace(-10, 10, 1001).astype(np.float64)
    y, z = x.copy(), x.copy()
    tanh_vec(y, False)
    sigmoid_vec(z, False)
    np.testing.assert_allclose(y, np.tanh(x), rtol=1e-15, atol=0)
    np.testing.assert_allclose(z, 1 / (1 + np.exp(-x)), rtol=1e-15, atol=0)
