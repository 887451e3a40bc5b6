"""Bidirectional models (streamrnn.nn.bidir): the equations, padded lanes, and no streaming."""

from __future__ import annotations

import numpy as np
import pytest

import naive
import streamrnn
from conftest import frames
from streamrnn.nn.bidir import BidirForward, join_directions_kernel, reverse_lanes_kernel, split_directions_kernel


def bi_model(cell, layers=2, head=True, norm=True, dtype=np.float64, seed=0):
    m = streamrnn.Model.random(cell, 5, 6, num_layers=layers, output_size=3 if head else None,
                               activation="sigmoid", bidirectional=True, has_norm=norm, dtype=dtype, seed=seed)
    if norm:
        t = m.tensors()
        rng = np.random.default_rng(seed + 1)
        t["norm.mean"], t["norm.std"] = rng.standard_normal(5), rng.uniform(0.5, 2.0, 5)
        m = streamrnn.Model(m.arch, t, dtype=dtype)
    return m


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_forward_matches_numpy_reference(cell, layers):
    m = bi_model(cell, layers)
    x = frames(37)
    ref = naive.forward_bidirectional(cell, m.tensors(), x, layers, "sigmoid")
    np.testing.assert_allclose(m.forward(x), ref, rtol=0, atol=1e-12)


def test_without_head_outputs_both_directions_and_float32_is_close():
    m = bi_model("gru", 2, head=False)
    x = frames(20)
    y = m.forward(x)
    assert y.shape == (20, 12) and m.output_size == 12
    np.testing.assert_allclose(y, naive.forward_bidirectional("gru", m.tensors(), x, 2), atol=1e-12)
    np.testing.assert_allclose(m.astype(np.float32).forward(x), y, atol=2e-6)


def test_the_last_output_depends_on_the_first_frame_and_the_first_on_the_last():
    m = bi_model("lstm", 1)
    x = frames(8)
    x2 = x.copy()
    x2[-1] += 1.0
    d = np.abs(m.forward(x2) - m.forward(x)).max(axis=1)
    assert d[0] > 1e-6  # the reverse direction carries the future back to frame 0
    assert d[:-1].max() > 0 and d[-1] > 0
    x3 = x.copy()
    x3[0] += 1.0
    assert np.abs(m.forward(x3) - m.forward(x))[-1].max() > 1e-6


def test_padded_lanes_equal_each_sequence_alone():
    m = bi_model("gru", 2)
    lens = np.array([25, 9, 17], np.int64)
    rng = np.random.default_rng(5)
    X = np.zeros((25, 3, 5))
    for b, n in enumerate(lens):
        X[:n, b] = rng.standard_normal((n, 5))
    X[9:, 1] = 99.0  # padding content must never reach a valid frame
    y = np.zeros((25, 3, 3))
    BidirForward(m.arch, 3, np.float64, False).forward(m.theta, X, lens, y)
    for b, n in enumerate(lens):
        np.testing.assert_allclose(y[:n, b], m.forward(X[:n, b]), rtol=0, atol=1e-14)


def test_reverse_join_split_kernels_against_numpy():
    rng = np.random.default_rng(0)
    lens = np.array([4, 1, 0, 6], np.int64)
    x = rng.standard_normal((6, 4, 3))
    out = np.full_like(x, np.nan)
    reverse_lanes_kernel(x, lens, out)
    for b, n in enumerate(lens):
        np.testing.assert_array_equal(out[:n, b], x[:n, b][::-1])
        assert not out[n:, b].any()
    yf, yr = rng.standard_normal((6, 4, 2)), rng.standard_normal((6, 4, 2))
    cat = np.full((6, 4, 4), np.nan)
    join_directions_kernel(yf, yr, lens, cat)
    df, dr = np.zeros_like(yf), np.zeros_like(yr)
    split_directions_kernel(cat, lens, df, dr)
    for b, n in enumerate(lens):
        np.testing.assert_array_equal(cat[:, b, :2], yf[:, b])
        np.testing.assert_array_equal(cat[:n, b, 2:], yr[:n, b][::-1])
        np.testing.assert_array_equal(dr[:n, b], yr[:n, b])  # split undoes join
    np.testing.assert_array_equal(df, yf)


def test_no_stream_bank_or_audio_stream_one_clear_error():
    m = bi_model("gru", 1, dtype=np.float32)
    for make in (m.stream, lambda: m.bank(4), lambda: m.audio_stream(16000), lambda: streamrnn.Stream(m)):
        with pytest.raises(streamrnn.StreamingError, match=r"bidirectional.*whole sequence.*delay"):
            make()


def test_bad_input_is_refused():
    m = bi_model("rnn_tanh", 1, dtype=np.float32)
    x = frames(10)
    x[3, 2] = np.nan
    with pytest.raises(streamrnn.InputError, match="1 NaN/Inf"):
        m.forward(x)
    with pytest.raises(streamrnn.ShapeError, match=r"shape \(T, 5\)"):
        m.forward(np.zeros((4, 3), np.float32))
    assert m.forward(np.zeros((0, 5), np.float32)).shape == (0, 3)
    with pytest.raises(streamrnn.ShapeError, match="delay must be 0"):
        streamrnn.Model(m.arch, m.tensors(), delay=3)
