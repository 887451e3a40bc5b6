"""The pipeline advances all its streams through one bank and frees slots when streams end."""

from __future__ import annotations

import time

import numpy as np
import pytest

import streamrnn
from streamrnn.audio import LogMel
from conftest import Keep
from streamrnn.config import EventParams, StreamConfig
from streamrnn.runtime.pipeline import Pipeline
from streamrnn.transport.sources import Chunk


def preds(keep, sid):
    return np.concatenate([m.data for m in keep.msgs if m.kind_name == "pred" and m.stream == sid])


@pytest.mark.parametrize("threads", [1, 2])
def test_interleaved_streams_through_the_bank_equal_offline(threads):
    fe = LogMel(sample_rate=16000, n_mels=12)
    m = streamrnn.Model.random("gru", 12, 16, num_layers=2, output_size=1, activation="sigmoid",
                               frontend=fe.to_dict())
    keep = Keep()
    p = Pipeline(None, [keep], model=m, config=StreamConfig(max_streams=40, events=EventParams(enabled=False), threads=threads))
    assert p.processor.bank.threads == threads
    rng = np.random.default_rng(0)
    n_streams, n_blocks = 30, 6
    audio = {f"s{i}": rng.standard_normal((n_blocks * 800, 1)).astype(np.float32) * 0.1 for i in range(n_streams)}
    for b in range(n_blocks):  # each read delivers one 50 ms block of every stream, in random order
        order = rng.permutation(n_streams)
        chunks = [Chunk(f"s{i}", 7, "audio", audio[f"s{i}"][b * 800:(b + 1) * 800], 16000.0, b * 800, 0.0,
                        seq=b) for i in order]
        p.process_many(chunks)
        assert len(p.processor.bank) == n_streams
    for sid, x in audio.items():
        offline = m.forward(fe.compute(x[:, 0]))
        np.testing.assert_allclose(preds(keep, sid), offline, rtol=0, atol=1e-6)
    # streams ending free their bank slots; a stream twice in one read keeps its order
    p.process_many([Chunk(f"s{i}", 7, "audio", np.zeros((0, 1), np.float32), 16000.0, 0, 0.0, end=True)
                    for i in range(n_streams)])
    assert len(p.processor.bank) == 0 and not p.slots
    x = audio["s0"]
    p.process_many([Chunk("again", 9, "audio", x[:1600], 16000.0, 0, 0.0),
                    Chunk("again", 9, "audio", x[1600:4000], 16000.0, 1600, 0.0)])
    np.testing.assert_allclose(preds(keep, "again"), m.forward(fe.compute(x[:4000, 0])), rtol=0, atol=1e-6)


def test_threads_option_of_the_cli(tmp_path):
    """--threads reaches the bank; a count outside Numba's pool is refused with the limit named."""
    import json
    import subprocess
    import sys

    from streamrnn.nn.parallel import max_threads

    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(str(wav), (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32), 16000)
    outs = {}
    for t in (1, 2):
        out = tmp_path / f"o{t}.jsonl"
        r = subprocess.run([sys.executable, "-m", "streamrnn", "stream", "--model", "vad", "--source", f"file:{wav}",
                            "--sink", f"jsonl:{out}", "--threads", str(t)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        recs = [json.loads(ln) for ln in out.read_text().splitlines()]
        outs[t] = [(r["frame"], r["y"]) for r in recs if r["type"] == "pred"]
    assert len(outs[1]) == 1 + (16000 - 400) // 160 and outs[1] == outs[2]
    r = subprocess.run([sys.executable, "-m", "streamrnn", "stream", "--model", "vad", "--source", f"file:{wav}",
                        "--sink", "null", "--threads", str(max_threads() + 1)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert f"threads must be an integer in [1, {max_threads()}]" in r.stderr


def test_a_bad_block_of_a_banked_stream_is_skipped_and_the_others_go_on():
    """Mono 16 kHz streams keep their front ends in the processor's FeatureBank: a block with NaN
    is refused when it arrives (counted as bad input, state untouched) while the other streams of
    the same read advance; afterwards the stream continues as if the block had never come."""
    fe = LogMel(sample_rate=16000, n_mels=12)
    m = streamrnn.Model.random("gru", 12, 16, num_layers=2, output_size=1, activation="sigmoid",
                               frontend=fe.to_dict())
    keep = Keep()
    p = Pipeline(None, [keep], model=m, config=StreamConfig(max_streams=4, events=EventParams(enabled=False)))
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((4800, 1)).astype(np.float32) * 0.1 for _ in range(2))
    bad = a[1600:3200].copy()
    bad[7] = np.nan
    p.process_many([Chunk("a", 1, "audio", a[:1600], 16000.0, 0, 0.0), Chunk("b", 2, "audio", b[:1600], 16000.0, 0, 0.0)])
    p.process_many([Chunk("a", 1, "audio", bad, 16000.0, 1600, 0.0, seq=1),
                    Chunk("b", 2, "audio", b[1600:3200], 16000.0, 1600, 0.0, seq=1)])
    p.process_many([Chunk("a", 1, "audio", a[3200:], 16000.0, 3200, 0.0, seq=2),
                    Chunk("b", 2, "audio", b[3200:], 16000.0, 3200, 0.0, seq=2)])
    assert p.stats.get("bad", "input") == 1
    assert type(p.slots["a"].proc).__name__ == "_BankedState"  # the FeatureBank path was the one tested
    np.testing.assert_array_equal(preds(keep, "b"), m.forward(fe.compute(b[:, 0])))
    np.testing.assert_array_equal(preds(keep, "a"), m.forward(fe.compute(np.r_[a[:1600, 0], a[3200:, 0]])))


def test_a_banked_streams_state_snapshot_moves_to_a_fresh_processor_and_to_a_lone_front_end():
    """What ``streamrnn serve`` saves of a stream: its state's ``snapshot()`` (the FeatureBank row, as a
    FeatureStream's dict) and its bank row.  Restored into another processor (a different row, other
    streams open) the stream goes on exactly as the offline forward over the whole signal.  A 48 kHz
    stream's state (a resampling FeatureStream) and a feature-frame stream's refuse that dict."""
    from streamrnn.errors import SnapshotError
    from streamrnn.runtime.pipeline import ModelProcessor

    fe = LogMel(sample_rate=16000, n_mels=12)
    m = streamrnn.Model.random("gru", 12, 16, num_layers=2, output_size=1, activation="sigmoid",
                               frontend=fe.to_dict())
    cfg = StreamConfig(max_streams=4, events=EventParams(enabled=False))
    x = np.random.default_rng(2).standard_normal((8000, 1)).astype(np.float32) * 0.1
    p1 = ModelProcessor(m, cfg)
    st = p1.open("a", "audio", 16000.0, 1)
    assert type(st).__name__ == "_BankedState"
    y1 = [p1.run({"a": st.prepare(x[i:i + 1234])})[0].get("a", np.zeros((0, 1), np.float32)) for i in (0, 1234, 2468)]
    cut = 3702  # mid-hop: leftover samples in the front end's row
    snap, bsnap = st.snapshot(), p1.bank.snapshot("a")
    p2 = ModelProcessor(m, cfg)
    other = p2.open("z", "audio", 16000.0, 1)
    p2.run({"z": other.prepare(x[:999])})
    st2 = p2.open("a", "audio", 16000.0, 1)
    st2.restore(snap)
    p2.bank.restore("a", bsnap)
    y2 = p2.run({"a": st2.prepare(x[cut:]), "z": other.prepare(x[999:2000])})[0]["a"]
    np.testing.assert_array_equal(np.concatenate(y1 + [y2]), m.forward(fe.compute(x[:, 0])))
    resampling = p2.open("r", "audio", 48000.0, 1)  # a FeatureStream with a resampler: not the same input
    assert type(resampling).__name__ == "StreamState"
    with pytest.raises(SnapshotError, match="sample_rate"):
        resampling.restore(snap)
    frames = p2.open("f", "frames", 16000.0, 12)
    assert frames.snapshot() is None
    with pytest.raises(SnapshotError, match="feature frames"):
        frames.restore(snap)


def _lone_stream_runs(x, nan_block=None, t0=None):
    """Stream "s" of the bundled VAD through three pipelines: alone in every read (the lean path,
    ``Pipeline._process_lone``), alone with the lean path off (``process_many``'s general steps:
    ``_BankedState.prepare``, ``ModelProcessor._run_one``), and read together with another stream
    (``FeatureBank.push_rows`` + ``Bank.push_rows``).  Block ``nan_block`` holds a NaN.  -> {name:
    (Keep, Pipeline)}."""
    m = streamrnn.load_model("vad")
    t0 = time.time() - 30.0 if t0 is None else t0  # plausible capture times: latency and monotonic t_capture
    runs = {k: (Keep(), None) for k in ("lean", "general", "company")}
    runs = {k: (v, Pipeline(None, [v], model=m, config=StreamConfig(max_streams=4))) for k, (v, _) in runs.items()}
    assert runs["lean"][1]._lone
    runs["general"][1]._lone = False
    for i in range(0, len(x), 320):
        b = x[i:i + 320]
        if i // 320 == nan_block:
            b = b.copy()
            b[5] = np.nan
        ch = Chunk("s", 7, "audio", b, 16000.0, i, t0 + i / 16000, seq=i // 320, end=i + 320 >= len(x))
        runs["lean"][1].process_many([ch])
        runs["general"][1].process_many([ch])
        other = Chunk("o", 9, "audio", x[::-1][i:i + 320].copy(), 16000.0, i, t0 + i / 16000, seq=i // 320)
        runs["company"][1].process_many([other, ch] if i % 640 else [ch, other])
    return runs


def _stream_bytes(keep, sid="s"):
    """The encoded messages of stream ``sid``, the random output epoch and the send time set equal."""
    from streamrnn.transport import wire

    out = []
    for q in keep.msgs:
        if q.stream != sid:
            continue
        q.epoch, q.t_send = 1, 0.0
        if q.kind == wire.DESC:
            q.meta = dict(q.meta, epoch=1)
        out.append(wire.encode(q))
    return out


def _counters(p):
    """Every counter of a pipeline's stats and its number of latency samples (their values are times)."""
    return p.stats.snapshot(roll=False)["counters"], p.stats.lat_total.n


def test_a_lone_live_stream_publishes_the_same_bytes_as_in_the_company_of_another():
    """A stream alone in every read takes the lean path (``Pipeline._process_lone``: one
    ``Bank.push_audio`` call); with the lean path off, the general steps for one stream; read together
    with another, the general many-stream path (FeatureBank.push_rows + Bank.push_rows).  Its
    messages (descriptor, preds, events, end) encode to the same bytes, once the random output epoch
    and the send time are set equal; the lean and general runs count the same stats (inputs, outputs,
    latency samples); and they hold the offline model's predictions."""
    import soundfile as sf

    from streamrnn.audio.frontend import as_frontend
    from streamrnn.transport.sources import demo_path

    x = sf.read(str(demo_path()), dtype="float32")[0][:16000 * 8, None]  # 8 s of speech and silence
    runs = _lone_stream_runs(x)
    lean, general, company = (_stream_bytes(runs[k][0]) for k in ("lean", "general", "company"))
    kinds = [q.kind_name for q in runs["lean"][0].msgs]
    assert kinds.count("pred") > 350 and "event" in kinds and kinds[-1] == "eos"
    assert lean == general == company
    assert _counters(runs["lean"][1]) == _counters(runs["general"][1])
    assert runs["lean"][1].stats.get("frames_in") == len(x) and runs["lean"][1].stats.lat_total.n > 350
    m = streamrnn.load_model("vad")
    offline = m.forward(as_frontend(m.frontend).compute(x[:, 0]))[m.delay:]
    np.testing.assert_allclose(preds(runs["lean"][0], "s"), offline, rtol=0, atol=1e-5)


def test_a_lone_streams_nan_block_is_refused_on_the_lean_path_as_on_the_general_one():
    """A block with a NaN: the lean path (whose one kernel call finds it and computes nothing) skips it
    as ``_BankedState.prepare`` does on the general paths: the same counters (one bad input, its
    samples not counted), the same bytes afterwards, and the predictions of the audio without it."""
    import soundfile as sf

    from streamrnn.audio.frontend import as_frontend
    from streamrnn.transport.sources import demo_path

    x = sf.read(str(demo_path()), dtype="float32")[0][:16000 * 3, None]
    runs = _lone_stream_runs(x, nan_block=40)
    lean, general, company = (_stream_bytes(runs[k][0]) for k in ("lean", "general", "company"))
    assert lean == general == company
    assert _counters(runs["lean"][1]) == _counters(runs["general"][1])
    st = runs["lean"][1].stats
    assert st.get("bad", "input") == 1 and st.get("frames_in") == len(x) - 320
    m = streamrnn.load_model("vad")
    kept = np.concatenate([x[:40 * 320, 0], x[41 * 320:, 0]])
    offline = m.forward(as_frontend(m.frontend).compute(kept))[m.delay:]
    np.testing.assert_allclose(preds(runs["lean"][0], "s"), offline, rtol=0, atol=1e-5)


def test_the_reads_cached_slot_arrays_follow_streams_that_close_reopen_repeat_and_reset():
    """The many-stream path keeps last read's slot arrays while the same streams come back; every open
    and close drops them.  A stream that closes and comes back on another row (its old row taken by a
    newcomer), a stream twice in one read and an epoch reset, each followed by a read of the same ids:
    every stream's predictions are bit-identical to a pipeline fed one chunk per call (the one-stream
    path, which never uses the cache), and the reopened streams equal the offline forward pass."""
    fe = LogMel(sample_rate=16000, n_mels=12)
    m = streamrnn.Model.random("gru", 12, 16, num_layers=2, output_size=1, activation="sigmoid",
                               frontend=fe.to_dict())
    cfg = StreamConfig(max_streams=16, events=EventParams(enabled=False))
    keep, ref = Keep(), Keep()
    p = Pipeline(None, [keep], model=m, config=cfg)
    q = Pipeline(None, [ref], model=m, config=cfg)
    rng = np.random.default_rng(3)
    ids = [f"s{i}" for i in range(6)]
    audio = {k: rng.standard_normal((12 * 800, 1)).astype(np.float32) * 0.1 for k in ids + ["x", "s2b", "s3b"]}
    pos = dict.fromkeys(audio, 0)

    def chunk(sid, key=None, epoch=7, n=800, end=False):
        key = key or sid
        a, pos[key] = pos[key], pos[key] + n
        return Chunk(sid, epoch, "audio", audio[key][a:a + n], 16000.0, a, 0.0, seq=a // 800, end=end)

    def read(chunks):
        p.process_many(chunks)
        for c in chunks:
            q.process(c)

    read([chunk(s) for s in ids])
    read([chunk(s) for s in ids])  # the same ids: the cached arrays
    row_s2 = int(p.processor.bank.slots(["s2"])[0])
    read([Chunk("s2", 7, "audio", np.zeros((0, 1), np.float32), 16000.0, pos["s2"], 0.0, end=True)])
    read([chunk("x")])  # a newcomer takes s2's row
    assert int(p.processor.bank.slots(["x"])[0]) == row_s2
    read([chunk(s, key="s2b" if s == "s2" else None, epoch=8 if s == "s2" else 7) for s in ids])  # s2 anew
    assert int(p.processor.bank.slots(["s2"])[0]) != row_s2
    read([chunk(s, key="s2b" if s == "s2" else None, epoch=8 if s == "s2" else 7) for s in ids])
    read([chunk("s0"), chunk("s1"), chunk("s0"), chunk("s1")])  # two blocks of a stream in one read
    read([chunk(s, key={"s2": "s2b", "s3": "s3b"}.get(s), epoch={"s2": 8, "s3": 9}.get(s, 7)) for s in ids])  # s3 reset
    read([chunk(s, key={"s2": "s2b", "s3": "s3b"}.get(s), epoch={"s2": 8, "s3": 9}.get(s, 7)) for s in ids])
    read([chunk("x")] + [chunk(s, key={"s2": "s2b", "s3": "s3b"}.get(s), epoch={"s2": 8, "s3": 9}.get(s, 7))
                         for s in ids])
    for sid in ids + ["x"]:
        assert np.array_equal(preds(keep, sid), preds(ref, sid)), sid
    for sid, key in (("x", "x"), ("s2", "s2b"), ("s3", "s3b")):  # the last epoch of each: offline
        n = pos[key]
        got = preds(keep, sid)[-(1 + (n - 400) // 160):]
        np.testing.assert_allclose(got, m.forward(fe.compute(audio[key][:n, 0])), rtol=0, atol=1e-6)
