"""Sources and sinks on their own: files, stdin pipes, the microphone queue policy, text and
ZeroMQ sinks, URI parsing and the errors users meet."""

import csv
import io
import json
import os
import socket

import numpy as np
import pytest
import soundfile as sf
import zmq

from streamrnn.config import StreamConfig
from streamrnn.errors import AudioError, ConfigError
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.endpoints import parse_zmq_uri
from streamrnn.transport.sinks import CsvSink, JsonLinesSink, TerminalSink, ZmqSink, open_sink
from streamrnn.transport.sources import (FileSource, MicSource, StdinSource, demo_path, open_source,
                                         to_float32)


def pred_msg(stream="s", seq=0, idx=0, y=((0.25,), (0.75,)), flags=0):
    return wire.Message(wire.PRED, stream, epoch=7, seq=seq, sample_index=idx, t_capture=12.5, flags=flags,
                        data=np.array(y, np.float32))


def desc_msg(stream="s", labels=("speech",)):
    return wire.Message(wire.DESC, stream, epoch=7, meta=wire.descriptor(stream, 7, "pred", "float32",
                                                                         len(labels), 100.0, labels=labels))


def read_all(src):
    src.open()
    out = []
    while not src.exhausted:
        out += src.read(0.5)
    src.close()
    return out


def test_file_source_blocks_cover_the_file_in_order(tmp_path):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1000, 2)).astype(np.float32)
    sf.write(tmp_path / "a.flac", x, 8000, subtype="PCM_24")
    ref, _ = sf.read(tmp_path / "a.flac", dtype="float32", always_2d=True)
    chunks = read_all(FileSource(tmp_path / "a.flac", block_ms=10, realtime=False))
    assert all(c.data.shape[1] == 2 and c.rate == 8000 and c.content == "audio" for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), ref)
    assert [c.sample_index for c in chunks] == [80 * i for i in range(len(chunks))]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].end and not any(c.end for c in chunks[:-1])
    assert len({c.epoch for c in chunks}) == 1 and chunks[0].desc["channels"] == 2


def test_file_source_realtime_timestamps_follow_the_samples(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    chunks = read_all(FileSource(tmp_path / "a.wav", block_ms=20, realtime=True))
    t = np.array([c.t_capture for c in chunks])
    # paced: capture times are exactly the sample positions (no assertion on wall-clock duration)
    np.testing.assert_allclose(np.diff(t), 0.02, atol=1e-6)


def test_file_source_errors(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        FileSource(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="cannot read"):
        FileSource(tmp_path / "bad.wav")


@pytest.mark.parametrize("fmt", ["s16le", "f32le"])
def test_stdin_source_formats_from_a_real_pipe(fmt):
    x = np.array([[0, 0.5], [-0.5, 0.25], [1 - 2 ** -15, -1]] * 50, np.float32)   # (150, 2)
    raw = (np.round(x * 32768).clip(-32768, 32767).astype("<i2") if fmt == "s16le" else x.astype("<f4")).tobytes()
    r, w = os.pipe()
    os.write(w, raw + b"\x01")  # one stray byte: not a whole sample, counted
    os.close(w)
    stats = Stats()
    src = StdinSource(rate=8000, fmt=fmt, channels=2, block_ms=5, fd=r, stats=stats)
    chunks = read_all(src)
    os.close(r)
    got = np.concatenate([c.data for c in chunks])
    np.testing.assert_allclose(got, x, atol=0)
    assert chunks[-1].end and stats.get("drops", "partial_sample") == 1
    assert [c.sample_index for c in chunks] == list(np.cumsum([0] + [len(c.data) for c in chunks])[:-1])


def test_stdin_nonfinite_replaced_by_silence_and_counted():
    x = np.array([0.1, np.nan, 0.2, np.inf], "<f4")
    r, w = os.pipe()
    os.write(w, x.tobytes())
    os.close(w)
    stats = Stats()
    chunks = read_all(StdinSource(rate=100, fmt="f32le", fd=r, stats=stats))
    os.close(r)
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks])[:, 0], np.array([0.1, 0, 0.2, 0], np.float32))
    assert stats.get("bad", "non_finite") == 2


def test_int16_scaling():
    np.testing.assert_array_equal(to_float32(np.array([-32768, 0, 16384], np.int16)), [-1.0, 0.0, 0.5])


class _Status:
    def __init__(self, overflow=False):
        self.input_overflow = overflow

    def __bool__(self):
        return self.input_overflow


def test_mic_queue_drops_oldest_counts_and_flags():
    # The PortAudio callback's queue policy, exercised by calling the callback as PortAudio would.
    stats = Stats()
    mic = MicSource(rate=1000, block_ms=100, queue_seconds=0.3, stats=stats)  # 3 blocks of 100 samples
    assert mic.maxlen == 3
    for i in range(5):
        mic._callback(np.full((100, 1), i, np.float32), 100, None, _Status())
    chunks = mic.read(0.1)
    assert [int(c.data[0, 0]) for c in chunks] == [2, 3, 4]          # the two oldest were dropped
    assert [c.sample_index for c in chunks] == [200, 300, 400]
    assert chunks[0].flags == wire.FLAG_OVERFLOW | wire.FLAG_GAP and chunks[1].flags == 0
    assert stats.get("overflows") == 2 and stats.get("gaps", "sample_index") == 1
    mic._callback(np.zeros((100, 1), np.float32), 100, None, _Status(overflow=True))  # PortAudio's own
    assert mic.read(0.1)[0].flags & wire.FLAG_OVERFLOW and stats.get("overflows") == 3


def test_missing_microphone_is_a_clear_error():
    with pytest.raises(AudioError, match="cannot open microphone 'no-such-device-xyz'"):
        MicSource("no-such-device-xyz").open()


def test_demo_path_resolves_or_names_the_missing_file():
    try:
        p = demo_path()
    except AudioError as e:
        assert "demo recording is missing" in str(e) and "models" in str(e)
    else:
        assert p.is_file() and p.parent.name == "models"


def test_jsonl_and_csv_sinks(tmp_path):
    js, cs = JsonLinesSink(tmp_path / "o.jsonl"), CsvSink(tmp_path / "o.csv")
    for s in (js, cs):
        s.open()
        s.write(desc_msg())
        s.write(pred_msg(flags=wire.FLAG_GAP))
        s.write(wire.Message(wire.EVENT, "s", epoch=7, meta={"event": "start", "label": "speech", "frame": 1}))
        s.write(wire.Message(wire.EOS, "s", epoch=7, sample_index=2, flags=wire.FLAG_END))
        s.close()
    recs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["type"] for r in recs] == ["desc", "pred", "pred", "event", "eos"]
    assert recs[1] == {"v": 1, "type": "pred", "stream": "s", "epoch": 7, "frame": 0, "time": 0.0,
                       "t_capture": 12.5, "seq": 0, "flags": ["gap"], "y": [0.25]}
    assert recs[2]["frame"] == 1 and recs[2]["time"] == 0.01 and recs[2]["flags"] == []
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert list(rows[0]) == ["v", "type", "stream", "epoch", "frame", "time", "t_capture", "seq", "flags", "event",
                             "label", "probability", "start_time", "duration", "reason", "speech"]
    assert [r["type"] for r in rows] == ["pred", "pred", "event", "eos"]  # the event is in the CSV too
    assert (rows[0]["v"], rows[0]["stream"], rows[0]["epoch"], rows[0]["frame"]) == ("1", "s", "7", "0")
    assert rows[0]["flags"] == "gap" and float(rows[1]["speech"]) == 0.75
    assert (rows[2]["event"], rows[2]["label"], rows[2]["frame"], rows[2]["speech"]) == ("start", "speech", "1", "")
    assert rows[3]["frame"] == "2"  # an end of stream's frame count


def test_terminal_sink_live_line_and_events():
    out = io.StringIO()
    t = TerminalSink(out=out)
    t.MIN_INTERVAL = 0
    t.write(desc_msg())
    t.write(pred_msg(y=((0.5,),)))
    t.write(wire.Message(wire.EVENT, "s", meta={"event": "start", "label": "speech", "frame": 3, "time": 0.03}))
    t.close()
    text = out.getvalue()
    assert "speech" in text and "0.500" in text and "|" + "#" * 10 + " " * 10 + "|" in text
    assert "0.03 s  speech start\n" in text


def test_open_sink_and_source_reject_unknown_uris():
    with pytest.raises(ConfigError, match="unknown sink 'kafka://x'"):
        open_sink("kafka://x")
    with pytest.raises(ConfigError, match="unknown source 'http://x'"):
        open_source("http://x")
    with pytest.raises(ConfigError, match="cannot be used here"):
        open_sink("zmq+sub://127.0.0.1:5")
    assert isinstance(open_sink("stdout", StreamConfig(json=True)), JsonLinesSink)


@pytest.mark.parametrize("uri,want", [
    ("zmq+pub://127.0.0.1:5555", ("pub", "tcp://127.0.0.1:5555", True, None)),
    ("zmq+push://127.0.0.1:5555", ("push", "tcp://127.0.0.1:5555", False, None)),
    ("zmq+pull://127.0.0.1:5555?connect", ("pull", "tcp://127.0.0.1:5555", False, None)),
    ("zmq+sub://127.0.0.1:5555?bind&topic=in/a/", ("sub", "tcp://127.0.0.1:5555", True, "in/a/")),
    ("zmq+pub+ipc:///tmp/x.sock", ("pub", "ipc:///tmp/x.sock", True, None)),
    ("zmq+pub://:5556", ("pub", "tcp://127.0.0.1:5556", True, None)),   # no host: loopback
])
def test_zmq_uris(uri, want):
    e = parse_zmq_uri(uri)
    assert (e.pattern, e.address, e.bind, e.topic) == want


@pytest.mark.parametrize("uri", ["zmq+pub://127.0.0.1", "zmq+pub://127.0.0.1:0", "zmq+pub://127.0.0.1:99999",
                                 "zmq+dealer://127.0.0.1:5", "zmq+pub://127.0.0.1:5?bind&connect",
                                 "zmq+pub://127.0.0.1:5?color=red", "zmq+push://*:5555", "zmq+pub+udp://x"])
def test_bad_zmq_uris(uri):
    with pytest.raises(ConfigError):
        parse_zmq_uri(uri)


def test_port_in_use_is_a_clear_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        sink = ZmqSink(f"zmq+pub://127.0.0.1:{port}")
        with pytest.raises(ConfigError, match=f"cannot bind .*{port}.*in use"):
            sink.open()
    finally:
        s.close()


def test_push_sink_without_peer_never_blocks_and_counts_drops(tmp_path):
    stats = Stats()
    sink = ZmqSink(f"zmq+push+ipc://{tmp_path}/nobody.sock", stats=stats, hwm_seconds=0.01)
    sink.open()
    for i in range(50):
        sink.write(pred_msg(seq=i))
    sink.close()
    # a connecting push queues up to its high-water mark for the peer to come, then drops
    assert sink.hwm == 16 and stats.get("drops", "hwm") == 50 - 16


def test_pub_sink_messages_decode(tmp_path):
    addr = f"ipc://{tmp_path}/pub.sock"
    sink = ZmqSink(f"zmq+pub+ipc://{tmp_path}/pub.sock")
    sink.open()
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"out/s/")
    sub.connect(addr)
    got = None
    for _ in range(100):  # until the subscription has reached the publisher
        sink.write(pred_msg())
        if sub.poll(50):
            got = wire.decode(sub.recv_multipart())
            break
    sub.close()
    sink.close()
    assert got is not None and got.topic == "out/s/pred" and got.t_send > 0
    np.testing.assert_array_equal(got.data, [[0.25], [0.75]])


def test_devices_without_portaudio_says_how_to_install_it(tmp_path):
    # A stand-in sounddevice that fails like the real one does when libportaudio is missing.
    import subprocess
    import sys

    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    r = subprocess.run([sys.executable, "-m", "streamrnn", "devices"], capture_output=True, text=True, env=env,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("streamrnn: error: PortAudio is not installed (PortAudio library not found); "
                                "install it with `apt-get install libportaudio2` (Debian/Ubuntu) or "
                                "`brew install portaudio`")


def test_fast_json_lines_equal_json_dumps_of_every_record():
    """The JSON-lines sink formats prediction rows by hand; each line must be exactly json.dumps of its record."""
    import json

    from streamrnn.transport.records import Records, row_lines

    rng = np.random.default_rng(3)
    cases = ((100.0, wire.FLAG_GAP | wire.FLAG_RESET, (7, 3), "s.1"), (None, 0, (7, 3), "s.1"),
             (16000.0 / 160, wire.FLAG_OVERFLOW, (7, 3), "s.1"), (44100.0 / 512, 0, (9, 1), 'a%d "b"\\'),
             (100.0, wire.FLAG_GAP, (1, 2), "s%s"), (100.0, 0, (3, 0), "s.1"), (100.0, 0, (0, 1), "s.1"),
             (100.0, 0, (2, 1), "stre\u00e4m \U0001f600"))
    for rate, flags, shape, sid in cases:
        desc = {"rate": rate} if rate else {}
        data = rng.standard_normal(shape).astype(np.float32) * np.float32(10.0) ** rng.integers(-8, 8, shape)
        for t_capture in (1764230400.123456, np.float64(1e-7), float("inf"), 0.0):
            m = wire.Message(wire.PRED, sid, flags=flags, epoch=2**53 - 1, seq=41, sample_index=123456,
                             t_capture=t_capture, data=data)
            rec = Records()
            rec.descs[("out", sid)] = desc
            want = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rec.rows(m))
            assert row_lines(m, desc) == want


def test_json_lines_sink_writes_a_ticks_outputs_from_their_rows_as_write_writes_each_message():
    """JsonLinesSink.write_outputs formats a tick's prediction rows without building messages
    (Records.pred_lines); the text must equal ``write`` of each message (``Outputs.messages``), itself
    json.dumps of every record: streams with and without a descriptor, flags, several columns and rows,
    a non-finite time, and a tick with a NaN value (sent to ``write``, the json.dumps path)."""
    rng = np.random.default_rng(5)

    def ticks():
        for nan in (False, True):
            b = wire.Outputs(wire.PRED)
            for i, (sid, flags, shape) in enumerate((("a", wire.FLAG_GAP | wire.FLAG_RESET, (2, 1)), ("b", 0, (3, 2)),
                                                     ("a", 0, (1, 1)), ("c%s", wire.FLAG_OVERFLOW, (2, 3)))):
                data = rng.standard_normal(shape).astype(np.float32)
                if nan and i == 2:
                    data[0, 0] = np.nan
                b.append(sid, flags, 5 + i, 40 + i, 1000 * i, float("inf") if i == 3 else 1764230400.25 + i, i, data)
            b.t_send = 2.0
            yield b

    desc = wire.Message(wire.DESC, "a", meta=wire.descriptor("a", 5, "pred", "float32", 1, 100.0))
    desc_b = wire.Message(wire.DESC, "b", meta=wire.descriptor("b", 6, "pred", "float32", 2, 16000.0 / 160))
    fast, slow = io.StringIO(), io.StringIO()
    sinks = JsonLinesSink(stream=fast), JsonLinesSink(stream=slow)
    for s in sinks:
        s.open()
        s.write(desc)
        s.write(desc_b)
    for b in ticks():
        sinks[0].write_outputs(b)
        for m in b.messages():
            sinks[1].write(m)
    lines = fast.getvalue().splitlines()
    assert fast.getvalue() == slow.getvalue() and len(lines) == 2 + 2 * 8
    assert [json.loads(x)["type"] for x in lines].count("pred") == 16
    assert any('"y":[NaN]' in x for x in lines)  # the NaN tick went through json.dumps
