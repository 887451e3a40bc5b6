"""LogMel / MFCC: plain-NumPy reference, librosa parity on real speech, streaming == offline, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrnn.audio import MFCC, LogMel, frontend_from_dict
from streamrnn.audio.frontend import mel_filterbank
from streamrnn.errors import AudioError, ConfigError, SnapshotError

librosa = pytest.importorskip("librosa")  # in the `test` extra; parity cannot be checked without it

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def speech():
    """A real recording: espeak-ng speech, 22050 Hz mono 16-bit FLAC (tests/data/speech.flac)."""
    x, sr = sf.read(DATA / "speech.flac", dtype="float64")
    assert sr == 22050 and x.ndim == 1 and len(x) > sr
    return x, sr


@pytest.fixture(scope="module")
def speech16k(speech):
    x, sr = speech
    return librosa.resample(x, orig_sr=sr, target_sr=16000, res_type="soxr_hq"), 16000


# --- the plain-NumPy reference, written from the equations -----------------------------------------

def naive_features(x, fe: LogMel):
    """frames [t*hop, t*hop+win) -> window -> zero-pad to n_fft -> |rfft|^power -> mel -> log (-> DCT)."""
    import scipy.signal

    x = np.asarray(x, dtype=np.float64)
    if fe.preemphasis:
        x = np.concatenate([x[:1], x[1:] - fe.preemphasis * x[:-1]])
    w = scipy.signal.get_window(fe.window, fe.win_length, fftbins=True)
    T = 1 + (len(x) - fe.win_length) // fe.hop_length if len(x) >= fe.win_length else 0
    fb = mel_filterbank(fe.sample_rate, fe.n_fft, fe.n_mels, fe.fmin, fe.fmax, fe.htk, fe.norm)
    out = []
    for t in range(T):
        frame = x[t * fe.hop_length: t * fe.hop_length + fe.win_length] * w
        spec = np.abs(np.fft.rfft(frame, fe.n_fft)) ** fe.power
        mel = fb @ spec
        if fe.log == "ln":
            mel = np.log(mel + fe.log_floor)
        elif fe.log == "db":
            mel = 10 * np.log10(np.maximum(mel, fe.log_floor))
        if isinstance(fe, MFCC):
            import scipy.fft

            c = scipy.fft.dct(mel, type=2, norm="ortho")[: fe.n_mfcc]
            if fe.lifter:
                n = np.arange(fe.n_mfcc)
                c = c * (1 + fe.lifter / 2 * np.sin(np.pi * (n + 1) / fe.lifter))
            mel = c
        out.append(mel)
    return np.array(out).reshape(T, fe.n_features)


CONFIGS = [
    dict(),
    dict(log="db", power=1.0, htk=True, norm=None),
    dict(log=None, n_fft=400, fmin=50.0, fmax=7600.0),          # non-power-of-two n_fft: DFT path
    dict(preemphasis=0.97, window="hamming", n_mels=64, n_fft=1024, win_length=1024, hop_length=256),
    dict(hop_length=500, win_length=300, n_fft=512),             # hop > win: samples no frame uses
    dict(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=23, power=1.5),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_kernel_matches_numpy_reference(cfg, speech16k):
    x, _ = speech16k
    fe = LogMel(**cfg)
    got = fe.compute(x.astype(np.float32))
    ref = naive_features(x.astype(np.float32), fe)
    assert got.shape == ref.shape and got.dtype == np.float32 and len(got) > 100
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("n_fft", [4, 6, 8, 16, 32, 64, 2048])
def test_small_and_large_fft_sizes(n_fft):
    """Every stage of the radix-2 FFT (sizes 8+), and the DFT path (4, 6), against numpy.fft."""
    x = np.random.default_rng(n_fft).standard_normal(6000)
    fe = LogMel(n_fft=n_fft, win_length=n_fft - 1, hop_length=max(1, n_fft // 2), n_mels=2, log=None)
    ref = naive_features(x, fe)
    np.testing.assert_allclose(fe.compute(x), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_mfcc_matches_numpy_reference(speech16k):
    x, _ = speech16k
    for fe in (MFCC(), MFCC(n_mfcc=20, lifter=22, log="db", preemphasis=0.5, n_fft=400)):
        ref = naive_features(x, fe)
        np.testing.assert_allclose(fe.compute(x), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# --- librosa parity ------------------------------------------------------------------------------

@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("norm", ["slaney", None])
@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(16000, 512, 40, 0.0, None), (22050, 2048, 128, 30.0, 8000.0)])
def test_filterbank_matches_librosa(htk, norm, sr, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm,
                              dtype=np.float64)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12 * ref.max())


def librosa_mel(x, fe: LogMel):
    """librosa with center=False.  librosa centres a win_length window inside each n_fft frame, so its
    frame t covers x[t*hop + off, t*hop + off + win) with off = (n_fft - win)//2; padding the signal
    with `off` zeros in front lines its frames up with ours ([t*hop, t*hop + win)).  |FFT| does not
    depend on where the zeros of the n_fft frame sit."""
    off = (fe.n_fft - fe.win_length) // 2
    S = librosa.feature.melspectrogram(
        y=np.pad(x, (off, 0)), sr=fe.sample_rate, n_fft=fe.n_fft, hop_length=fe.hop_length,
        win_length=fe.win_length, window=fe.window, center=False, power=fe.power, n_mels=fe.n_mels,
        fmin=fe.fmin, fmax=fe.fmax, htk=fe.htk, norm=fe.norm)
    return S.T  # (T', n_mels); T' <= T: librosa needs n_fft samples for its last frame


@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("norm", ["slaney", None])
@pytest.mark.parametrize("which", ["16k", "22k"])
def test_melspectrogram_matches_librosa_on_speech(htk, norm, which, speech, speech16k):
    if which == "16k":
        x, sr = speech16k
        fe = LogMel(sample_rate=sr, htk=htk, norm=norm, log=None)
    else:
        x, sr = speech
        fe = LogMel(sample_rate=sr, n_fft=1024, win_length=551, hop_length=220, n_mels=64, fmax=10000.0,
                    htk=htk, norm=norm, log=None, power=1.0)
    ours = fe.compute(x)
    ref = librosa_mel(x, fe)
    assert len(ref) > 200 and len(ours) - len(ref) in range(0, 4)
    np.testing.assert_allclose(ours[: len(ref)], ref, rtol=1e-4, atol=0)  # relative, bin by bin


@pytest.mark.parametrize("lifter", [0, 22])
@pytest.mark.parametrize("htk", [False, True])
def test_mfcc_matches_librosa_on_speech(lifter, htk, speech16k):
    """MFCC(log="db", log_floor=1e-10) is librosa.feature.mfcc on power_to_db(mel, top_db=None)."""
    x, sr = speech16k
    fe = MFCC(n_mfcc=20, lifter=lifter, sample_rate=sr, htk=htk, log="db", log_floor=1e-10)
    mel = librosa_mel(x, LogMel(**{k: v for k, v in fe.to_dict().items()
                                   if k not in ("type", "n_mfcc", "lifter")}))
    ref = librosa.feature.mfcc(S=librosa.power_to_db(mel.T, ref=1.0, amin=1e-10, top_db=None),
                               n_mfcc=20, lifter=lifter).T
    ours = fe.compute(x)[: len(ref)]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_log_modes(speech16k):
    x, _ = speech16k
    p = LogMel(log=None).compute(x).astype(np.float64)
    np.testing.assert_allclose(LogMel(log="ln", log_floor=1e-6).compute(x), np.log(p + 1e-6), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(LogMel(log="db", log_floor=1e-10).compute(x),
                               librosa.power_to_db(p, amin=1e-10, top_db=None), rtol=1e-5, atol=1e-4)


# --- streaming == offline --------------------------------------------------------------------------

def push_in_blocks(fe, x, sizes):
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(fe.push(x[i:i + n]))
        i += n
        k += 1
    return np.concatenate(out) if out else np.empty((0, fe.n_features), np.float32)


@pytest.mark.parametrize("block", [1, 7, 160, 4096])
@pytest.mark.parametrize("cfg", [dict(), dict(preemphasis=0.97), dict(hop_length=500, win_length=300)])
def test_push_any_fixed_block_size_equals_compute(block, cfg, speech16k):
    x = speech16k[0][:16000 if block == 1 else None].astype(np.float32)
    fe = LogMel(**cfg)
    ref = fe.compute(x)
    got = push_in_blocks(fe, x, [block])
    assert got.shape == ref.shape and fe.n_frames == len(ref)
    np.testing.assert_array_equal(got, ref)  # same kernel, same samples: bit-identical (<< 1e-6)


@pytest.mark.parametrize("make", [LogMel, lambda: MFCC(preemphasis=0.97, lifter=22),
                                  lambda: LogMel(n_fft=400),  # direct-DFT path
                                  lambda: LogMel(n_fft=256, win_length=256, hop_length=450, power=1.0, log="db")],
                         ids=["logmel", "mfcc-pre", "dft", "hop>win"])
def test_frames_bit_identical_in_every_tile_position(make, speech16k):
    """The kernel advances frames in tiles of 8 (then one at a time) that share every loop: a frame's
    bits must not depend on which tile (or which lane of it) computed it."""
    fe = make()
    x = speech16k[0][:16000].astype(np.float32)
    ref = fe.compute(x)  # (T, F): tiles of 8, then the remainder
    assert len(ref) >= 30
    for n in range(1, 20):  # signals of n frames: tilings 1, 1+1, ..., 8, 8+1, ..., 8+8+1+1+1
        np.testing.assert_array_equal(fe.compute(x[:fe.win_length + (n - 1) * fe.hop_length]), ref[:n])
    for k in range(1, 18):  # push k frames' worth of samples at a time
        fe.reset()
        got = push_in_blocks(fe, x, [k * fe.hop_length])
        np.testing.assert_array_equal(got, ref)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=12),
       which=st.sampled_from(["logmel", "mfcc-pre", "hop>win"]), seed=st.integers(0, 2**16))
def test_push_random_block_sizes_equals_compute(sizes, which, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(rng.integers(0, 12000)) * 0.3).astype(np.float32)
    fe = {"logmel": LogMel(), "mfcc-pre": MFCC(preemphasis=0.97, lifter=22),
          "hop>win": LogMel(hop_length=450, win_length=256, n_fft=256)}[which]
    got = push_in_blocks(fe, x, sizes)
    ref = fe.compute(x) if len(x) else np.empty((0, fe.n_features), np.float32)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=8), n_bad=st.integers(1, 6),
       which=st.sampled_from(["pre", "hop>win-pre", "plain"]), seed=st.integers(0, 2**16))
def test_push_nonfinite_zero_any_chunking_equals_zeroed_signal(sizes, n_bad, which, seed):
    """nonfinite="zero" takes the one-sample-at-a-time path of the push kernel: the zeroed samples must
    feed the pre-emphasis (also across a block edge and across skipped samples, hop > win)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(rng.integers(500, 6000))) * 0.3).astype(np.float32)
    idx = rng.integers(0, len(x), n_bad)
    bad = x.copy()
    bad[idx] = rng.choice([np.nan, np.inf, -np.inf], n_bad)
    zeroed = x.copy()
    zeroed[idx] = 0
    fe = {"pre": LogMel(preemphasis=0.97), "hop>win-pre": LogMel(hop_length=450, win_length=256, n_fft=256,
                                                                  preemphasis=0.9),
          "plain": LogMel()}[which]
    out, i, k = [], 0, 0
    while i < len(bad):
        out.append(fe.push(bad[i:i + sizes[k % len(sizes)]], nonfinite="zero"))
        i += sizes[k % len(sizes)]
        k += 1
    np.testing.assert_array_equal(np.concatenate(out), fe.compute(zeroed))
    assert fe.n_nonfinite == len(np.unique(idx))
    np.testing.assert_allclose(fe.compute(zeroed), naive_features(zeroed, fe), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cfg", [dict(preemphasis=0.97), dict(hop_length=450, win_length=256, n_fft=256,
                                                               preemphasis=0.5)])
def test_rejected_block_mid_stream_leaves_state_untouched(cfg):
    """A block with NaN raises before anything changes: the stream continues as if it never came
    (leftover samples, pre-emphasis sample and skip count all kept)."""
    x = np.random.default_rng(11).standard_normal(6000).astype(np.float32)
    fe = LogMel(**cfg)
    a = fe.push(x[:1234])
    state = (fe.pending, fe.n_frames, fe.snapshot()["prev"], fe.snapshot()["skip"])
    bad = x[1234:2000].copy()
    bad[300] = np.nan
    with pytest.raises(AudioError, match=r"1 NaN/Inf samples \(first at sample 300\)"):
        fe.push(bad)
    assert (fe.pending, fe.n_frames, fe.snapshot()["prev"], fe.snapshot()["skip"]) == state
    b = fe.push(x[1234:])
    np.testing.assert_array_equal(np.concatenate([a, b]), fe.compute(x))


def test_push_and_compute_accept_strided_lists_and_float64():
    """Inputs off the fast path (non-contiguous, lists, float64, int16) give the frames of the same
    samples as a contiguous float32 array."""
    x = (np.random.default_rng(12).standard_normal(8000) * 0.2).astype(np.float32)
    fe = LogMel(preemphasis=0.97)
    ref = fe.compute(x)
    wide = np.zeros(2 * len(x), np.float32)
    wide[::2] = x
    np.testing.assert_array_equal(fe.compute(wide[::2]), ref)  # strided view
    np.testing.assert_array_equal(fe.compute(x.astype(np.float64)), ref)  # float32 -> float64 is exact
    np.testing.assert_array_equal(fe.compute(x[:1000].tolist()), fe.compute(x[:1000]))
    got = np.concatenate([fe.push(wide[:6000:2]), fe.push(x[3000:5000].astype(np.float64)),
                          fe.push(x[5000:].tolist())])
    np.testing.assert_array_equal(got, ref)


def test_equal_settings_share_tables_not_state():
    """Front ends with equal settings share their read-only tables (one copy for a server's thousand
    streams) but never their streaming state."""
    a, b = LogMel(), LogMel()
    assert a._tables is b._tables and a._tables.ftab is b._tables.ftab
    assert LogMel(n_mels=20)._tables.ftab is not a._tables.ftab
    assert MFCC(n_mfcc=13)._tables.ftab is not MFCC(n_mfcc=20)._tables.ftab
    x = np.random.default_rng(13).standard_normal(4000).astype(np.float32)
    ref = LogMel().compute(x)
    a0 = a.push(x[:1000])
    assert b.pending == 0 and b.n_frames == 0
    got = np.concatenate([b.push(x[:2500]), b.push(x[2500:])])
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(np.concatenate([a0, a.push(x[1000:])]), ref)  # b's pushes did not touch a


def test_reset_and_pending():
    fe = LogMel()
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    a = fe.push(x)
    assert len(a) == 4 and fe.pending == 1000 - 4 * 160 and fe.n_frames == 4
    fe.reset()
    assert fe.pending == 0 and fe.n_frames == 0
    np.testing.assert_array_equal(fe.push(x), a)


def test_preemphasis_state_carries_across_pushes():
    x = np.random.default_rng(2).standard_normal(2000)
    fe = LogMel(preemphasis=0.97)
    ref = fe.compute(x)
    got = np.concatenate([fe.push(x[:401]), fe.push(x[401:])])
    np.testing.assert_array_equal(got, ref)
    # the same frames come from pre-emphasising the whole signal first; restarting it at the block
    # boundary (state lost) changes the frames that span sample 401
    def pre(v):
        return np.concatenate([v[:1], v[1:] - 0.97 * v[:-1]])

    plain = LogMel()
    np.testing.assert_allclose(plain.compute(pre(x)), ref, rtol=1e-6)
    lost = plain.compute(np.concatenate([pre(x[:401]), pre(x[401:])]))
    assert not np.allclose(lost[:3], ref[:3], rtol=1e-3)


def test_snapshot_restore_roundtrip():
    x = np.random.default_rng(3).standard_normal(5000)
    fe = MFCC(preemphasis=0.9)
    fe.push(x[:1234])
    snap = fe.snapshot()
    json.dumps({k: v for k, v in snap.items() if k != "buffer"})  # everything but the array is JSON-able
    rest_a = fe.push(x[1234:])
    fe2 = MFCC(preemphasis=0.9)
    fe2.restore(snap)
    np.testing.assert_array_equal(fe2.push(x[1234:]), rest_a)
    assert fe2.n_frames == fe.n_frames
    with pytest.raises(SnapshotError, match="preemphasis"):
        MFCC(preemphasis=0.5).restore(snap)
    with pytest.raises(SnapshotError):
        LogMel().restore({"kind": "stream"})


def test_int16_input_is_scaled():
    x = (np.random.default_rng(4).standard_normal(3000) * 3000).astype(np.int16)
    fe = LogMel()
    np.testing.assert_array_equal(fe.compute(x), fe.compute(x.astype(np.float64) / 32768.0))


def test_input_not_mutated():
    x = np.random.default_rng(5).standard_normal(3000).astype(np.float32)
    x0 = x.copy()
    fe = LogMel(preemphasis=0.97)
    fe.compute(x)
    fe.push(x)
    np.testing.assert_array_equal(x, x0)


# --- settings dict --------------------------------------------------------------------------------

@pytest.mark.parametrize("fe", [LogMel(), LogMel(fmax=7000.0, htk=True, norm=None, log="db", preemphasis=0.97),
                                MFCC(n_mfcc=20, lifter=22, sample_rate=22050)])
def test_to_dict_roundtrip(fe):
    d = json.loads(json.dumps(fe.to_dict()))  # JSON-able, as it is stored in the model file
    assert d["type"] == fe.kind
    fe2 = frontend_from_dict(d)
    assert type(fe2) is type(fe) and fe2.to_dict() == fe.to_dict() and fe2 == fe
    x = np.random.default_rng(6).standard_normal(4000)
    np.testing.assert_array_equal(fe2.compute(x), fe.compute(x))


def test_frontend_from_dict_errors():
    with pytest.raises(ConfigError, match=r"\['nmels'\]"):
        frontend_from_dict({"type": "logmel", "nmels": 40})
    with pytest.raises(ConfigError, match="n_mfcc"):
        frontend_from_dict({"type": "logmel", "n_mfcc": 13})  # an MFCC key on a log-mel front end
    with pytest.raises(ConfigError, match="'type'"):
        frontend_from_dict({"type": "stft"})
    with pytest.raises(ConfigError, match="'type'"):
        frontend_from_dict({"n_mels": 40})
    with pytest.raises(ConfigError, match="n_mels"):
        frontend_from_dict({"type": "logmel", "n_mels": "forty"})
    with pytest.raises(ConfigError, match="dict"):
        frontend_from_dict([("type", "logmel")])
    assert frontend_from_dict({"type": "logmel"}) == LogMel()  # missing keys take the defaults


# --- bad settings and bad input -------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    (dict(sample_rate=0), "sample_rate=0 must be > 0"),
    (dict(sample_rate=-16000), "must be > 0"),
    (dict(sample_rate=float("nan")), "sample_rate"),
    (dict(fmax=9000.0), r"fmax=9000 Hz is above the Nyquist frequency 8000 Hz"),
    (dict(win_length=600), r"win_length=600 must be <= n_fft=512"),
    (dict(fmin=8000.0), "fmin"),
    (dict(n_fft=512.5), "n_fft must be an integer"),
    (dict(hop_length=0), "hop_length=0"),
    (dict(norm="l2"), "norm"),
    (dict(log="log10"), "log"),
    (dict(log_floor=0.0), "log_floor"),
    (dict(power=0), "power"),
    (dict(preemphasis=1.0), "preemphasis"),
    (dict(window="no-such-window"), "window"),
    (dict(htk="yes"), "htk"),
])
def test_bad_settings(kw, match):
    with pytest.raises(ConfigError, match=match):
        LogMel(**kw)


def test_bad_mfcc_settings():
    with pytest.raises(ConfigError, match="n_mfcc=50 must be <= n_mels=40"):
        MFCC(n_mfcc=50)
    with pytest.raises(ConfigError, match="lifter"):
        MFCC(lifter=-1)


def test_bad_signals():
    fe = LogMel()
    with pytest.raises(AudioError, match="empty"):
        fe.compute(np.zeros(0, np.float32))
    for dt in (np.int32, np.int64, np.complex64, np.bool_, np.uint8):
        with pytest.raises(AudioError, match=f"dtype {np.dtype(dt)}"):
            fe.compute(np.zeros(1000, dt))
        with pytest.raises(AudioError, match="dtype"):
            fe.push(np.zeros(1000, dt))
    with pytest.raises(AudioError, match="shape"):
        fe.compute(np.zeros((1000, 2), np.float32))  # the front end is mono: FeatureStream downmixes
    with pytest.raises(AudioError, match="numpy array"):
        fe.compute("samples")
    assert fe.compute(np.zeros(399, np.float32)).shape == (0, 40)  # shorter than one window: no frame
    assert fe.push(np.zeros(0, np.float32)).shape == (0, 40)      # an empty block is harmless when streaming


def test_nonfinite_rejected_or_replaced():
    x = np.random.default_rng(7).standard_normal(2000).astype(np.float32)
    bad = x.copy()
    bad[[10, 500, 1999]] = [np.nan, np.inf, -np.inf]
    fe = LogMel()
    with pytest.raises(AudioError, match=r"3 NaN/Inf samples \(first at sample 10\)"):
        fe.compute(bad)
    with pytest.raises(AudioError, match="NaN/Inf"):
        fe.push(bad)
    assert fe.n_frames == 0 and fe.pending == 0  # a rejected block leaves the state untouched
    zeroed = x.copy()
    zeroed[[10, 500, 1999]] = 0
    np.testing.assert_array_equal(fe.compute(bad, nonfinite="zero"), fe.compute(zeroed))
    got = np.concatenate([fe.push(bad[:700], nonfinite="zero"), fe.push(bad[700:], nonfinite="zero")])
    np.testing.assert_array_equal(got, fe.compute(zeroed))
    assert fe.n_nonfinite == 3
    with pytest.raises(ConfigError, match="nonfinite"):
        fe.compute(x, nonfinite="drop")


@pytest.mark.parametrize("name", ["hann", "hamming"])
def test_windows_equal_scipy_without_importing_it(name):
    """Hann/Hamming are computed in-house (start-up) and must equal scipy's periodic windows exactly."""
    import scipy.signal

    from streamrnn.audio.frontend import periodic_window

    for n in (1, 2, 255, 400, 512):
        assert np.array_equal(periodic_window(name, n), scipy.signal.get_window(name, n, fftbins=True))
