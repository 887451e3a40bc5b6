"""What a new user meets (issue 18): file modes, stdin headers, model/source mismatch, training talk."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.toml"


def cli(*args, umask=None, input=None, timeout=300, **kw):
    """The real CLI as a subprocess (with ``umask`` set in the child before anything is written)."""
    pre = None if umask is None else (lambda: os.umask(umask))
    return subprocess.run([sys.executable, "-m", "streamrnn", *args], capture_output=True, timeout=timeout,
                          cwd=ROOT, preexec_fn=pre, input=input, text=input is None or isinstance(input, str),
                          **kw)


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# --- item 3: model files and checkpoints honour the umask ------------------------------------------

def test_trained_model_and_checkpoint_are_0644_under_umask_022(tmp_path):
    out = tmp_path / "run"
    p = cli("train", str(TINY), "--out", str(out), "--set", "train.epochs=1", umask=0o022)
    assert p.returncode == 0, p.stderr
    assert mode(out / "model.safetensors") == 0o644
    assert mode(out / "checkpoint.safetensors") == 0o644
    assert mode(out / "metrics.jsonl") == 0o644  # the same as a file written with open()


def test_save_model_follows_a_stricter_umask(tmp_path):
    code = ("import os, sys, streamrnn; from streamrnn.nn.modelfile import save_model; os.umask(0o027); "
            "save_model(streamrnn.load_model('vad'), sys.argv[1])")
    target = tmp_path / "vad.safetensors"
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, cwd=ROOT, timeout=120)
    assert mode(target) == 0o640


# --- item 10: training docs point at the formats; divergence advice fits the config ----------------

def test_training_docs_link_to_the_documented_data_formats():
    import re

    text = (ROOT / "docs" / "training.md").read_text()
    data = text.split("## Data", 1)[1].split("\n## ", 1)[0]
    assert "See that module" not in data
    links = re.findall(r"\]\((frontend\.md)#([a-z0-9-]+)\)", data)
    assert {a for _, a in links} >= {"datasets-for-the-trainer", "audio-and-label-files"}
    # every anchor is a real heading of docs/frontend.md (GitHub's slug: lower case, spaces -> '-')
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / "frontend.md").read_text(), re.M)
    slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    assert {a for _, a in links} <= slugs
    frontend = (ROOT / "docs" / "frontend.md").read_text()
    assert '{"audio": "clips/a.wav", "labels": "clips/a.txt"}' in frontend  # the manifest format is there
    assert "start<TAB>end<TAB>label" in frontend  # and the label format


def _diverge(*overrides):
    import numpy as np

    from streamrnn.config import TrainConfig, load_config
    from streamrnn.errors import TrainingError
    from streamrnn.train.data import Sequence
    from streamrnn.train.trainer import Trainer

    rng = np.random.default_rng(0)
    seqs = [Sequence(rng.standard_normal((40, 3)).astype(np.float32), None, np.ones(40, np.float32), f"s{i}")
            for i in range(6)]
    cfg = load_config(TrainConfig, overrides=["data.task=next_frame", "data.loss=mse", "model.hidden_size=4",
                                              "tbptt.k1=8", "tbptt.k2=8", "tbptt.lanes=2", *overrides], env={})
    t = Trainer(cfg, seqs)
    t.grad_hook = lambda step, grad: grad.__setitem__(slice(None), np.inf)
    with pytest.raises(TrainingError) as e:
        t.fit()
    return str(e.value)


def test_divergence_advice_does_not_suggest_clipping_to_a_config_that_clips():
    msg = _diverge("optim.clip=norm", "optim.clip_norm=5")
    assert "training diverged" in msg
    assert "optim.clip = 'norm'" not in msg
    assert "optim.clip_norm (now 5)" in msg


def test_divergence_advice_suggests_clipping_when_it_is_off():
    msg = _diverge("optim.clip=none")
    assert "optim.clip = 'norm'" in msg


# --- item 8: a feature-frame model on an audio source is refused at start-up -----------------------

FEATURE_MODEL = ROOT / "tests" / "data" / "torch_gru_l1.safetensors"  # exported from PyTorch: no front end


def test_feature_frame_model_on_an_audio_source_exits_2_with_one_line(tmp_path):
    import streamrnn

    assert streamrnn.load_model(FEATURE_MODEL).frontend is None
    out = tmp_path / "out.jsonl"
    for source in (f"file:{ROOT / 'tests' / 'data' / 'speech.flac'}", "demo", "stdin"):
        p = cli("stream", "--model", str(FEATURE_MODEL), "--source", source, "--sink", f"jsonl:{out}",
                "--no-realtime" if source == "demo" else "--sink=stdout", input=b"\0" * 640, timeout=120)
        err = p.stderr.decode().strip()
        assert p.returncode == 2, (source, err)
        assert len(err.splitlines()) == 1 and "takes feature frames" in err and "carries audio" in err, err
        assert not out.exists()  # refused before any sink was opened


def test_run_stream_refuses_the_mismatch_before_opening_anything():
    import streamrnn
    from streamrnn.errors import ConfigError

    cfg = streamrnn.StreamConfig(model=str(FEATURE_MODEL), source="demo", sink=("stdout",), realtime=False)
    with pytest.raises(ConfigError, match="takes feature frames"):
        streamrnn.run_stream(cfg)


# --- item 4: stdin reads a WAV header, refuses other containers, documents its raw format ----------

SPEECH = ROOT / "tests" / "data" / "speech.flac"  # a real 22.05 kHz mono recording


def _preds(path):
    import json

    import numpy as np

    recs = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return (np.array([r["y"] for r in recs if r["type"] == "pred"]),
            [(r["event"], r["frame"]) for r in recs if r["type"] == "event"])


def _wav_of_speech(tmp_path, subtype="PCM_16", channels=1):
    import numpy as np
    import soundfile as sf

    x, rate = sf.read(SPEECH, dtype="float64")
    assert rate == 22050
    wav = tmp_path / f"speech-{subtype}-{channels}.wav"
    sf.write(wav, np.c_[(x,) * channels] if channels > 1 else x, rate, subtype=subtype, format="WAV")
    return wav


def _stream(source, out, stdin_bytes=None, *args):
    p = cli("stream", "--model", "vad", "--source", source, "--sink", f"jsonl:{out}", "--no-realtime", *args,
            input=stdin_bytes, timeout=180)
    return p


def test_a_22khz_wav_piped_into_stdin_equals_the_same_file_read_as_file(tmp_path):
    import numpy as np

    wav = _wav_of_speech(tmp_path)
    p = _stream("stdin", tmp_path / "stdin.jsonl", wav.read_bytes())
    assert p.returncode == 0, p.stderr
    q = _stream(f"file:{wav}", tmp_path / "file.jsonl")
    assert q.returncode == 0, q.stderr
    y_stdin, ev_stdin = _preds(tmp_path / "stdin.jsonl")
    y_file, ev_file = _preds(tmp_path / "file.jsonl")
    assert y_stdin.shape == y_file.shape  # read as 16 kHz samples the 4.56 s would be 6.28 s (628 frames)
    np.testing.assert_allclose(y_stdin, y_file, atol=1e-6)
    assert ev_stdin == ev_file and ev_file


def test_float_and_stereo_wav_on_stdin_use_their_header(tmp_path):
    import numpy as np

    wav = _wav_of_speech(tmp_path, "FLOAT", channels=2)
    p = _stream("stdin", tmp_path / "stdin.jsonl", wav.read_bytes())
    assert p.returncode == 0, p.stderr
    q = _stream(f"file:{wav}", tmp_path / "file.jsonl")
    assert q.returncode == 0, q.stderr
    np.testing.assert_allclose(_preds(tmp_path / "stdin.jsonl")[0], _preds(tmp_path / "file.jsonl")[0], atol=1e-6)


def test_other_containers_on_stdin_are_refused_in_one_line(tmp_path):
    import soundfile as sf

    ogg = tmp_path / "speech.ogg"
    x, rate = sf.read(SPEECH)
    sf.write(ogg, x, rate, format="OGG", subtype="VORBIS")
    for data, name in ((SPEECH.read_bytes(), "FLAC"), (ogg.read_bytes(), "Ogg")):
        p = _stream("stdin", tmp_path / "out.jsonl", data)
        assert p.returncode == 2, p.stderr
        last = p.stderr.decode().strip().splitlines()[-1]
        assert last.startswith("streamrnn: error: stdin holds a " + name + " stream"), last
        assert "raw PCM (s16le, 16000 Hz, 1 ch" in last


def test_raw_pcm_on_stdin_is_still_read_as_s16le_at_the_given_rate(tmp_path):
    import numpy as np
    import soundfile as sf

    pcm, rate = sf.read(SPEECH, dtype="int16")
    wav = tmp_path / "speech.wav"
    sf.write(wav, pcm, rate, subtype="PCM_16")
    p = _stream("stdin", tmp_path / "raw.jsonl", pcm.astype("<i2").tobytes(), "--rate", str(rate))
    assert p.returncode == 0, p.stderr
    q = _stream(f"file:{wav}", tmp_path / "file.jsonl")
    np.testing.assert_allclose(_preds(tmp_path / "raw.jsonl")[0], _preds(tmp_path / "file.jsonl")[0], atol=1e-6)


def test_the_raw_stdin_format_is_documented_in_help_and_readme():
    help_text = " ".join(cli("stream", "--help").stdout.split())
    assert "stdin takes headerless raw PCM, interleaved s16le at 16000 Hz, mono" in help_text
    assert "WAV" in help_text
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `streamrnn stream "))
    assert "headerless raw PCM" in row and "`s16le` at 16000 Hz, mono" in row and "--rate" in row


def test_parse_wav_header_agrees_with_soundfile_on_rf64_and_extensible(tmp_path):
    import numpy as np
    import soundfile as sf

    from streamrnn.transport.sources import parse_wav_header

    x = np.zeros((10, 3), np.float32)
    for fmt, subtype, sample in (("RF64", "PCM_24", "<i3"), ("WAV", "PCM_U8", "u1"), ("WAVEX", "FLOAT", "<f4")):
        path = tmp_path / f"x-{fmt}-{subtype}.wav"
        sf.write(path, x, 44100, format=fmt, subtype=subtype)
        info = sf.info(path)
        data = path.read_bytes()
        offset, rate, channels, got, nbytes = parse_wav_header(data)
        assert (rate, channels, got) == (info.samplerate, info.channels, sample)
        assert nbytes == 10 * 3 * np.dtype(sample.replace("<i3", "V3")).itemsize


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_U8", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_a_wav_header_arriving_in_pieces_is_waited_for(tmp_path, subtype):
    import numpy as np
    import soundfile as sf

    from streamrnn.transport.sources import StdinSource

    x = ((np.arange(4000) % 200 - 100) / 128).reshape(-1, 2)
    wav = tmp_path / "x.wav"
    sf.write(wav, x, 8000, subtype=subtype)
    data = wav.read_bytes() + b"LIST\x04\x00\x00\x00abcd"  # a trailing chunk is not samples
    r, w = os.pipe()
    src = StdinSource(fd=r)
    src.open()
    got = []
    for i in range(0, len(data), 7):  # 7 bytes at a time: the header is split mid-chunk
        os.write(w, data[i:i + 7])
        got += src.read(0.01)
    os.close(w)
    while not src.exhausted:
        got += src.read(0.01)
    os.close(r)
    y = np.concatenate([c.data for c in got])
    assert {c.rate for c in got} == {8000.0} and y.shape == (2000, 2)
    np.testing.assert_allclose(y, sf.read(wav, dtype="float64")[0], atol=1e-7)  # soundfile's decoding


# --- item 2: training says what it is doing ---------------------------------------------------------

def _train_on_a_terminal(out, *args):
    """``streamrnn train`` with its stderr on a pseudo-terminal (as a user's shell): everything it wrote."""
    import pty

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # rows, columns
    p = subprocess.Popen([sys.executable, "-m", "streamrnn", "train", str(TINY), "--out", str(out), *args],
                         cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not b:
            break
        chunks.append(b)
    os.close(master)
    assert p.wait(timeout=300) == 0
    return b"".join(chunks).decode()


def test_train_on_a_terminal_draws_a_progress_bar_per_epoch(tmp_path):
    text = _train_on_a_terminal(tmp_path / "run", "--set", "train.epochs=2")
    bars = [s for s in text.replace("\r", "\n").splitlines() if "update/s" in s]  # tqdm's rate and ETA
    assert any(s.startswith("epoch 1: 100%") for s in bars) and any(s.startswith("epoch 2: 100%") for s in bars)
    final = [s for s in bars if s.startswith("epoch 1: 100%")][-1]
    assert "loss " in final and "lr 0.02" in final and "9/9" in final  # updates, loss, learning rate
    assert "epoch 2: train_loss" in text


def test_train_says_the_split_at_the_start_and_plain_lines_off_a_terminal(tmp_path):
    p = cli("train", str(TINY), "--out", str(tmp_path / "run"), "--set", "train.epochs=1")
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    # tiny.toml: 12 .npz files, data.valid_fraction = 0.25 -> 3 held out
    assert len(list((ROOT / "tests" / "data" / "tiny_npz").glob("*.npz"))) == 12
    assert lines[0].startswith("data: 9 training sequences (") and ", 3 validation (held out" in lines[0]
    assert "\r" not in p.stderr and "update/s" not in p.stderr  # no bar in a log file
    assert any(s.startswith("epoch 1 9/9 step 9  loss") for s in lines)


def test_warmup_longer_than_the_run_is_warned_about(tmp_path):
    p = cli("train", str(TINY), "--out", str(tmp_path / "a"), "--set", "train.epochs=1",
            "--set", "schedule.warmup_steps=1000")
    assert p.returncode == 0, p.stderr
    warn = [s for s in p.stderr.splitlines() if "schedule.warmup_steps = 1000 exceeds" in s]
    assert len(warn) == 1 and "never reaching optim.lr = 0.02" in warn[0]
    q = cli("train", str(TINY), "--out", str(tmp_path / "b"), "--set", "train.epochs=1", "--set", "schedule.warmup_steps=3")
    assert q.returncode == 0 and "warmup_steps" not in q.stderr


def test_an_out_folder_with_a_model_is_not_overwritten_without_resume_or_force(tmp_path):
    out = tmp_path / "run"
    assert cli("train", str(TINY), "--out", str(out), "--set", "train.epochs=1").returncode == 0
    before = {n: (out / n).read_bytes() for n in ("model.safetensors", "checkpoint.safetensors", "metrics.jsonl")}
    again = cli("train", str(TINY), "--out", str(out), "--set", "train.epochs=1", "--set", "train.seed=5")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"streamrnn: error: {out} already holds model.safetensors and checkpoint.safetensors: --resume continues "
        f"that run, --force starts afresh and overwrites it, or choose another --out"]
    assert {n: (out / n).read_bytes() for n in before} == before  # nothing touched
    forced = cli("train", str(TINY), "--out", str(out), "--set", "train.epochs=1", "--set", "train.seed=5", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]
    resumed = cli("train", str(TINY), "--out", str(out), "--set", "train.epochs=2", "--set", "train.seed=5",
                  "--resume")
    assert resumed.returncode == 0, resumed.stderr


def test_numpy_runtime_warnings_never_interleave_with_the_training_log(tmp_path):
    # lr 1e8 without clipping: huge logits, whose sigmoid overflowed np.exp mid-log before
    p = cli("train", str(TINY), "--out", str(tmp_path / "run"), "--set", "optim.lr=1e8", "--set", "optim.clip=none")
    assert p.returncode in (0, 2), p.stderr
    assert "RuntimeWarning" not in p.stderr, p.stderr
    import re

    log_line = re.compile(r"^(data: |epoch \d|trained |streamrnn: error: |\d{4}-\d\d-\d\d [\d:,]+ \S+ (WARNING|INFO): )")
    assert all(log_line.match(s) for s in p.stderr.splitlines()), p.stderr


# --- item 5: one documented record schema for every text output -----------------------------------

WIRE_FIELDS = ("direction", "topic", "t_send", "ref_seq")


def _jsonl(path):
    import json

    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_every_record_type_and_csv_column_is_documented_with_the_schema_version():
    import re

    from streamrnn.transport import records

    doc = (ROOT / "docs" / "formats.md").read_text()
    assert records.SCHEMA == 1 and "schema version **1**" in doc
    for t in ("pred", "features", "event", "desc", "eos", "audio", "data", "stats", "hb", "bad"):
        assert f"`{t}`" in doc, t
    csv_line = re.search(r"^v,type,stream,.*$", doc, re.M).group(0)
    assert csv_line == ",".join(records.CSV_COLUMNS) + ",<one column per output>"
    for f in WIRE_FIELDS:
        assert f"`{f}`" in doc
    assert "docs/formats.md" in (ROOT / "README.md").read_text()


def test_csv_carries_the_events_of_the_jsonl_and_feature_rows_are_not_predictions(tmp_path):
    import csv

    p = cli("stream", "--model", "vad", "--source", "demo", "--no-realtime", "--duration", "30",
            "--sink", f"jsonl:{tmp_path / 's.jsonl'}", "--sink", f"csv:{tmp_path / 's.csv'}")
    assert p.returncode == 0, p.stderr
    recs = _jsonl(tmp_path / "s.jsonl")
    assert {r["v"] for r in recs} == {1}
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert {r["v"] for r in rows} == {"1"}
    ev = [(r["event"], r["frame"], r["label"]) for r in recs if r["type"] == "event"]
    assert len(ev) >= 10 and ev == [(r["event"], int(r["frame"]), r["label"]) for r in rows if r["type"] == "event"]
    y = [r["y"][0] for r in recs if r["type"] == "pred"]
    assert [float(r["speech"]) for r in rows if r["type"] == "pred"] == pytest.approx(y, rel=1e-6, abs=1e-9)
    assert [r["type"] for r in rows][-1] == "eos"

    p = cli("features", "--source", "demo", "--no-realtime", "--duration", "0.5", "--sink",
            f"jsonl:{tmp_path / 'f.jsonl'}", "--sink", f"csv:{tmp_path / 'f.csv'}")
    assert p.returncode == 0, p.stderr
    feats = _jsonl(tmp_path / "f.jsonl")
    assert "pred" not in {r["type"] for r in feats}
    rows = [r for r in feats if r["type"] == "features"]
    assert len(rows) >= 40 and all(len(r["x"]) == 40 and "y" not in r for r in rows)
    head = next(csv.reader(open(tmp_path / "f.csv")))
    assert head[-40:] == [f"x{j}" for j in range(40)]


# --- item 7 (and 5): a listener started before the stream sees its start, in the same records -------

def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listen_started_first_sees_the_stream_from_its_start_in_the_stream_records(tmp_path):
    import json
    import signal
    import time

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    lout, lerr = open(tmp_path / "l.out", "w"), open(tmp_path / "l.err", "w")
    lp = subprocess.Popen([sys.executable, "-m", "streamrnn", "listen", f"zmq+sub://127.0.0.1:{port}"],
                          stdout=lout, stderr=lerr, cwd=ROOT, env=env)
    try:
        t_end = time.monotonic() + 60
        while "listening on" not in (tmp_path / "l.err").read_text():
            assert lp.poll() is None and time.monotonic() < t_end, (tmp_path / "l.err").read_text()
            time.sleep(0.05)
        time.sleep(3.0)  # long enough for any reconnect back-off to grow past a second
        p = cli("stream", "--model", "vad", "--source", "demo", "--duration", "2.5",
                "--sink", f"zmq+pub://127.0.0.1:{port}?wait_subscribers=1&wait_timeout=20",
                "--sink", f"jsonl:{tmp_path / 's.jsonl'}", timeout=120)
        assert p.returncode == 0, p.stderr
        time.sleep(0.5)
    finally:
        lp.send_signal(signal.SIGINT)
        lp.wait(10)
    heard = [json.loads(line) for line in (tmp_path / "l.out").read_text().splitlines()]
    preds = [r for r in heard if r["type"] == "pred"]
    assert preds[0]["frame"] == 0  # nothing of the start was lost ...
    starts = [r for r in heard if r["type"] == "event" and r["event"] == "start"]
    assert starts and starts[0]["frame"] < 150  # ... including the first speech start (about 0.8 s)
    # the same records as the stream's own jsonl sink, plus the wire fields
    wrote = [r for r in _jsonl(tmp_path / "s.jsonl") if r["type"] in ("pred", "event", "eos")]
    got = [{k: v for k, v in r.items() if k not in WIRE_FIELDS} for r in heard if r["type"] in ("pred", "event", "eos")]
    assert got == wrote
    assert all(r["v"] == 1 and r["topic"] == f"out/demo0/{r['type']}" for r in heard if r["type"] != "stats")


def test_listen_reconnects_within_half_a_second_of_a_late_publisher(tmp_path):
    import threading
    import time

    import zmq

    from streamrnn.transport import wire
    from streamrnn.transport.listen import listen

    port = _free_port()
    got, stop = [], threading.Event()
    t = threading.Thread(target=listen, args=(f"zmq+sub://127.0.0.1:{port}", got.append), kwargs={"stop": stop})
    t.start()
    try:
        time.sleep(3.0)  # libzmq's back-off would now retry after 1.6 s, then 3.2 s
        pub = zmq.Context.instance().socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(f"tcp://127.0.0.1:{port}")
        t0 = time.monotonic()
        while not got and time.monotonic() - t0 < 5:
            pub.send_multipart(wire.encode(wire.Message(wire.HEARTBEAT, "s")))
            time.sleep(0.01)
        took = time.monotonic() - t0
        pub.close()
    finally:
        stop.set()
        t.join(5)
    assert got and took < 0.5, took


def test_wait_subscribers_is_checked_and_only_for_pub():
    from streamrnn.errors import ConfigError
    from streamrnn.transport.endpoints import parse_zmq_uri

    ep = parse_zmq_uri("zmq+pub://127.0.0.1:5556?wait_subscribers=2&wait_timeout=3")
    assert (ep.wait_subscribers, ep.wait_timeout) == (2, 3.0)
    for bad in ("zmq+pub://127.0.0.1:5556?wait_subscribers=0", "zmq+pub://127.0.0.1:5556?wait_subscribers=x",
                "zmq+pub://127.0.0.1:5556?wait_subscribers=1&wait_timeout=-1"):
        with pytest.raises(ConfigError, match="wait_subscribers must be an integer in 1..10000"):
            parse_zmq_uri(bad)
    with pytest.raises(ConfigError, match="only apply to pub"):
        parse_zmq_uri("zmq+push://127.0.0.1:5556?wait_subscribers=1")


# --- item 9: small messages ---------------------------------------------------------------------

def test_verbose_is_accepted_after_every_command():
    from click.testing import CliRunner

    from streamrnn.cli import cli as group

    for name in group.commands:
        r = CliRunner().invoke(group, [name, "--help"])
        assert "-v, --verbose" in r.output, name
    p = cli("stream", "--model", "vad", "--source", "demo", "--no-realtime", "--duration", "0.2", "--sink", "null",
            "-v", timeout=120)
    assert p.returncode == 0, p.stderr
    assert " INFO: " in p.stderr and "warm-up" in p.stderr  # -v after the command raised the log level
    # the start-up line names the sinks by the URIs they were given
    assert "-> null\n" in p.stderr


def test_the_start_up_line_names_sinks_by_their_uri(tmp_path):
    p = cli("stream", "--model", "vad", "--source", "demo", "--no-realtime", "--duration", "0.1", "--sink", "null",
            "--sink", f"jsonl:{tmp_path / 'o.jsonl'}", "--sink", f"csv:{tmp_path / 'o.csv'}", timeout=120)
    assert p.returncode == 0, p.stderr
    line = next(ln for ln in p.stderr.splitlines() if ln.startswith("streamrnn: streaming"))
    assert line.endswith(f"-> null, jsonl:{tmp_path / 'o.jsonl'}, csv:{tmp_path / 'o.csv'}"), line


def test_mic_device_index_0_is_named_not_called_default():
    from streamrnn.transport.sources import MicSource

    m = MicSource(0)
    assert "default" not in m.describe() and m.describe().startswith("microphone 0,")
    m.device_name = "HDA Intel PCH: ALC3246 Analog (hw:0,0)"  # what open() reads from PortAudio
    assert m.describe().startswith("microphone 0 (HDA Intel PCH: ALC3246 Analog (hw:0,0)), 16000 Hz")
    d = MicSource(None)
    d.device_name = "pulse"
    assert d.describe().startswith("microphone default device (pulse)")


def test_mic_capture_time_is_the_first_sample_and_the_summary_says_what_latency_measures():
    import time
    from types import SimpleNamespace

    import numpy as np

    from streamrnn.stats import Stats
    from streamrnn.transport.sources import MicSource

    block = np.zeros((320, 1), np.float32)  # 20 ms at 16 kHz
    # PulseAudio through ALSA: no capture (ADC) times; the block ends about now, began 20 ms ago
    m = MicSource(None, rate=16000)
    t0 = time.time()
    m._callback(block, 320, SimpleNamespace(currentTime=0.0, inputBufferAdcTime=0.0), None)
    t_cap = m.read(0.1)[0].t_capture
    assert t0 - 0.020 - 0.005 <= t_cap <= t0 - 0.020 + 0.005  # not the callback time (20 ms later)
    assert "from the audio callback" in m.latency_note()
    s = Stats()
    s.latency(0.004)
    assert "(from the audio callback" in s.summary(latency_note=m.latency_note())
    # a host API with ADC times: the first sample's capture, 30 ms before the callback ran
    m = MicSource(None, rate=16000)
    t0 = time.time()
    m._callback(block, 320, SimpleNamespace(currentTime=100.03, inputBufferAdcTime=100.0), None)
    assert abs(m.read(0.1)[0].t_capture - (t0 - 0.03)) < 0.005 and m.latency_note() is None


def test_a_directory_as_file_source_says_so_and_points_at_batch(tmp_path):
    p = cli("stream", "--model", "vad", "--source", f"file:{tmp_path}", "--sink", "null", timeout=120)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert "does not exist" not in err and f"file:{tmp_path} is a directory" in err and "streamrnn batch" in err


def test_eval_of_an_audio_file_says_a_manifest_is_expected_and_how_to_write_one():
    p = cli("eval", "--model", "vad", str(SPEECH), timeout=120)
    assert p.returncode == 2
    assert "codec can't decode" not in p.stderr
    assert f"{SPEECH} is an audio file" in p.stderr and '{"audio": "a.wav", "labels": "a.txt"}' in p.stderr


def test_training_on_a_folder_of_wavs_hints_at_a_manifest(tmp_path):
    import shutil

    wavs = tmp_path / "clips"
    wavs.mkdir()
    shutil.copy(_wav_of_speech(tmp_path), wavs / "a.wav")
    p = cli("train", str(TINY), "--out", str(tmp_path / "run"), "--set", f"data.train={wavs}", timeout=120)
    assert p.returncode == 2
    assert "no .npz files but 1 audio file(s) (.wav)" in p.stderr and "JSONL manifest" in p.stderr


def test_label_errors_name_the_label_file_and_the_manifest_line(tmp_path):
    import shutil

    shutil.copy(SPEECH, tmp_path / "a.flac")
    (tmp_path / "good.txt").write_text("0.5\t1.0\tspeech\n")
    (tmp_path / "bad.txt").write_text("0.2\t0.4\tspeech\n1.0\tspeech\n")       # line 2: two fields
    (tmp_path / "long.txt").write_text("0.2\t99.0\tspeech\n")                  # ends after the audio
    for labels, where in (("bad.txt", "bad.txt:2"), ("long.txt", "long.txt")):
        (tmp_path / "m.jsonl").write_text('{"audio": "a.flac", "labels": "good.txt"}\n'
                                          f'{{"audio": "a.flac", "labels": "{labels}"}}\n')
        p = cli("eval", "--model", "vad", str(tmp_path / "m.jsonl"), timeout=120)
        assert p.returncode == 2
        err = p.stderr.strip()
        assert f"{tmp_path / where}" in err and f"{tmp_path / 'm.jsonl'}:2" in err, err


def test_eval_vad_without_its_peers_names_the_extra(tmp_path):
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for mod in ("silero_vad", "ten_vad", "webrtcvad", "onnxruntime"):  # importable names that fail to import
        (stubs / f"{mod}.py").write_text("raise ImportError('not installed (test stub)')\n")
    shutil_copy = __import__("shutil").copy
    shutil_copy(SPEECH, tmp_path / "a.flac")
    (tmp_path / "a.txt").write_text("0.5\t1.0\tspeech\n")
    (tmp_path / "m.jsonl").write_text('{"audio": "a.flac", "labels": "a.txt"}\n')
    env = dict(os.environ, PYTHONPATH=f"{stubs}{os.pathsep}{ROOT}")
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "eval_vad.py"), str(tmp_path / "m.jsonl")],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.count("pip install -e '.[bench]'") == 4, p.stderr  # three peers skipped, then the error


def test_a_curve_listener_that_hears_nothing_says_the_keys_may_not_match(tmp_path):
    import time

    from streamrnn.stats import Stats
    from streamrnn.transport import wire
    from streamrnn.transport.endpoints import CurveConfig, write_keypair
    from streamrnn.transport.sinks import ZmqSink

    for name in ("server", "alice", "mallory"):
        write_keypair(tmp_path / name, name)
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "alice.key").write_bytes((tmp_path / "alice" / "alice.key").read_bytes())
    port = _free_port()
    sink = ZmqSink(f"zmq+pub://127.0.0.1:{port}", stats=Stats(),
                   curve=CurveConfig.from_options(tmp_path / "server" / "server.key_secret",
                                                  allow_dir=tmp_path / "allowed"))
    sink.open()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    common = [sys.executable, "-m", "streamrnn", "listen", f"zmq+sub://127.0.0.1:{port}", "--duration", "6.5",
              "--curve-server-key", str(tmp_path / "server" / "server.key"), "--curve-secret-key"]
    procs = [subprocess.Popen([*common, str(tmp_path / n / f"{n}.key_secret")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for n in ("alice", "mallory")]
    try:
        t_end = time.monotonic() + 20
        while any(p.poll() is None for p in procs) and time.monotonic() < t_end:
            sink.write(wire.Message(wire.HEARTBEAT, "s"))
            time.sleep(0.05)
        (a_out, a_err), (m_out, m_err) = (p.communicate(timeout=10) for p in procs)
    finally:
        sink.close()
    assert a_out and "may not match" not in a_err  # the allowed key hears the heartbeats, no warning
    assert m_out == "" and "nothing received for 5 s over CurveZMQ" in m_err and "keys may not match" in m_err


# --- item 1: cold start ----------------------------------------------------------------------------

def test_every_command_that_compiles_says_so_once_and_a_warm_start_says_nothing(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))  # an empty kernel cache
    args = ("features", "--source", "demo", "--no-realtime", "--duration", "0.1", "--sink", "null")
    cold = cli(*args, env=env, timeout=300)
    assert cold.returncode == 0, cold.stderr
    assert cold.stderr.count("compiling the Numba kernels") == 1, cold.stderr
    warm = cli(*args, env=env, timeout=300)
    assert warm.returncode == 0 and "compiling" not in warm.stderr, warm.stderr


def test_the_few_frame_kernel_equals_the_tiled_one_and_a_paced_source_compiles_only_it():
    import numpy as np

    from streamrnn.audio import kernels
    from streamrnn.audio.frontend import LogMel, _scratch

    fe = LogMel()
    tb = fe._tables
    x = np.random.default_rng(5).standard_normal(16000)
    n = (len(x) - fe.win_length) // fe.hop_length + 1
    tiled, one = np.empty((n, 40), np.float32), np.empty((n, 40), np.float32)
    kernels._frames_kernel(x, n, tb.itab, tb.ftab, _scratch(tb.n_scratch), tiled)
    kernels._frames1_kernel(x, n, tb.itab, tb.ftab, _scratch(tb.n_scratch), one)
    np.testing.assert_array_equal(one, tiled)  # bit for bit: the same W = 1 / W = 8 arithmetic
    # in a fresh process, the real-time demo's warm-up and first blocks never compile the tiled kernel:
    # the demo is a mono 16 kHz stream, banked (FeatureBank's one kernel, which takes the frame arithmetic
    # as a flag), alone in every read: front end and model in one compiled call (Bank.push_audio), so
    # neither frames dispatcher is compiled and that kernel is, once
    code = ("import streamrnn; from streamrnn.audio import kernels as k; from streamrnn.nn import kernels as nk; "
            "streamrnn.run_stream(streamrnn.StreamConfig(model='vad', source='demo', duration=0.3, sink=('null',)));"
            "print(len(k._frames_kernel.signatures), len(k._frames1_kernel.signatures), "
            "len(nk.audio_bank_one_kernel.signatures))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:2] == ["0", "0"] and int(p.stdout.split()[2]) >= 1


def test_a_cold_front_end_compiles_in_a_helper_process_and_is_then_loaded_here(tmp_path):
    """The helper compiles what the pipeline then runs: at the front end's own rate a FeatureBank row
    (one stream per tick, and several), at another rate a FeatureStream; here nothing compiles."""
    code = """
import numpy as np, streamrnn
from streamrnn import compiling
from streamrnn.audio.stream import FeatureBank, FeatureStream
from streamrnn.runtime import warmup
fe = streamrnn.load_model("vad").frontend
rates = [16000.0, 8000.0]
helper = warmup.compile_front_end_elsewhere(fe, rates, 0.02)  # an empty cache: a helper compiles
assert helper is not None
assert helper.wait(300) == 0
n0 = compiling.announce_compiles().compiled
fb = FeatureBank(fe, 4)
fb.open("a"), fb.open("b")
s = FeatureStream(fe, 8000.0)
for x in warmup.warm_up_blocks(16000.0, 0.02):
    fb.push_one(fb.slot("a"), x[:, 0])
    fb.push_rows(np.array([fb.slot("a"), fb.slot("b")]), np.concatenate([x[:, 0], x[:, 0]]),
                 np.array([0, len(x), 2 * len(x)]))
for x in warmup.warm_up_blocks(8000.0, 0.02):
    s.push(x)
print(compiling.announce_compiles().compiled - n0, warmup.compile_front_end_elsewhere(fe, rates, 0.02))
"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["0", "None"]  # nothing compiled here: loaded; and no helper once cached


def test_listen_records_keep_an_input_and_an_output_descriptor_of_one_stream_apart():
    import numpy as np

    from streamrnn.transport import wire
    from streamrnn.transport.records import Records

    rec = Records(wire_fields=True)
    msgs = [wire.Message(wire.DESC, "mic0", direction="in",
                         meta=wire.descriptor("mic0", 1, "audio", "float32", 1, 16000.0)),
            wire.Message(wire.DESC, "mic0", direction="out",
                         meta=wire.descriptor("mic0", 2, "pred", "float32", 1, 100.0, labels=["speech"])),
            wire.Message(wire.DATA, "mic0", direction="in", sample_index=1600, data=np.zeros((320, 1), np.float32)),
            wire.Message(wire.PRED, "mic0", direction="out", sample_index=10, data=np.ones((1, 1), np.float32))]
    out = [r for m in msgs for r in rec.make(m)]
    assert [(r["type"], r["direction"], r["frame"], r["time"]) for r in out[2:]] == [
        ("audio", "in", 1600, 0.1), ("pred", "out", 10, 0.1)]
    assert out[2]["n"] == 320 and len(out[2]["x"]) == 320  # samples: one record per block
