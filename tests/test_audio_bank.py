"""The Python API of issue 14: AudioBank, EventDetector, typed stream-id errors, the ShapeError hint,
snapshots of young resampled streams."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import streamrnn
from streamrnn.audio import LogMel, Resampler
from streamrnn.errors import CapacityError, StreamExistsError, StreamIdError, StreamRNNError

DATA = Path(__file__).parent / "data"
RATES = [8000, 16000, 22050, 24000, 44100, 48000]


@pytest.fixture(scope="module")
def speech():
    x, sr = sf.read(DATA / "speech.flac", dtype="float32")  # 22050 Hz espeak-ng recording
    return x, sr


def audio_model(cell="gru"):
    return streamrnn.Model.random(cell, 40, 12, num_layers=2, output_size=2, activation="sigmoid",
                                  frontend=LogMel().to_dict(), seed=3)


def test_audio_bank_equals_one_audio_stream_per_id_bit_for_bit(speech):
    """Streams at different rates, pushed in interleaved blocks of random sizes (some empty), give
    exactly what an AudioStream per id gives on the same pushes."""
    m = audio_model("lstm")
    signals = {f"s{r}": Resampler(speech[1], r).push(speech[0])[: r * 2] for r in RATES}
    bank = m.audio_bank(capacity=len(RATES) + 2, sample_rate=16000)
    alone = {}
    for sid, r in zip(signals, RATES):
        bank.open(sid, sample_rate=r)
        alone[sid] = m.audio_stream(r)
    rng = np.random.default_rng(0)
    pos = dict.fromkeys(signals, 0)
    got = {sid: [] for sid in signals}
    want = {sid: [] for sid in signals}
    while any(pos[s] < len(x) for s, x in signals.items()):
        pick = [s for s in signals if rng.random() < 0.7]
        block = {}
        for s in pick:
            n = int(rng.integers(0, 3000))
            block[s] = signals[s][pos[s]:pos[s] + n]
            pos[s] += n
        for s, y in bank.push_many(block).items():
            assert y.shape[1] == 2 and y.dtype == np.float32
            got[s].append(y)
            want[s].append(alone[s].push(block[s]))
            np.testing.assert_array_equal(got[s][-1], want[s][-1])  # same frames from the same pushes
    for s in signals:
        assert np.concatenate(got[s]).shape[0] > 150


def test_audio_bank_verbs_and_typed_errors():
    m = audio_model()
    bank = m.audio_bank(2)
    assert bank.sample_rate == 16000 and bank.frame_rate == 100.0
    bank.open("a")
    with pytest.raises(StreamExistsError, match="'a' is already open") as e:
        bank.open("a")
    assert isinstance(e.value, StreamRNNError)
    b = m.bank(2)
    b.open("x")
    with pytest.raises(StreamExistsError, match="already open"):
        b.open("x")
    with pytest.raises(StreamIdError, match="'zz' is not open"):
        bank.push_many({"a": np.zeros(160, np.float32), "zz": np.zeros(160, np.float32)})
    with pytest.raises(StreamIdError):
        bank.snapshot("zz")
    bank.open("b")
    with pytest.raises(CapacityError):
        bank.open("c")
    x = np.random.default_rng(1).standard_normal(4000).astype(np.float32) * 0.1
    first = bank.push("a", x)
    bank.reset("a")
    np.testing.assert_array_equal(bank.push("a", x), first)  # reset: a new signal
    bank.close("a")
    assert "a" not in bank and len(bank) == 1
    bank.open("a")  # the slot is free again, with zero state
    np.testing.assert_array_equal(bank.push("a", x), first)
    with pytest.raises(streamrnn.AudioError, match="'b'"):
        bank.push_many({"b": np.full(100, np.nan, np.float32)})


def test_bank_open_twice_is_a_typed_error():
    b = streamrnn.Model.random("gru", 3, 4).bank(2)
    b.open("a")
    with pytest.raises(StreamRNNError, match="already open"):
        b.open("a")
    with pytest.raises(StreamRNNError, match="not open"):
        b.close("nope")


@pytest.mark.parametrize("rate", RATES + [11025, 32000, 96000])
@pytest.mark.parametrize("age", ["young", "old"])
def test_restore_then_push_equals_push_bit_for_bit_at_every_rate(rate, age):
    """Snapshots move between AudioBank slots and AudioStreams; the restored stream emits the same
    frames, bit for bit, from the same pushes as the original, at every input rate and at any age
    (younger than the resampler's history, or much older: replayed from a block-aligned start)."""
    from streamrnn.audio.resample import block_period

    align = block_period(rate, 16000) or 1 if rate != 16000 else 1
    cut = int(rate * 0.6) + 77 if age == "young" else int(rate * 2.3) + align + 77  # mid-frame
    x = np.random.default_rng(rate).standard_normal(cut + rate).astype(np.float32) * 0.1
    m = audio_model()
    bank = m.audio_bank(4, rate)
    bank.open("a")
    assert bank.push("a", x[:cut]).shape[0] > 0
    snap = bank.snapshot("a")
    pieces = np.array_split(x[cut:], 7)
    rest = [bank.push("a", c) for c in pieces]
    s = m.audio_stream(rate)
    s.push(x[: rate // 3])  # some other state, overwritten by the restore
    s.restore(snap)
    for c, want in zip(pieces, rest):
        np.testing.assert_array_equal(s.push(c), want)  # same frames from the same pushes
    bank.open("b")
    bank.restore("b", snap)
    for c, want in zip(pieces, rest):
        np.testing.assert_array_equal(bank.push("b", c), want)


def test_event_detector_from_python_gives_the_cli_events(tmp_path):
    """audio file -> model.audio_stream -> EventDetector: the segments `streamrnn stream` reports."""
    from streamrnn.audio.files import read_audio
    from streamrnn.models import MODELS_DIR

    model = streamrnn.load_model("vad")
    audio, rate = read_audio(MODELS_DIR / "demo.flac")
    s = model.audio_stream(rate)
    det = streamrnn.EventDetector.for_stream(s)
    events = det.push(s.push(audio[:100_000])) + det.push(s.push(audio[100_000:])) + det.flush()
    out = tmp_path / "o.jsonl"
    streamrnn.run_stream(streamrnn.StreamConfig(model="vad", source="demo", realtime=False, sink=(f"jsonl:{out}",)))
    cli_events = [json.loads(line) for line in out.read_text().splitlines() if '"type":"event"' in line]
    assert len(events) == len(cli_events) >= 4
    for e, c in zip(events, cli_events):
        assert (e["event"], e["label"], e["frame"]) == (c["event"], c["label"], c["frame"])
        assert e["time"] == pytest.approx(c["time"])


def test_pushing_audio_into_a_frame_stream_points_to_audio_stream():
    m = audio_model()
    with pytest.raises(streamrnn.ShapeError, match=r"model\.audio_stream\(sample_rate\)"):
        m.stream().push(np.zeros(16000, np.float32))
    frames_only = streamrnn.Model.random("gru", 3, 4)
    with pytest.raises(streamrnn.ShapeError) as e:
        frames_only.stream().push(np.zeros(3, np.float32))
    assert "audio_stream" not in str(e.value) and "x[None, :]" in str(e.value)


def test_public_names():
    for name in ("run_stream", "run_features", "StreamConfig", "EventParams", "EventDetector", "AudioBank",
                 "AudioStream", "StreamIdError", "StreamExistsError"):
        assert getattr(streamrnn, name) is not None and name in streamrnn.__all__


@pytest.mark.parametrize("fe", [LogMel(), LogMel(n_fft=400, win_length=400, hop_length=160),
                                LogMel(n_fft=256, win_length=200, hop_length=300)],
                         ids=["fft", "dft", "hop_over_win"])
def test_feature_bank_equals_one_feature_stream_per_id_bit_for_bit(speech, fe):
    """Every entry (push_rows, push_many, push_one), interleaved blocks of random sizes (some empty)
    in float32, float64 and int16: each stream's frames are exactly its own FeatureStream's, for the
    FFT and the direct-DFT kernel and a hop longer than the window (skipped samples)."""
    from streamrnn.audio.stream import FeatureBank, FeatureStream

    x16 = Resampler(speech[1], 16000).push(speech[0])[:32000]
    fb = FeatureBank(fe, capacity=8)
    ids = ["a", "b", "c", "d"]
    alone = {}
    for k, sid in enumerate(ids):
        fb.open(sid)
        alone[sid] = FeatureStream(fe.to_dict(), 16000)
    pos = dict.fromkeys(ids, 0)
    got = {sid: [] for sid in ids}
    want = {sid: [] for sid in ids}
    rng = np.random.default_rng(4)
    for rnd in range(40):
        blocks = {}
        for k, sid in enumerate(ids):
            if rng.random() < 0.2:
                continue
            n = int(rng.integers(0, 1200))
            v = x16[(pos[sid] + 997 * k) % 20000:][:n] * (0.5 + 0.1 * k)
            pos[sid] += n
            blocks[sid] = ((v * 32767).astype(np.int16) if k == 3 else v.astype(np.float64) if k == 2
                           else v.astype(np.float32))
        entry = rnd % 3
        if entry == 0:
            out = fb.push_many(blocks)
        elif entry == 1 and blocks and all(b.dtype == np.float32 for b in blocks.values()):
            offs = np.r_[0, np.cumsum([len(b) for b in blocks.values()])].astype(np.int64)
            slots = np.array([fb.slot(s) for s in blocks], np.int64)
            if rnd % 2:  # the pipeline's entry: no checks, frames in the bank's reused buffer (copied here)
                frames, fo, t, _ = fb._push_rows(slots, np.concatenate(list(blocks.values())), offs, reuse=True)
                frames, fo = frames.copy(), fo.copy()
                assert np.array_equal(t, np.diff(fo))
            else:
                frames, fo = fb.push_rows(slots, np.concatenate(list(blocks.values())), offs)
            out = {s: frames[fo[i]:fo[i + 1]] for i, s in enumerate(blocks)}
        else:
            out = {s: fb.push_one(fb.slot(s), np.ascontiguousarray(b if b.dtype.kind == "f" else b / 32768.0))
                   for s, b in blocks.items()}
        for sid, b in blocks.items():
            got[sid].append(out[sid])
            want[sid].append(alone[sid].push(b))
    for sid in ids:
        g, w = np.concatenate(got[sid]), np.concatenate(want[sid])
        assert g.shape[0] > 50 and np.array_equal(g, w), sid
        assert fb.n_frames[fb.slot(sid)] == g.shape[0]


def test_feature_bank_verbs_and_bad_samples():
    from streamrnn.audio.stream import FeatureBank

    fb = FeatureBank(LogMel(), capacity=2)
    fb.open("a")
    fb.open("b")
    with pytest.raises(StreamExistsError):
        fb.open("a")
    with pytest.raises(CapacityError, match="full"):
        fb.open("c")
    with pytest.raises(StreamIdError, match="'zz' is not open"):
        fb.push_many({"zz": np.zeros(10, np.float32)})
    fb.push_many({"a": np.full(700, 0.1, np.float32), "b": np.full(500, 0.2, np.float32)})
    before = fb.states.copy(), fb.n_left.copy(), fb.n_frames.copy()
    bad = np.zeros(900, np.float32)
    bad[5] = np.nan
    with pytest.raises(streamrnn.AudioError, match="stream 'b'.*1 NaN/Inf"):
        fb.push_many({"a": np.zeros(900, np.float32), "b": bad})
    with pytest.raises(streamrnn.AudioError, match="1 NaN/Inf"):
        fb.push_one(fb.slot("b"), bad)
    with pytest.raises(streamrnn.AudioError, match="mono"):
        fb.push_many({"a": np.zeros((900, 2), np.float32)})
    with pytest.raises(ValueError, match=r"slots must be rows in \[0, 2\), got 0..2"):
        fb.push_rows(np.array([0, 2], np.int64), np.zeros(20, np.float32), np.array([0, 10, 20], np.int64))
    after = fb.states, fb.n_left, fb.n_frames
    assert all(np.array_equal(u, v) for u, v in zip(before, after))  # nothing was computed
    fb.reset("a")
    assert fb.n_frames[fb.slot("a")] == 0 and not fb.states[fb.slot("a")].any()
    fb.close("a")
    fb.open("c")  # the freed row is reused
    assert len(fb) == 2 and "a" not in fb


def test_feature_bank_warns_once_per_stream_about_int16_scale_floats(caplog):
    from streamrnn.audio.stream import FeatureBank

    fb = FeatureBank(LogMel(), capacity=3)
    for sid in ("a", "b", "c"):
        fb.open(sid)
    loud = np.full(800, 3000.0, np.float32)  # int16-scale audio sent as float
    with caplog.at_level("WARNING", logger="streamrnn.audio.stream"):
        for _ in range(3):
            fb.push_many({"a": loud, "b": loud * 1e-4, "c": np.zeros(800, np.float32)})
            fb.push_one(fb.slot("c"), loud)
    lines = [r.getMessage() for r in caplog.records if "far outside [-1, 1]" in r.getMessage()]
    assert len(lines) == 2 and all("3000" in ln for ln in lines)  # a once, c once; b is in range


def _same_snapshot(a, b) -> bool:
    """Two snapshot dicts equal key for key, arrays element for element."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_snapshot(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("fe", [LogMel(), LogMel(n_fft=400, win_length=400, hop_length=160),
                                LogMel(n_fft=256, win_length=200, hop_length=300)],
                         ids=["fft", "dft", "hop_over_win"])
def test_feature_bank_snapshot_moves_a_stream_between_bank_rows_and_feature_streams_bit_for_bit(speech, fe):
    """Snapshot a banked stream mid-stream (leftover samples, a hop to skip), restore it into a fresh
    row of another bank (other streams busy around it) and into a lone FeatureStream, and a
    FeatureStream's snapshot into a bank row: each continuation plus what came before is exactly one
    uninterrupted FeatureStream's frames.  The dict is a FeatureStream's, key for key."""
    from streamrnn.audio.stream import FeatureBank, FeatureStream
    from streamrnn.snapshot import check_snapshot

    x = Resampler(speech[1], 16000).push(speech[0])[:24000].astype(np.float32)
    whole = FeatureStream(fe.to_dict(), 16000).push(x)
    rng = np.random.default_rng(9)
    for cut in (12345, 4000 * 3 + 7, 150):  # mid-hop, mid-window, before the first frame
        fb = FeatureBank(fe, capacity=4)
        fb.open("noise")
        fb.open("a")
        ref = FeatureStream(fe.to_dict(), 16000)
        head, pos = [], 0
        while pos < cut:  # random blocks, the other row advancing in the same calls
            n = min(cut - pos, int(rng.integers(1, 900)))
            out = fb.push_many({"a": x[pos:pos + n], "noise": rng.standard_normal(n).astype(np.float32) * 0.1})
            head.append(out["a"])
            ref.push(x[pos:pos + n])
            pos += n
        head = np.concatenate(head)
        snap = fb.snapshot("a")
        check_snapshot(snap, "feature_stream", "FeatureStream", {"sample_rate": 16000.0, "frontend": fe.to_dict()})
        assert _same_snapshot(snap, ref.snapshot())  # the very dict a FeatureStream writes at this point
        snap = json.loads(json.dumps(snap, default=lambda a: a.tolist()))  # plain JSON carries it (no pickle)
        # into a fresh row of another bank whose other rows hold state
        fb2 = FeatureBank(fe.to_dict(), capacity=3)
        fb2.open("x")
        fb2.push_many({"x": np.full(777, 0.3, np.float32)})
        fb2.open("b")
        fb2.restore("b", snap)
        tail = [fb2.push_many({"b": x[p:p + 1000], "x": np.full(1000, 0.2, np.float32)})["b"]
                for p in range(cut, len(x), 1000)]
        assert np.array_equal(np.concatenate([head] + tail), whole)
        assert fb2.n_frames[fb2.slot("b")] == len(whole)
        # into a lone FeatureStream, and a FeatureStream's snapshot back into a bank row
        lone = FeatureStream(fe.to_dict(), 16000)
        lone.restore(snap)
        assert np.array_equal(np.concatenate([head, lone.push(x[cut:])]), whole)
        fb3 = FeatureBank(fe, capacity=1)
        fb3.open("c")
        fb3.restore("c", ref.snapshot())
        assert np.array_equal(np.concatenate([head, fb3.push_one(fb3.slot("c"), x[cut:])]), whole)
        fb3.reset("c")  # a front end's own snapshot (LogMel.snapshot) is taken too
        fb3.restore("c", ref.frontend.snapshot())
        assert np.array_equal(np.concatenate([head, fb3.push_many({"c": x[cut:]})["c"]]), whole)


def test_feature_bank_restore_refuses_what_does_not_fit_and_changes_nothing():
    from streamrnn.audio.stream import FeatureBank, FeatureStream
    from streamrnn.errors import SnapshotError

    fb = FeatureBank(LogMel(), capacity=2)
    fb.open("a")
    fb.push_many({"a": np.full(700, 0.1, np.float32)})
    r = fb.slot("a")
    before = fb.states[r].copy(), int(fb.n_left[r]), int(fb.skip[r]), int(fb.n_frames[r])
    resampled = FeatureStream(LogMel(), 48000)
    resampled.push(np.zeros(4800, np.float32))
    other = FeatureStream(LogMel(hop_length=320), 16000)
    damaged = fb.snapshot("a")
    damaged["frontend"]["buffer"] = np.zeros(LogMel().win_length)
    cases = [(resampled.snapshot(), "sample_rate: snapshot 48000 vs feature bank 16000"),
             (other.snapshot(), "does not fit this feature bank .*'hop_length': 320"),
             (damaged, "buffer has shape \\(400,\\)"),
             ({k: v for k, v in LogMel().snapshot().items() if k != "buffer"}, "malformed FeatureBank snapshot.*buffer"),
             (dict(fb.snapshot("a"), version=99), "version 99 is not supported"),
             ([1, 2], "not a snapshot")]
    for snap, msg in cases:
        with pytest.raises(SnapshotError, match=msg):
            fb.restore("a", snap)
        after = fb.states[r], int(fb.n_left[r]), int(fb.skip[r]), int(fb.n_frames[r])
        assert np.array_equal(before[0], after[0]) and before[1:] == after[1:], msg
    with pytest.raises(StreamIdError, match="'zz' is not open"):
        fb.snapshot("zz")
    with pytest.raises(StreamIdError, match="'zz' is not open"):
        fb.restore("zz", fb.snapshot("a"))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bank_push_audio_equals_front_end_then_model_bit_for_bit_and_the_naive_reference(speech, cell):
    """Bank.push_audio (front end + model in one kernel call: the pipeline's path for a live stream)
    gives exactly a lone FeatureStream + Stream on the same blocks (random sizes, some empty, float32
    and float64), two streams interleaved; and the plain-NumPy model (tests/naive.py) on the offline
    front end to float32 rounding.  NaN samples: AudioError, and no state changes."""
    from naive import forward

    from streamrnn.audio.frontend import as_frontend
    from streamrnn.audio.stream import FeatureBank, FeatureStream

    m = audio_model(cell)
    x16 = Resampler(speech[1], 16000).push(speech[0])[:24000]
    fb, bank = FeatureBank(m.frontend, capacity=4), m.bank(capacity=4)
    alone = {}
    for sid in ("pad", "a", "b"):  # "pad": rows 0 of both banks are not the streams' own
        fb.open(sid)
        bank.open(sid)
        alone[sid] = (FeatureStream(m.frontend, 16000), m.stream())
    rng = np.random.default_rng(7)
    pos = {"a": 0, "b": 0}
    got = {"a": [], "b": []}
    while min(pos.values()) < len(x16):
        for k, sid in enumerate(("a", "b")):
            n = int(rng.integers(0, 700))
            v = x16[pos[sid]:pos[sid] + n] * (1.0 - 0.3 * k)
            pos[sid] += n
            v = v.astype(np.float64) if k else v.astype(np.float32)
            y = bank.push_audio(fb, fb.slot(sid), int(bank.slots([sid])[0]), v)
            fs, st = alone[sid]
            assert y.dtype == np.float32 and np.array_equal(y, st.push(fs.push(v))), sid
            got[sid].append(y)
    for k, sid in enumerate(("a", "b")):
        y = np.concatenate(got[sid])
        sig = x16 * (1.0 - 0.3 * k)
        ref, _, _ = forward(cell, m.tensors(), as_frontend(m.frontend).compute(sig.astype(np.float64 if k else np.float32)),
                            m.num_layers, m.activation)
        assert y.shape == ref.shape and y.shape[0] > 140
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
        assert bank.n_frames[bank.slots([sid])[0]] == fb.n_frames[fb.slot(sid)] == y.shape[0]
    before = fb.states.copy(), fb.n_left.copy(), bank.h.copy(), bank.c.copy(), bank.n_frames.copy()
    bad = np.zeros(900, np.float32)
    bad[3] = np.inf
    with pytest.raises(streamrnn.AudioError, match="1 NaN/Inf"):
        bank.push_audio(fb, fb.slot("a"), int(bank.slots(["a"])[0]), bad)
    after = fb.states, fb.n_left, bank.h, bank.c, bank.n_frames
    assert all(np.array_equal(u, v) for u, v in zip(before, after))
    bank64 = m.astype(np.float64).bank(capacity=1)
    bank64.open("a")
    with pytest.raises(streamrnn.ShapeError, match="float32 model"):
        bank64.push_audio(fb, fb.slot("a"), 0, x16[:320])


def test_frame_counts_kernel_equals_the_numpy_arithmetic():
    """``_frame_counts_kernel`` against LogMel._push's arithmetic written in NumPy: frames per stream,
    their offsets, n_frames advanced, the largest total and frame count."""
    from streamrnn.audio.kernels import _frame_counts_kernel

    rng = np.random.default_rng(8)
    win, hop, cap = 400, 160, 12
    for _ in range(20):
        n = int(rng.integers(0, 8))
        slots = rng.permutation(cap)[:n].astype(np.int64)
        lens = rng.integers(0, 2000, n)
        offs = np.r_[0, np.cumsum(lens)].astype(np.int64)
        n_left, skip = rng.integers(0, win, cap), rng.integers(0, 300, cap) * (rng.random(cap) < 0.3)
        nf = rng.integers(0, 100, cap)
        total = n_left[slots] + lens - np.minimum(skip[slots], lens)
        want_t = np.where(total >= win, 1 + (total - win) // hop, 0)
        t, fo, got_nf = np.zeros(n, np.int64), np.zeros(n + 1, np.int64), nf.copy()
        all_t, need, tmax = _frame_counts_kernel(offs, slots, n_left, skip, got_nf, win, hop, t, fo)
        want_nf = nf.copy()
        want_nf[slots] += want_t
        assert np.array_equal(t, want_t) and np.array_equal(fo, np.r_[0, np.cumsum(want_t)])
        assert np.array_equal(got_nf, want_nf) and all_t == want_t.sum()
        assert need == (total.max() if n else 0) and tmax == (want_t.max() if n else 0)
