"""The bulk paths of the ZeroMQ server (issue 15): ``wire.decode_data_many`` against the per-message
``wire.decode`` on random and hostile messages, ``wire.Outputs.encode`` against ``wire.encode``, a
``ZmqSource`` read against the per-message decode + ``_accept`` path, the pipeline's batched outputs in
message order, and ``ZmqSink.write_outputs`` over a real socket."""

import importlib.util
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

import streamrnn
from streamrnn.config import EventParams, StreamConfig
from streamrnn.errors import WireError
from streamrnn.runtime.pipeline import Pipeline
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.sinks import Sink, ZmqSink
from streamrnn.transport.sources import Chunk, ZmqSource

from test_cli_stream import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fuzz_wire", ROOT / "tools" / "fuzz_wire.py")
fuzz_wire = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_wire)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _expected_fast(frames, max_bytes):
    """What decode_data_many must say of one message, from wire.decode alone: the decoded fields with
    the samples as float32 (int16 / 32768 in float64, exact in float32), or None."""
    try:
        m = wire.decode(frames, max_bytes)
    except WireError:
        return None
    if (m.kind != wire.DATA or m.direction != "in" or m.stream == wire.STATS_STREAM
            or m.dtype not in (wire.DT_I16, wire.DT_F32) or m.data.shape[0] == 0):
        return None
    x = (m.data.astype(np.float64) / 32768.0).astype(np.float32) if m.dtype == wire.DT_I16 else m.data
    return (m.stream, m.epoch, m.seq, m.sample_index, m.t_capture, m.flags, m.dtype, x)


def _check_same(got, want):
    if want is None:
        assert got is None
        return
    assert got is not None
    assert got[:7] == want[:7]
    assert all(type(v) in (int, float, str) for v in got[:7])  # plain Python values, like decode's
    assert got[7].dtype == np.float32 and got[7].shape == want[7].shape
    assert np.array_equal(got[7], want[7])


def _source_and_push():
    """An open ``ZmqSource`` (PULL on a free 127.0.0.1 port) and a PUSH socket connected to it."""
    port = free_port()
    src = ZmqSource(f"zmq+pull://127.0.0.1:{port}", stats=Stats())
    src.open()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    return src, push


def _valid_data(rng: random.Random):
    """Valid data messages of both fast dtypes, several rows and channels, and a few edge cases."""
    out = []
    for _ in range(rng.randint(1, 4)):
        r, c = rng.randint(1, 9), rng.randint(1, 3)
        x = np.random.default_rng(rng.randrange(2**32)).standard_normal((r, c))
        sid = rng.choice(["s0", "mic.1", "a-b_c", "x" * 64])
        dt = rng.choice([np.int16, np.float32, np.float64])
        data = (x * 9000).astype(np.int16) if dt is np.int16 else x.astype(dt)
        out.append(wire.encode(wire.Message(wire.DATA, sid, direction="in", epoch=rng.randrange(1, 2**53),
                                            seq=rng.randrange(2**64), sample_index=rng.randrange(2**64),
                                            flags=rng.choice([0, 1, 2, 4, 8, 15]), t_capture=rng.uniform(-1e9, 1e9),
                                            t_send=rng.uniform(0, 2e9), data=data)))
    out.append(wire.encode(wire.Message(wire.DATA, "s0", direction="out", epoch=1, data=np.ones((2, 1), np.int16))))
    out.append(wire.encode(wire.Message(wire.DATA, "_stats", direction="in", epoch=1, data=np.ones((2, 1), np.int16))))
    out.append(wire.encode(wire.Message(wire.DATA, "s0", direction="in", epoch=1, data=np.ones((0, 1), np.int16))))
    nan = np.ones((3, 1), np.float32)
    nan[1] = np.nan
    out.append([b"in/s0/data", wire.HEADER.pack(b"SRNN", 1, 1, 1, 0, 3, 1, 1, 0, 0, 0.0, 0.0, 0), nan.tobytes()])
    return out


@FAST
@given(st.randoms(use_true_random=False), st.integers(0, 3), st.sampled_from([None, 200, wire.DEFAULT_MAX_MESSAGE_BYTES]))
def test_bulk_decode_agrees_with_decode_on_random_and_hostile_messages(rnd, n_mut, max_bytes):
    msgs = _valid_data(rnd) + fuzz_wire.valid_messages(rnd)
    msgs = [fuzz_wire.mutate(f, rnd) if n_mut and rnd.random() < 0.7 else f for f in msgs for _ in range(max(1, n_mut))]
    msgs = [[bytes(x) for x in f] for f in msgs]  # what recv gives
    rnd.shuffle(msgs)
    got = wire.decode_data_many(msgs, max_bytes)
    assert len(got) == len(msgs)
    for f, g in zip(msgs, got):
        _check_same(g, _expected_fast(f, max_bytes))


def test_bulk_decode_takes_the_common_case_and_leaves_the_rest_to_decode():
    a = (np.arange(-6, 6).reshape(4, 3) * 1000).astype(np.int16)
    msgs = [wire.encode(wire.Message(wire.DATA, "s0", direction="in", epoch=3, seq=1, sample_index=4, t_capture=2.0,
                                     data=a)),
            wire.encode(wire.Message(wire.DATA, "s1", direction="in", epoch=3, data=a.astype(np.float32))),
            wire.encode(wire.Message(wire.DATA, "s1", direction="in", epoch=3, data=a.astype(np.float64))),
            wire.encode(wire.Message(wire.HEARTBEAT, "s0", direction="in", epoch=3))]
    got = wire.decode_data_many(msgs)
    assert got[0][:7] == ("s0", 3, 1, 4, 2.0, 0, wire.DT_I16)
    assert np.array_equal(got[0][7], a / 32768.0)
    assert np.array_equal(got[1][7], a) and got[1][6] == wire.DT_F32
    assert got[2] is None and got[3] is None  # float64 and other kinds: decode's
    # too large for the limit, a bytearray frame (not what recv gives): decode's too
    assert wire.decode_data_many(msgs[:1], max_bytes=len(b"".join(msgs[0])) - 1) == [None]
    assert wire.decode_data_many([[bytearray(x) for x in msgs[0]]]) == [None]


def test_bulk_decode_remembers_a_bounded_number_of_topics(monkeypatch):
    monkeypatch.setattr(wire, "MAX_DATA_TOPICS", 4)
    monkeypatch.setattr(wire, "_data_topics", {})
    for i in range(10):
        assert wire.data_topic_stream(f"in/s{i}/data".encode()) == f"s{i}"
        assert len(wire._data_topics) <= 4
    assert wire.data_topic_stream(b"in/_stats/data") is None
    assert wire.data_topic_stream(b"in/\xff/data") is None


# --- outputs ------------------------------------------------------------------------------------------------
_ROW = st.tuples(st.sampled_from(["s0", "mic.1", "x" * 64]), st.sampled_from([0, 1, 2, 4, 7]),
                 st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
                 st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 2**64 - 1),
                 st.integers(0, 12), st.integers(1, 4))


@FAST
@given(st.lists(_ROW, max_size=12), st.sampled_from([wire.PRED, wire.DATA]), st.floats(0, 2e9))
def test_outputs_encode_is_encode_of_each_message(rows, kind, t_send):
    b = wire.Outputs(kind)
    rng = np.random.default_rng(len(rows))
    for s, fl, ep, seq, si, tc, ref, r, c in rows:
        b.append(s, fl, ep, seq, si, tc, ref, rng.standard_normal((r, c)).astype(np.float32))
    b.t_send = t_send
    want = [wire.encode(wire.Message(kind, s, flags=fl, epoch=ep, seq=seq, sample_index=si, t_capture=tc,
                                     t_send=t_send, ref_seq=ref, data=row[-1]))
            for (s, fl, ep, seq, si, tc, ref, *_), row in zip(rows, b.rows)]
    assert b.encode() == want
    assert [wire.encode(m) for m in b.messages()] == want


def test_outputs_encode_falls_back_to_encode_for_what_only_encode_converts_or_refuses():
    b = wire.Outputs(wire.PRED)
    b.append("s0", 0, 1, 0, 0, 0.0, 0, np.ones(3, np.float64))  # 1-D float64: encode sends a float64 column
    assert b.encode() == [wire.encode(next(b.messages()))]
    assert b.encode()[0][1][6] == wire.DT_F64
    b = wire.Outputs(wire.PRED)
    b.append("s 0", 0, 1, 0, 0, 0.0, 0, np.ones((1, 1), np.float32))
    with pytest.raises(WireError) as e:
        b.encode()
    assert e.value.reason == "stream_id"
    b = wire.Outputs(wire.PRED)
    b.append("s0", 0x10, 1, 0, 0, 0.0, 0, np.ones((1, 1), np.float32))
    with pytest.raises(WireError) as e:
        b.encode()
    assert e.value.reason == "flags"


def test_zmq_sink_sends_the_batch_as_single_messages():
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    sink = ZmqSink(f"zmq+push://127.0.0.1:{port}")
    sink.open()
    try:
        b = wire.Outputs(wire.PRED)
        ys = [np.full((k + 1, 2), k, np.float32) for k in range(3)]
        for k, y in enumerate(ys):
            b.append(f"s{k}", 0, 5, k, 10 * k, 1.0 + k, 7, y)
        sink.write_outputs(b)
        assert b.t_send > 0
        got = [wire.decode(pull.recv_multipart()) for _ in ys]
    finally:
        sink.close()
        pull.close(0)
    assert [(m.stream, m.seq, m.sample_index, m.t_capture, m.ref_seq, m.t_send) for m in got] == \
        [(f"s{k}", k, 10 * k, 1.0 + k, 7, b.t_send) for k in range(3)]
    assert all(np.array_equal(m.data, y) for m, y in zip(got, ys))


# --- the source: one read against message-by-message decode + _accept -----------------------------------
def _stream_msgs(rng: random.Random):
    """Descriptors and data of a few streams, with the cases _accept counts: duplicates, stale data,
    gaps, a dtype or channel mismatch, data without a descriptor, an end, garbage, the _stats stream."""
    out = []
    for s in ("a", "b", "c"):
        out.append(wire.encode(wire.Message(wire.DESC, s, direction="in", epoch=4,
                                            meta=wire.descriptor(s, 4, "audio", "int16", 1, 16000.0))))
    idx = {"a": 0, "b": 0, "c": 0, "z": 0}
    seq = dict.fromkeys(idx, 0)
    for _ in range(rng.randint(5, 30)):
        s = rng.choice("abcz")
        n = rng.choice([1, 160, 320])
        op = rng.random()
        dt, ch, ep = np.int16, 1, 4
        if op < 0.1:
            seq[s] -= 1  # a duplicate (or stale)
        elif op < 0.2:
            seq[s] += 2  # a gap
            idx[s] += 77
        elif op < 0.25:
            dt = np.float32  # a dtype mismatch
        elif op < 0.3:
            ch = 2  # a channel mismatch
        elif op < 0.35:
            ep = 5  # an epoch without a descriptor
        x = np.random.default_rng(rng.randrange(2**32)).integers(-2000, 2000, (n, ch)).astype(dt)
        t = time.time() + rng.choice([-0.1, -0.2, -7200.0, 60.0])
        out.append(wire.encode(wire.Message(wire.DATA, s, direction="in", epoch=ep, seq=max(0, seq[s]),
                                            sample_index=idx[s], t_capture=t, data=x,
                                            flags=wire.FLAG_END if rng.random() < 0.03 else 0)))
        seq[s] += 1
        idx[s] += n
        if rng.random() < 0.1:
            out.append(rng.choice([[b"junk"], [b"in/a/data", b"\x00" * 64, b""],
                                   wire.encode(wire.Message(wire.DATA, "_stats", direction="in", epoch=4,
                                                            data=np.ones((2, 1), np.int16)))]))
    out.append(wire.encode(wire.Message(wire.EOS, "b", direction="in", epoch=4, flags=wire.FLAG_END)))
    return out


def _chunk_fields(ch: Chunk):
    return (ch.stream, ch.epoch, ch.content, ch.rate, ch.sample_index, ch.t_capture, ch.flags, ch.seq, ch.end,
            ch.time_ok, ch.data.dtype, ch.data.tobytes())


@pytest.mark.parametrize("per_read", [5, 40])  # under and over BULK_MIN_MESSAGES: one by one, and in bulk
@pytest.mark.parametrize("seed", range(5))
def test_source_read_is_message_by_message_decode_and_accept(seed, per_read):
    msgs = _stream_msgs(random.Random(seed))
    ref = ZmqSource("zmq+pull://127.0.0.1:1", stats=Stats())  # never opened: the per-message path
    want = []
    for f in msgs:
        try:
            m = wire.decode(f, ref.max_message_bytes)
        except WireError as e:
            ref.stats.count("bad", e.reason)
            continue
        ch = ref._accept(m)
        if ch is not None:
            want.append(ch)
    src, push = _source_and_push()
    try:
        for f in msgs:
            push.send_multipart(f)
        time.sleep(0.2)  # all queued: every read but the last gets per_read messages
        got = []
        t_end = time.monotonic() + 10
        while src.stats.get("messages_in") < len(msgs) and time.monotonic() < t_end:
            got += src.read(0.05, max_messages=per_read)
    finally:
        src.close()
        push.close(0)
    assert src.stats.get("messages_in") == len(msgs)
    assert [_chunk_fields(c) for c in got] == [_chunk_fields(c) for c in want]
    assert dict(src.stats.reasons) == dict(ref.stats.reasons)
    assert {k: v for k, v in src.stats.totals.items() if k != "messages_in"} == dict(ref.stats.totals)
    assert {k: (s.desc, s.epoch, s.next_seq, s.next_index, s.had_data) for k, s in src.table.items()} == \
        {k: (s.desc, s.epoch, s.next_seq, s.next_index, s.had_data) for k, s in ref.table.items()}


# --- the pipeline: a tick's outputs written together, in message order -----------------------------------
class _KeepAll(Sink):
    def __init__(self):
        super().__init__()
        self.msgs, self.batches = [], 0

    def write(self, m):
        self.msgs.append(m)

    def write_outputs(self, batch):
        self.batches += 1
        super().write_outputs(batch)


class _WriteOnly:
    """A duck-typed sink without write_outputs: it gets every message through write."""

    def __init__(self):
        self.msgs = []

    def open(self):
        pass

    def write(self, m):
        self.msgs.append(m)

    def flush(self):
        pass

    def close(self):
        pass

    def describe(self):
        return "write only"


def _run_ticks(events: bool, end: str):
    model = streamrnn.Model.random("gru", input_size=3, hidden_size=6, output_size=1, activation="sigmoid", seed=3)
    keep, plain = _KeepAll(), _WriteOnly()
    cfg = StreamConfig(events=EventParams(on_threshold=0.5, off_threshold=0.49, min_on=0.0, min_off=0.0,
                                          enabled=events))
    p = Pipeline(None, [keep, plain], model=model, config=cfg)
    rng = np.random.default_rng(0)
    for tick in range(6):
        chunks = [Chunk(s, 1, "features", (rng.standard_normal((5, 3)) * 4).astype(np.float32), 100.0, 5 * tick,
                        time.time() - 0.05, seq=tick, desc={}, end=tick == 5 and s == end) for s in ("a", "b", "c")]
        p.process_many(chunks)
    p.close_all("shutdown")
    return p, keep, plain


def test_pipeline_writes_a_ticks_outputs_in_one_batch():
    p, keep, plain = _run_ticks(events=False, end="c")
    assert keep.batches == 6  # one write_outputs per tick, with every stream's pred
    preds = [m for m in keep.msgs if m.kind == wire.PRED]
    assert len(preds) == 18 and p.stats.get("frames_out") == 90 and p.stats.get("messages_out") == len(keep.msgs)
    assert len({m.t_send for m in preds}) == 6  # one send time per tick
    assert [(m.kind, m.stream, m.seq) for m in keep.msgs] == [(m.kind, m.stream, m.seq) for m in plain.msgs]
    # the latency of every plausible pred is counted, from its t_capture to its batch's send time
    assert p.stats.lat_total.n == 18
    assert p.stats.lat_total.max == pytest.approx(max(m.t_send - m.t_capture for m in preds))


def test_pipeline_outputs_stay_in_message_order_with_events():
    p, keep, plain = _run_ticks(events=True, end="b")  # b's end of stream comes before c's last pred
    assert [(m.kind, m.stream, m.seq) for m in keep.msgs] == [(m.kind, m.stream, m.seq) for m in plain.msgs]
    assert len([m for m in keep.msgs if m.kind == wire.PRED]) == 18
    assert [m for m in keep.msgs if m.kind == wire.EVENT]  # the random model crosses 0.5 somewhere
    for i, m in enumerate(keep.msgs):
        if m.kind == wire.EVENT and m.meta["event"] != "end" or m.kind == wire.EOS:
            # an event or end of stream comes after the pred that covers its frame, never before it
            last = max((q.sample_index + len(q.data) for q in keep.msgs[:i]
                        if q.kind == wire.PRED and q.stream == m.stream), default=0)
            assert m.sample_index <= last
        if m.kind == wire.EOS:
            assert not [q for q in keep.msgs[i + 1:] if q.stream == m.stream and q.kind == wire.PRED]


# --- latency: one NumPy pass per tick, the bins of one value at a time ---------------------------------------
_EDGES = [1e-6 * 10 ** (k / 40) for k in range(0, 365, 7)]


@FAST
@given(st.lists(st.one_of(st.floats(-1.0, 1e4), st.sampled_from(_EDGES + [0.0, 1e-6, 1e300, -1e300]),
                          st.sampled_from(_EDGES).map(lambda e: e * (1 + 1e-15))), max_size=150))
def test_latency_many_counts_what_latency_of_each_counts(values):
    from streamrnn.stats import LatencyHistogram

    one, many = Stats(), Stats()
    for v in values:
        one.latency(v)
    many.latency_many(values)  # one by one under 64 values, in one NumPy pass from 64
    assert many.lat_total.counts == one.lat_total.counts and many.lat_interval.counts == one.lat_interval.counts
    assert (many.lat_total.n, many.lat_total.max) == (one.lat_total.n, one.lat_total.max)
    assert LatencyHistogram.bins(np.array(values)).tolist() == [LatencyHistogram.bin(v) for v in values]
    h = LatencyHistogram()
    h.add_many(np.array(values, np.float64))  # the NumPy pass at any size
    assert (h.counts, h.n, h.max) == (one.lat_total.counts, one.lat_total.n, one.lat_total.max)


def test_source_read_stops_at_its_byte_budget_counting_every_frame():
    src, push = _source_and_push()
    try:
        push.send_multipart(wire.encode(wire.Message(wire.DESC, "s", direction="in", epoch=4,
                                                     meta=wire.descriptor("s", 4, "audio", "int16", 1, 16000.0))))
        big_topic = [b"in/" + b"x" * 3000 + b"/data", b"\0" * 64, b""]  # 3 kB, no magic: rejected, but read
        for i in range(5):
            push.send_multipart(big_topic)
        for i in range(4):
            push.send_multipart(wire.encode(wire.Message(wire.DATA, "s", direction="in", epoch=4, seq=i,
                                                         sample_index=500 * i, t_capture=time.time(),
                                                         data=np.ones((500, 1), np.int16))))  # 1 kB payloads
        time.sleep(0.3)
        sizes, got = [], []
        t_end = time.monotonic() + 10
        while src.stats.get("messages_in") < 10 and time.monotonic() < t_end:
            before = src.stats.get("messages_in")
            got += src.read(0.05, max_bytes=2500)
            sizes.append(src.stats.get("messages_in") - before)
    finally:
        src.close()
        push.close(0)
    # desc + one 3 kB message (over the budget), then one per read, then the 1 kB messages three at a time
    assert sizes[:7] == [2, 1, 1, 1, 1, 3, 1]
    assert src.stats.get("bad", "magic") == 5 and [c.seq for c in got] == [0, 1, 2, 3]
