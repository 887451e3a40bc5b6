"""FeatureStream / AudioStream: any chunking == offline, timing, snapshots, non-finite input, model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

import streamrnn
from streamrnn.audio import MFCC, LogMel, Resampler
from streamrnn.audio.stream import AudioStream, FeatureStream
from streamrnn.errors import AudioError, ConfigError, ModelFileError, SnapshotError

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def speech():
    x, sr = sf.read(DATA / "speech.flac", dtype="float32")  # 22050 Hz espeak-ng recording
    return x, sr


def chunks(x, sizes):
    i, k = 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        yield x[i:i + n]
        i += n
        k += 1


def resampled(x, rate, out_rate):
    """The offline path: the same soxr resampler, everything at once."""
    if rate == out_rate:
        return x
    return Resampler(rate, out_rate).push(x)


def model_with(fe, cell="gru", has_norm=True, seed=0):
    m = streamrnn.Model.random(cell, fe.n_features, 16, output_size=3, activation="softmax", seed=seed,
                               frontend=fe.to_dict(), has_norm=has_norm)
    if has_norm:  # a real input normalisation, applied by the model kernel, not the front end
        t = m.tensors()
        t["norm.mean"] = np.linspace(-12, -2, fe.n_features).astype(np.float32)
        t["norm.std"] = np.linspace(1, 4, fe.n_features).astype(np.float32)
        m = streamrnn.Model(m.arch, t, frontend=fe.to_dict())
    return m


def test_feature_stream_same_rate_equals_compute(speech):
    x, sr = speech
    fe = LogMel(sample_rate=sr, n_fft=1024, win_length=551, hop_length=220)
    fs = FeatureStream(fe, sr)
    got = np.concatenate([fs.push(c) for c in chunks(x, [1, 7, 160, 4096, 777])])
    np.testing.assert_array_equal(got, fe.compute(x))
    assert fs.n_frames == len(got) and fs.frame_rate == sr / 220 and fs.sample_rate == sr
    # stereo and int16 input: downmixed by the mean, scaled by 1/32768
    fs.reset()
    st2 = np.stack([x, 0.5 * x], axis=1)
    np.testing.assert_allclose(fs.push(st2), fe.compute(0.75 * x), rtol=1e-5, atol=1e-5)
    fs.reset()
    i16 = (x * 20000).astype(np.int16)
    np.testing.assert_array_equal(fs.push(i16), fe.compute(i16))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_feature_stream_resamples(rate, speech):
    x22, sr = speech
    x = Resampler(sr, rate).push(x22) if rate != sr else x22  # the recording at this input rate
    fe = LogMel()
    fs = FeatureStream(fe.to_dict(), rate)
    got = np.concatenate([fs.push(c) for c in chunks(x, [4096, 13, 1000])])
    ref = fe.compute(resampled(x, rate, 16000))
    assert len(got) == len(ref) > 300
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)  # log-mel of signals equal to ~1e-6


@settings(max_examples=12, deadline=None)
@given(sizes=st.lists(st.integers(1, 6000), min_size=1, max_size=10),
       rate=st.sampled_from([None, 16000, 44100]), kind=st.sampled_from(["logmel", "mfcc"]))
def test_audio_stream_equals_forward_any_chunking(sizes, rate, kind):
    x = (np.random.default_rng(len(sizes)).standard_normal(30000) * 0.1).astype(np.float32)
    fe = LogMel(preemphasis=0.97) if kind == "logmel" else MFCC(n_mfcc=13)
    m = model_with(fe)
    s = m.audio_stream(sample_rate=rate)
    got = [s.push(c) for c in chunks(x, sizes)]
    got = np.concatenate(got) if got else np.empty((0, 3), np.float32)
    r = rate or 16000
    ref = m.forward(fe.compute(resampled(x, r, 16000)))
    assert got.shape == ref.shape and len(ref) > 50 and s.n_frames == len(ref)
    tol = 0 if r == 16000 else 1e-5
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


def test_audio_stream_requires_frontend():
    m = streamrnn.Model.random("gru", 40, 8, output_size=2)
    with pytest.raises(ConfigError, match="no 'frontend'"):
        m.audio_stream(16000)
    m = streamrnn.Model.random("gru", 13, 8, output_size=2, frontend=LogMel().to_dict())
    with pytest.raises(ConfigError, match="40 features per frame but the model takes 13"):
        AudioStream(m)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_audio_stream_snapshot_restore(rate, speech):
    x = Resampler(speech[1], rate).push(speech[0])
    fe = LogMel(preemphasis=0.97)
    m = model_with(fe, cell="lstm")
    a = m.audio_stream(rate)
    cut = int(rate * 2.5) + 123  # mid-frame, past the resampler's 1 s history
    a.push(x[:cut])
    snap = a.snapshot()
    rest = np.concatenate([a.push(c) for c in chunks(x[cut:], [1000])])
    b = m.audio_stream(rate)
    b.push(x[:5000])  # some other state, overwritten by the restore
    b.restore(snap)
    rest_b = np.concatenate([b.push(c) for c in chunks(x[cut:], [333])])
    assert len(rest_b) == len(rest) > 100 and b.n_frames == a.n_frames
    if rate == 16000:
        np.testing.assert_array_equal(rest_b, rest)  # no resampler: exact
    else:
        np.testing.assert_allclose(rest_b, rest, atol=1e-5)  # replayed soxr state: soxr's tolerance
    # reset then same input -> same outputs as a fresh stream
    b.reset()
    c = m.audio_stream(rate)
    np.testing.assert_array_equal(b.push(x[:20000]), c.push(x[:20000]))


def test_snapshot_into_another_shape_raises():
    fe = LogMel()
    a = model_with(fe).audio_stream()
    a.push(np.zeros(5000, np.float32))
    snap = a.snapshot()
    other = streamrnn.Model.random("gru", 40, 32, output_size=3, frontend=fe.to_dict())
    b = other.audio_stream()
    with pytest.raises(SnapshotError, match="hidden_size"):
        b.restore(snap)
    c = model_with(fe).audio_stream(sample_rate=48000)  # same model, other input rate
    c.push(np.ones(4800, np.float32) * 0.1)
    n0 = c.n_frames
    with pytest.raises(SnapshotError, match="sample_rate"):
        c.restore(snap)
    assert c.n_frames == n0  # a failed restore leaves the stream as it was
    m2 = model_with(LogMel(preemphasis=0.5))
    with pytest.raises(SnapshotError):
        m2.audio_stream().restore(snap)
    with pytest.raises(SnapshotError, match="not an AudioStream snapshot"):
        a.restore({"version": 1, "kind": "stream"})
    with pytest.raises(SnapshotError, match="version"):
        a.restore({**snap, "version": 99})


def test_frame_timing_same_rate():
    fs = FeatureStream(LogMel(), 16000)
    assert fs.frame_rate == 100.0
    assert [fs.frame_end_sample(k) for k in (0, 1, 10)] == [400, 560, 2000]
    # frame k is emitted exactly when frame_end_sample(k) samples have arrived
    assert len(fs.push(np.zeros(559, np.float32))) == 1
    assert len(fs.push(np.zeros(1, np.float32))) == 1


def test_frame_end_sample_with_resampler():
    """Input past frame_end_sample(k) does not change frame k (beyond soxr's float32 noise); input inside
    the frame's window does."""
    rate = 48000
    fs = FeatureStream(LogMel(log=None), rate)
    k = 20
    end = fs.frame_end_sample(k)
    last_own = int((k * 160 + 399) * 3)  # the frame's last 16 kHz sample, in 48 kHz samples
    lookahead = fs.resampler.lookahead
    assert 20 < lookahead < 2000 and end == int(np.floor(last_own + lookahead)) + 1
    x = (np.random.default_rng(8).standard_normal(rate) * 0.1).astype(np.float32)

    def frame_k(sig):
        r = Resampler(rate, 16000)
        return LogMel(log=None).compute(np.concatenate([r.push(sig), r.flush()]))[k]

    base = frame_k(x)
    after = x.copy()
    after[end:end + 2000] += 0.5
    assert np.abs(frame_k(after) - base).max() <= 1e-4 * np.abs(base).max()
    inside = x.copy()
    inside[(k * 160 + 200) * 3] += 0.5  # the window's centre
    assert np.abs(frame_k(inside) - base).max() > 1e-2 * np.abs(base).max()


def test_nonfinite_samples():
    x = np.random.default_rng(9).standard_normal(4000).astype(np.float32) * 0.1
    bad = x.copy()
    bad[[5, 6, 3000]] = np.nan
    m = model_with(LogMel())
    s = m.audio_stream(44100)
    with pytest.raises(AudioError, match="3 NaN/Inf samples"):
        s.push(bad)
    assert s.n_frames == 0
    z = AudioStream(m, 44100, nonfinite="zero")  # Model.audio_stream takes only the rate
    clean = x.copy()
    clean[[5, 6, 3000]] = 0
    np.testing.assert_array_equal(z.push(bad), m.audio_stream(44100).push(clean))
    assert z.n_nonfinite == 3
    z.reset()
    assert z.n_nonfinite == 0
    with pytest.raises(ConfigError, match="nonfinite"):
        FeatureStream(LogMel(), 16000, nonfinite="skip")


def test_nonfinite_samples_same_rate():
    """Same rate (no resampler): the front end's kernel checks the samples; the count belongs to the
    FeatureStream, a rejected block changes nothing, and the error names the samples."""
    x = np.random.default_rng(10).standard_normal(4000).astype(np.float32) * 0.1
    bad = x.copy()
    bad[[7, 2500]] = [np.inf, np.nan]
    fe = LogMel(preemphasis=0.97)
    fs = FeatureStream(fe, 16000)
    a = fs.push(x[:1000])
    with pytest.raises(AudioError, match=r"samples contains 1 NaN/Inf samples \(first at sample 1500\)"):
        fs.push(bad[1000:])  # sample 2500 of the signal is sample 1500 of the block
    assert fs.n_frames == len(a) and fs.n_nonfinite == 0
    np.testing.assert_array_equal(np.concatenate([a, fs.push(x[1000:])]), fe.compute(x))
    z = FeatureStream(fe, 16000, nonfinite="zero")
    clean = x.copy()
    clean[[7, 2500]] = 0
    got = np.concatenate([z.push(bad[:1600]), z.push(bad[1600:])])
    np.testing.assert_array_equal(got, fe.compute(clean))
    assert z.n_nonfinite == 2 and z.frontend.n_nonfinite == 0
    assert z.snapshot()["n_nonfinite"] == 2


def test_feature_stream_mono_column_input(speech):
    """(n, 1) blocks (the wire's layout) at the front end's rate: the frames of the same samples as (n,)."""
    x = speech[0][:30000]
    fe = LogMel(sample_rate=22050, preemphasis=0.97)
    fs = FeatureStream(fe, 22050)
    got = np.concatenate([fs.push(c[:, None]) for c in chunks(x, [1600, 7, 4096])])
    np.testing.assert_array_equal(got, fe.compute(x))
    fs.reset()
    i16 = (x * 20000).astype(np.int16)
    np.testing.assert_array_equal(fs.push(i16[:, None]), fe.compute(i16))
    bad = x[:2000, None].copy()
    bad[1234, 0] = np.inf
    with pytest.raises(AudioError, match=r"samples contains 1 NaN/Inf samples \(first at sample 1234\)"):
        fs.push(bad)
    with pytest.raises(AudioError, match="dtype int32"):
        fs.push(np.zeros((100, 1), np.int32))


def test_bad_stream_input():
    fs = FeatureStream(LogMel(), 16000)
    with pytest.raises(AudioError, match="dtype int32"):
        fs.push(np.zeros(100, np.int32))
    with pytest.raises(AudioError, match="shape"):
        fs.push(np.zeros((2, 2, 2), np.float32))
    for rate in (0, -8000, float("nan")):
        with pytest.raises(AudioError, match="sample_rate"):
            FeatureStream(LogMel(), rate)
    with pytest.raises(ConfigError):
        FeatureStream({"type": "logmel", "fmax": 1e5}, 16000)


def test_model_file_roundtrip_with_frontend(tmp_path):
    fe = MFCC(n_mfcc=20, lifter=22, preemphasis=0.97)
    m = model_with(fe)
    p = tmp_path / "m.safetensors"
    streamrnn.save_model(m, p)
    m2 = streamrnn.load_model(p)
    assert m2.frontend == fe.to_dict()
    x = np.random.default_rng(10).standard_normal(16000).astype(np.float32) * 0.1
    np.testing.assert_array_equal(m2.audio_stream().push(x), m.audio_stream().push(x))
    bad = streamrnn.Model.random("gru", 20, 8, frontend={**fe.to_dict(), "n_mel": 40})
    streamrnn.save_model(bad, tmp_path / "bad.safetensors")
    with pytest.raises(ModelFileError, match="n_mel"):
        streamrnn.load_model(tmp_path / "bad.safetensors")


def test_malformed_snapshots_raise_snapshot_error():
    fe = LogMel(preemphasis=0.97)
    a = model_with(fe).audio_stream(48000)
    x = np.random.default_rng(11).standard_normal(20000).astype(np.float32) * 0.1
    a.push(x)
    snap = a.snapshot()
    ref = a.snapshot()
    broken = [
        {**snap, "features": {**snap["features"], "frontend": {**snap["features"]["frontend"], "buffer": np.zeros(999)}}},
        {**snap, "features": {**snap["features"], "frontend": {k: v for k, v in snap["features"]["frontend"].items()
                                                              if k != "prev"}}},
        {**snap, "features": {**snap["features"], "resampler": {**snap["features"]["resampler"], "hist_start": 1}}},
        {**snap, "features": {**snap["features"], "resampler": None}},
        {k: v for k, v in snap.items() if k != "model"},
        {**snap, "model": {**snap["model"], "h": np.zeros((5, 5, 5))}},
    ]
    b = model_with(fe).audio_stream(48000)
    b.push(x[:7777])
    before = b.snapshot()
    cont = b.push(x[7777:9000])
    for bad in broken:
        b.restore(before)
        with pytest.raises(SnapshotError):
            b.restore(bad)
        np.testing.assert_array_equal(b.push(x[7777:9000]), cont)  # the failed restore changed nothing
    b.restore(ref)
    np.testing.assert_allclose(b.push(x[:3000]), a.push(x[:3000]), atol=1e-5)
