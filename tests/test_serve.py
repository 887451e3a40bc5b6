"""`streamrnn serve` end to end: the real CLI as a subprocess, its real worker processes, real ZeroMQ
sockets on 127.0.0.1; producers and the consumer in this process speak streamrnn/1 over PUSH and SUB.

References are independent of the service: a lone ``AudioStream`` of the same model over the same
audio (offline), and the shard map recomputed here with zlib's CRC-32."""

import json
import os
import signal
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import zmq

from streamrnn.transport import wire

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_stream import SR, Proc, free_port, models, procs  # noqa: E402,F401

BLOCK = 320  # samples per message: 20 ms at 16 kHz, two hops of the front end (160)


def serve_cmd(model, p_in, p_out, workers, extra=()):
    return ["-m", "streamrnn", "serve", "--model", model, "--source", f"zmq+pull://127.0.0.1:{p_in}",
            "--sink", f"zmq+pub://127.0.0.1:{p_out}", "--workers", str(workers), "--no-events", *extra]


def start_service(tmp, procs, model, workers, extra=(), session=False):
    p_in, p_out = free_port(), free_port()
    s = Proc(serve_cmd(model, p_in, p_out, workers, extra), tmp, "serve", session=session)
    procs.append(s)
    s.wait_for("err", r"streamrnn: serving", timeout=120)
    return s, p_in, p_out


OPEN = []  # every Collector and Producer not yet closed: the autouse fixture closes them after each test


@pytest.fixture(autouse=True)
def close_sockets():
    """Close what a test left open (a failed assertion skips its own close): a polling thread's
    socket left open makes its context's garbage collection (Context.__del__ -> term) hang the run."""
    yield
    while OPEN:
        OPEN.pop().close()


class Collector:
    """A SUB socket on the egress, decoding every message in a thread."""

    def __init__(self, port):
        OPEN.append(self)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"out/")
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.msgs, self._stop = [], threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        time.sleep(0.5)  # the subscription travels through the proxy to the workers

    def _run(self):
        while not self._stop.is_set():
            if self.sock.poll(50):
                self.msgs.append(wire.decode(self.sock.recv_multipart()))

    def eos(self):
        return {m.stream for m in list(self.msgs) if m.kind == wire.EOS}

    def wait_eos(self, streams, timeout=60):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end and not set(streams) <= self.eos():
            time.sleep(0.05)
        return set(streams) - self.eos()

    def close(self):
        if self in OPEN:
            OPEN.remove(self)
        self._stop.set()
        self.t.join()
        self.sock.close(0)
        self.ctx.term()

    def of(self, sid):
        return [m for m in self.msgs if m.stream == sid]


class Producer:
    """One PUSH socket into the ingress; ``start``/``block``/``end`` speak streamrnn/1 for any stream."""

    def __init__(self, port):
        OPEN.append(self)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 5000)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.st = {}

    def start(self, sid):
        epoch = int(np.random.default_rng(abs(hash(sid)) % 2**32).integers(1, 2**52))
        self.st[sid] = {"epoch": epoch, "seq": 0, "index": 0}
        d = wire.descriptor(sid, epoch, "audio", "float32", 1, SR)
        self._send(wire.Message(wire.DESC, sid, "in", epoch=epoch, t_capture=time.time(), meta=d))

    def block(self, sid, x):
        st = self.st[sid]
        self._send(wire.Message(wire.DATA, sid, "in", epoch=st["epoch"], seq=st["seq"], sample_index=st["index"],
                                t_capture=time.time() - len(x) / SR, data=x[:, None]))
        st["seq"] += 1
        st["index"] += len(x)

    def end(self, sid):
        st = self.st[sid]
        self._send(wire.Message(wire.EOS, sid, "in", flags=wire.FLAG_END, epoch=st["epoch"],
                                sample_index=st["index"], t_capture=time.time()))

    def _send(self, m):
        self.sock.send_multipart(wire.encode(m))

    def close(self):
        if self in OPEN:
            OPEN.remove(self)
        self.sock.close()
        self.ctx.term()


def audio_of(i, seconds):
    """Stream i's audio: a tone switching on and off at its own times, in noise (float32, mono)."""
    rng = np.random.default_rng(100 + i)
    t = np.arange(int(seconds * SR)) / SR
    on = (np.sin(2 * np.pi * (0.7 + 0.1 * i) * t) > 0).astype(np.float32)
    x = 0.3 * np.sin(2 * np.pi * (300 + 20 * i) * t) * on + rng.normal(0, 0.01, t.shape)
    return x.astype(np.float32)


def preds(msgs, epoch=None):
    return [m for m in msgs if m.kind == wire.PRED and (epoch is None or m.epoch == epoch)]


def check_in_order(ps, first_index=0):
    """Consecutive seq from 0 and sample_index from ``first_index``: in order, none lost, none twice."""
    assert [p.seq for p in ps] == list(range(len(ps)))
    idx = first_index + np.cumsum([0] + [p.data.shape[0] for p in ps])[:-1]
    assert [p.sample_index for p in ps] == list(idx)


def last_worker_stats(msgs):
    out = {}
    for m in msgs:
        if m.kind == wire.STATS and m.meta.get("scope") == "worker":
            out[m.meta["worker"]] = m.meta
    return out


@pytest.mark.parametrize("workers", [2, 4])
def test_50_streams_bit_identical_sticky_and_sigterm_drains(tmp_path, models, procs, workers):
    path, model = models["audio"]
    # with 4 workers SIGTERM goes to the whole process group (systemd's default stop, `timeout`): every
    # worker gets it beside the supervisor's own; with 2, to the supervisor alone
    group = workers == 4
    s, p_in, p_out = start_service(tmp_path, procs, path, workers, session=group)
    col = Collector(p_out)
    prod = Producer(p_in)
    ids = [f"mic{i}" for i in range(50)]
    xs = {sid: audio_of(i, 1.0) for i, sid in enumerate(ids)}
    for sid in ids:
        prod.start(sid)
    t0 = time.monotonic()
    for k in range(0, len(xs[ids[0]]), BLOCK):  # interleaved, as live producers would send (4x real time)
        time.sleep(max(0.0, t0 + k / SR / 4 - time.monotonic()))
        for sid in ids:
            prod.block(sid, xs[sid][k:k + BLOCK])
    ended = ids[::2]  # half end themselves; the other half are ended by the drain
    for sid in ended:
        prod.end(sid)
    assert col.wait_eos(ended) == set()
    t_end = time.monotonic() + 30  # every stream's last prediction is out (frames: 1 s / 10 ms - 1 window)
    n_frames = {sid: model.audio_stream(SR).push(xs[sid]).shape[0] for sid in ids}
    while time.monotonic() < t_end and any(sum(p.data.shape[0] for p in preds(col.of(sid))) < n_frames[sid]
                                           for sid in ids):
        time.sleep(0.05)
    if group:
        os.killpg(s.p.pid, signal.SIGTERM)
    assert s.finish(None if group else signal.SIGTERM, timeout=60) == 0  # SIGTERM: drain, exit 0
    assert "while draining" not in s.err.read_text()  # no worker ended by a signal
    assert col.wait_eos(ids, timeout=10) == set()
    col.close()
    prod.close()
    for sid in ids:
        ms = col.of(sid)
        ps = preds(ms)
        assert len({m.epoch for m in ms}) == 1  # one output stream: no restart, no reset
        check_in_order(ps)
        y = np.concatenate([p.data for p in ps])
        assert np.array_equal(y, model.audio_stream(SR).push(xs[sid])), sid  # bit-identical to offline
        assert not any(p.flags & (wire.FLAG_GAP | wire.FLAG_RESET) for p in ps)
        assert [m.kind for m in ms].count(wire.EOS) == 1 and ms[-1].kind == wire.EOS
    # sticky routing by the documented hash: worker w opened exactly the streams with crc32(id) % N == w
    ws = last_worker_stats(col.msgs)
    assert sorted(ws) == list(range(workers))
    for w, st in ws.items():
        assert st["counters"]["streams_opened"] == sum(zlib.crc32(sid.encode()) % workers == w for sid in ids)
    agg = [m.meta for m in col.msgs if m.kind == wire.STATS and m.meta.get("scope") == "service"]
    assert agg and agg[-1]["counters"]["streams_opened"] == 50 and agg[-1]["workers"] == workers
    assert "worker(s)" in s.err.read_text()


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_killed_worker_restarts_resumes_from_snapshot_with_the_gap_counted(tmp_path, models, procs):
    path, model = models["audio"]
    p_metrics = free_port()
    s, p_in, p_out = start_service(tmp_path, procs, path, 2,
                                   ["--snapshot-interval", "0.3", "--metrics", f"127.0.0.1:{p_metrics}"])
    col = Collector(p_out)
    prod = Producer(p_in)
    ids = [f"s{i}" for i in range(8)]
    shard = {sid: zlib.crc32(sid.encode()) % 2 for sid in ids}
    assert set(shard.values()) == {0, 1}
    seconds = 4.0
    xs = {sid: audio_of(i, seconds) for i, sid in enumerate(ids)}
    for sid in ids:
        prod.start(sid)
    killed = send_killing_worker_0(prod, xs, ids, p_metrics)
    for sid in ids:
        prod.end(sid)
    assert killed is not None
    assert col.wait_eos(ids, timeout=60) == set()
    text = scrape(p_metrics)
    assert metric(text, "streamrnn_worker_restarts_total", worker="0") == 1.0
    assert metric(text, "streamrnn_worker_restarts_total", worker="1") == 0.0
    assert metric(text, "streamrnn_worker_up", worker="0") == 1.0
    assert f'pid="{killed}"' not in text  # the registry names the replacement
    assert metric(text, "streamrnn_messages_in_total", worker="router") >= len(ids) * (len(xs[ids[0]]) // BLOCK + 2)
    assert metric(text, "streamrnn_latency_seconds", worker="all", quantile="0.99") > 0
    assert metric(text, "streamrnn_drops_total", worker="router", reason="worker_hwm") == 0.0  # by reason, none
    assert metric(text, "streamrnn_workers") is None and "streamrnn_workers 2.0" in text
    assert s.finish(signal.SIGTERM, timeout=60) == 0
    col.close()
    prod.close()
    lost = check_restored_streams(col, ids, xs, shard, model)
    assert lost > 0  # the gap path was taken (input to the stopped worker died with it)
    err = s.err.read_text()
    assert "worker 0 died" in err and "1 restart(s)" in err


def send_killing_worker_0(prod, xs, ids, p_metrics) -> int:
    """Send every stream's audio in BLOCK blocks, paced at 2x real time; a third in, stop worker 0
    (found through the service's own metrics: its pid) and SIGKILL it, so that input reaching it is
    lost with it (a gap to count).  Returns the killed pid."""
    import os

    n_blocks = len(xs[ids[0]]) // BLOCK
    killed = None
    t0 = time.monotonic()
    for b in range(n_blocks):
        time.sleep(max(0.0, t0 + b * BLOCK / SR / 2 - time.monotonic()))
        for sid in ids:
            prod.block(sid, xs[sid][b * BLOCK:(b + 1) * BLOCK])
        if b == n_blocks // 3:
            text = scrape(p_metrics)
            killed = [int(line.split('pid="')[1].split('"')[0]) for line in text.splitlines()
                      if line.startswith("streamrnn_worker_up{") and 'worker="0"' in line][0]
            os.kill(killed, signal.SIGSTOP)
            time.sleep(0.1)
            os.kill(killed, signal.SIGKILL)
    return killed


def check_restored_streams(col, ids, xs, shard, model) -> int:
    """After worker 0 was killed and replaced: worker 1's streams (``shard[sid] == 1``) are complete,
    flag-free and bit-identical to offline; worker 0's have two output epochs, the first right, one
    ``restore`` event with the right counts, and the second equal to offline over the audio with the
    lost samples cut out.  Returns the frames lost in all."""
    lost = 0
    for sid in ids:
        ms = col.of(sid)
        x = xs[sid]
        full = model.audio_stream(SR).push(x)
        if shard[sid] == 1:  # the other worker's streams lose nothing
            ps = preds(ms)
            check_in_order(ps)
            assert np.array_equal(np.concatenate([p.data for p in ps]), full)
            assert not any(p.flags for p in ps) and len({m.epoch for m in ms}) == 1
            continue
        epochs = list(dict.fromkeys(m.epoch for m in ms))
        assert len(epochs) == 2, sid  # the dead worker's output stream, then the replacement's
        old, new = preds(ms, epochs[0]), preds(ms, epochs[1])
        check_in_order(old)
        if old:  # what the dead worker sent was right
            y_old = np.concatenate([p.data for p in old])
            assert np.array_equal(y_old, full[:len(y_old)])
        ev = [m.meta for m in ms if m.kind == wire.EVENT and m.meta["event"] == "restore"]
        assert len(ev) == 1
        ev = ev[0]
        lost += ev["frames_lost"]
        # the count: frames the restored state never saw, from the snapshot to the first input after it
        assert ev["samples_lost"] == ev["resume_sample"] - ev["snapshot_sample"] >= 0
        assert ev["samples_lost"] % BLOCK == 0
        assert ev["frames_lost"] == ev["samples_lost"] // 160  # hop of 160 samples at 16 kHz
        assert ev["frame"] == ev["snapshot_frame"] + ev["frames_lost"]
        assert new[0].sample_index == ev["frame"]  # the outputs stay on the producer's clock
        assert bool(new[0].flags & wire.FLAG_GAP) == (ev["frames_lost"] > 0)
        assert not new[0].flags & wire.FLAG_RESET  # restored, not reset
        check_in_order(new, first_index=ev["frame"])
        # the replacement resumed the snapshot's state exactly: offline over the audio it was given
        spliced = np.concatenate([x[:ev["snapshot_sample"]], x[ev["resume_sample"]:]])
        ref = model.audio_stream(SR).push(spliced)
        y_new = np.concatenate([p.data for p in new])
        k0 = ev["snapshot_frame"]
        assert np.array_equal(y_new, ref[k0:k0 + len(y_new)])
        assert len(y_new) == len(ref) - k0
        assert ms[-1].kind == wire.EOS
    return lost


def test_serve_refuses_what_it_cannot_serve(tmp_path, models):
    import subprocess

    path, _ = models["audio"]
    for args, msg in [(["--source", "demo", "--sink", "zmq+pub://127.0.0.1:1"], "ingress"),
                      (["--source", "zmq+pull://127.0.0.1:1", "--sink", "stdout"], "egress"),
                      (["--source", "zmq+pull://127.0.0.1:1", "--sink", "zmq+pub://127.0.0.1:2", "--workers", "0"],
                       "workers must be in 1..1024, got 0")]:
        r = subprocess.run([sys.executable, "-m", "streamrnn", "serve", "--model", path, *args],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_import_streamrnn_does_not_import_ray():
    import subprocess

    code = "import sys, streamrnn, streamrnn.serve, streamrnn.cli; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_state_store_round_trips_without_pickle(tmp_path):
    import os

    from streamrnn.errors import SnapshotError
    from streamrnn.serve.store import DirStore, pack, unpack

    tree = {"a": np.arange(6, dtype=np.float64).reshape(2, 3), "b": [1, 0.1, None, "x", {"c": np.int16(3)}]}
    st = DirStore(tmp_path / "state")
    st.put("worker-0", pack(tree))
    assert os.stat(tmp_path / "state").st_mode & 0o777 == 0o700
    assert os.stat(st.path("worker-0")).st_mode & 0o777 == 0o600
    back = unpack(st.get("worker-0"))
    assert np.array_equal(back["a"], tree["a"]) and back["b"] == [1, 0.1, None, "x", {"c": 3}]
    assert st.get("worker-1") is None
    # an archive with a pickled object array is refused, not unpickled
    import io

    buf = io.BytesIO()
    np.savez(buf, __tree__=np.frombuffer(b'{"__array__":"a0"}', np.uint8), a0=np.array([{"x": 1}], dtype=object))
    with pytest.raises(SnapshotError, match="not a streamrnn serve state archive"):
        unpack(buf.getvalue())
    for tree_json, why in [(b'{"__array__":[0,"|O",[1]]}', "dtype"), (b'{"__array__":[8,"<f8",[2]]}', "outside")]:
        buf = io.BytesIO()  # an object dtype or a range past the blob, named
        np.savez(buf, __tree__=np.frombuffer(tree_json, np.uint8), __blob__=np.zeros(16, np.uint8))
        with pytest.raises(SnapshotError, match=why):
            unpack(buf.getvalue())
    with pytest.raises(SnapshotError, match="cannot store a object array"):
        pack({"a": np.array([None], dtype=object)})
    big = DirStore(tmp_path / "s2", max_bytes=10)
    big.put("w", b"x" * 11)
    with pytest.raises(SnapshotError, match="11 bytes, above the limit of 10"):
        big.get("w")


def test_event_detector_snapshot_restores_the_hysteresis_exactly():
    from streamrnn.config import EventParams
    from streamrnn.runtime.events import EventDetector

    rng = np.random.default_rng(0)
    y = (rng.random((400, 2)) > 0.5).astype(np.float32) * 0.9
    p = EventParams(min_on=0.03, min_off=0.05)
    whole = EventDetector(["a", "b"], p, 100.0)
    ref = whole.push(y) + whole.flush()
    for cut in (1, 57, 200, 399):
        first = EventDetector(["a", "b"], p, 100.0)
        got = first.push(y[:cut])
        second = EventDetector(["a", "b"], p, 100.0)
        second.restore(json.loads(json.dumps(first.snapshot(), default=lambda a: a.tolist())))
        got += second.push(y[cut:]) + second.flush()
        assert got == ref
    from streamrnn.errors import SnapshotError

    with pytest.raises(SnapshotError, match="frame_rate"):
        EventDetector(["a", "b"], p, 50.0).restore(whole.snapshot())


def test_router_keeps_messages_whole_and_sends_each_stream_to_its_shard():
    from streamrnn.serve.routing import Router

    ctx = zmq.Context()
    try:
        src_in, src = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        src.bind("inproc://ingress")
        src_in.connect("inproc://ingress")
        outs, sinks = [], []
        for i in range(3):
            o, k = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
            k.bind(f"inproc://w{i}")
            o.connect(f"inproc://w{i}")
            outs.append(o)
            sinks.append(k)
        r = Router(src, outs)
        r.start()
        sent = []
        for j in range(60):
            sid = f"cam{j}"
            frames = [f"in/{sid}/data".encode(), bytes([j]) * 64, b"x" * j]
            src_in.send_multipart(frames)
            sent.append((sid, frames))
            if j == 10:  # malformed messages in between: one frame, four frames, a topic without a stream
                src_in.send_multipart([b"lonely"])
                src_in.send_multipart([b"in/a/data", b"h", b"p", b"extra"])
                src_in.send_multipart([b"in//data", b"h", b"p"])
        got = [[] for _ in range(3)]
        t_end = time.monotonic() + 10
        while sum(map(len, got)) < 63 and time.monotonic() < t_end:
            for i, k in enumerate(sinks):
                while k.poll(0):
                    got[i].append(k.recv_multipart())
            time.sleep(0.01)
        r.stop()
        assert r.stats.get("messages_in") == 63
        for sid, frames in sent:
            assert frames in got[zlib.crc32(sid.encode()) % 3]  # whole, and at its owner
        for bad in ([b"lonely"], [b"in/a/data", b"h", b"p", b"extra"], [b"in//data", b"h", b"p"]):
            assert bad in got[0]  # whole, to worker 0, whose decoder counts it as bad
        assert sum(map(len, got)) == 63
    finally:
        ctx.destroy(linger=0)


def _worker_pipeline(port):
    """A serve worker's pipeline (the bundled VAD, a real PULL source on 127.0.0.1:port), opened."""
    from streamrnn.config import EventParams, StreamConfig
    from streamrnn.runtime.run import build_pipeline
    from streamrnn.serve.worker import WorkerPipeline

    cfg = StreamConfig(model="vad", source=f"zmq+pull://127.0.0.1:{port}", sink=("null",), max_streams=16,
                       events=EventParams(enabled=True))
    plain = build_pipeline(cfg)
    w = WorkerPipeline(plain.source, plain.sinks, plain.processor, config=cfg, stats=plain.stats)
    w.source.open()
    return w


def test_worker_state_stores_shared_parts_once_and_restores_every_kind_of_stream(tmp_path):
    """A worker's snapshot keeps the bank rows and FeatureBank rows as columns and the out_desc's shared
    part once: restored (after pack/unpack, and from the previous format's tree) into a fresh worker,
    every stream's bank state, front end (banked 16 kHz rows, an 8 kHz stream's own FeatureStream, a
    stream of feature frames with none), event machine and descriptor equal the originals'."""
    from streamrnn.serve.store import pack, unpack
    from streamrnn.serve.worker import STATE_FORMAT_1
    from streamrnn.nn.model import Bank
    from streamrnn.audio.stream import FeatureBank

    port = free_port()
    a = _worker_pipeline(port)
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    rng = np.random.default_rng(4)
    streams = {f"m{i}": ("audio", 16000.0, 1, "int16") for i in range(5)}
    streams |= {"low": ("audio", 8000.0, 1, "int16"), "feat": ("features", 100.0, 40, "float32")}
    msgs = []
    for k, (sid, (content, rate, ch, dt)) in enumerate(streams.items()):
        msgs.append(wire.Message(wire.DESC, sid, epoch=11 + k, meta=wire.descriptor(sid, 11 + k, content, dt, ch, rate)))
        for b in range(3):
            n = 16 if content == "features" else 700 + 37 * k
            x = ((rng.standard_normal((n, ch)) * 3000).astype(np.int16) if dt == "int16"
                 else rng.standard_normal((n, ch)).astype(np.float32))
            msgs.append(wire.Message(wire.DATA, sid, epoch=11 + k, seq=b, sample_index=b * n, t_capture=time.time(),
                                     data=x))
    for m in msgs:
        push.send_multipart(wire.encode(m))
    deadline = time.time() + 20
    while a.stats.get("messages_in") < len(msgs) and time.time() < deadline:
        a.process_many(a.source.read(0.05))
    assert set(a.slots) == set(streams)
    tree = a.snapshot_state()
    rows = tree["streams"]
    assert len(tree["out_desc_common"]) == 1 and all(st["out_desc_common"] == 0 for st in rows)
    assert tree["bank_rows"]["h"].shape[1] == 7 and len(tree["feature_rows"]["n_left"]) == 5
    assert [st["frontend_row"] is not None for st in rows] == [sid.startswith("m") for sid in a.slots]
    # the previous format: each stream's rows and whole out_desc in its entry
    banks, fronts = Bank.split_rows(tree["bank_rows"]), FeatureBank.split_rows(tree["feature_rows"])
    old = {"format": STATE_FORMAT_1, "worker": 0, "t": tree["t"], "streams": [
        {k: v for k, v in st.items() if k not in ("frontend_row", "out_desc_common")}
        | {"bank": banks[i], "out_desc": a.slots[st["stream"]].out_desc,
           "frontend": st["frontend"] if st["frontend_row"] is None else fronts[st["frontend_row"]]}
        for i, st in enumerate(rows)]}
    for t in (unpack(pack(tree)), old):
        b = _worker_pipeline(free_port())
        try:
            assert b.restore_state(t) == 7
            for sid, s in a.slots.items():
                r = b.slots[sid]
                for x, y in ((s.proc.snapshot(), r.proc.snapshot()), (a.processor.bank.snapshot(sid),
                                                                      b.processor.bank.snapshot(sid)),
                             (s.detector.snapshot(), r.detector.snapshot())):
                    assert json.dumps(x, default=lambda v: [str(v.dtype), v.tolist()]) == \
                        json.dumps(y, default=lambda v: [str(v.dtype), v.tolist()]), sid
                assert list(r.out_desc) == list(s.out_desc)  # the same keys in the same order
                assert {**r.out_desc, "epoch": 0} == {**s.out_desc, "epoch": 0} and r.out_desc["epoch"] != s.out_desc["epoch"]
                assert (r.samples, r.frames, r.key) == (s.samples, s.frames, s.key) and r.frames > 0
        finally:
            b.source.close()
    a.source.close()
    push.close()
