"""End to end with real processes and real sockets (127.0.0.1 TCP and IPC in a temp dir):
the documented plain producer -> `streamrnn stream` -> the documented plain consumer."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

import streamrnn
from streamrnn.audio import LogMel
from streamrnn.transport import wire

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "docs" / "examples"
PY = sys.executable
SR = 16000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Proc:
    """A subprocess whose stdout/stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, args, tmp, name, env=None, stdin=None, session=False):
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen([PY, *map(str, args)], stdout=open(self.out, "w"), stderr=open(self.err, "w"),
                                  stdin=stdin, env=e, cwd=tmp, start_new_session=session)  # session: its own group

    def wait_for(self, path_attr, pattern, timeout=30):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            text = getattr(self, path_attr).read_text()
            if re.search(pattern, text):
                return text
            if self.p.poll() is not None:
                raise AssertionError(f"process ended ({self.p.returncode}) before {pattern!r}:\n"
                                     f"{self.err.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"timeout waiting for {pattern!r}; stderr:\n{self.err.read_text()}")

    def wait_for_file(self, path, text, timeout=30):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if path.exists() and text in path.read_text():
                return
            assert self.p.poll() is None, self.err.read_text()
            time.sleep(0.05)
        raise AssertionError(f"timeout waiting for {text!r} in {path}; stderr:\n{self.err.read_text()}")

    def ready(self):
        self.wait_for("err", r"streamrnn: streaming")
        return self

    def finish(self, sig=None, timeout=20):
        if sig is not None and self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def lines(self):
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.startswith("{")]

    def msgs(self):
        """Consumer output without its ready line and the process-wide stats messages."""
        return [m for m in self.lines() if "kind" in m and m["kind"] != "stats"]


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        p.kill()


def stream_cmd(model, source, *sinks, extra=()):
    return ["-m", "streamrnn", "stream", "--model", model, "--source", source,
            *[a for s in sinks for a in ("--sink", s)], *extra]


def consumer(tmp, endpoint, name="cons", extra=()):
    c = Proc([EX / "consumer.py", "--endpoint", endpoint, *extra], tmp, name)
    c.wait_for("out", r'"ready": true')
    time.sleep(0.3)  # the subscription travels to the publisher
    return c


def producer(tmp, endpoint, x, name="prod", extra=()):
    np.save(tmp / f"{name}.npy", x)
    return Proc([EX / "producer.py", "--endpoint", endpoint, "--input", f"{name}.npy", *extra], tmp, name)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    fe = LogMel(n_mels=20)
    audio = streamrnn.Model.random("gru", input_size=fe.n_features, hidden_size=16, output_size=1,
                                   activation="sigmoid", seed=2, labels=["tone"], frontend=fe.to_dict(), name="aud")
    feat = streamrnn.Model.random("lstm", input_size=6, hidden_size=10, output_size=2, activation="sigmoid",
                                  seed=4, labels=["a", "b"], name="feat")
    audio.save(d / "audio.safetensors")
    feat.save(d / "feat.safetensors")
    return {"audio": (str(d / "audio.safetensors"), audio), "feat": (str(d / "feat.safetensors"), feat)}


def tone(seconds=1.5, on=(0.5, 1.0), seed=0):
    t = np.arange(int(seconds * SR)) / SR
    x = 0.4 * np.sin(2 * np.pi * 500 * t) * ((t >= on[0]) & (t < on[1]))
    return (x + np.random.default_rng(seed).normal(0, 1e-3, t.shape)).astype(np.float32)


def preds_of(msgs, epoch=None):
    return [m for m in msgs if m.get("kind") == "pred" and (epoch is None or m["epoch"] == epoch)]


def check_consecutive(ps):
    assert [p["seq"] for p in ps] == list(range(len(ps)))
    idx = np.cumsum([0] + [len(p["data"]) for p in ps])[:-1]
    assert [p["sample_index"] for p in ps] == list(idx)


def test_tcp_audio_predictions_equal_offline(tmp_path, models, procs):
    path, model = models["audio"]
    p_in, p_out = free_port(), free_port()
    s = Proc(stream_cmd(path, f"zmq+pull://127.0.0.1:{p_in}", f"zmq+pub://127.0.0.1:{p_out}",
                        "jsonl:o.jsonl", extra=["--min-on", "0.05"]), tmp_path, "stream")
    procs.append(s)
    s.ready()
    c = consumer(tmp_path, f"tcp://127.0.0.1:{p_out}", extra=["--until-eos", "1", "--timeout", "30"])
    procs.append(c)
    x = tone()
    pr = producer(tmp_path, f"tcp://127.0.0.1:{p_in}", x, extra=["--block", "333"])
    procs.append(pr)
    assert pr.finish() == 0 and c.finish() == 0
    msgs = c.msgs()
    assert msgs[0]["kind"] == "desc" and msgs[0]["meta"]["content"] == "pred"
    assert msgs[0]["meta"]["labels"] == ["tone"] and msgs[0]["meta"]["input"]["rate"] == SR
    ps = preds_of(msgs)
    check_consecutive(ps)
    assert {p["epoch"] for p in ps} == {msgs[0]["epoch"]}
    y = np.concatenate([np.array(p["data"], np.float32) for p in ps])
    np.testing.assert_allclose(y, model.audio_stream(SR).push(x), rtol=0, atol=1e-6)
    # ref_seq is the seq of the last input message consumed; t_capture never after t_send
    assert ps[-1]["ref_seq"] <= len(x) // 333 and all(p["t_capture"] <= p["t_send"] for p in ps)
    ev = [m["meta"] for m in msgs if m["kind"] == "event"]
    assert [e["event"] for e in ev] == ["start", "end"] * (len(ev) // 2)
    assert msgs[-1]["kind"] == "eos" and msgs[-1]["flags"] == ["end"]
    assert s.finish(signal.SIGTERM) == 0
    recs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["y"] for r in recs if r["type"] == "pred"], y, atol=1e-7)
    err = s.err.read_text()
    assert "frames_in" in err and f"frames_in      {len(x)}" in err and "latency        p50" in err


def test_ipc_int16_producer_killed_and_restarted_resets_state(tmp_path, models, procs):
    path, model = models["audio"]
    a_in, a_out = f"{tmp_path}/in.sock", f"{tmp_path}/out.sock"
    s = Proc(stream_cmd(path, f"zmq+pull+ipc://{a_in}", f"zmq+pub+ipc://{a_out}"), tmp_path, "stream")
    procs.append(s)
    s.ready()
    c = consumer(tmp_path, f"ipc://{a_out}", extra=["--until-eos", "2", "--timeout", "30"])
    procs.append(c)
    x1, x2 = tone(seed=1), tone(0.8, on=(0.2, 0.6), seed=2)
    p1 = producer(tmp_path, f"ipc://{a_in}", x1, "p1", extra=["--dtype", "int16", "--realtime", "--loop",
                                                             "--block", "320"])
    procs.append(p1)
    c.wait_for("out", r'"kind": "pred"')
    p1.p.kill()  # SIGKILL: no end-of-stream message
    p1.p.wait()
    p2 = producer(tmp_path, f"ipc://{a_in}", x2, "p2", extra=["--dtype", "int16", "--block", "250"])
    procs.append(p2)
    assert p2.finish() == 0 and c.finish() == 0
    msgs = c.msgs()
    epochs = list(dict.fromkeys(p["epoch"] for p in preds_of(msgs)))
    assert len(epochs) == 2
    first, second = preds_of(msgs, epochs[0]), preds_of(msgs, epochs[1])
    check_consecutive(first)
    check_consecutive(second)
    # the restart ended the old output stream and flagged the reset on the new one
    eos = [m for m in msgs if m["kind"] == "eos"]
    assert [e["epoch"] for e in eos] == epochs
    assert "reset" in second[0]["flags"] and not any("reset" in p["flags"] for p in second[1:] + first)
    xq = (np.clip(np.round(x2 * 32768), -32768, 32767) / 32768).astype(np.float32)
    y2 = np.concatenate([np.array(p["data"], np.float32) for p in second])
    np.testing.assert_allclose(y2, model.audio_stream(SR).push(xq), rtol=0, atol=1e-6)
    # each output stream's descriptor names the input epoch it came from (p2 printed its epoch)
    descs = [m["meta"] for m in msgs if m["kind"] == "desc"]
    assert descs[-1]["input"]["epoch"] == json.loads(p2.out.read_text())["epoch"]
    assert len({d["input"]["epoch"] for d in descs}) == 2
    assert s.finish(signal.SIGINT) == 0


def test_killed_publisher_and_late_subscriber(tmp_path, models, procs):
    path, model = models["feat"]
    p_in, p_out = free_port(), free_port()
    x = np.random.default_rng(3).standard_normal((100, 6)).astype(np.float32)
    pub_args = ["--pattern", "pub", "--bind", "--content", "features", "--rate", "100", "--block", "5",
                "--realtime", "--loop", "--stream", "f1"]
    p1 = producer(tmp_path, f"tcp://127.0.0.1:{p_in}", x, "p1", extra=pub_args)
    procs.append(p1)
    s = Proc(stream_cmd(path, f"zmq+sub://127.0.0.1:{p_in}", f"zmq+pub://127.0.0.1:{p_out}"), tmp_path, "stream")
    procs.append(s)
    s.ready()
    time.sleep(1.5)
    # a late subscriber: gets the descriptor within about a second, then consecutive predictions
    c = consumer(tmp_path, f"tcp://127.0.0.1:{p_out}", extra=["--topic", "out/f1/", "--timeout", "30"])
    procs.append(c)
    c.wait_for("out", r'"kind": "desc"(.|\n)*"kind": "pred"(.|\n)*"kind": "pred"')
    p1.p.kill()
    p1.p.wait()
    # the publisher is gone: the stream keeps running and says so with heartbeats
    c.wait_for("out", r'"kind": "hb"')
    p2 = producer(tmp_path, f"tcp://127.0.0.1:{p_in}", x, "p2", extra=pub_args)
    procs.append(p2)

    def pred_epochs():  # the output epochs of the predictions the consumer wrote so far (whole lines only)
        eps = []
        for line in c.out.read_text().splitlines():
            if line.startswith("{") and line.endswith("}") and '"kind": "pred"' in line:
                eps.append(json.loads(line)["epoch"])
        return list(dict.fromkeys(eps))

    # the restarted publisher's data opens a second output epoch (not the first epoch's own flags:
    # a stream first seen late, on a slow start, already begins with a flagged prediction)
    t_end = time.monotonic() + 30
    while len(pred_epochs()) < 2 and time.monotonic() < t_end:
        time.sleep(0.05)
    time.sleep(0.3)
    p2.kill()
    c.p.send_signal(signal.SIGINT)
    c.finish()
    msgs = c.msgs()
    descs = [i for i, m in enumerate(msgs) if m["kind"] == "desc"]
    first_pred = next(i for i, m in enumerate(msgs) if m["kind"] == "pred")
    assert descs and descs[0] < first_pred + 200  # descriptors repeat every second
    epochs = list(dict.fromkeys(p["epoch"] for p in preds_of(msgs)))
    assert len(epochs) == 2
    late = preds_of(msgs, epochs[0])
    assert [p["seq"] for p in late] == list(range(late[0]["seq"], late[0]["seq"] + len(late)))
    assert "reset" in preds_of(msgs, epochs[1])[0]["flags"]
    assert s.finish(signal.SIGTERM) == 0


HDR = wire.HEADER


def test_malformed_messages_counted_by_reason_and_valid_ones_all_processed(tmp_path, models, procs):
    path, model = models["feat"]
    a_in = f"{tmp_path}/in.sock"
    s = Proc(stream_cmd(path, f"zmq+pull+ipc://{a_in}", "jsonl:o.jsonl", f"zmq+pub+ipc://{tmp_path}/out.sock",
                        extra=["--max-message-bytes", "2000"]), tmp_path, "stream")
    procs.append(s)
    s.ready()
    c = consumer(tmp_path, f"ipc://{tmp_path}/out.sock", extra=["--until-eos", "1", "--timeout", "30"])
    procs.append(c)
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(f"ipc://{a_in}")
    x = np.random.default_rng(8).standard_normal((60, 6)).astype(np.float32)
    ep = 77

    def data(seq, rows):
        return wire.encode(wire.Message(wire.DATA, "z", direction="in", epoch=ep, seq=seq, sample_index=seq * 6,
                                        t_capture=time.time(), data=rows))

    good = [data(i, x[6 * i:6 * i + 6]) for i in range(10)]
    ok = good[0]
    bad = {
        "frames": [ok[0], ok[1]],
        "header_size": [ok[0], ok[1] + b"\0", ok[2]],
        "magic": [ok[0], b"srnn" + ok[1][4:], ok[2]],
        "version": [ok[0], ok[1][:4] + b"\x02" + ok[1][5:], ok[2]],
        "kind": [ok[0], ok[1][:5] + b"\x00" + ok[1][6:], ok[2]],
        "dtype": [ok[0], ok[1][:6] + b"\x04" + ok[1][7:], ok[2]],
        "payload_size": [ok[0], ok[1], ok[2] + b"\0\0\0\0"],
        "non_finite": [ok[0], ok[1], np.full((6, 6), np.inf, "<f4").tobytes()],
        "stream_id": [b"in/" + b"x" * 65 + b"/data", ok[1], ok[2]],
        "json": [b"in/z/desc", HDR.pack(b"SRNN", 1, 3, 0, 0, 0, 0, ep, 1, 0, 0, 0, 0), b"\x00nope"],
        "too_large": data(99, np.zeros((100, 6), np.float32)),     # 2.5 kB > 2000
        "kind_mismatch": [b"in/z/event", ok[1], ok[2]],
        "flags": [ok[0], ok[1][:7] + b"\x20" + ok[1][8:], ok[2]],
        "topic": [b"up/" + ok[0][3:], ok[1], ok[2]],
    }
    push.send_multipart(wire.encode(wire.Message(wire.DESC, "z", direction="in", epoch=ep,
                                                 meta=wire.descriptor("z", ep, "features", "float32", 6, 100.0))))
    items = list(bad.values())
    for i in range(10):
        push.send_multipart(good[i])
        for frames in items[i::10]:
            push.send_multipart(frames)
    push.send_multipart(wire.encode(wire.Message(wire.EOS, "z", direction="in", epoch=ep, flags=wire.FLAG_END)))
    push.close()
    assert c.finish() == 0  # the end-of-stream came out: everything before it was processed
    assert s.finish(signal.SIGINT) == 0
    err = s.err.read_text()
    bad_line = re.search(r"^  bad +(\d+) \((.*)\)$", err, re.M)
    counts = dict(kv.split("=") for kv in bad_line.group(2).split(", "))
    assert {k: int(v) for k, v in counts.items()} == {r: 1 for r in bad}
    recs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    y = np.array([r["y"] for r in recs if r["type"] == "pred"], np.float32)
    np.testing.assert_allclose(y, model.forward(x), atol=1e-6)
    assert recs[-1]["type"] == "eos"


def test_sigint_flushes_sinks_and_exits_zero(tmp_path, models, procs):
    # (SIGTERM: see test_tcp_audio_predictions_equal_offline)
    sig = signal.SIGINT
    import soundfile as sf

    path, model = models["audio"]
    sf.write(tmp_path / "long.wav", tone(10.0, on=(1, 9)), SR, subtype="FLOAT")
    s = Proc(stream_cmd(path, "file:long.wav", "jsonl:o.jsonl", "csv:o.csv", extra=["--realtime"]),
             tmp_path, "stream")
    procs.append(s)
    s.ready()
    time.sleep(0.7)
    assert s.finish(sig, timeout=10) == 0
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]  # every line complete
    assert recs[-1]["type"] == "eos" and sum(r["type"] == "pred" for r in recs) > 0
    rows = (tmp_path / "o.csv").read_text().splitlines()
    assert len(rows) == 1 + sum(r["type"] in ("pred", "event", "eos") for r in recs)  # header, rows, events
    assert "streamrnn stats after" in s.err.read_text()


@pytest.mark.parametrize("args,msg", [
    (["--source", "bogus://x"], "unknown source 'bogus://x'"),
    (["--source", "stdin", "--sink", "kafka:x"], "unknown sink 'kafka:x'"),
    (["--source", "file:nope.wav"], "nope.wav: no such audio file"),
    (["--source", "stdin", "--sink", "null", "--min-on", "-1"], "min_on must be >= 0"),
    (["--source", "stdin", "--model", "no-such-model"], "no bundled model named 'no-such-model'"),
])
def test_bad_options_are_one_clear_line(tmp_path, models, args, msg, monkeypatch):
    from click.testing import CliRunner

    from streamrnn.cli import cli

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["stream", "--model", models["audio"][0], *args])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamrnn: error: ") and re.search(msg, lines[0]), r.stderr


@pytest.mark.parametrize("args,msg", [
    (["--source", "mic:no-such-mic-xyz", "--sink", "null"], "cannot open microphone 'no-such-mic-xyz'"),
    (["--source", "stdin", "--sink", "zmq+pub://127.0.0.1:PORT"], "cannot bind .* Address already in use"),
])
def test_busy_port_and_missing_mic_are_one_clear_line(tmp_path, models, args, msg, monkeypatch):
    from click.testing import CliRunner

    from streamrnn.cli import cli

    monkeypatch.chdir(tmp_path)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    args = [a.replace("PORT", str(busy.getsockname()[1])) for a in args]
    try:
        r = CliRunner().invoke(cli, ["stream", "--model", models["audio"][0], *args])
    finally:
        busy.close()
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamrnn: error: ") and re.search(msg, lines[0]), r.stderr


def test_stdin_features_command_and_env_config_precedence(tmp_path, models):
    x = tone(0.5)
    raw = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()
    (tmp_path / "c.toml").write_text('source = "file:none.wav"\nsink = ["jsonl:from_toml.jsonl"]\nrate = 8000\n')
    env = dict(os.environ, STREAMRNN_SOURCE="stdin", STREAMRNN_SINK="jsonl:from_env.jsonl")
    r = subprocess.run([PY, "-m", "streamrnn", "features", "--config", "c.toml", "--rate", "16000",
                        "--format", "s16le"], input=raw, capture_output=True, timeout=60, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "from_toml.jsonl").exists()
    recs = [json.loads(line) for line in (tmp_path / "from_env.jsonl").read_text().splitlines()]
    assert recs[0]["type"] == "desc" and recs[0]["content"] == "features"
    from streamrnn.audio.stream import FeatureStream

    ref = FeatureStream(LogMel(), SR).push(np.frombuffer(raw, "<i2").astype(np.float32) / 32768)
    assert not any(r["type"] == "pred" for r in recs)  # feature rows are not predictions
    np.testing.assert_allclose([r["x"] for r in recs if r["type"] == "features"], ref, atol=1e-5)


def test_listen_decodes_any_traffic_and_names_bad_messages(tmp_path):
    addr = f"{tmp_path}/l.sock"
    lp = Proc(["-m", "streamrnn", "listen", f"zmq+pull+ipc://{addr}", "--count", "3"], tmp_path, "listen")
    lp.wait_for("err", "listening")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(f"ipc://{addr}")
    push.send_multipart(wire.encode(wire.Message(wire.PRED, "s", epoch=3, seq=5, data=np.eye(2, dtype=np.float32))))
    push.send_multipart([b"out/s/pred", b"BAD!" + bytes(60), b""])
    push.send_multipart(wire.encode(wire.Message(wire.EVENT, "s", meta={"event": "start"})))
    push.close()
    assert lp.finish() == 0
    out = lp.lines()
    assert [(r["type"], r["frame"], r["y"], r["seq"]) for r in out[:2]] == [("pred", 0, [1, 0], 5), ("pred", 1, [0, 1], 5)]
    assert out[2]["type"] == "bad" and out[2]["reason"] == "magic"
    assert out[3]["type"] == "event" and out[3]["event"] == "start"
    assert "magic=1" in lp.err.read_text()
    assert "latency" not in lp.err.read_text()  # a listener publishes nothing: no latency line


def test_protocol_doc_shows_exactly_the_tested_examples():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert (EX / "producer.py").read_text() in blocks
    assert (EX / "consumer.py").read_text() in blocks
    for reason in wire.REASONS:
        assert f"| `{reason}` |" in doc


def test_demo_source_plays_the_packaged_recording(tmp_path, models, monkeypatch):
    from streamrnn.transport.sources import demo_path
    from streamrnn.audio.files import read_audio

    x, sr = read_audio(demo_path())
    path, model = models["audio"]
    from click.testing import CliRunner

    from streamrnn.cli import cli

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["stream", "--model", path, "--source", "demo", "--sink", "jsonl:o.jsonl", "--no-events",
                                       "--no-realtime"])
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    y = np.array([r["y"] for r in recs if r["type"] == "pred"], np.float32)
    np.testing.assert_allclose(y, model.audio_stream(sr).push(x), atol=1e-6)
    assert recs[0]["stream"] == "demo0"


def test_features_command_feeds_a_stream_command(tmp_path, procs):
    # streamrnn features (front end) -> push/pull over IPC -> streamrnn stream (a feature-input model)
    import soundfile as sf
    from streamrnn.audio.stream import FeatureStream

    fe = LogMel()
    model = streamrnn.Model.random("gru", input_size=fe.n_features, hidden_size=8, output_size=1,
                                   activation="sigmoid", seed=6, name="onfeat")
    model.save(tmp_path / "onfeat.safetensors")
    x = tone(1.0, seed=4)
    sf.write(tmp_path / "t.wav", x, SR, subtype="FLOAT")
    s = Proc(stream_cmd("onfeat.safetensors", f"zmq+pull+ipc://{tmp_path}/f.sock", "jsonl:o.jsonl"), tmp_path, "stream")
    procs.append(s)
    s.ready()
    r = subprocess.run([PY, "-m", "streamrnn", "features", "--source", "file:t.wav", "--sink",
                        f"zmq+push+ipc://{tmp_path}/f.sock"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s.wait_for_file(tmp_path / "o.jsonl", '"type":"eos"')  # the jsonl sink flushes at each end of stream
    assert s.finish(signal.SIGTERM) == 0
    recs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    y = np.array([r["y"] for r in recs if r["type"] == "pred"], np.float32)
    np.testing.assert_allclose(y, model.forward(FeatureStream(fe, SR).push(x)), atol=1e-5)
    assert recs[0]["input"]["content"] == "features" and recs[-1]["type"] == "eos"


def test_reader_closing_stdout_ends_the_run_quietly():
    """`streamrnn stream ... | head`: when the only sink's reader goes away, exit 0 without noise."""
    proc = subprocess.Popen([sys.executable, "-m", "streamrnn", "stream", "--model", "vad", "--source", "demo",
                             "--realtime", "--sink", "stdout", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline() for _ in range(3)]
    assert all(line.startswith("{") for line in lines)
    proc.stdout.close()  # like `head -3` exiting
    _, err = proc.communicate(timeout=20)  # the demo is paced (24 s): ending early proves the stop
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err and "error" not in err.lower()
