"""Resampler: block-wise == one-shot soxr, anti-aliasing, alignment, downmix, snapshots, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrnn.audio import Resampler
from streamrnn.errors import AudioError, ConfigError, SnapshotError

RATES = [8000, 22050, 44100, 48000]


def push_blocks(r, x, sizes):
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(r.push(x[i:i + n]))
        i += n
        k += 1
    return out


@pytest.mark.parametrize("rate", RATES)
def test_blockwise_equals_one_shot(rate):
    x = (np.random.default_rng(rate).standard_normal(rate * 2) * 0.2).astype(np.float32)
    ref = soxr.resample(x, rate, 16000, "HQ")  # soxr's one-shot resampler
    r = Resampler(rate, 16000)
    got = np.concatenate(push_blocks(r, x, [1, 7, 160, 4096, 333]) + [r.flush()])
    assert len(got) == len(ref) == round(len(x) * 16000 / rate)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)  # soxr's float32 tolerance
    assert r.n_in == len(x) and r.n_out == len(got)


@settings(max_examples=15, deadline=None)
@given(rate=st.sampled_from(RATES), sizes=st.lists(st.integers(1, 6000), min_size=1, max_size=8))
def test_blockwise_random_sizes(rate, sizes):
    x = (np.random.default_rng(1).standard_normal(rate) * 0.2).astype(np.float32)
    r = Resampler(rate, 16000)
    got = np.concatenate(push_blocks(r, x, sizes) + [r.flush()])
    np.testing.assert_allclose(got, soxr.resample(x, rate, 16000, "HQ"), rtol=0, atol=1e-6)


def tone(f, rate, seconds=1.0, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


def rms(v):
    return float(np.sqrt(np.mean(np.square(v, dtype=np.float64))))


def test_anti_aliasing_and_passband():
    """48 kHz -> 16 kHz: a 12 kHz tone (above the new 8 kHz Nyquist; a plain decimator would fold it to
    4 kHz at full level) is attenuated by more than 80 dB; a 1 kHz tone passes at the same level and
    stays time-aligned (soxr compensates its delay)."""
    r = Resampler(48000, 16000)
    hi = np.concatenate([r.push(tone(12000, 48000)), r.flush()])[2000:-2000]  # skip the edges
    naive = tone(12000, 48000)[::3][2000:-2000]  # decimation without a filter: the alias at 4 kHz
    assert rms(naive) > 0.3
    assert 20 * np.log10(rms(hi) / rms(naive)) < -80
    r.reset()
    lo = np.concatenate([r.push(tone(1000, 48000)), r.flush()])
    want = tone(1000, 16000)
    np.testing.assert_allclose(lo[2000:-2000], want[2000:-2000], atol=2e-3)  # level and phase


def test_identity_when_rates_equal():
    r = Resampler(16000, 16000, channels=2)
    x = np.random.default_rng(2).standard_normal((1000, 2)).astype(np.float32)
    y = r.push(x)
    np.testing.assert_array_equal(y, x.mean(axis=1, dtype=np.float32))
    assert len(r.flush()) == 0 and r.delay() == 0 and r.lookahead == 0


def test_downmix_is_mean_of_channels():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4410, 3)) * 0.2).astype(np.float32)
    r3 = Resampler(44100, 16000, channels=3)
    r1 = Resampler(44100, 16000)
    a = np.concatenate([r3.push(x), r3.flush()])
    b = np.concatenate([r1.push(x.mean(axis=1)), r1.flush()])
    np.testing.assert_allclose(a, b, atol=1e-7)
    # opposite channels cancel
    s = tone(440, 44100, 0.1)
    r2 = Resampler(44100, 16000, channels=2)
    c = np.concatenate([r2.push(np.stack([s, -s], axis=1)), r2.flush()])
    assert np.abs(c).max() < 1e-6


def test_int16_input():
    x = (np.random.default_rng(4).standard_normal(8000) * 3000).astype(np.int16)
    a, b = Resampler(8000, 16000), Resampler(8000, 16000)
    np.testing.assert_allclose(np.concatenate([a.push(x), a.flush()]),
                               np.concatenate([b.push(x / 32768.0), b.flush()]), atol=1e-7)


@pytest.mark.parametrize("rate", RATES)
def test_snapshot_restore_continues_the_stream(rate):
    x = (np.random.default_rng(5).standard_normal(rate * 3) * 0.2).astype(np.float32)
    r = Resampler(rate, 16000)
    cut = int(rate * 2.3) + 17  # well past history_seconds (1 s): the replay starts mid-stream
    r.push(x[:cut])
    snap = r.snapshot()
    assert snap["hist_start"] > 0 and len(snap["history"]) < rate * 1.1  # bounded memory
    rest = np.concatenate([r.push(x[cut:]), r.flush()])
    r2 = Resampler(rate, 16000)
    r2.restore(snap)
    rest2 = np.concatenate(push_blocks(r2, x[cut:], [999]) + [r2.flush()])
    assert len(rest2) == len(rest)
    np.testing.assert_allclose(rest2, rest, atol=1e-6)
    # a young stream (shorter than the history) is replayed from its start: exact
    r.reset()
    r.push(x[:3000])
    snap = r.snapshot()
    assert snap["hist_start"] == 0
    r2.restore(snap)
    np.testing.assert_array_equal(r2.push(x[3000:9000]), r.push(x[3000:9000]))


def test_snapshot_of_restored_stream():
    x = (np.random.default_rng(6).standard_normal(48000 * 3) * 0.2).astype(np.float32)
    a = Resampler(48000, 16000)
    a.push(x[:50000])
    b = Resampler(48000, 16000)
    b.restore(a.snapshot())
    b.push(x[50000:90000])
    c = Resampler(48000, 16000)
    c.restore(b.snapshot())
    ref = np.concatenate([a.push(x[50000:90000]), a.push(x[90000:]), a.flush()])[-len(x[90000:]) // 3:]
    got = np.concatenate([c.push(x[90000:]), c.flush()])
    np.testing.assert_allclose(got[-len(ref):], ref, atol=1e-6)


def test_snapshot_mismatch():
    snap = Resampler(48000, 16000).snapshot()
    with pytest.raises(SnapshotError, match="settings"):
        Resampler(44100, 16000).restore(snap)
    with pytest.raises(SnapshotError):
        Resampler(48000, 16000).restore({"kind": "stream"})


@pytest.mark.parametrize("args,kw,err,match", [
    ((0, 16000), {}, AudioError, "in_rate=0 must be > 0"),
    ((48000, -1), {}, AudioError, "out_rate=-1 must be > 0"),
    ((float("inf"), 16000), {}, AudioError, "in_rate"),
    ((48000, 16000), {"channels": 0}, AudioError, "channels"),
    ((48000, 16000), {"quality": "best"}, ConfigError, "quality"),
    ((48000, 16000), {"history_seconds": 0.01}, ConfigError, "history_seconds"),
])
def test_bad_construction(args, kw, err, match):
    with pytest.raises(err, match=match):
        Resampler(*args, **kw)


def test_bad_blocks():
    r = Resampler(48000, 16000, channels=2)
    with pytest.raises(AudioError, match="1 channel"):
        r.push(np.zeros(100, np.float32))
    with pytest.raises(AudioError, match="NaN/Inf"):
        r.push(np.full((100, 2), np.nan, np.float32))
    with pytest.raises(AudioError, match="dtype int32"):
        r.push(np.zeros((100, 2), np.int32))
    assert r.n_in == 0


@pytest.mark.parametrize("rates,blocks", [((48000, 16000), (480, 4800, 17, 30000)), ((44100, 16000), (441, 3, 9999))])
def test_snapshot_history_is_exactly_the_input_tail_after_many_pushes(rates, blocks):
    """The history kept for snapshots is the input from a period-aligned start, whatever the push sizes
    (it is appended in place and moved only when its buffer fills)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(5 * rates[0]).astype(np.float32)
    r = Resampler(*rates)
    pos = k = 0
    while pos < len(x):
        n = blocks[k % len(blocks)]
        r.push(x[pos:pos + n])
        pos, k = min(len(x), pos + n), k + 1
        snap = r.snapshot()
        start = snap["hist_start"]
        assert start % r._period == 0 and pos - start >= min(pos, r._hist_len)
        np.testing.assert_array_equal(snap["history"], x[start:pos])


def test_identity_push_never_returns_a_view_of_the_callers_block():
    r = Resampler(16000, 16000)
    for block in (np.zeros(160, np.float32), np.zeros((160, 1), np.float32)):
        y = r.push(block)
        block[:] = 1.0
        assert not y.any()


def test_known_block_periods_are_what_the_search_finds(monkeypatch):
    """The table of soxr block periods is a shortcut, not a belief: the search re-derives each entry."""
    from streamrnn.audio import resample

    for (a, b), q in resample._KNOWN_PERIODS.items():
        monkeypatch.setattr(resample, "_KNOWN_PERIODS", {})
        resample.block_period.cache_clear()
        assert resample.block_period(a, b) == q, (a, b)
        monkeypatch.undo()
    resample.block_period.cache_clear()


@pytest.mark.parametrize("rate", [8000, 48000, 96000, 44100])
def test_history_is_bounded_and_block_aligned_where_the_block_fits(rate):
    """Where soxr's block period fits in history_seconds with 0.25 s to spare, the history starts at
    its multiples and never exceeds history_seconds; else (44.1 kHz family, ~5 s blocks) it is the
    ratio-period-aligned tail as before."""
    from streamrnn.audio.resample import block_period

    r = Resampler(rate, 16000)
    q = block_period(rate, 16000)
    fits = q <= 0.75 * rate
    assert fits == (rate != 44100)
    x = np.zeros(rate // 10, np.float32)
    for i in range(1, 101):  # 10 s
        r.push(x)
        snap = r.snapshot()
        n, pos = len(snap["history"]), i * len(x)
        assert snap["hist_start"] + n == pos
        if fits:
            assert snap["hist_start"] % q == 0 and min(pos, 0.25 * rate) <= n <= rate
        else:
            assert min(pos, rate) <= n < rate + r._period
