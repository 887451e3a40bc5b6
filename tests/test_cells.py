"""The Numba kernels against the plain-NumPy reference (tests/naive.py), for every cell."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import naive
import streamrnn
from conftest import CELLS, frames, small_model
from streamrnn.nn.kernels import STREAM_CHUNK, _affine_kernel
from streamrnn.nn.model import Workspace, run_forward


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("activation", ["identity", "sigmoid", "softmax"])
def test_kernel_matches_numpy_reference(cell, layers, activation):
    m = small_model(cell, layers=layers, activation=activation, dtype=np.float64)
    x = frames(50)
    y = m.forward(x)
    y_ref, _, _ = naive.forward(cell, m.tensors(), x, layers, activation)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("head", [True, False])
@pytest.mark.parametrize("norm", [True, False])
def test_float32_close_to_float64_reference(cell, head, norm):
    m = small_model(cell, layers=2, head=head, norm=norm)
    x = frames(200, seed=3)
    y = m.forward(x)
    y_ref, _, _ = naive.forward(cell, m.tensors(), x, 2, "sigmoid" if head else "identity")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=2e-6)


def test_final_state_matches_reference(cell):
    m = small_model(cell, layers=3, dtype=np.float64)
    s = m.stream()
    x = frames(30, seed=5)
    s.push(x)
    _, h_ref, c_ref = naive.forward(cell, m.tensors(), x, 3, "sigmoid")
    np.testing.assert_allclose(s.state["h"], h_ref, rtol=1e-12, atol=1e-13)
    if cell == "lstm":
        np.testing.assert_allclose(s.state["c"], c_ref, rtol=1e-12, atol=1e-13)


@settings(max_examples=25, deadline=None)
@given(cell=st.sampled_from(CELLS), cuts=st.lists(st.integers(1, 60), min_size=1, max_size=20), mid=st.booleans())
def test_any_chunking_gives_the_same_output(cell, cuts, mid):
    m = mid_model(cell) if mid else small_model(cell, layers=2)
    x = frames(sum(cuts), I=m.input_size, seed=len(cuts))
    whole = m.forward(x)
    s = m.stream()
    pos, parts = 0, []
    for n in cuts:
        parts.append(s.push(x[pos:pos + n]))
        pos += n
    # bit for bit, not just close: the trainer relies on any chunking computing exactly alike
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    one = m.stream()
    by_frame = np.concatenate([one.push(x[t:t + 1]) for t in range(len(x))])
    np.testing.assert_array_equal(by_frame, whole)


def run_lanes(m, x):
    """All lanes of x (T, B, I) from zero state in one forward call; returns y (T, B, O) and the
    final state h (L, B, H), float32."""
    T, B, _ = x.shape
    h = np.zeros((m.num_layers, B, m.hidden_size), np.float32)
    y = np.empty((T, B, m.output_size), np.float32)
    run_forward(m._mi, m.theta, x, h, np.zeros_like(h), Workspace(m.arch, B, np.float32), y)
    return y, h


def test_lanes_are_bit_identical_to_single_streams(cell):
    """A lane in a batch computes exactly what the same input computes alone (fixed summation order)."""
    m = small_model(cell, layers=2)
    B, T = 9, 40
    x = np.stack([frames(T, seed=b) for b in range(B)], axis=1)  # (T, B, I)
    y, _ = run_lanes(m, x)
    for b in range(B):
        alone = m.forward(np.ascontiguousarray(x[:, b]))
        assert np.array_equal(alone, y[:, b])


def test_saved_activations_match_reference(cell):
    """The values the trainer backpropagates through are the forward's true activations."""
    m = small_model(cell, layers=2, dtype=np.float64)
    T, L, H = 12, 2, m.hidden_size
    x = frames(T, seed=9)[:, None, :].astype(np.float64)
    h = np.zeros((L, 1, H))
    c = np.zeros_like(h)
    y = np.empty((T, 1, m.output_size))
    save = np.zeros((L, T, 1, m.save_width))
    run_forward(m._mi, m.theta, x, h, c, Workspace(m.arch, 1, np.float64), y, save=save, apply_act=False)
    # the last saved slot of every cell is h_t of that layer
    ref_h = []
    hh, cc = np.zeros((L, H)), np.zeros((L, H))
    t = m.tensors()
    for xt in x[:, 0]:
        inp = xt
        for k in range(L):
            hh[k], cc[k] = naive.cell_step(cell, inp, hh[k], cc[k], t[f"rnn.weight_ih_l{k}"],
                                           t[f"rnn.weight_hh_l{k}"], t[f"rnn.bias_ih_l{k}"], t[f"rnn.bias_hh_l{k}"])
            inp = hh[k]
        ref_h.append(hh.copy())
    np.testing.assert_allclose(save[:, :, 0, -H:], np.array(ref_h).transpose(1, 0, 2), rtol=1e-12, atol=1e-13)
    # without the activation the head gives logits
    logits = naive.forward(cell, t, x[:, 0], L, "identity")[0]
    np.testing.assert_allclose(y[:, 0], logits, rtol=1e-12, atol=1e-12)


# Shapes that exercise every loop of the affine kernel: eight-row passes (K >= 8), the one-row
# remainder (K % 8), and vector bodies with scalar remainders (N not a multiple of the vector width).
AFFINE_SHAPES = [(1, 1, 1), (3, 5, 7), (4, 8, 16), (5, 13, 57), (2, 40, 384), (7, 19, 76), (33, 48, 144)]


@pytest.mark.parametrize("R,K,N", AFFINE_SHAPES)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_affine_kernel_matches_numpy(R, K, N, dtype, tol):
    rng = np.random.default_rng(R * 1000 + K * 10 + N)
    src = rng.standard_normal((R, K)).astype(dtype)
    w = rng.standard_normal((K, N)).astype(dtype)
    b = rng.standard_normal(N).astype(dtype)
    out = np.full(R * N, np.nan, dtype)
    _affine_kernel(src.ravel(), R, w.ravel(), b, out)
    ref = b.astype(np.float64) + src.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(out.reshape(R, N), ref, rtol=tol, atol=tol * np.sqrt(K))


@pytest.mark.parametrize("R,K,N", AFFINE_SHAPES)
def test_affine_rows_do_not_depend_on_the_batch(R, K, N):
    """Each row of an R-row product is bit-identical to the same row computed alone."""
    rng = np.random.default_rng(K)
    src = rng.standard_normal((R, K)).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    out = np.empty(R * N, np.float32)
    _affine_kernel(src.ravel(), R, w.ravel(), b, out)
    for r in range(R):
        alone = np.empty(N, np.float32)
        _affine_kernel(src[r].copy(), 1, w.ravel(), b, alone)
        assert np.array_equal(alone, out[r * N:(r + 1) * N]), r


def mid_model(cell):
    # input 13 and hidden 19: K >= 8 with remainders in every product (small_model's K < 8 never
    # reaches the eight-row passes of the affine kernel)
    return streamrnn.Model.random(cell, input_size=13, hidden_size=19, num_layers=2, output_size=3,
                                  activation="softmax", seed=4)


def test_mid_size_lanes_and_chunks_are_bit_identical(cell):
    m = mid_model(cell)
    T, B = 2 * STREAM_CHUNK + 7, 5  # longer than a stream's internal chunk
    x = np.stack([frames(T, I=13, seed=b) for b in range(B)], axis=1)  # (T, B, I)
    y, h = run_lanes(m, x)
    for b in range(B):
        xb = np.ascontiguousarray(x[:, b])
        alone = m.forward(xb)
        assert np.array_equal(alone, y[:, b])
        s = m.stream()
        by_frame = np.concatenate([s.push(xb[t:t + 1]) for t in range(T)])
        assert np.array_equal(by_frame, alone)
        assert np.array_equal(s.state["h"], h[:, b])
    y_ref, _, _ = naive.forward(cell, m.tensors(), np.ascontiguousarray(x[:, 0]).astype(np.float64), m.num_layers,
                              "softmax")
    np.testing.assert_allclose(y[:, 0], y_ref, rtol=1e-5, atol=2e-6)


def test_mid_size_float64_matches_reference(cell):
    m = mid_model(cell).astype(np.float64)
    x = frames(40, I=13, seed=2).astype(np.float64)
    y_ref, h_ref, _ = naive.forward(cell, m.tensors(), x, 2, "softmax")
    s = m.stream()
    np.testing.assert_allclose(s.push(x), y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.state["h"], h_ref, rtol=1e-12, atol=1e-13)


def test_parameters_start_on_a_cache_line():
    """Model and trainer keep theta 64-byte aligned (the step kernel measured 10-20 % faster)."""
    from streamrnn.nn.model import aligned_copy

    m = streamrnn.Model.random("gru", 5, 7, output_size=1, seed=0)
    assert m.theta.ctypes.data % 64 == 0
    assert m.with_theta(np.asarray(m.theta) * 2).theta.ctypes.data % 64 == 0
    for off in range(5):  # whatever the source's own offset
        a = np.arange(37, dtype=np.float32)[off:]
        b = aligned_copy(a)
        assert b.ctypes.data % 64 == 0 and np.array_equal(a, b) and b.flags.c_contiguous
