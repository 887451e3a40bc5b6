"""Faults, end to end with real processes on loopback (issue 8).

Already covered elsewhere (not repeated here):
- producer killed and restarted (new epoch, state reset, flagged): test_cli_stream.py
  test_ipc_int16_producer_killed_and_restarted_resets_state, test_killed_publisher_and_late_subscriber;
- SIGINT mid-stream with jsonl and csv files: test_cli_stream.py test_sigint_flushes_sinks_and_exits_zero;
- the microphone queue policy: test_sources_sinks.py test_mic_queue_drops_oldest_counts_and_flags;
- a full disk inside the pipeline: test_pipeline.py test_a_full_disk_closes_that_sink_and_the_others_go_on;
- a checkpoint write that dies half-way: test_trainer.py test_checkpoint_is_atomic;
- one SIGKILL + --resume: test_cli_train.py test_sigkill_then_resume_equals_an_uninterrupted_run.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

import streamrnn
from streamrnn.stats import Stats
from streamrnn.train.trainer import read_checkpoint
from streamrnn.transport import wire
from streamrnn.transport.sources import MicSource

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_stream import (EX, SR, Proc, consumer, free_port, preds_of, procs, producer,  # noqa: E402,F401
                             stream_cmd, tone)

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.toml"


@pytest.fixture(scope="module")
def feat_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("fm")
    m = streamrnn.Model.random("gru", input_size=6, hidden_size=16, output_size=64, activation="sigmoid", seed=5,
                               name="wide")
    m.save(d / "wide.safetensors")
    return str(d / "wide.safetensors"), m


def jsonl_preds(path):
    recs = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return recs, np.array([r["y"] for r in recs if r["type"] == "pred"], np.float32)


# --- subscribers ----------------------------------------------------------------------------------
def test_subscriber_killed_and_restarted(tmp_path, feat_model, procs):
    path, model = feat_model
    port, a_out = free_port(), f"{tmp_path}/out.sock"  # input over TCP (see the IPC note below)
    s = Proc(stream_cmd(path, f"zmq+pull://127.0.0.1:{port}", f"zmq+pub+ipc://{a_out}", "jsonl:o.jsonl",
                        extra=["--no-events"]), tmp_path, "stream")
    procs.append(s)
    s.ready()
    x = np.random.default_rng(1).standard_normal((3200, 6)).astype(np.float32)  # 8 s at 400 frames/s
    p = producer(tmp_path, f"tcp://127.0.0.1:{port}", x, extra=["--content", "features", "--rate", "400", "--block", "8",
                                                       "--realtime", "--stream", "f"])
    procs.append(p)
    c1 = consumer(tmp_path, f"ipc://{a_out}", "c1", extra=["--topic", "out/f/"])
    procs.append(c1)
    c1.wait_for("out", r'"kind": "pred"(.|\n)*"kind": "pred"')
    c1.p.kill()  # SIGKILL: the subscriber vanishes without a word
    c1.p.wait()
    c2 = consumer(tmp_path, f"ipc://{a_out}", "c2", extra=["--topic", "out/f/", "--until-eos", "1", "--timeout", "30"])
    procs.append(c2)
    assert p.finish() == 0 and c2.finish() == 0
    assert s.finish(signal.SIGTERM) == 0
    m2 = c2.msgs()
    ps = preds_of(m2)
    # the new subscriber gets the descriptor (repeated every second), then consecutive predictions to the end
    assert any(m["kind"] == "desc" for m in m2), [m["kind"] for m in m2][:20]
    assert m2[-1]["kind"] == "eos"
    assert ps[0]["seq"] > 0
    assert [q["seq"] for q in ps] == list(range(ps[0]["seq"], ps[0]["seq"] + len(ps)))
    assert ps[-1]["sample_index"] + len(ps[-1]["data"]) == len(x)
    # the stream itself never noticed: every row processed, equal to the offline outputs
    recs, y = jsonl_preds(tmp_path / "o.jsonl")
    np.testing.assert_allclose(y, model.forward(x), atol=1e-5)
    np.testing.assert_allclose(np.array([q["data"] for q in ps], np.float32).reshape(-1, 64),
                               model.forward(x)[ps[0]["sample_index"]:], atol=1e-5)


def test_slow_subscribers_lose_at_the_high_water_mark_and_nothing_else_waits(tmp_path, feat_model, procs):
    """One fast SUB and one stalled SUB on the pub sink, and a PUSH sink whose peer never reads:
    the pipeline processes everything, the jsonl sink and the fast subscriber get everything, the
    stalled ones lose messages at their high-water marks (counted as drops.hwm for push)."""
    path, model = feat_model
    # input over TCP: an IPC PUSH->PULL pair at its high-water mark can stall in libzmq 4.3.5 (docs/operations.md)
    a_in, a_out, a_push = f"tcp://127.0.0.1:{free_port()}", f"{tmp_path}/out.sock", f"{tmp_path}/push.sock"
    ctx = zmq.Context.instance()
    stalled_pull = ctx.socket(zmq.PULL)  # the push sink's peer: binds, then never reads
    for s_ in (stalled_pull,):
        s_.setsockopt(zmq.RCVHWM, 1)
        s_.setsockopt(zmq.RCVBUF, 4096)
        s_.setsockopt(zmq.LINGER, 0)
    stalled_pull.bind(f"ipc://{a_push}")
    s = Proc(stream_cmd(path, "zmq+pull://" + a_in[6:], f"zmq+pub+ipc://{a_out}", f"zmq+push+ipc://{a_push}",
                        "jsonl:o.jsonl", extra=["--no-events"]), tmp_path, "stream")  # sink hwm: 400 messages
    procs.append(s)
    s.ready()
    stalled_sub = ctx.socket(zmq.SUB)
    stalled_sub.setsockopt(zmq.RCVHWM, 1)
    stalled_sub.setsockopt(zmq.RCVBUF, 4096)
    stalled_sub.setsockopt(zmq.LINGER, 0)
    stalled_sub.setsockopt(zmq.SUBSCRIBE, b"out/f/")
    stalled_sub.connect(f"ipc://{a_out}")
    fast_msgs, fast_ready = [], threading.Event()

    def fast_subscriber():  # a subscriber that keeps up: raw frames, decoded afterwards (own socket, own thread)
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"out/f/")
        sub.connect(f"ipc://{a_out}")
        fast_ready.set()
        t_end = time.monotonic() + 90
        while time.monotonic() < t_end:
            if sub.poll(100):
                fr = sub.recv_multipart()
                fast_msgs.append(fr)
                if fr[0] == b"out/f/eos":
                    break
        sub.close(0)

    fast = threading.Thread(target=fast_subscriber)
    fast.start()
    fast_ready.wait(10)
    time.sleep(0.5)  # both subscriptions reach the publisher
    # 3000 messages of 5 rows: 3000 predictions of 5 x 64 floats (~1.4 kB each, ~4 MB in all)
    x = np.random.default_rng(2).standard_normal((15000, 6)).astype(np.float32)
    p = producer(tmp_path, a_in, x, extra=["--content", "features", "--rate", "100", "--block", "5", "--stream", "f"])
    procs.append(p)
    assert p.finish(timeout=60) == 0
    fast.join(100)
    assert s.finish(signal.SIGTERM) == 0
    err = s.err.read_text()
    # the pipeline and the file sink: everything
    recs, y = jsonl_preds(tmp_path / "o.jsonl")
    assert len(y) == len(x) and recs[-1]["type"] == "eos"
    np.testing.assert_allclose(y[-500:], model.forward(x)[-500:], atol=1e-5)
    # the fast subscriber: everything, consecutive
    ps = [m for m in map(wire.decode, fast_msgs) if m.kind == wire.PRED]
    assert [q.seq for q in ps] == list(range(3000)) and fast_msgs[-1][0] == b"out/f/eos"
    np.testing.assert_allclose(np.concatenate([q.data for q in ps]), y, atol=1e-6)
    # the stalled subscriber: far less (libzmq dropped at its high-water mark; nothing waited for it)
    got = 0
    while stalled_sub.poll(200):
        stalled_sub.recv_multipart()
        got += 1
    assert got < 1000
    # the push sink's stalled peer: queue full, every further message dropped and counted
    import re

    m = re.search(r"^  drops +(\d+) \((.*)\)$", err, re.M)
    drops = dict(kv.split("=") for kv in m.group(2).split(", "))
    assert int(drops["hwm"]) > 2000 and "queue full" in err
    stalled_pull.close(0)
    stalled_sub.close(0)


# --- signals ----------------------------------------------------------------------------------------
def test_sigterm_mid_stream_leaves_complete_files_and_exits_zero(tmp_path, procs):
    # (SIGINT: test_cli_stream.py test_sigint_flushes_sinks_and_exits_zero)
    import soundfile as sf

    from streamrnn.audio import LogMel

    fe = LogMel(n_mels=20)
    m = streamrnn.Model.random("gru", input_size=fe.n_features, hidden_size=8, output_size=1, activation="sigmoid",
                               labels=["tone"], frontend=fe.to_dict())
    m.save(tmp_path / "a.safetensors")
    sf.write(tmp_path / "long.wav", tone(10.0, on=(0.2, 9)), SR, subtype="FLOAT")
    s = Proc(stream_cmd("a.safetensors", "file:long.wav", "jsonl:o.jsonl", "csv:o.csv", extra=["--realtime"]),
             tmp_path, "stream")
    procs.append(s)
    s.ready()
    s.wait_for_file(tmp_path / "o.jsonl", '"type":"pred"')  # mid-stream: predictions are flowing
    assert s.finish(signal.SIGTERM, timeout=10) == 0
    recs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]  # every line whole
    n_pred = sum(r["type"] == "pred" for r in recs)
    assert recs[-1]["type"] == "eos" and recs[-1]["frames"] == n_pred > 0
    ev = [r["event"] for r in recs if r["type"] == "event"]
    assert ev.count("start") == ev.count("end")  # a segment open at the signal was ended
    rows = (tmp_path / "o.csv").read_text().splitlines()
    n_ev = sum(r["type"] in ("event", "eos") for r in recs)
    assert len(rows) == 1 + n_pred + n_ev and all(len(r.split(",")) == len(rows[0].split(",")) for r in rows)


# --- file sinks that fail ----------------------------------------------------------------------------
def test_unwritable_file_sink_is_one_clear_line(tmp_path):
    # the bundled VAD reads stdin's audio (a feature-frame model on stdin is refused before any sink opens)
    for target, why in ((tmp_path / "no" / "such" / "dir" / "o.jsonl", "No such file or directory"),
                        (tmp_path, "Is a directory")):
        r = subprocess.run([sys.executable, "-m", "streamrnn", "stream", "--model", "vad", "--source", "stdin",
                            "--sink", f"jsonl:{target}"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=60)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == \
            f"streamrnn: error: cannot write {str(target)!r}: {why}"
        assert "Traceback" not in r.stderr


def test_disk_full_file_sink_is_closed_and_zeromq_sinks_keep_going(tmp_path, feat_model, procs):
    """Documented behaviour: a failing file sink is logged, counted (sink_errors) and closed; the
    other sinks carry on; only when every sink has failed does the process stop (exit 2)."""
    path, model = feat_model
    port, a_out = free_port(), f"{tmp_path}/out.sock"
    s = Proc(stream_cmd(path, f"zmq+pull://127.0.0.1:{port}", "jsonl:/dev/full", f"zmq+pub+ipc://{a_out}",
                        extra=["--no-events"]), tmp_path, "stream")
    procs.append(s)
    s.ready()
    c = consumer(tmp_path, f"ipc://{a_out}", extra=["--topic", "out/f/", "--until-eos", "1", "--timeout", "30"])
    procs.append(c)
    x = np.random.default_rng(3).standard_normal((2000, 6)).astype(np.float32)  # > 64 kB of JSON lines
    p = producer(tmp_path, f"tcp://127.0.0.1:{port}", x, extra=["--content", "features", "--rate", "100", "--block", "10",
                                                       "--stream", "f"])
    procs.append(p)
    assert p.finish() == 0 and c.finish() == 0
    assert s.finish(signal.SIGTERM) == 0
    err = s.err.read_text()
    assert "failed and is closed" in err and "No space left on device" in err
    assert "sink_errors    1 (JsonLinesSink=1)" in err
    ps = preds_of(c.msgs())
    np.testing.assert_allclose(np.concatenate([np.array(q["data"], np.float32) for q in ps]), model.forward(x),
                               atol=1e-5)
    # alone, the failing sink stops the run cleanly: see the next test


def test_every_file_sink_failing_stops_the_process_cleanly(tmp_path):
    import soundfile as sf

    from streamrnn.audio import LogMel

    fe = LogMel(n_mels=20)
    m = streamrnn.Model.random("gru", input_size=fe.n_features, hidden_size=8, output_size=1, activation="sigmoid",
                               frontend=fe.to_dict())
    m.save(tmp_path / "a.safetensors")
    sf.write(tmp_path / "a.wav", tone(3.0), SR)
    r = subprocess.run([sys.executable, "-m", "streamrnn", "stream", "--model", "a.safetensors",
                        "--source", "file:a.wav", "--sink", "jsonl:/dev/full"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "streamrnn: error: every sink failed (last: JSON lines to /dev/full: [Errno 28] No space left on device)" \
        in r.stderr


# --- the microphone overflowing --------------------------------------------------------------------
def test_microphone_callback_faster_than_the_reader_sets_the_flag_and_counts():
    """PortAudio's callback thread runs flat out while the pipeline thread reads slowly."""
    stats = Stats()
    mic = MicSource(rate=16000, block_ms=1, queue_seconds=0.008, stats=stats)  # 16-sample blocks, 8 in the queue
    assert mic.maxlen == 8
    n_blocks = 3000

    def portaudio():
        for i in range(n_blocks):
            mic._callback(np.full((16, 1), i, np.float32), 16, None, None)

    t = threading.Thread(target=portaudio)
    t.start()
    chunks = []
    while t.is_alive() or mic._q:
        chunks += mic.read(0.01)
        time.sleep(0.002)  # a slow reader
    t.join()
    got = [int(c.data[0, 0]) for c in chunks]
    dropped = n_blocks - len(got)
    assert dropped > 0 and got == sorted(got) and got[-1] == n_blocks - 1  # oldest dropped, order kept
    assert stats.get("overflows") == dropped
    # each chunk after a loss says so: overflow + gap flags, and its sample_index shows the jump
    for prev, c in zip(chunks, chunks[1:]):
        jumped = c.sample_index != prev.sample_index + 16
        assert bool(c.flags & wire.FLAG_GAP) == jumped and bool(c.flags & wire.FLAG_OVERFLOW) == jumped
        assert c.sample_index == 16 * int(c.data[0, 0])
    assert stats.get("gaps", "sample_index") == sum(1 for c in chunks if c.flags & wire.FLAG_GAP)


# --- training killed at random points ---------------------------------------------------------------
def _train(out, *args, resume=False):
    return subprocess.Popen([sys.executable, "-m", "streamrnn", "train", str(TINY), "--out", str(out), *args,
                             *(["--resume"] if resume else [])], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_training_sigkilled_at_random_points_resumes_to_the_same_weights(tmp_path):
    args = ["--set", "train.epochs=40", "--set", "train.patience=0", "--set", "train.checkpoint_every=1",
            "--set", "tbptt.jitter=0.3"]  # a checkpoint after every update: kills often land mid-write
    full = _train(tmp_path / "full", *args)
    _, e = full.communicate(timeout=300)
    assert full.returncode == 0, e
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    cut = tmp_path / "cut"
    kills, resumed = 0, False
    for attempt in range(3):
        p = _train(cut, *args, resume=resumed)
        ckpt = cut / "checkpoint.safetensors"
        t_end = time.monotonic() + 120
        while not ckpt.exists() and time.monotonic() < t_end and p.poll() is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.6))  # then a random instant: mid-update, mid-write, mid-epoch
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.communicate(timeout=60)
        # whatever the instant, the checkpoint on disk is a whole, readable one
        _, meta = read_checkpoint(ckpt)
        assert meta["state"]["step"] > 0
        resumed = True
    assert kills >= 1
    last = _train(cut, *args, resume=True)
    _, e = last.communicate(timeout=300)
    assert last.returncode == 0, e
    a, _ = read_checkpoint(tmp_path / "full" / "checkpoint.safetensors")
    b, _ = read_checkpoint(cut / "checkpoint.safetensors")
    assert np.array_equal(a["theta"], b["theta"]) and np.array_equal(a["best_theta"], b["best_theta"])
    assert np.array_equal(streamrnn.load_model(tmp_path / "full" / "model.safetensors").theta,
                          streamrnn.load_model(cut / "model.safetensors").theta)


# --- reset policy on endless streams (docs/operations.md) -----------------------------------------
def test_reset_policy_gaps_carry_state_reset_flag_and_epoch_restart_it():
    from conftest import Keep
    from streamrnn.runtime.pipeline import Pipeline
    from streamrnn.transport.sources import Chunk

    m = streamrnn.Model.random("lstm", input_size=3, hidden_size=8, output_size=1, seed=3)
    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    keep, stats = Keep(), Stats()
    p = Pipeline(None, [keep], model=m, stats=stats)
    d = {}

    def chunk(rows, idx, epoch=1, flags=0):
        return Chunk("s", epoch, "features", rows, 100.0, idx, 0.0, flags=flags, desc=d)

    p.process(chunk(x[:10], 0))
    p.process(chunk(x[10:20], 15, flags=wire.FLAG_GAP))   # data lost upstream: flagged, state carried on
    p.process(chunk(x[20:30], 30, flags=wire.FLAG_RESET))  # the producer asks for a reset
    p.process(chunk(x[30:40], 0, epoch=2))                 # the producer restarted
    preds = [q for q in keep.msgs if q.kind == wire.PRED]
    y = [q.data for q in preds]
    np.testing.assert_allclose(np.concatenate(y[:2]), m.forward(x[:20]), atol=1e-6)  # gap: no reset
    np.testing.assert_allclose(y[2], m.forward(x[20:30]), atol=1e-6)                 # reset flag: fresh state
    np.testing.assert_allclose(y[3], m.forward(x[30:40]), atol=1e-6)                 # new epoch: fresh state
    assert [q.flag_names() for q in preds] == [[], ["gap"], ["reset"], ["reset"]]
    assert len({q.epoch for q in preds}) == 3  # each reset starts a new output stream (after an eos)
    assert [q.kind for q in keep.msgs].count(wire.EOS) == 2
    assert stats.get("resets", "flag") == 1 and stats.get("resets", "epoch") == 1
