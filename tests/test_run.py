"""run_stream / run_features: the embeddable main job is exactly what the CLI runs (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import streamrnn
from streamrnn.config import StreamConfig
from streamrnn.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "streamrnn", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def normalised_jsonl(path: Path) -> str:
    """The file with what differs between any two runs by design masked: epochs (random per run, here
    numbered by first appearance), capture/send times (wall clock) and the stats messages' timings."""
    epochs: dict = {}
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        for d in (r, r.get("input") or {}):
            if "epoch" in d:
                d["epoch"] = epochs.setdefault(d["epoch"], len(epochs))
        r.pop("t_capture", None)
        r.pop("t_send", None)
        if r.get("type") == "stats":
            r = {"type": "stats", "counters": {k: v for k, v in r["counters"].items()}}
        out.append(json.dumps(r, sort_keys=True))
    return "\n".join(out)


def normalised_csv(path: Path) -> str:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    epochs: dict = {}
    for r in rows[1:]:
        r[3] = str(epochs.setdefault(r[3], len(epochs)))  # epoch
        r[6] = ""  # t_capture (wall clock)
    return "\n".join(",".join(r) for r in rows)


@pytest.mark.parametrize("command", ["stream", "features"])
def test_cli_and_run_api_give_identical_outputs_on_the_demo(tmp_path, command):
    # periodic descriptors and stats only at the end: their count would otherwise depend on the speed
    quiet = dict(desc_interval=1000.0, stats_interval=1000.0)
    args = ["--source", "demo", "--no-realtime", "--sink", "jsonl:cli.jsonl"]
    args += [f"--set={k}={v}" for k, v in quiet.items()]
    args += ["--model", "vad", "--sink", "csv:cli.csv"] if command == "stream" else []
    r = cli(command, *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = StreamConfig(model="vad" if command == "stream" else None, source="demo", realtime=False,
                       **quiet, sink=(f"jsonl:{tmp_path / 'api.jsonl'}",)
                       + ((f"csv:{tmp_path / 'api.csv'}",) if command == "stream" else ()))
    ready = []
    run = streamrnn.run_stream if command == "stream" else streamrnn.run_features
    stats = run(cfg, on_ready=ready.append)
    assert len(ready) == 1 and ready[0].source.describe().startswith("file ")
    cli_text, api_text = normalised_jsonl(tmp_path / "cli.jsonl"), normalised_jsonl(tmp_path / "api.jsonl")
    assert cli_text == api_text
    kinds = {json.loads(line)["type"] for line in api_text.splitlines()}
    assert kinds >= ({"desc", "pred", "event", "eos"} if command == "stream" else {"desc", "features", "eos"})
    desc = json.loads(api_text.splitlines()[0])
    assert desc["content"] == ("pred" if command == "stream" else "features")
    if command == "stream":
        # the CSV sink writes the predictions' values as text: identical bytes but for epoch and wall clock
        assert normalised_csv(tmp_path / "cli.csv") == normalised_csv(tmp_path / "api.csv")
        assert stats.get("frames_out") == sum(1 for line in api_text.splitlines() if '"type": "pred"' in line)
    assert "streamrnn stats after" in r.stderr  # the CLI prints the stats that run_stream returns


def test_run_stream_stops_when_asked_from_another_thread(tmp_path):
    cfg = StreamConfig(model="vad", source="demo", realtime=True, sink=(f"jsonl:{tmp_path / 'o.jsonl'}",))
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    stats = streamrnn.run_stream(cfg, stop=stop)
    took = time.monotonic() - t0
    assert took < 10  # the demo lasts 24 s in real time: the run ended on stop
    assert 0 < stats.get("frames_out") < 2400
    last = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[-1])
    assert last["type"] in ("eos", "stats")  # segments ended, end of stream sent, sinks flushed


def test_run_stream_needs_a_model_and_features_a_front_end():
    with pytest.raises(ConfigError, match="a model is needed"):
        streamrnn.run_stream(StreamConfig(source="demo", sink=("null",)))
    m = streamrnn.Model.random("gru", 3, 4)
    with pytest.raises(streamrnn.ModelFileError):
        streamrnn.run_features(StreamConfig(model="no-such-model", source="demo", sink=("null",)))
    assert m.frontend is None
