"""The Numba kernels against the plain-NumPy reference (tests/naive.py), for every cell."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import naive
from conftest import CELLS, frames, small_model
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
@given(cell=st.sampled_from(CELLS), cuts=st.lists(st.integers(1, 60), min_size=1, max_size=20))
def test_any_chunking_gives_the_same_output(cell, cuts):
    m = small_model(cell, layers=2)
    x = frames(sum(cuts), seed=len(cuts))
    whole = m.forward(x)
    s = m.stream()
    pos, parts = 0, []
    for n in cuts:
        parts.append(s.push(x[pos:pos + n]))
        pos += n
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6, atol=1e-7)
    one = m.stream()
    by_frame = np.concatenate([one.push(x[t:t + 1]) for t in range(len(x))])
    np.testing.assert_allclose(by_frame, whole, rtol=1e-6, atol=1e-7)


def test_lanes_are_bit_identical_to_single_streams(cell):
    """A lane in a batch computes exactly what the same input computes alone (fixed summation order)."""
    m = small_model(cell, layers=2)
    B, T = 9, 40
    x = np.stack([frames(T, seed=b) for b in range(B)], axis=1)  # (T, B, I)
    L, H = m.num_layers, m.hidden_size
    h = np.zeros((L, B, H), np.float32)
    c = np.zeros_like(h)
    y = np.empty((T, B, m.output_size), np.float32)
    run_forward(m, x, h, c, Workspace(m.arch, B, np.float32), y)
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
    run_forward(m, x, h, c, Workspace(m.arch, 1, np.float64), y, save=save, apply_act=False)
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
