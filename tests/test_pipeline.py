"""The real-time loop in-process: outputs equal offline, resets, flags, events, stats, config,
and the ZeroMQ source with real sockets (IPC in a temp dir) counting every bad message by reason."""

import struct
import threading
import time

import numpy as np
import pytest
import zmq

import streamrnn
from streamrnn.audio import LogMel
from streamrnn.errors import ConfigError
from streamrnn.config import EventParams, StreamConfig, load_stream_config
from streamrnn.runtime.pipeline import Pipeline
from streamrnn.stats import Stats
from streamrnn.transport import wire
from conftest import Keep
from streamrnn.transport.sources import Chunk, FileSource, ZmqSource


def feat_model(activation="sigmoid", seed=3):
    return streamrnn.Model.random("gru", input_size=4, hidden_size=12, output_size=2, activation=activation,
                                  seed=seed, labels=["a", "b"], name="feat")


def audio_model():
    fe = LogMel(n_mels=16)
    return streamrnn.Model.random("lstm", input_size=fe.n_features, hidden_size=8, output_size=1,
                                  activation="sigmoid", seed=1, labels=["tone"], frontend=fe.to_dict(), name="aud")


def chunks_of(x, stream="s", epoch=1, content="features", rate=100.0, sizes=(3, 1, 7, 5), t0=1000.0, seq0=0):
    out, i, j = [], 0, 0
    while i < len(x):
        n = sizes[j % len(sizes)]
        out.append(Chunk(stream, epoch, content, x[i:i + n], rate, i, t0 + i / rate, seq=seq0 + j, desc={}))
        i += n
        j += 1
    return out


def test_features_any_chunking_equals_offline_with_consecutive_seq():
    m = feat_model()
    x = np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32)
    keep = Keep()
    p = Pipeline(None, [keep], model=m)
    for ch in chunks_of(x):
        p.process(ch)
    preds = keep.kind("pred")
    y = np.concatenate([q.data for q in preds])
    np.testing.assert_allclose(y, m.forward(x), rtol=0, atol=1e-6)
    assert [q.seq for q in preds] == list(range(len(preds)))
    assert [q.sample_index for q in preds] == list(np.cumsum([0] + [len(q.data) for q in preds])[:-1])
    assert preds[-1].ref_seq == len(preds) - 1
    # capture time of a pred = capture time of its newest input frame
    assert preds[1].t_capture == pytest.approx(1000.0 + (preds[1].sample_index + len(preds[1].data) - 1) / 100)
    d = keep.kind("desc")[0].meta
    assert d["content"] == "pred" and d["labels"] == ["a", "b"] and d["rate"] == 100.0
    assert d["model"]["cell"] == "gru" and d["epoch"] == preds[0].epoch


def test_audio_stream_equals_offline_audio_stream():
    m = audio_model()
    sr = 16000
    t = np.arange(sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * (t > 0.4)).astype(np.float32)[:, None]
    keep = Keep()
    p = Pipeline(None, [keep], model=m)
    for ch in chunks_of(x, content="audio", rate=sr, sizes=(100, 333, 1000, 7)):
        p.process(ch)
    y = np.concatenate([q.data for q in keep.kind("pred")])
    np.testing.assert_allclose(y, m.audio_stream(sr).push(x[:, 0]), rtol=0, atol=1e-6)


def test_epoch_change_resets_state_and_flags_it():
    m = feat_model()
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((20, 4)).astype(np.float32), rng.standard_normal((30, 4)).astype(np.float32)
    keep = Keep()
    p = Pipeline(None, [keep], model=m)
    for ch in chunks_of(x1, epoch=1) + chunks_of(x2, epoch=2):
        p.process(ch)
    preds = keep.kind("pred")
    epochs = sorted({q.epoch for q in preds}, key=[q.epoch for q in preds].index)
    assert len(epochs) == 2
    second = [q for q in preds if q.epoch == epochs[1]]
    np.testing.assert_allclose(np.concatenate([q.data for q in second]), m.forward(x2), atol=1e-6)
    assert second[0].flags & wire.FLAG_RESET and second[0].seq == 0 and second[0].sample_index == 0
    assert not any(q.flags & wire.FLAG_RESET for q in preds if q.epoch == epochs[0])
    eos = keep.kind("eos")
    assert len(eos) == 1 and eos[0].epoch == epochs[0] and eos[0].sample_index == 20
    assert p.stats.get("resets", "epoch") == 1


def test_gap_and_overflow_flags_reach_the_next_pred():
    m = audio_model()
    keep = Keep()
    p = Pipeline(None, [keep], model=m)
    x = np.zeros((1600, 1), np.float32)
    p.process(Chunk("s", 1, "audio", x, 16000.0, 0, 0.0, desc={}))
    p.process(Chunk("s", 1, "audio", x[:10], 16000.0, 5000, 0.0, flags=wire.FLAG_GAP | wire.FLAG_OVERFLOW, desc={}))
    p.process(Chunk("s", 1, "audio", x, 16000.0, 5010, 0.0, desc={}))
    preds = keep.kind("pred")
    # the 10-sample chunk completes no frame: its flags ride on the next pred that is sent
    assert [q.flags for q in preds] == [0, wire.FLAG_GAP | wire.FLAG_OVERFLOW]


def test_events_only_for_sigmoid_and_they_follow_the_probabilities():
    m = feat_model()
    x = np.zeros((200, 4), np.float32)
    keep = Keep()
    cfg = StreamConfig(events=EventParams(on_threshold=0.5, off_threshold=0.4, min_on=0.05, min_off=0.05))
    p = Pipeline(None, [keep], model=m, config=cfg)
    for ch in chunks_of(x, sizes=(10,)):
        p.process(ch)
    p.process(Chunk("s", 1, "features", x[:0], 100.0, 200, 0.0, desc={}, end=True))
    y = m.forward(x)
    ev = [e.meta for e in keep.kind("event")]
    for j, lab in enumerate(["a", "b"]):
        mine = [e for e in ev if e["label"] == lab]
        high = y[:, j] >= 0.5
        if high[0]:
            assert mine and mine[0]["event"] == "start" and mine[0]["frame"] == 0
        if not (y[:, j] >= 0.4).any():
            assert mine == []
    for lab in ("a", "b"):
        kinds = [e["event"] for e in ev if e["label"] == lab]
        assert kinds == ["start", "end"] * (len(kinds) // 2)  # alternate, and every start ends
    assert keep.kind("eos")[-1].flags & wire.FLAG_END
    keep2 = Keep()
    p2 = Pipeline(None, [keep2], model=feat_model(activation="softmax"))
    for ch in chunks_of(x):
        p2.process(ch)
    assert keep2.kind("event") == [] and keep2.kind("pred")


def test_events_exact_on_designed_probabilities():
    # identity-head model outputs are not probabilities; drive the detector through a model whose
    # output is sigmoid(big * x0): x0 > 0 -> ~1, x0 < 0 -> ~0, so the segments are known.
    m = streamrnn.Model.random("rnn_tanh", input_size=1, hidden_size=1, output_size=1, activation="sigmoid")
    t = {k: np.zeros_like(v) for k, v in m.tensors().items()}
    t["rnn.weight_ih_l0"][...] = 1.0
    t["head.weight"][...] = 50.0
    m = streamrnn.Model(m.arch, t, labels=["on"])
    x = -np.ones((100, 1), np.float32)
    x[20:50] = 1.0
    keep = Keep()
    p = Pipeline(None, [keep], model=m, config=StreamConfig(events=EventParams(min_on=0.05, min_off=0.1)))
    for ch in chunks_of(x, sizes=(7,)):
        p.process(ch)
    ev = [(e.meta["event"], e.meta["frame"]) for e in keep.kind("event")]
    assert ev == [("start", 20), ("end", 50)]
    assert keep.kind("event")[1].meta["duration"] == pytest.approx(0.3)


def test_look_ahead_model_reports_each_row_for_its_own_frame_on_the_audio_clock():
    """A model with delay D: the row computed at input frame k is the answer for frame k - D; the first D
    rows answer for no frame and are not emitted; events and timestamps stay on the audio clock."""
    m = streamrnn.Model.random("rnn_tanh", input_size=1, hidden_size=1, output_size=1, activation="sigmoid")
    t = {k: np.zeros_like(v) for k, v in m.tensors().items()}
    t["rnn.weight_ih_l0"][...] = 1.0
    t["head.weight"][...] = 50.0
    D = 5
    m = streamrnn.Model(m.arch, t, labels=["on"], delay=D)
    x = -np.ones((100, 1), np.float32)
    x[20:50] = 1.0  # as a delay-D model sees it: the segment of frames 15..44
    keep = Keep()
    p = Pipeline(None, [keep], model=m, config=StreamConfig(events=EventParams(min_on=0.05, min_off=0.1)))
    for ch in chunks_of(x, sizes=(2, 3, 7)):  # the first two chunks hold only the D unreported rows
        p.process(ch)
    preds = keep.kind("pred")
    np.testing.assert_array_equal(np.concatenate([q.data for q in preds]), m.forward(x)[D:])
    assert preds[0].sample_index == 0 and preds[0].seq == 0
    assert [q.sample_index for q in preds] == list(np.cumsum([0] + [len(q.data) for q in preds])[:-1])
    # capture time: still that of the newest input frame the row depends on (frame index + D)
    q = preds[1]
    assert q.t_capture == pytest.approx(1000.0 + (q.sample_index + D + len(q.data) - 1) / 100)
    ev = [(e.meta["event"], e.meta["frame"], e.meta["time"]) for e in keep.kind("event")]
    assert ev == [("start", 15, pytest.approx(0.15)), ("end", 45, pytest.approx(0.45))]
    assert keep.kind("desc")[0].meta["model"]["delay"] == D


def test_content_the_model_cannot_take_is_counted_not_fatal():
    keep = Keep()
    p = Pipeline(None, [keep], model=feat_model())
    p.process(Chunk("x", 1, "audio", np.zeros((100, 1), np.float32), 16000.0, 0, 0.0, desc={}))
    p.process(Chunk("y", 1, "features", np.zeros((5, 3), np.float32), 100.0, 0, 0.0, desc={}))  # 3 != 4
    p.process(Chunk("z", 1, "features", np.zeros((5, 4), np.float32), 100.0, 0, 0.0, desc={}))
    assert p.stats.get("bad", "content") == 2
    assert [q.stream for q in keep.kind("pred")] == ["z"]


def test_run_file_source_end_to_end(tmp_path):
    import soundfile as sf

    m = audio_model()
    sr = 8000  # a rate other than the front end's: the resampler is in the path
    x = (0.2 * np.sin(2 * np.pi * 300 * np.arange(sr) / sr)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, sr, subtype="FLOAT")
    keep = Keep()
    stats = Stats()
    p = Pipeline(FileSource(tmp_path / "a.wav", block_ms=13, stats=stats), [keep], model=m, stats=stats)
    p.run()
    y = np.concatenate([q.data for q in keep.kind("pred")])
    np.testing.assert_allclose(y, m.audio_stream(sr).push(x), atol=1e-6)
    assert keep.kind("eos") and keep.kind("stats")[-1].meta["counters"]["frames_in"] == sr
    assert stats.lat_total.n == len(keep.kind("pred"))


def test_stats_are_published_periodically_while_running(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.zeros(8000, np.float32), 16000)
    keep = Keep()
    stats = Stats()
    cfg = StreamConfig(stats_interval=0.1, desc_interval=0.1)
    p = Pipeline(FileSource(tmp_path / "a.wav", realtime=True, stats=stats), [keep], model=audio_model(),
                 stats=stats, config=cfg)
    p.run()
    st = keep.kind("stats")
    assert len(st) >= 3 and [m.seq for m in st] == list(range(len(st)))
    assert all(m.topic == "out/_stats/stats" and "counters" in m.meta and "latency" in m.meta for m in st)
    assert st[-1].meta["counters"]["frames_in"] == 8000
    assert len(keep.kind("desc")) >= 3  # the descriptor repeats too


def test_a_full_disk_closes_that_sink_and_the_others_go_on(tmp_path):
    import soundfile as sf

    from streamrnn.errors import StreamRNNError
    from streamrnn.transport.sinks import JsonLinesSink

    sf.write(tmp_path / "a.wav", np.zeros(64000, np.float32), 16000)
    keep, stats = Keep(), Stats()
    full = JsonLinesSink("/dev/full")  # every flush fails with ENOSPC
    p = Pipeline(FileSource(tmp_path / "a.wav", stats=stats), [full, keep], model=audio_model(), stats=stats)
    p.run()
    assert stats.get("sink_errors", "JsonLinesSink") == 1 and p.sinks == [keep]
    assert sum(len(q.data) for q in keep.kind("pred")) == 398 and keep.kind("eos")
    stats = Stats()
    alone = Pipeline(FileSource(tmp_path / "a.wav", stats=stats), [JsonLinesSink("/dev/full")],
                     model=audio_model(), stats=stats)
    with pytest.raises(StreamRNNError, match="every sink failed.*No space left"):
        alone.run()


def test_stop_event_ends_a_live_run_quickly(tmp_path):
    m = feat_model()
    stats = Stats()
    src = ZmqSource(f"zmq+pull+ipc://{tmp_path}/in.sock", stats=stats)
    keep = Keep()
    stop = threading.Event()
    p = Pipeline(src, [keep], model=m, stats=stats)
    th = threading.Thread(target=p.run, args=(stop,))
    th.start()
    time.sleep(0.3)
    stop.set()
    th.join(5)
    assert not th.is_alive()
    assert keep.kind("stats")  # the final stats message is always sent


# --- ZeroMQ source with real sockets ----------------------------------------------------------
HDR = struct.Struct("<4sBBBBIIQQQddQ")


def _desc(stream, epoch, content="features", channels=4, rate=100.0):
    d = wire.descriptor(stream, epoch, content, "float32", channels, rate)
    return wire.encode(wire.Message(wire.DESC, stream, direction="in", epoch=epoch, meta=d))


def _data(stream, epoch, seq, idx, x, flags=0):
    return wire.encode(wire.Message(wire.DATA, stream, direction="in", epoch=epoch, seq=seq, sample_index=idx,
                                    t_capture=time.time(), flags=flags, data=x))


def _drain(src, p, want_preds, keep, timeout=5.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end and len(keep.kind("pred")) < want_preds:
        for ch in src.read(0.05):
            p.process(ch)
    for ch in src.read(0.2):
        p.process(ch)


@pytest.fixture
def zsrc(tmp_path):
    stats = Stats()
    src = ZmqSource(f"zmq+pull+ipc://{tmp_path}/in.sock", stats=stats, max_message_bytes=4096, max_streams=3)
    src.open()
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"ipc://{tmp_path}/in.sock")
    yield src, push, stats
    push.close()
    src.close()


def test_zmq_source_counts_each_malformed_kind_and_processes_the_valid_around_it(zsrc):
    src, push, stats = zsrc
    m = feat_model()
    keep = Keep()
    p = Pipeline(None, [keep], model=m, stats=stats)
    x = np.random.default_rng(5).standard_normal((40, 4)).astype(np.float32)
    good = [_data("s", 9, i, 4 * i, x[4 * i:4 * i + 4]) for i in range(10)]
    ok = good[0]
    bad = {
        "frames": [ok[0], ok[1]],
        "header_size": [ok[0], ok[1][:60], ok[2]],
        "magic": [ok[0], b"XXXX" + ok[1][4:], ok[2]],
        "version": [ok[0], ok[1][:4] + b"\x02" + ok[1][5:], ok[2]],
        "kind": [ok[0], ok[1][:5] + b"\x09" + ok[1][6:], ok[2]],
        "dtype": [ok[0], ok[1][:6] + b"\x03" + ok[1][7:], ok[2]],
        "payload_size": [ok[0], ok[1], ok[2][:-4]],
        "non_finite": _data("s", 9, 99, 0, np.full((4, 4), np.nan, np.float32)),
        "stream_id": [b"in/bad id/data", ok[1], ok[2]],
        "json": [b"in/s/desc", HDR.pack(b"SRNN", 1, 3, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0), b"{oops"],
        "too_large": _data("s", 9, 99, 0, np.zeros((300, 4), np.float32)),  # 4.9 kB > 4096
        "kind_mismatch": [b"in/s/pred", ok[1], ok[2]],
        "flags": [ok[0], ok[1][:7] + b"\x20" + ok[1][8:], ok[2]],
        "topic": [b"up/" + ok[0][3:], ok[1], ok[2]],
        "descriptor": wire.encode(wire.Message(wire.DESC, "s", direction="in", epoch=9, meta={"format": "x"})),
    }
    assert set(bad) == set(wire.REASONS)  # every reason, over a real socket
    push.send_multipart(_desc("s", 9))
    # interleave: good[i], then one bad message, for every i
    bads = list(bad.items())
    for i in range(10):
        push.send_multipart(good[i])
        for reason, frames in bads[i::10]:
            push.send_multipart(frames)
    _drain(src, p, 10, keep)
    for reason in bad:
        assert stats.get("bad", reason) == 1, (reason, dict(stats.reasons["bad"]))
    y = np.concatenate([q.data for q in keep.kind("pred")])
    np.testing.assert_allclose(y, m.forward(x), atol=1e-6)
    assert stats.get("gaps") == 0


def test_frame_beyond_the_hard_cap_drops_only_that_connection(zsrc):
    # A frame over libzmq's MAXMSGSIZE (2 x max_message_bytes + 4096) is refused inside libzmq
    # before it is buffered: that peer is disconnected and reconnects; the source keeps running.
    src, push, stats = zsrc
    m = feat_model()
    keep = Keep()
    p = Pipeline(None, [keep], model=m, stats=stats)
    x = np.ones((4, 4), np.float32)
    push.send_multipart(_desc("s", 1))
    push.send_multipart(_data("s", 1, 0, 0, x))
    _drain(src, p, 1, keep)
    push.send_multipart(_data("s", 1, 1, 4, np.zeros((4000, 4), np.float32)))  # 64 kB frame
    time.sleep(0.3)
    for i in range(2, 5):
        push.send_multipart(_data("s", 1, i, 4 * i, x))
    _drain(src, p, 4, keep)
    preds = keep.kind("pred")
    assert len(preds) == 4 and stats.get("gaps", "seq") == 1  # the refused message shows as a gap
    assert preds[1].flags & wire.FLAG_GAP


def test_zmq_source_gaps_no_descriptor_epoch_and_max_streams(zsrc):
    src, push, stats = zsrc
    m = feat_model()
    keep = Keep()
    p = Pipeline(None, [keep], model=m, stats=stats)
    x = np.ones((4, 4), np.float32)
    push.send_multipart(_data("late", 1, 0, 0, x))          # data before its descriptor
    push.send_multipart(_desc("s", 1))
    push.send_multipart(_data("s", 1, 0, 0, x))
    push.send_multipart(_data("s", 1, 2, 4, x))             # seq 1 lost
    push.send_multipart(_data("s", 1, 3, 12, x))            # sample_index jumped by 4
    push.send_multipart(_desc("s", 2))                      # producer restarted
    push.send_multipart(_data("s", 2, 0, 0, x))
    for k in range(4):                                      # max_streams=3 (s, a0, a1 live; a2, a3 refused)
        push.send_multipart(_desc(f"a{k}", 1))
        push.send_multipart(_data(f"a{k}", 1, 0, 0, x))
    _drain(src, p, 6, keep)
    assert stats.get("drops", "no_descriptor") == 3         # "late", a2 and a3 data
    assert stats.get("gaps", "seq") == 1 and stats.get("gaps", "sample_index") == 1
    assert stats.get("drops", "max_streams") == 2
    flags = [q.flags for q in keep.kind("pred", "s")]
    assert flags == [0, wire.FLAG_GAP, wire.FLAG_GAP, wire.FLAG_RESET]


def test_many_streams_in_one_socket_each_keep_their_own_state(zsrc):
    src, push, stats = zsrc
    m = audio_model()
    keep = Keep()
    p = Pipeline(None, [keep], model=m, stats=stats)
    rng = np.random.default_rng(11)
    xs = {k: (0.1 * rng.standard_normal(4000)).astype(np.float32) for k in ("a", "b", "c")}
    for k in xs:
        d = wire.descriptor(k, 5, "audio", "float32", 1, 16000.0)
        push.send_multipart(wire.encode(wire.Message(wire.DESC, k, direction="in", epoch=5, meta=d)))
    for i in range(10):  # interleaved blocks of 400 samples
        for k, x in xs.items():
            push.send_multipart(_data(k, 5, i, 400 * i, x[400 * i:400 * i + 400, None]))
    _drain(src, p, 30, keep)
    for k, x in xs.items():
        y = np.concatenate([q.data for q in keep.kind("pred", k)])
        np.testing.assert_allclose(y, m.audio_stream(16000).push(x), atol=1e-6)
    assert set(p.slots) == set(xs) and stats.get("gaps") == 0


def test_idle_stream_is_closed_and_comes_back_after_its_descriptor(zsrc):
    src, push, stats = zsrc
    keep = Keep()
    p = Pipeline(src, [keep], model=feat_model(), stats=stats,
                 config=StreamConfig(idle_timeout=0.2, desc_interval=0.05))
    x = np.ones((4, 4), np.float32)
    push.send_multipart(_desc("s", 1))
    push.send_multipart(_data("s", 1, 0, 0, x))
    t_end = time.monotonic() + 10
    while time.monotonic() < t_end and not stats.get("closed"):
        for ch in src.read(0.05):
            p.process(ch)
        p._periodic_desc()
    assert stats.get("closed", "idle") == 1 and "s" not in p.slots and "s" not in src.table
    eos = keep.kind("eos")
    assert len(eos) == 1 and eos[0].sample_index == 4
    push.send_multipart(_data("s", 1, 1, 4, x))   # no descriptor yet: dropped, counted
    push.send_multipart(_desc("s", 1))
    push.send_multipart(_data("s", 1, 2, 8, x))
    _drain(src, p, 2, keep)
    assert stats.get("drops", "no_descriptor") == 1
    preds = keep.kind("pred")
    # a new output epoch, started mid-stream: on the producer's clock (frame 8), flagged gap and reset
    assert len(preds) == 2 and preds[1].epoch != preds[0].epoch and preds[1].sample_index == 8
    assert preds[1].flags == wire.FLAG_GAP | wire.FLAG_RESET and stats.get("gap_samples") == 8


# --- configuration precedence ---------------------------------------------------------------
def test_config_precedence_and_unknown_keys(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('source = "stdin"\nrate = 8000\nsink = ["null", "jsonl:x"]\n[events]\nmin_on = 0.3\n')
    assert load_stream_config() == StreamConfig()
    c = load_stream_config(toml, env={})
    assert (c.source, c.rate, c.events.min_on, c.sink) == ("stdin", 8000, 0.3, ("null", "jsonl:x"))
    c = load_stream_config(toml, env={"STREAMRNN_RATE": "22050", "STREAMRNN_SINK": "stdout,null",
                                      "STREAMRNN_REALTIME": "yes"})
    assert (c.rate, c.sink, c.realtime, c.events.min_on) == (22050, ("stdout", "null"), True, 0.3)
    c = load_stream_config(toml, env={"STREAMRNN_RATE": "22050"}, overrides={"rate": 44100, "source": None})
    assert (c.rate, c.source) == (44100, "stdin")
    toml.write_text("rat = 1\n")
    with pytest.raises(ConfigError, match="unknown key.*rat"):
        load_stream_config(toml, env={})
    with pytest.raises(ConfigError, match="STREAMRNN_RATE"):
        load_stream_config(env={"STREAMRNN_RATE": "fast"})
    with pytest.raises(ConfigError, match="off_threshold"):
        load_stream_config(env={}, overrides={"events.off_threshold": 0.9})


def test_shipped_config_loads():
    from pathlib import Path

    c = load_stream_config(Path(__file__).parent.parent / "configs" / "stream.toml", env={})
    assert c == StreamConfig() or c.validate() is c


def test_a_compiling_kernel_tells_the_user_once_and_a_warm_warm_up_says_nothing(monkeypatch, caplog):
    """A cold start (kernels compiling) is announced on stderr instead of a silent wait, by the
    first real compile of a streamrnn kernel (streamrnn.compiling); kernels loaded or already
    compiled say nothing."""
    import logging

    from numba import njit

    from streamrnn import compiling

    m = streamrnn.load_model("vad")
    p = Pipeline(None, [Keep()], model=m)
    p.warm_up(16000)  # kernels loaded (or compiled) now
    notice = compiling.announce_compiles()
    monkeypatch.setattr(notice, "told", False)
    caplog.clear()  # (a cold cache's notice of the warm-up above)
    with caplog.at_level(logging.WARNING, logger="streamrnn"):
        p.warm_up(16000)
        assert not [r for r in caplog.records if "compiling the Numba kernels" in r.getMessage()]

        def fresh(a):  # a kernel of streamrnn's that has never been compiled in this process
            return a + 1

        fresh.__module__ = "streamrnn.train.fresh"
        k1, k2 = njit(fresh), njit(lambda a: a * 2)  # the lambda is not streamrnn's: no notice
        k2(1)
        assert not [r for r in caplog.records if "compiling the Numba kernels" in r.getMessage()]
        k1(1), k1(2.0)  # two compiles (int64, float64), one line
        told = [r for r in caplog.records if "compiling the Numba kernels" in r.getMessage()]
        assert len(told) == 1 and told[0].levelno == logging.WARNING


def test_a_changed_descriptor_resets_the_stream_once_and_says_why():
    """The pipeline alone decides resets (the source only keeps the wire's bookkeeping): a new dtype
    in the descriptor counts resets.descriptor, never also a flag."""
    m = feat_model()
    x = np.random.default_rng(4).standard_normal((20, 4)).astype(np.float32)
    keep, stats = Keep(), Stats()
    p = Pipeline(None, [keep], model=m, stats=stats)
    p.process(Chunk("s", 1, "features", x[:10], 100.0, 0, 0.0, desc={"dtype": "float32"}))
    p.process(Chunk("s", 1, "features", x[10:], 100.0, 10, 0.0, desc={"dtype": "int16"}))
    preds = keep.kind("pred")
    np.testing.assert_allclose(preds[1].data, m.forward(x[10:]), atol=1e-6)  # fresh state
    assert stats.get("resets", "descriptor") == 1 and stats.get("resets", "flag") == 0
    assert preds[1].flags & wire.FLAG_RESET
