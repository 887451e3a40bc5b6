"""The Numba BPTT kernels: against the NumPy reference, central differences and the runtime."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

import streamrnn
from streamrnn.errors import ShapeError
from streamrnn.nn.cells import Architecture, PackedLayout, init_tensors
from streamrnn.train.bptt import BPTT, gradcheck, loss_and_grads

from naive_bptt import forward_backward

CELLS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]
LOSSES = ["bce", "ce", "mse"]


def _problem(cell, L, loss, seed=0, T=7, B=3, I=4, H=5, O=3, norm=True):
    rng = np.random.default_rng(seed)
    arch = Architecture(cell, I, H, L, O, "identity", has_norm=norm)
    t = init_tensors(arch, rng, "pytorch")
    t = {k: v * (2.0 if not k.startswith("norm.") else 1.0) for k, v in t.items()}
    if norm:
        t["norm.mean"] = rng.standard_normal(I) * 0.5
        t["norm.std"] = rng.uniform(0.5, 2.0, I)
    x = rng.standard_normal((T, B, I))
    if loss == "ce":
        y = rng.integers(0, O, (T, B))
    elif loss == "bce":
        y = (rng.random((T, B, O)) < 0.5).astype(float)
    else:
        y = rng.standard_normal((T, B, O))
    mask = (rng.random((T, B)) < 0.7).astype(float)
    mask[-1] = 1.0
    reset = np.zeros((T, B), np.uint8)
    reset[3, 1] = 1
    h0 = rng.standard_normal((L, B, H)) * 0.5
    c0 = rng.standard_normal((L, B, H)) * 0.5
    return arch, t, x, y, mask, reset, h0, c0


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("L", [1, 2])
def test_numba_backward_equals_numpy_reference(cell, loss, L):
    arch, t, x, y, mask, reset, h0, c0 = _problem(cell, L, loss)
    mask[:3, 1] = 0.0  # lane 1: no loss before its reset at step 3, so its dh0 must be exactly 0
    layout = PackedLayout(arch)
    theta = layout.pack(t, np.float64)
    sg = {}
    start = (h0, c0) if cell == "lstm" else h0
    x_before = x.copy()
    loss_k, g_k, h_last = loss_and_grads((arch, theta), x, y, mask, start, loss=loss, reset=reset,
                                         state_grads=sg)
    assert np.array_equal(x, x_before)  # inputs not mutated
    loss_r, g_r, dh0_r, dc0_r = forward_backward(cell, t, x, y, mask, loss, h0, c0 if cell == "lstm" else None,
                                                 reset)
    assert loss_k == pytest.approx(loss_r, rel=1e-12)
    np.testing.assert_allclose(g_k, layout.pack(g_r, np.float64), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sg["h0"], dh0_r, rtol=1e-9, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(sg["c0"], dc0_r, rtol=1e-9, atol=1e-12)
    # lane 1 was reset at step 3 and has no loss before: nothing flows back into its h0
    assert np.all(sg["h0"][:, 1] == 0.0)
    assert np.any(sg["h0"][:, 0] != 0.0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("loss", LOSSES)
def test_gradcheck_two_layers_every_loss(cell, loss):
    r = gradcheck(cell, 2, loss, seed=1)
    assert r["n_checked"] > 100
    assert r["worst"] <= 1e-6, r


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L", [1, 3])
def test_gradcheck_one_and_three_layers(cell, L):
    r = gradcheck(cell, L, "bce" if L == 1 else "ce", seed=2, T=5, B=2)
    assert r["worst"] <= 1e-6, r


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The check itself has teeth: a kernel that drops a term fails it."""
    import streamrnn.train.bptt as bptt

    real = bptt.BPTT.backward

    def broken(self, theta, xn, h0, c0, reset, save, dy, grad, dh0, dc0):
        real(self, theta, xn, h0, c0, reset, save, dy, grad, dh0, dc0)
        grad[self.layout.offsets[0, 1]] *= 1.001  # one recurrent weight off by 0.1 %

    monkeypatch.setattr(bptt.BPTT, "backward", broken)
    assert gradcheck("gru", 1, "mse", T=4, B=2)["worst"] > 1e-4


@pytest.mark.parametrize("cell", CELLS)
def test_training_forward_streams_bit_for_bit(cell):
    """Logits of the training forward (B lanes, resets, float32) == Stream.push of the exported model."""
    rng = np.random.default_rng(3)
    T, B, I = 23, 4, 5
    m = streamrnn.Model.random(cell, I, 8, num_layers=2, output_size=3, activation="identity", seed=4,
                               init="glorot", has_norm=True)
    t = m.tensors()
    t["norm.mean"] = rng.standard_normal(I).astype(np.float32)
    t["norm.std"] = rng.uniform(0.5, 2.0, I).astype(np.float32)
    m = streamrnn.Model(m.arch, t)
    eng = BPTT(m.arch, B, np.float32)
    x = (rng.standard_normal((T, B, I)) * 2).astype(np.float32)
    reset = np.zeros((T, B), np.uint8)
    reset[9, 2] = 1  # lane 2 starts a new sequence at frame 9
    h = np.zeros((2, B, 8), np.float32)
    c = np.zeros_like(h)
    y, save, xn = eng.alloc(T)
    theta = m.theta.copy()
    eng.forward(theta, x, h, c, reset, y, save, xn)

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.safetensors")
        streamrnn.save_model(m.with_theta(theta), path)
        loaded = streamrnn.load_model(path)
    for b in range(B):
        s = loaded.stream()
        if b == 2:
            first = s.push(x[:9, b])
            s.reset()
            rest = s.push(x[9:, b])
            got = np.concatenate([first, rest])
        else:
            # chunked differently from training on purpose
            got = np.concatenate([s.push(x[:5, b]), s.push(x[5:6, b]), s.push(x[6:, b])])
        assert np.array_equal(got, y[:, b]), f"lane {b}"
        assert np.array_equal(s.h[:, 0], h[:, b])


def test_lanes_are_independent_in_the_backward():
    """The gradient of a batch is the sum of the per-lane gradients (loss scaled by weight)."""
    arch, t, x, y, mask, reset, h0, _ = _problem("gru", 2, "mse", seed=5)
    theta = PackedLayout(arch).pack(t, np.float64)
    _, g_all, _ = loss_and_grads((arch, theta), x, y, mask, h0, loss="mse", reset=reset)
    total = np.zeros_like(g_all)
    W = mask.sum()
    for b in range(x.shape[1]):
        sl = slice(b, b + 1)
        _, g, _ = loss_and_grads((arch, theta), x[:, sl], y[:, sl], mask[:, sl], h0[:, sl], loss="mse",
                                 reset=reset[:, sl])
        total += g * mask[:, b].sum() / W
    np.testing.assert_allclose(g_all, total, rtol=1e-10, atol=1e-13)


def test_bad_shapes_are_rejected():
    m = streamrnn.Model.random("gru", 3, 4, output_size=1, dtype=np.float64)
    with pytest.raises(ShapeError, match=r"\(T, B, 3\)"):
        loss_and_grads(m, np.zeros((5, 3)), np.zeros((5, 1)), np.ones(5))
    with pytest.raises(ShapeError, match="mask"):
        loss_and_grads(m, np.zeros((5, 2, 3)), np.zeros((5, 2, 1)), np.ones((5, 3)))


@pytest.mark.parametrize("cell", CELLS)
def test_float32_training_path_agrees_with_float64(cell):
    """The float32 path (fast activations in the forward, float32 BLAS) gives the float64 gradient
    to float32 accuracy: relative L2 error of the whole gradient vector below 1e-4."""
    arch, t, x, y, mask, reset, h0, c0 = _problem(cell, 2, "bce", seed=7)
    layout = PackedLayout(arch)
    start64 = (h0, c0) if cell == "lstm" else h0
    start32 = tuple(a.astype(np.float32) for a in start64) if cell == "lstm" else h0.astype(np.float32)
    l64, g64, _ = loss_and_grads((arch, layout.pack(t, np.float64)), x, y, mask, start64, loss="bce", reset=reset)
    l32, g32, _ = loss_and_grads((arch, layout.pack(t, np.float32)), x.astype(np.float32), y, mask, start32,
                                 loss="bce", reset=reset)
    assert g32.dtype == np.float32
    assert l32 == pytest.approx(l64, rel=1e-5)
    assert np.linalg.norm(g32 - g64) / np.linalg.norm(g64) < 1e-4


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("loss", LOSSES)
def test_gradcheck_bidirectional_two_layers_every_loss(cell, loss):
    """Both directions of every layer, the 2H head and the normalisation, on lanes of different lengths."""
    r = gradcheck(cell, 2, loss, seed=1, bidirectional=True)
    assert r["n_checked"] > 200 and "_reverse" in " ".join(
        PackedLayout(Architecture(cell, 3, 4, 2, 3, bidirectional=True)).entries)
    assert r["worst"] <= 1e-6, r


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("L", [1, 3])
def test_gradcheck_bidirectional_one_and_three_layers(cell, L):
    r = gradcheck(cell, L, "bce", seed=2, T=5, B=2, bidirectional=True)
    assert r["worst"] <= 1e-6, r


def test_bidirectional_gradcheck_detects_a_wrong_reverse_gradient(monkeypatch):
    """The check has teeth for the reverse direction too: a gradient that misses the reversal fails it."""
    import streamrnn.train.bidir as bidir

    monkeypatch.setattr(bidir, "reverse_lanes_kernel", lambda x, lens, out: out.__setitem__(Ellipsis, x))
    assert gradcheck("gru", 1, "mse", T=5, B=2, bidirectional=True)["worst"] > 1e-3


def test_bidirectional_loss_and_grads_is_whole_sequence_only():
    arch = Architecture("gru", 3, 4, 1, 2, bidirectional=True)
    theta = PackedLayout(arch).pack(init_tensors(arch, np.random.default_rng(0)), np.float64)
    xs, ys, mask = np.zeros((4, 2, 3)), np.zeros((4, 2, 2)), np.ones((4, 2))
    loss, g, h = loss_and_grads((arch, theta), xs, ys, mask, loss="mse")
    assert h is None and g.shape == theta.shape and np.isfinite(loss)
    with pytest.raises(ShapeError, match="zero state"):
        loss_and_grads((arch, theta), xs, ys, mask, np.zeros((2, 2, 4)), loss="mse")
