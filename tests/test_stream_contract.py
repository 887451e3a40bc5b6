"""Contract tests that every registered cell must pass (river's estimator-check style)."""

from __future__ import annotations

import numpy as np
import pytest

import streamrnn
from conftest import frames, small_model


def test_input_is_not_mutated(cell):
    m = small_model(cell, norm=True)
    x = frames(20)
    x_before = x.copy()
    m.stream().push(x)
    assert np.array_equal(x, x_before)


def test_weights_are_read_only_and_unchanged(cell):
    m = small_model(cell)
    theta = m.theta.copy()
    m.stream().push(frames(20))
    assert np.array_equal(m.theta, theta)
    with pytest.raises(ValueError):
        m.theta[0] = 1.0


def test_reset_gives_the_initial_state(cell):
    m = small_model(cell)
    s = m.stream()
    x = frames(15)
    first = s.push(x)
    assert np.abs(s.state["h"]).sum() > 0
    s.reset()
    assert not s.state["h"].any() and s.n_frames == 0
    np.testing.assert_array_equal(s.push(x), first)


def test_streams_of_one_model_are_independent(cell):
    m = small_model(cell)
    a, b = m.stream(), m.stream()
    xa, xb = frames(30, seed=1), frames(30, seed=2)
    ya1 = a.push(xa[:10])
    yb1 = b.push(xb[:17])  # interleaved pushes must not leak state between streams
    ya2 = a.push(xa[10:])
    yb2 = b.push(xb[17:])
    np.testing.assert_array_equal(np.concatenate([ya1, ya2]), m.forward(xa))
    np.testing.assert_array_equal(np.concatenate([yb1, yb2]), m.forward(xb))


def test_snapshot_restore_round_trips(cell):
    m = small_model(cell)
    s = m.stream()
    x = frames(40)
    s.push(x[:25])
    snap = s.snapshot()
    tail = s.push(x[25:])
    s.push(frames(11, seed=7))  # move on, then go back
    s.restore(snap)
    np.testing.assert_array_equal(s.push(x[25:]), tail)
    # a snapshot is a copy: later pushes do not change it
    before = snap["h"].copy()
    s.push(x)
    np.testing.assert_array_equal(snap["h"], before)
    # restoring into a fresh stream of the same model works too
    t = m.stream()
    t.restore(snap)
    np.testing.assert_array_equal(t.push(x[25:]), tail)


def test_restore_into_another_shape_is_a_clear_error(cell):
    snap = small_model(cell).stream().snapshot()
    other = streamrnn.Model.random(cell, input_size=5, hidden_size=9, num_layers=2, output_size=3)
    with pytest.raises(streamrnn.SnapshotError, match="hidden_size: snapshot 7 vs model 9"):
        other.stream().restore(snap)
    with pytest.raises(streamrnn.SnapshotError, match="version"):
        small_model(cell).stream().restore({**snap, "version": 99})
    with pytest.raises(streamrnn.SnapshotError, match="not a snapshot"):
        small_model(cell).stream().restore([1, 2])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 6), np.float32), r"shape \(T, 5\), got \(4, 6\)"),
    (np.zeros(5, np.float32), r"x\[None, :\]"),
    (np.zeros((2, 3, 5), np.float32), r"got \(2, 3, 5\)"),
    (np.zeros((4, 5), np.int16), "floating-point array, got dtype int16"),
    (np.array([["a"] * 5]), "floating-point"),
])
def test_wrong_shapes_and_dtypes_raise_clear_errors(cell, bad, match):
    s = small_model(cell).stream()
    with pytest.raises(streamrnn.ShapeError, match=match):
        s.push(bad)
    assert s.n_frames == 0


def test_non_finite_input_is_rejected_and_state_kept(cell):
    s = small_model(cell).stream()
    s.push(frames(5))
    h = s.state["h"]
    x = frames(3)
    x[1, 2] = np.nan
    with pytest.raises(streamrnn.InputError, match="1 NaN/Inf"):
        s.push(x)
    np.testing.assert_array_equal(s.state["h"], h)


def test_empty_block_and_float64_input(cell):
    m = small_model(cell)
    s = m.stream()
    assert s.push(np.zeros((0, 5))).shape == (0, 3)
    x = frames(8)
    np.testing.assert_array_equal(s.push(x.astype(np.float64)), m.forward(x))
