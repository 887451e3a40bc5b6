"""Hostile peers of a ZeroMQ server (issue 13, items 1-7): well-formed messages whose values are inside
the wire format's limits but absurd.  The real CLI runs as a subprocess under an address-space limit
(an attempted multi-gigabyte allocation fails the test, not the machine); the peers are real ZeroMQ
sockets on 127.0.0.1.  What must hold: the server stays up, its neighbours lose nothing, every
refusal is counted by reason, memory stays bounded, every JSON line is finite."""

from __future__ import annotations

import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zmq

import streamrnn
from streamrnn.audio.frontend import LogMel
from streamrnn.runtime.pipeline import Pipeline
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.sources import ZmqSource

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_stream import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
AS_LIMIT = 2 * 2**30  # bytes of address space for the server: numba + zmq + a small model fit easily
SR = 16000


class Server:
    """``streamrnn stream`` on ``zmq+pull://127.0.0.1:PORT`` into a JSON-lines file, under RLIMIT_AS."""

    def __init__(self, tmp, model, port, *extra, name="srv"):
        def limits():
            resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.out, self.err = tmp / f"{name}.jsonl", tmp / f"{name}.err"
        self.p = subprocess.Popen([PY, "-m", "streamrnn", "stream", "--model", str(model), "--source",
                                   f"zmq+pull://127.0.0.1:{port}", "--sink", f"jsonl:{self.out}", "--no-events",
                                   *map(str, extra)], cwd=tmp, env=env, preexec_fn=limits,
                                  stdout=subprocess.DEVNULL, stderr=open(self.err, "w"))
        t_end = time.monotonic() + 90
        while "streamrnn: streaming" not in self.err.read_text():
            assert self.p.poll() is None and time.monotonic() < t_end, self.err.read_text()
            time.sleep(0.05)

    def stop(self) -> str:
        """SIGTERM; asserts a clean exit 0 and returns stderr."""
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(30)
        err = self.err.read_text()
        assert rc == 0 and "Traceback" not in err, err[-3000:]
        return err

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def records(self):
        """Every JSON line; a non-finite number (NaN, Infinity) fails."""
        def no_constant(c):
            raise AssertionError(f"non-finite JSON {c!r}")

        return [json.loads(ln, parse_constant=no_constant) for ln in self.out.read_text().splitlines()]


def counters(stderr: str, name: str) -> dict:
    """The reasons of counter ``name`` in the exit summary ('  refused   3 (channels=1, rate=2)')."""
    m = re.search(rf"^  {name}\s+\d+ \((.*)\)$", stderr, re.M)
    return {} if m is None else {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split(", "))}


def total(stderr: str, name: str) -> int:
    m = re.search(rf"^  {name}\s+(\d+)", stderr, re.M)
    return 0 if m is None else int(m.group(1))


class Peer:
    """A producer of many streams on one PUSH socket."""

    def __init__(self, port):
        self.s = zmq.Context.instance().socket(zmq.PUSH)
        self.s.setsockopt(zmq.LINGER, 2000)
        self.s.connect(f"tcp://127.0.0.1:{port}")

    def desc(self, stream, epoch, content, channels, rate):
        d = wire.descriptor(stream, epoch, content, "float32", channels, 1.0)
        d["rate"] = rate  # any rate the wire format takes, (0, 1e7): wire.descriptor's float() kept
        self.s.send_multipart(wire.encode(wire.Message(wire.DESC, stream, direction="in", epoch=epoch, meta=d)))

    def data(self, stream, epoch, seq, idx, x, t_capture=None):
        self.s.send_multipart(wire.encode(wire.Message(
            wire.DATA, stream, direction="in", epoch=epoch, seq=seq, sample_index=idx,
            t_capture=time.time() if t_capture is None else t_capture, data=np.ascontiguousarray(x, np.float32))))

    def eos(self, stream, epoch, seq, idx):
        self.s.send_multipart(wire.encode(wire.Message(wire.EOS, stream, direction="in", epoch=epoch, seq=seq,
                                                       sample_index=idx, t_capture=time.time(),
                                                       flags=wire.FLAG_END)))

    def close(self):
        self.s.close()


def serve(tmp_path, servers, model_path, *extra):
    """A server on a fresh loopback port (stopped by the ``servers`` fixture) and a producer connected to it."""
    port = free_port()
    srv = Server(tmp_path, model_path, port, *extra)
    servers.append(srv)
    return srv, Peer(port)


def preds(recs, stream):
    return [r for r in recs if r["type"] == "pred" and r["stream"] == stream]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    fe = LogMel(n_mels=16)
    audio = streamrnn.Model.random("gru", input_size=fe.n_features, hidden_size=8, output_size=1,
                                   activation="sigmoid", seed=2, labels=["tone"], frontend=fe.to_dict(), name="aud")
    feat = streamrnn.Model.random("gru", input_size=4, hidden_size=8, output_size=1, activation="sigmoid",
                                  seed=4, labels=["a"], name="feat")
    audio.save(d / "audio.safetensors")
    feat.save(d / "feat.safetensors")
    return {"audio": (d / "audio.safetensors", audio), "feat": (d / "feat.safetensors", feat)}


@pytest.fixture
def servers():
    started = []
    yield started
    for s in started:
        s.kill()


def wait_records(srv, stream, n, timeout=30):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if srv.out.exists() and len(preds(srv.records(), stream)) >= n:
            return
        assert srv.p.poll() is None, srv.err.read_text()[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"{stream}: fewer than {n} predictions; stderr:\n{srv.err.read_text()[-3000:]}")


# --- items 1, 2: absurd rates and channels ------------------------------------------------------------
def test_absurd_audio_descriptors_are_refused_by_reason_and_the_neighbour_loses_nothing(tmp_path, models, servers):
    path, model = models["audio"]
    srv, peer = serve(tmp_path, servers, path)
    x = (0.1 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32)  # the neighbour: 2 s
    bad = {"r1e-300": (1, 1e-300, 3), "r1": (1, 1.0, 5), "r0.01": (1, 0.01, 2), "r400k": (1, 400000.0, 3),
           "ch1000": (1000, 16000.0, 3)}
    peer.desc("good", 7, "audio", 1, float(SR))
    for sid, (ch, rate, _) in bad.items():
        for _ in range(2):  # descriptors are repeated: still named once in the log
            peer.desc(sid, 3, "audio", ch, rate)
    for i in range(x.size // 320):
        peer.data("good", 7, i, 320 * i, x[320 * i:320 * (i + 1), None])
        for sid, (ch, rate, blocks) in bad.items():
            if i < blocks:
                peer.data(sid, 3, i, 8 * i if ch > 1 else 320 * i, np.ones((8 if ch > 1 else 320, ch), np.float32))
    peer.eos("good", 7, x.size // 320, x.size)
    want = model.audio_stream(SR).push(x)
    wait_records(srv, "good", want.shape[0])
    err = srv.stop()
    peer.close()
    y = np.array([r["y"] for r in preds(srv.records(), "good")], np.float32).reshape(-1, 1)
    np.testing.assert_allclose(y, want, atol=1e-5)  # the neighbour: every frame, equal to offline
    assert counters(err, "refused") == {"rate": 8, "channels": 2}, err[-2000:]
    assert counters(err, "drops").get("refused") == sum(b for _, _, b in bad.values()), err[-2000:]
    for sid in bad:
        assert len(re.findall(rf"stream '{re.escape(sid)}' refused: ", err)) == 1, (sid, err[-3000:])
    assert "ch1000" in err and "above the limit of 64" in err and "outside 1000-384000 Hz" in err


def test_a_features_stream_at_a_denormal_rate_is_refused_and_every_json_line_is_finite(tmp_path, models, servers):
    path, model = models["feat"]
    srv, peer = serve(tmp_path, servers, path)
    x = np.random.default_rng(1).standard_normal((200, 4)).astype(np.float32)
    peer.desc("tiny", 1, "features", 4, 5e-324)
    peer.desc("good", 2, "features", 4, 100.0)
    for i in range(20):
        peer.data("tiny", 1, i, 10 * i, x[10 * i:10 * i + 10])
        peer.data("good", 2, i, 10 * i, x[10 * i:10 * i + 10])
    wait_records(srv, "good", 200)
    err = srv.stop()
    peer.close()
    recs = srv.records()  # parse_constant: no Infinity/NaN anywhere
    assert not preds(recs, "tiny") and all(math.isfinite(r["t_capture"]) for r in recs if "t_capture" in r)
    np.testing.assert_allclose(np.array([r["y"] for r in preds(recs, "good")], np.float32).reshape(-1, 1),
                               model.forward(x), atol=1e-5)
    assert counters(err, "refused") == {"rate": 1}, err[-2000:]


# --- item 3: descriptors never followed by data ------------------------------------------------------
@pytest.mark.parametrize("idle", [None, "1"])
def test_descriptors_without_data_never_lock_out_a_live_stream(tmp_path, models, servers, idle):
    path, model = models["feat"]
    srv, peer = serve(tmp_path, servers, path, "--max-streams", "8", *(["--idle-timeout", idle] if idle else []))
    for k in range(64):
        peer.desc(f"ghost{k}", 1, "features", 4, 100.0)
    if idle:
        time.sleep(2.5)  # idle reclaim frees them all (never sent data)
    x = np.random.default_rng(2).standard_normal((40, 4)).astype(np.float32)
    for j in range(3):  # three live streams after the ghosts: every one is served
        peer.desc(f"live{j}", 5, "features", 4, 100.0)
        for i in range(4):
            peer.data(f"live{j}", 5, i, 10 * i, x[10 * i:10 * i + 10])
    for j in range(3):
        wait_records(srv, f"live{j}", 40)
    err = srv.stop()
    peer.close()
    for j in range(3):
        y = np.array([r["y"] for r in preds(srv.records(), f"live{j}")], np.float32).reshape(-1, 1)
        np.testing.assert_allclose(y, model.forward(x), atol=1e-5)
    assert "max_streams" not in counters(err, "drops"), err[-2000:]
    assert counters(err, "closed").get("no_data", 0) >= (64 if idle else 64 - 8 + 3), err[-2000:]


# --- item 4: implausible capture times ---------------------------------------------------------------
def test_implausible_capture_times_are_counted_and_left_out_of_latency(tmp_path, models, servers):
    path, _ = models["feat"]
    srv, peer = serve(tmp_path, servers, path)
    x = np.ones((4, 4), np.float32)
    peer.desc("s", 1, "features", 4, 100.0)
    times = [None] * 10 + [-1e300, 1e300, time.time() + 3600 * 24, time.time() - 7200] + [None] * 10
    for i, t in enumerate(times):
        peer.data("s", 1, i, 4 * i, x, t_capture=t)
    wait_records(srv, "s", 4 * len(times))
    err = srv.stop()
    peer.close()
    assert counters(err, "implausible_time") == {"past": 2, "future": 2}, err[-2000:]
    lat = re.search(r"latency +p50 ([\d.e+]+) ms, p99 ([\d.e+]+) ms, max ([\d.e+]+) ms over (\d+)", err)
    assert lat and float(lat.group(3)) < 10_000 and int(lat.group(4)) == 20, err[-2000:]


# --- item 6: a lost start -------------------------------------------------------------------------------
def test_a_lost_start_is_flagged_counted_and_stays_on_the_producer_clock(tmp_path, models, servers):
    path, model = models["feat"]
    srv, peer = serve(tmp_path, servers, path)
    x = np.random.default_rng(3).standard_normal((100, 4)).astype(np.float32)
    peer.desc("late", 9, "features", 4, 100.0)
    for i in range(15, 25):  # the first 15 messages (150 frames = 1.5 s) were lost upstream
        peer.data("late", 9, i, 10 * i, x[10 * (i - 15):10 * (i - 14)])
    wait_records(srv, "late", 100)
    err = srv.stop()
    peer.close()
    ps = preds(srv.records(), "late")
    assert [p["frame"] for p in ps] == list(range(150, 250))  # the producer's clock
    assert ps[0]["time"] == pytest.approx(1.5)
    assert set(ps[0]["flags"]) == {"gap", "reset"} and all(p["flags"] == [] for p in ps[1:])
    assert counters(err, "gaps") == {"sample_index": 1, "seq": 1} and total(err, "gap_samples") == 150, err[-2000:]
    np.testing.assert_allclose(np.array([p["y"] for p in ps], np.float32).reshape(-1, 1), model.forward(x),
                               atol=1e-5)


# --- item 7: rejected ids are remembered in bounded memory ---------------------------------------------
def test_refused_stream_ids_take_bounded_memory(tmp_path):
    from streamrnn.transport.sources import MAX_REMEMBERED_IDS
    stats = Stats()
    src = ZmqSource(f"zmq+pull+ipc://{tmp_path}/in.sock", stats=stats, max_streams=4)
    src.open()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"ipc://{tmp_path}/in.sock")

    def flood(k0, n):
        for k in range(k0, k0 + n):
            d = wire.descriptor(f"x{k}", 1, "audio", "float32", 1, 1.0)
            push.send_multipart(wire.encode(wire.Message(wire.DESC, f"x{k}", direction="in", epoch=1, meta=d)))
            if k % 200 == 199:  # read as we go: the sockets' queues are bounded (a blocked send otherwise)
                src.read(0.0)
        t_end = time.monotonic() + 30
        while stats.get("refused", "rate") < k0 + n and time.monotonic() < t_end:
            src.read(0.05)

    try:
        flood(0, 5000)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        flood(5000, 20000)
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    finally:
        push.close()
        src.close()
    assert stats.get("refused", "rate") == 25000
    assert len(src.refused) == MAX_REMEMBERED_IDS and not src.table
    assert grown < 256 * 1024, grown  # unbounded: 20,000 ids x ~176 bytes = 3.4 MB
    # the pipeline's table of streams named in the log is bounded the same way
    p = Pipeline(None, [], model=streamrnn.Model.random("gru", input_size=3, hidden_size=4, output_size=1))
    from streamrnn.transport.sources import Chunk

    for k in range(3000):  # content the model cannot take: counted, named once, remembered bounded
        p.process(Chunk(f"y{k}", 1, "features", np.ones((1, 5), np.float32), 100.0, 0, time.time(), desc={}))
    assert p.stats.get("bad", "content") == 3000 and len(p._bad_streams) <= 1024


# --- item 5: the server killed with SIGKILL and restarted on the same ports -------------------------
def test_server_sigkilled_and_restarted_gives_consumers_a_new_flagged_epoch_on_the_producer_clock(
        tmp_path, models, servers):
    path, _ = models["feat"]
    port, out_port = free_port(), free_port()
    srv1 = Server(tmp_path, path, port, "--sink", f"zmq+pub://127.0.0.1:{out_port}", name="srv1")
    servers.append(srv1)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"out/s/")
    sub.connect(f"tcp://127.0.0.1:{out_port}")
    time.sleep(0.5)  # the subscription travels to the publisher
    got = []

    def collect(until, timeout=30):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end and not until():
            if sub.poll(50):
                got.append(wire.decode(sub.recv_multipart()))

    peer = Peer(port)
    x = np.random.default_rng(5).standard_normal((400, 4)).astype(np.float32)
    peer.desc("s", 3, "features", 4, 100.0)
    for i in range(20):
        peer.data("s", 3, i, 10 * i, x[10 * i:10 * i + 10])
    collect(lambda: sum(m.data.shape[0] for m in got if m.kind == wire.PRED) >= 200)
    old_epoch = next(m.epoch for m in got if m.kind == wire.PRED)
    srv1.p.kill()  # SIGKILL: no eos, no last stats
    srv1.p.wait()
    srv2 = Server(tmp_path, path, port, "--sink", f"zmq+pub://127.0.0.1:{out_port}", name="srv2")
    servers.append(srv2)
    time.sleep(0.5)  # the consumer's SUB reconnects and resubscribes by itself
    peer.desc("s", 3, "features", 4, 100.0)  # the producer repeats its descriptor (every second)
    for i in range(20, 40):  # and goes on with its epoch, seq and sample clock
        peer.data("s", 3, i, 10 * i, x[10 * i:10 * i + 10])
    collect(lambda: sum(m.data.shape[0] for m in got if m.kind == wire.PRED and m.epoch != old_epoch) >= 200)
    err = srv2.stop()
    peer.close()
    sub.close()
    old = [m for m in got if m.epoch == old_epoch]
    new = [m for m in got if m.kind == wire.PRED and m.epoch != old_epoch]
    assert not any(m.kind == wire.EOS for m in old)  # the killed server could not end its epoch
    assert new and new[0].flags == wire.FLAG_GAP | wire.FLAG_RESET and all(m.flags == 0 for m in new[1:])
    assert new[0].sample_index == 200 and [m.seq for m in new] == list(range(len(new)))  # producer clock
    assert sum(m.data.shape[0] for m in new) == 200
    assert counters(err, "gaps") == {"sample_index": 1, "seq": 1} and total(err, "gap_samples") == 200
