"""The read tick of ``Pipeline.run`` (``StreamConfig.tick_ms``): a ZeroMQ source is read at most once
per tick, so messages of many streams that arrive within a tick take one read and one bank call;
a stop acts during the tick's wait; the defaults and limits of the key.  Real ZeroMQ sockets (IPC in
a temp dir), the real pipeline in a thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

import streamrnn
from conftest import Keep
from streamrnn.config import DEFAULT_TICK_MS, EventParams, StreamConfig, load_stream_config
from streamrnn.errors import ConfigError
from streamrnn.runtime.pipeline import ModelProcessor, Pipeline
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.sources import FileSource, ZmqSource, demo_path

TICK_MS = 1000.0  # long: a burst sent right after a read surely lands before the next one


class CountingProcessor(ModelProcessor):
    """The real processor; counts its calls that advance streams (one bank call each)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = []  # the stream ids of each call

    def run(self, frames):
        if frames:
            self.calls.append(sorted(frames))
        return super().run(frames)


def _desc(stream, epoch=7):
    d = wire.descriptor(stream, epoch, "features", "float32", 4, 100.0)
    return wire.encode(wire.Message(wire.DESC, stream, direction="in", epoch=epoch, meta=d))


def _data(stream, x, epoch=7, seq=0):
    return wire.encode(wire.Message(wire.DATA, stream, direction="in", epoch=epoch, seq=seq, sample_index=0,
                                    t_capture=time.time(), data=x))


def _wait_for(cond, timeout=10.0):
    t_end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t_end, "timed out"
        time.sleep(0.005)


def _tick_pipeline(tmp_path):
    """A small GRU's pipeline with a tick of TICK_MS reading a real PULL socket (IPC in ``tmp_path``), a
    ``CountingProcessor``, into a ``Keep`` sink: (pipeline, its source, the sink, the model)."""
    m = streamrnn.Model.random("gru", input_size=4, hidden_size=12, output_size=2, activation="sigmoid", seed=3)
    cfg = StreamConfig(max_streams=32, tick_ms=TICK_MS, events=EventParams(enabled=False), stats_interval=60,
                       desc_interval=60)
    stats = Stats()
    src = ZmqSource(f"zmq+pull+ipc://{tmp_path}/in.sock", stats=stats, max_streams=32)
    keep = Keep()
    return Pipeline(src, [keep], CountingProcessor(m, cfg), config=cfg, stats=stats), src, keep, m


@pytest.fixture
def running(tmp_path):
    """A pipeline with a tick of TICK_MS reading a real PULL socket in its own thread; a PUSH into it."""
    p, src, keep, m = _tick_pipeline(tmp_path)
    stop, ready = threading.Event(), threading.Event()
    th = threading.Thread(target=p.run, args=(stop,), kwargs={"on_ready": lambda _: ready.set()})
    th.start()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"ipc://{tmp_path}/in.sock")
    try:
        assert ready.wait(60)
        # one stream's block, then its prediction: a read just happened, the next one is a tick away
        push.send_multipart(_desc("first"))
        push.send_multipart(_data("first", np.ones((3, 4), np.float32)))
        _wait_for(lambda: keep.kind("pred", "first"))
        yield p, keep, push, stop, th, m
    finally:
        stop.set()
        th.join(10)
        push.close()


def test_messages_of_many_streams_arriving_within_a_tick_take_one_read_and_one_bank_call(running):
    p, keep, push, stop, th, m = running
    reads, chunks, calls = p.stats.get("reads"), p.stats.get("read_chunks"), len(p.processor.calls)
    rng = np.random.default_rng(0)
    xs = {f"s{i}": rng.standard_normal((5, 4)).astype(np.float32) for i in range(8)}
    for sid, x in xs.items():  # spread out: without the tick each would wake the loop on its own
        push.send_multipart(_desc(sid))
        time.sleep(0.002)
        push.send_multipart(_data(sid, x))
        time.sleep(0.002)
    _wait_for(lambda: all(keep.kind("pred", sid) for sid in xs))
    assert p.stats.get("reads") - reads == 1  # one wake-up read all 16 messages
    assert p.stats.get("read_chunks") - chunks == len(xs)  # the 8 blocks (descriptors make no chunk)
    assert p.processor.calls[calls:] == [sorted(xs)]  # and one bank call advanced all 8 streams
    for sid, x in xs.items():  # the outputs are still every stream's own (NumPy-free reference: a lone stream)
        np.testing.assert_allclose(keep.kind("pred", sid)[0].data, m.forward(x), rtol=0, atol=1e-6)


def test_a_stop_during_the_ticks_wait_ends_the_run_before_the_next_read(running):
    p, keep, push, stop, th, m = running
    reads = p.stats.get("reads")
    push.send_multipart(_data("first", np.ones((3, 4), np.float32), seq=1))  # due at the next read
    stop.set()
    th.join(10)
    assert not th.is_alive()
    assert p.stats.get("reads") == reads  # the wait ended at the stop, not at the next tick
    assert len(keep.kind("pred", "first")) == 1
    assert keep.kind("eos", "first") and keep.kind("stats")  # the usual end: eos and the last stats


def test_tick_defaults_by_source_and_limits(tmp_path):
    assert DEFAULT_TICK_MS > 0
    m = streamrnn.Model.random("gru", 4, 8, output_size=1)
    z = ZmqSource(f"zmq+pull+ipc://{tmp_path}/in.sock")
    f = FileSource(demo_path(), realtime=True)
    assert Pipeline(z, [Keep()], model=m).tick_seconds() == DEFAULT_TICK_MS / 1000  # many streams: a tick
    assert Pipeline(f, [Keep()], model=m).tick_seconds() == 0  # one paced stream: each block when due
    assert Pipeline(z, [Keep()], model=m, config=StreamConfig(tick_ms=0)).tick_seconds() == 0
    assert load_stream_config(options={"tick_ms": 2.5}, env={}).tick_ms == 2.5
    assert load_stream_config(env={"STREAMRNN_TICK_MS": "4"}).tick_ms == 4
    for bad in (-1.0, 1000.5):
        with pytest.raises(ConfigError, match=rf"tick_ms must be between 0 and 1000 ms.*got {bad}"):
            StreamConfig(tick_ms=bad)


class _RecordingStop(threading.Event):
    """The run's stop event, recording whether the source had a backlog each time the loop waits."""

    def __init__(self, source):
        super().__init__()
        self.source, self.waits_with_backlog, self.waits = source, 0, 0

    def wait(self, timeout=None):
        self.waits += 1
        self.waits_with_backlog += bool(self.source.backlog)
        return super().wait(timeout)


def test_a_backlog_larger_than_one_read_is_read_without_waiting_a_tick(tmp_path):
    """1,300 messages queued before the first read: a read takes 512 at most, and the reads after a
    full one follow at once (a tick of 1 s after each would leave a burst behind for seconds)."""
    p, src, keep, m = _tick_pipeline(tmp_path)
    backlogs = []
    read = src.read

    def recording_read(timeout):
        out = read(timeout)
        backlogs.append(src.backlog)
        return out

    src.read = recording_read
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.setsockopt(zmq.SNDHWM, 0)
    push.connect(f"ipc://{tmp_path}/in.sock")  # queued in the PUSH socket until the source binds
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1299, 4)).astype(np.float32)
    push.send_multipart(_desc("burst"))
    for i in range(1299):
        push.send_multipart(wire.encode(wire.Message(wire.DATA, "burst", direction="in", epoch=7, seq=i,
                                                     sample_index=i, t_capture=time.time(), data=x[i:i + 1])))
    stop = _RecordingStop(src)
    th = threading.Thread(target=p.run, args=(stop,))
    th.start()
    try:
        _wait_for(lambda: sum(r.data.shape[0] for r in keep.kind("pred", "burst")) == 1299, timeout=60)
    finally:
        stop.set()
        th.join(10)
        push.close()
    assert True in backlogs  # some read stopped at its limit with messages waiting
    assert stop.waits > 0  # the loop did wait its ticks when there was no backlog
    assert stop.waits_with_backlog == 0  # but never right after a read that left a backlog
    y = np.concatenate([r.data for r in keep.kind("pred", "burst")])
    np.testing.assert_allclose(y, m.forward(x), rtol=0, atol=1e-6)  # every row, in order, once
