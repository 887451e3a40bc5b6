"""The multi-stream bank: equal to independent streams, join/leave at any time, bounded."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import streamrnn
from conftest import CELLS, frames, small_model


@settings(max_examples=20, deadline=None)
@given(cell=st.sampled_from(CELLS), plan=st.lists(st.lists(st.integers(0, 12), min_size=5, max_size=5),
                                                  min_size=1, max_size=8))
def test_bank_equals_independent_streams(cell, plan):
    """Each round pushes a random number of frames (0 = no frames this round) to each of 5 streams."""
    m = small_model(cell, layers=2)
    bank = m.bank(8)
    streams = {f"s{i}": m.stream() for i in range(5)}
    for sid in streams:
        bank.open(sid)
    rng = np.random.default_rng(len(plan))
    for counts in plan:
        batch = {f"s{i}": frames(n, seed=int(rng.integers(1 << 30))) for i, n in enumerate(counts) if n}
        out = bank.push_many(batch)
        for sid, x in batch.items():
            assert np.array_equal(out[sid], streams[sid].push(x))  # bit for bit, not just 1e-6
    for sid, s in streams.items():
        assert np.array_equal(bank.snapshot(sid)["h"], s.snapshot()["h"])


def test_streams_join_leave_and_reuse_slots(cell):
    m = small_model(cell)
    bank = m.bank(2)
    bank.open("a")
    bank.open("b")
    with pytest.raises(streamrnn.CapacityError, match="bank is full: 2 streams open"):
        bank.open("c")
    xa = frames(10, seed=1)
    bank.push("a", xa[:4])
    bank.close("b")
    bank.open("c")  # takes b's slot, starting from zero state, not b's leftovers
    xc = frames(6, seed=2)
    np.testing.assert_array_equal(bank.push("c", xc), m.forward(xc))
    np.testing.assert_array_equal(bank.push("a", xa[4:]), m.forward(xa)[4:])
    assert sorted(bank.ids) == ["a", "c"] and len(bank) == 2
    with pytest.raises(KeyError, match="'b' is not open"):
        bank.push("b", xa)
    with pytest.raises(ValueError, match="already open"):
        bank.open("a")


def test_reset_and_snapshot_interop_with_stream(cell):
    m = small_model(cell)
    bank = m.bank(4)
    bank.open(7)
    x = frames(20)
    bank.push(7, x[:12])
    snap = bank.snapshot(7)
    s = m.stream()
    s.restore(snap)  # a bank slot's snapshot restores into a Stream ...
    np.testing.assert_array_equal(s.push(x[12:]), m.forward(x)[12:])
    bank.reset(7)
    np.testing.assert_array_equal(bank.push(7, x), m.forward(x))
    bank.restore(7, snap)  # ... and back into the bank
    np.testing.assert_array_equal(bank.push(7, x[12:]), m.forward(x)[12:])


def test_bad_input_names_the_stream_and_computes_nothing():
    m = small_model("gru")
    bank = m.bank(3)
    bank.open("ok")
    bank.open("bad")
    x = frames(5)
    bad = frames(5)
    bad[2, 1] = np.inf
    with pytest.raises(streamrnn.InputError, match="stream 'bad'.*1 NaN/Inf"):
        bank.push_many({"ok": x, "bad": bad})
    with pytest.raises(streamrnn.ShapeError, match=r"stream 'ok'.*\(T, 5\)"):
        bank.push_many({"ok": np.zeros((2, 4), np.float32)})
    assert bank.n_frames.sum() == 0 and not bank.h.any()
    with pytest.raises(streamrnn.CapacityError, match=r"\[1, 1048576\], got 0"):
        m.bank(0)


def test_mid_size_bank_equals_streams_bit_for_bit(cell):
    """Input 13, hidden 19: every loop of the affine kernel runs (small_model's sizes skip the eight-row passes)."""
    m = streamrnn.Model.random(cell, input_size=13, hidden_size=19, num_layers=2, output_size=2,
                               activation="sigmoid", seed=3)
    bank = m.bank(16)
    streams = {i: m.stream() for i in range(11)}
    for i in streams:
        bank.open(i)
    for rnd in range(3):
        batch = {i: frames(1 + (i * 7 + rnd * 5) % 40, I=13, seed=100 * rnd + i) for i in streams}
        out = bank.push_many(batch)
        for i, x in batch.items():
            assert np.array_equal(out[i], streams[i].push(x)), (rnd, i)


@pytest.mark.parametrize("threads", [1, 2])
def test_push_block_equals_lone_streams_and_push_many(cell, threads):
    """The array path: lanes bit-identical to lone streams and to push_many, across lane groups,
    out-of-order slots and streams that leave and join between calls."""
    m = streamrnn.Model.random(cell, input_size=13, hidden_size=19, num_layers=2, output_size=2,
                               activation="sigmoid", seed=5)
    blocky, dicty = m.bank(32, threads=threads), m.bank(32)
    blocky._group = dicty._group = 4  # several groups, the last one short
    ids = [f"s{i}" for i in range(11)]
    streams = {}
    for i in ids:
        blocky.open(i)
        dicty.open(i)
        streams[i] = m.stream()
    rng = np.random.default_rng(2)
    for rnd in range(4):
        if rnd == 2:  # leave and rejoin: slots come back in another order
            for i in ids[2:6]:
                blocky.close(i)
                dicty.close(i)
            for i in reversed(ids[2:5]):
                blocky.open(i)
                dicty.open(i)
                streams[i] = m.stream()
        live = [i for i in ids if i in blocky][::-1]  # not in slot order
        T = 1 + rnd * 3
        x = rng.standard_normal((len(live), T, 13)).astype(np.float32)
        y = blocky.push_block(blocky.slots(live), x)
        ref = dicty.push_many({i: x[k] for k, i in enumerate(live)})
        assert y.shape == (len(live), T, 2)
        for k, i in enumerate(live):
            assert np.array_equal(y[k], streams[i].push(x[k])), (rnd, i)
            assert np.array_equal(y[k], ref[i]), (rnd, i)
    for i in blocky.ids:
        assert np.array_equal(blocky.snapshot(i)["h"], dicty.snapshot(i)["h"])
        assert blocky.snapshot(i)["n_frames"] == dicty.snapshot(i)["n_frames"]


def test_push_block_bad_input_is_a_clear_error_and_changes_nothing():
    m = small_model("gru")
    bank = m.bank(4)
    for sid in ("a", "b", "c"):
        bank.open(sid)
    slots = bank.slots(["a", "b"])
    bank.close("c")
    h0 = bank.h.copy()
    x = frames(6).reshape(2, 3, 5)
    with pytest.raises(streamrnn.ShapeError, match=r"shape \(2, T, 5\) for 2 slots, got float32 \(3, 3, 5\)"):
        bank.push_block(slots, np.zeros((3, 3, 5), np.float32))
    with pytest.raises(streamrnn.ShapeError, match="1-D integer array"):
        bank.push_block(slots.astype(np.float64), x)
    with pytest.raises(KeyError, match="slot 2 is not an open stream"):
        bank.push_block(np.array([0, 2]), x)
    with pytest.raises(KeyError, match="slot 9 is not an open stream of this bank \\(capacity 4\\)"):
        bank.push_block(np.array([0, 9]), x)
    with pytest.raises(ValueError, match="slots repeat a stream"):
        bank.push_block(np.array([1, 1]), x)
    with pytest.raises(KeyError, match="'zz' is not open"):
        bank.slots(["a", "zz"])
    bad = x.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(streamrnn.InputError, match=r"stream 'b' \(slot 1\): x contains 1 NaN/Inf"):
        bank.push_block(slots, bad)
    assert np.array_equal(bank.h, h0) and bank.n_frames.sum() == 0
    # after all that, a good call still computes what lone streams compute
    y = bank.push_block(slots, x)
    assert np.array_equal(y[0], m.forward(x[0])) and np.array_equal(y[1], m.forward(x[1]))
    assert list(bank.n_frames[slots]) == [3, 3]


@pytest.mark.parametrize("threads", [1, 2])
def test_push_rows_equals_lone_streams_with_empty_and_uneven_streams(threads):
    """The concatenated-rows entry (what the pipeline's FeatureBank output goes into): lanes with
    different row counts, some with none, out of slot order, across lane groups: bit-identical to
    lone streams, and the frame counts advance by each stream's rows."""
    m = streamrnn.Model.random("gru", input_size=13, hidden_size=19, num_layers=2, output_size=2,
                               activation="sigmoid", seed=6)
    bank = m.bank(32, threads=threads)
    bank._group = 4
    ids = [f"s{i}" for i in range(10)]
    streams = {}
    for i in ids:
        bank.open(i)
        streams[i] = m.stream()
    rng = np.random.default_rng(3)
    for rnd in range(4):
        live = list(rng.permutation(ids))
        lens = rng.integers(0, 6, len(live))
        offs = np.r_[0, np.cumsum(lens)].astype(np.int64)
        x = rng.standard_normal((int(offs[-1]), 13)).astype(np.float32)
        y = bank.push_rows(bank.slots(live), x, offs)
        assert y.shape == (offs[-1], 2)
        for k, i in enumerate(live):
            assert np.array_equal(y[offs[k]:offs[k + 1]], streams[i].push(x[offs[k]:offs[k + 1]])), (rnd, i)
    for i in ids:
        assert bank.snapshot(i)["n_frames"] == streams[i].n_frames
        assert np.array_equal(bank.snapshot(i)["h"], streams[i].snapshot()["h"])


def test_push_rows_bad_input_is_a_clear_error_and_changes_nothing():
    m = small_model("gru")
    bank = m.bank(4)
    for sid in ("a", "b"):
        bank.open(sid)
    h0 = bank.h.copy()
    x = frames(6)
    with pytest.raises(ValueError, match="offs must rise from 0 to len\\(x\\)=6 in 3 steps"):
        bank.push_rows(bank.slots(["a", "b"]), x, np.array([0, 2, 5]))
    with pytest.raises(ValueError, match="slots repeat a stream"):
        bank.push_rows(np.array([0, 0]), x, np.array([0, 3, 6]))
    with pytest.raises(KeyError, match="slot 3 is not an open stream"):
        bank.push_rows(np.array([0, 3]), x, np.array([0, 3, 6]))
    with pytest.raises(streamrnn.ShapeError, match=r"shape \(N, 5\)"):
        bank.push_rows(bank.slots(["a", "b"]), np.zeros((6, 4), np.float32), np.array([0, 3, 6]))
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(streamrnn.InputError, match="stream 'b'"):
        bank.push_rows(bank.slots(["a", "b"]), bad, np.array([0, 3, 6]))
    assert np.array_equal(bank.h, h0) and not bank.n_frames.any()
