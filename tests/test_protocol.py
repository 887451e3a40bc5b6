"""`streamrnn/1` as an enforced contract (issue 20, items 1-6): what a producer can send that the server
must not misread.  Real ZeroMQ sockets (IPC in a temp dir) into the real ZeroMQ source and pipeline; the
expected rows come from ``Model.forward`` / ``AudioStream`` of the same input offline (the streaming
path under test is the source's bookkeeping, not the model), counters from the rules in docs/protocol.md."""

import json
import time

import numpy as np
import pytest
import zmq

from conftest import Keep
from streamrnn.config import StreamConfig
from streamrnn.runtime.pipeline import Pipeline
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.sources import ZmqSource
from test_pipeline import audio_model, feat_model



def msg(kind, stream, epoch, seq=0, idx=0, x=None, flags=0, t_capture=None, meta=None):
    return wire.encode(wire.Message(kind, stream, direction="in", epoch=epoch, seq=seq, sample_index=idx,
                                    t_capture=time.time() - 1.0 if t_capture is None else t_capture,
                                    flags=flags, data=x, meta=meta))


def desc(stream, epoch, content="features", channels=4, rate=100.0, dtype="float32", **over):
    d = wire.descriptor(stream, epoch, content, dtype, channels, rate)
    d["rate"] = rate
    d.update(over)
    return wire.encode(wire.Message(wire.DESC, stream, direction="in", epoch=epoch, meta=d))


class Server:
    """The ZeroMQ source on an IPC socket and a pipeline into a list; ``send`` then ``drain``."""

    def __init__(self, tmp_path, model, config=None):
        self.stats = Stats()
        self.src = ZmqSource(f"zmq+pull+ipc://{tmp_path}/in.sock", stats=self.stats, max_message_bytes=1 << 20)
        self.src.open()
        self.push = zmq.Context.instance().socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"ipc://{tmp_path}/in.sock")
        self.keep = Keep()
        self.p = Pipeline(self.src, [self.keep], model=model, stats=self.stats, config=config)
        self.n_sent = 0

    def send(self, *messages):
        for frames in messages:
            self.push.send_multipart(frames)
            self.n_sent += 1

    def drain(self, timeout=10.0):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end and self.stats.get("messages_in") < self.n_sent:
            self.p.process_many(self.src.read(0.05))

    def out(self, kind, stream=None):
        return self.keep.kind(kind, stream) if stream else self.keep.kind(kind)

    def close(self):
        self.push.close()
        self.src.close()


@pytest.fixture
def server(tmp_path):
    made = []

    def make(model, config=None):
        made.append(Server(tmp_path, model, config))
        return made[-1]

    yield make
    for s in made:
        s.close()


def rows(msgs):
    return np.concatenate([m.data for m in msgs]) if msgs else np.zeros((0, 0), np.float32)


# --- item 1: duplicate and old data are dropped and counted, never processed -----------------------
def test_duplicate_and_stale_data_are_dropped_counted_and_never_fed_to_the_model(server):
    m = feat_model()
    srv = server(m)
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    blocks = [x[10 * i:10 * i + 10] for i in range(5)]
    srv.send(desc("s", 3))
    srv.send(msg(wire.DATA, "s", 3, 0, 0, blocks[0]), msg(wire.DATA, "s", 3, 1, 10, blocks[1]),
             msg(wire.DATA, "s", 3, 2, 20, blocks[2]),
             msg(wire.DATA, "s", 3, 2, 20, blocks[2]),          # retransmitted: duplicate
             msg(wire.DATA, "s", 3, 3, 30, blocks[3]),
             msg(wire.DATA, "s", 3, 0, 0, blocks[0]),           # seq 3 behind: stale
             msg(wire.DATA, "s", 3, 4, 35, blocks[3][5:]),      # seq ahead, rows 35.. already consumed: stale
             msg(wire.DATA, "s", 3, 4, 40, blocks[4]),
             msg(wire.EOS, "s", 3, 0, 50, flags=wire.FLAG_END))
    srv.drain()
    preds = srv.out("pred", "s")
    np.testing.assert_allclose(rows(preds), m.forward(x), atol=1e-6)   # 50 rows, not 70
    assert [p.ref_seq for p in preds] == [0, 1, 2, 3, 4] and all(p.flags == 0 for p in preds)
    assert srv.stats.get("drops", "duplicate") == 1 and srv.stats.get("drops", "stale") == 2
    assert srv.stats.get("gaps") == 0 and srv.stats.get("gap_samples") == 0


def test_after_a_gap_older_data_is_stale_not_a_second_gap(server):
    m = feat_model()
    srv = server(m)
    x = np.random.default_rng(1).standard_normal((30, 4)).astype(np.float32)
    srv.send(desc("s", 3), msg(wire.DATA, "s", 3, 0, 0, x[:10]),
             msg(wire.DATA, "s", 3, 2, 20, x[20:]),                # seq 1 lost: a gap
             msg(wire.DATA, "s", 3, 1, 10, x[10:20]))              # arrives late: stale, not processed
    srv.drain()
    preds = srv.out("pred", "s")
    assert [p.sample_index for p in preds] == [0, 10] and [p.flags for p in preds] == [0, wire.FLAG_GAP]
    np.testing.assert_allclose(rows(preds), m.forward(np.concatenate([x[:10], x[20:]])), atol=1e-6)
    assert srv.stats.get("gaps", "seq") == 1 and srv.stats.get("gap_samples") == 10
    assert srv.stats.get("drops", "stale") == 1


# --- item 2: the reset flag on input: documented (data), rejected elsewhere -------------------------------
def test_reset_flag_on_data_resets_as_documented_and_is_rejected_on_other_kinds(server):
    m = feat_model()
    srv = server(m)
    x = np.random.default_rng(2).standard_normal((30, 4)).astype(np.float32)
    srv.send(desc("s", 3), msg(wire.DATA, "s", 3, 0, 0, x[:10]), msg(wire.DATA, "s", 3, 1, 10, x[10:20]))
    bad_desc = desc("s", 3)
    bad_desc[1] = bad_desc[1][:7] + bytes([wire.FLAG_RESET]) + bad_desc[1][8:]
    srv.send(bad_desc,                                                          # reset on desc: bad.flags
             msg(wire.EOS, "s", 3, 0, 20, flags=wire.FLAG_END | wire.FLAG_RESET))  # reset on eos: bad.flags
    srv.send(msg(wire.DATA, "s", 3, 2, 20, x[20:], flags=wire.FLAG_RESET))        # reset on data: honoured
    srv.send(msg(wire.EOS, "s", 3, 0, 30, flags=wire.FLAG_END))
    srv.drain()
    assert srv.stats.get("bad", "flags") == 2 and srv.stats.get("resets", "flag") == 1
    preds, eos = srv.out("pred", "s"), srv.out("eos", "s")
    assert len(eos) == 2 and eos[0].epoch == preds[0].epoch != preds[2].epoch == eos[1].epoch
    assert [p.flags for p in preds] == [0, 0, wire.FLAG_RESET]
    # the new output stream starts on the producer's clock (frame 20) with fresh state
    assert preds[2].sample_index == 20 and preds[2].seq == 0
    np.testing.assert_allclose(preds[2].data, m.forward(x[20:]), atol=1e-6)


# --- item 3: one window of plausible capture times ----------------------------------------------------
def test_capture_times_outside_the_window_are_counted_at_input_and_left_out_of_latency(server):
    srv = server(feat_model())
    x = np.ones((10, 4), np.float32)
    now = time.time()
    times = [None, 0.0, None, now + 0.5, None, now - 4000.0, None]  # 0.5 s ahead: a clock ahead of ours
    srv.send(desc("s", 3))
    for i, t in enumerate(times):
        srv.send(msg(wire.DATA, "s", 3, i, 10 * i, x, t_capture=t))
    srv.drain()
    assert srv.stats.get("implausible_time", "past") == 2 and srv.stats.get("implausible_time", "future") == 1
    lat = srv.stats.snapshot()["latency"]
    assert lat["n"] == 4 and lat["max_ms"] < 10_000 and lat["p50_ms"] > 0.001
    preds = srv.out("pred", "s")
    assert preds[1].t_capture == 0.0 + 9 / 100.0  # used as sent: the capture time of its last row


def test_rows_stamped_after_their_arrival_are_capped_at_the_arrival(server):
    srv = server(feat_model())
    srv.send(desc("s", 3, rate=10.0))
    # 10 rows at 10 rows/s stamped 0.5 s ago (the time the producer sent them, say): the last row's
    # nominal capture time lies 0.4 s ahead; the pred's t_capture is the message's arrival instead
    t0 = time.time() - 0.5
    srv.send(msg(wire.DATA, "s", 3, 0, 0, np.ones((10, 4), np.float32), t_capture=t0))
    srv.drain()
    p = srv.out("pred", "s")[-1]
    assert srv.stats.get("implausible_time") == 0 and t0 < p.t_capture <= p.t_send < t0 + 0.9
    assert srv.stats.snapshot()["latency"]["n"] == 1


# --- item 4: rates and channels ---------------------------------------------------------------------
@pytest.mark.parametrize("rate", [16000.5, 8000.0, 48000.0])
def test_pred_t_capture_never_goes_backwards_at_any_accepted_rate(server, rate):
    srv = server(audio_model())
    x = (0.1 * np.random.default_rng(3).standard_normal(int(rate))).astype(np.float32)
    srv.send(desc("a", 5, "audio", 1, rate))
    t0 = time.time() - 2.0
    block = 333
    for i in range(0, x.size, block):  # replayed faster than real time: blocks 1 ms apart on the clock
        srv.send(msg(wire.DATA, "a", 5, i // block, i, x[i:i + block, None], t_capture=t0 + 0.001 * (i // block)))
    srv.drain()
    t = [p.t_capture for p in srv.out("pred", "a")]
    assert len(t) > 5 and all(b >= a for a, b in zip(t, t[1:])), np.diff(t).min()
    assert srv.stats.get("implausible_time") == 0


def test_stereo_is_downmixed_by_the_mean_of_its_channels(server):
    m = audio_model()
    srv = server(m)
    x = (0.1 * np.random.default_rng(4).standard_normal((8000, 2))).astype(np.float32)
    srv.send(desc("st", 5, "audio", 2, 16000.0))
    for i in range(0, 8000, 400):
        srv.send(msg(wire.DATA, "st", 5, i // 400, i, x[i:i + 400]))
    srv.drain()
    mono = (x[:, 0].astype(np.float64) + x[:, 1]) / 2  # the mean, in float64: independent of the downmix code
    np.testing.assert_allclose(rows(srv.out("pred", "st")), m.audio_stream(16000).push(mono.astype(np.float32)),
                               atol=1e-5)


# --- item 5: every stated rule enforced, under the reason the document names ----------------------------
def test_each_stated_rule_is_enforced_under_its_documented_reason(server):
    srv = server(feat_model())
    x = np.ones((10, 4), np.float32)
    no_labels = desc("a", 3)
    d = json.loads(no_labels[2])
    del d["labels"]
    no_labels[2] = json.dumps(d).encode()
    srv.send(no_labels)                                                  # bad.descriptor
    srv.send(desc("b", 2**60), desc("c", 0))                             # bad.descriptor (epochs 1..2^53-1)
    srv.send(desc("_stats", 3), msg(wire.DATA, "_stats", 3, 0, 0, x))    # bad.stream_id (reserved) x2
    srv.send(desc("p", 3, content="pred"))                               # bad.content
    hdr = wire.HEADER.pack(b"SRNN", 1, wire.DATA, wire.DT_F32, 0, 0, 0, 3, 0, 0, time.time(), 0.0, 0)
    srv.send([b"in/s/data", hdr, b""])                                   # bad.payload_size (n_cols = 0)
    srv.send(desc("s", 3), msg(wire.DATA, "s", 3, 0, 0, x))
    srv.send(msg(wire.EOS, "s", 4, 0, 10, flags=wire.FLAG_END))          # another epoch: drops.no_descriptor
    srv.send(msg(wire.EOS, "s", 3, 0, 10, flags=0))                      # no end flag: bad.flags
    srv.send(msg(wire.DATA, "s", 3, 1, 10, x))                           # still open: processed
    srv.drain()
    bad = dict(srv.stats.reasons["bad"])
    assert bad == {"descriptor": 3, "stream_id": 2, "content": 1, "payload_size": 1, "flags": 1}, bad
    assert srv.stats.get("drops", "no_descriptor") == 1 and srv.stats.get("drops", "bad_stream") == 0
    assert len(srv.out("pred", "s")) == 2 and not srv.out("eos", "s") and "s" in srv.p.slots


# --- item 6: ref_seq is 0 except on pred; seq counts per kind ---------------------------------------------
def test_eos_carries_ref_seq_0_and_seq_counts_per_kind(server):
    srv = server(feat_model())
    x = np.ones((10, 4), np.float32)
    srv.send(desc("s", 3))
    srv.send(*[msg(wire.DATA, "s", 3, i, 10 * i, x) for i in range(5)])
    srv.send(msg(wire.DATA, "s", 3, 5, 50, x, flags=wire.FLAG_RESET))      # eos of the first output stream
    srv.send(msg(wire.DATA, "s", 3, 6, 60, x, flags=wire.FLAG_END))        # eos of the second
    srv.drain()
    out = srv.out("eos", "s")
    assert len(out) == 2 and [e.ref_seq for e in out] == [0, 0] and [e.seq for e in out] == [0, 0]
    preds = srv.out("pred", "s")
    assert [p.ref_seq for p in preds] == list(range(7)) and [p.seq for p in preds] == [0, 1, 2, 3, 4, 0, 1]
    descs = srv.out("desc", "s")
    assert [q.seq for q in descs] == [0, 0] and all(q.ref_seq == 0 for q in descs)


def test_other_kinds_from_a_producer_are_ignored_uncounted(server):
    srv = server(feat_model(), StreamConfig())
    srv.send(desc("s", 3))
    for kind in (wire.HEARTBEAT, wire.PRED, wire.EVENT, wire.STATS):
        frames = wire.encode(wire.Message(kind, "s", direction="in", epoch=3, meta={} if kind in wire.JSON_KINDS
                                          else None, data=np.ones((1, 1), np.float32) if kind == wire.PRED else None))
        srv.send(frames)
    srv.drain()
    assert not srv.stats.reasons.get("bad") and not srv.stats.reasons.get("drops") and srv.stats.get("messages_in") == 5
