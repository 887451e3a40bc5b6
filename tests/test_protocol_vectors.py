"""Replay every conformance vector of docs/protocol-vectors/ against the real server (`streamrnn stream`
as a subprocess, PUSH into its zmq+pull source, SUB on its zmq+pub sink, 127.0.0.1) and check what it
publishes and counts.  The vectors' expectations were derived from docs/protocol.md by
tools/make_protocol_vectors.py (rows from the plain-NumPy references), never captured from the server."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from test_cli_stream import free_port
from streamrnn.transport import wire

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "docs" / "protocol-vectors"
CASES = sorted((VECTORS / "cases").glob("*.json"))
SERVERS = json.loads((VECTORS / "servers.json").read_text())
GROUPS = ("bad", "drops", "gaps", "refused", "resets", "implausible_time", "closed")  # every reason checked
TOTALS = ("gap_samples", "streams_opened", "frames_in", "frames_out")


class VectorServer:
    """The CLI on fresh loopback ports with a vector model; stats every 0.1 s mark what was processed."""

    def __init__(self, tmp, model: str):
        spec = SERVERS[model]
        self.port, self.out_port = free_port(), free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.err = tmp / f"{model}.err"
        self.p = subprocess.Popen(
            [sys.executable, "-m", "streamrnn", "stream", "--model", str(VECTORS / spec["model"]),
             "--source", f"zmq+pull://127.0.0.1:{self.port}", "--sink", f"zmq+pub://127.0.0.1:{self.out_port}",
             "--set", "stats_interval=0.1", *spec["args"]], cwd=tmp, env=env, stdout=subprocess.DEVNULL,
            stderr=open(self.err, "w"))
        ctx = zmq.Context.instance()
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"out/")
        self.sub.connect(f"tcp://127.0.0.1:{self.out_port}")
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"tcp://127.0.0.1:{self.port}")
        self.next_stats(timeout=120)  # started (kernels compiled) and our subscription is live

    def next_stats(self, timeout=30.0, min_messages_in=0):
        """Decode messages until a stats message with messages_in >= min_messages_in; returns (it, the rest)."""
        got, t_end = [], time.monotonic() + timeout
        while time.monotonic() < t_end:
            assert self.p.poll() is None, self.err.read_text()[-3000:]
            if not self.sub.poll(100):
                continue
            m = wire.decode(self.sub.recv_multipart())
            if m.kind == wire.STATS and m.meta["counters"].get("messages_in", 0) >= min_messages_in:
                return m.meta, got
            got.append(m)
        raise AssertionError(f"no stats with messages_in >= {min_messages_in}; stderr:\n{self.err.read_text()[-3000:]}")

    def replay(self, case: dict):
        """Send the case's messages (capture times relative to t0 = now); returns (t0, outputs, before, after)."""
        before, _ = self.next_stats()
        t0 = time.time()
        for msg in case["messages"]:
            frames = [bytes.fromhex(f) for f in msg["frames"]]
            if "t_capture" in msg:
                h = bytearray(frames[1])
                struct.pack_into("<d", h, 40, t0 + msg["t_capture"])
                frames[1] = bytes(h)
            self.push.send_multipart(frames)
        want = before["counters"].get("messages_in", 0) + len(case["messages"])
        after, outputs = self.next_stats(min_messages_in=want)
        return t0, outputs, before, after

    def stop(self) -> str:
        self.push.close()
        self.sub.close()
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(30)
        err = self.err.read_text()
        assert rc == 0 and "Traceback" not in err, err[-3000:]
        return err


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vectors")
    made = {}

    def get(model):
        if model not in made:
            made[model] = VectorServer(tmp, model)
        return made[model]

    yield get
    for s in made.values():
        s.stop()


def flat(counters: dict) -> dict:
    out = {k: v for k, v in counters.items() if k in TOTALS}
    for g in GROUPS:
        out.update({f"{g}.{r}": n for r, n in counters.get(g, {}).items()})
    return out


def subset(want, got, where):
    """Every key of ``want`` in ``got`` with the same value (dicts recursively)."""
    for k, v in want.items():
        assert k in got, f"{where}: {k!r} missing in {got}"
        if isinstance(v, dict):
            subset(v, got[k], f"{where}.{k}")
        else:
            assert got[k] == v, f"{where}.{k}: {got[k]!r} != {v!r}"


def check_outputs(case, t0, outputs):
    for stream, want in case["expect"]["outputs"].items():
        # hb and repeated descriptors (seq > 0) depend on timing: docs/protocol-vectors/README.md
        got = [m for m in outputs if m.stream == stream and m.kind != wire.HEARTBEAT
               and not (m.kind == wire.DESC and m.seq > 0)]
        where = f"{case['name']}/{stream}"
        assert [m.kind_name for m in got] == [w["kind"] for w in want], (where, [m.to_json(False) for m in got])
        epochs = {}
        for i, (m, w) in enumerate(zip(got, want)):
            at = f"{where}[{i}] {w['kind']}"
            assert epochs.setdefault(w["epoch"], m.epoch) == m.epoch, at   # the same output epoch ordinal ...
            assert (m.seq, m.sample_index, m.flag_names(), m.ref_seq) == (
                w["seq"], w["sample_index"], w["flags"], w["ref_seq"]), (at, m.to_json(False), w)
            t = w["t_capture"]
            t = t["absolute"] if isinstance(t, dict) else t0 + t
            assert m.t_capture == pytest.approx(t, abs=1e-6), (at, m.t_capture - t0, t - t0)
            if "rows" in w:
                np.testing.assert_allclose(m.data, np.array(w["rows"]).reshape(m.data.shape[0], -1),
                                           atol=1e-4, err_msg=at)
                assert m.data.shape[0] == len(w["rows"]), at
            if "meta" in w:
                subset(w["meta"], m.meta, at)
        assert len(set(epochs.values())) == len(epochs), where          # ... and a new epoch for each other
    streams = set(case["expect"]["outputs"])
    stray = {m.stream for m in outputs if m.kind not in (wire.STATS,)} - streams
    assert not stray, f"{case['name']}: outputs of streams the case does not expect: {stray}"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_vector(servers, path):
    case = json.loads(path.read_text())
    srv = servers(case["model"])
    t0, outputs, before, after = srv.replay(case)
    check_outputs(case, t0, outputs)
    b, a = flat(before["counters"]), flat(after["counters"])
    delta = {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b)}
    want = {k: v for k, v in case["expect"]["counters"].items() if not k.startswith("latency.")}
    got = {k: v for k, v in delta.items() if v}
    assert got == want, f"{case['name']}: counters {got} != {want}"
    if "latency.n" in case["expect"]["counters"]:
        assert after["latency"]["n"] - before["latency"]["n"] == case["expect"]["counters"]["latency.n"]


def test_vectors_cover_every_reason_and_flag():
    """The vectors exercise every rejection reason of the document, every flag, and the stream checks."""
    counted, flags = set(), set()
    for p in CASES:
        case = json.loads(p.read_text())
        counted |= set(case["expect"]["counters"])
        for outs in case["expect"]["outputs"].values():
            flags |= {f for o in outs for f in o["flags"]}
        for msg in case["messages"]:
            if len(msg["frames"]) == 3 and len(msg["frames"][1]) == 128:
                flags |= {n for b, n in wire.FLAG_NAMES.items() if bytes.fromhex(msg["frames"][1])[7] & b}
    assert {f"bad.{r}" for r in wire.REASONS} <= counted
    assert {"bad.mismatch", "bad.content", "drops.no_descriptor", "drops.max_streams", "drops.refused",
            "drops.bad_stream", "drops.duplicate", "drops.stale", "refused.rate", "refused.channels",
            "gaps.seq", "gaps.sample_index", "resets.epoch", "resets.descriptor", "resets.flag",
            "implausible_time.past", "implausible_time.future"} <= counted
    assert flags == set(wire.FLAG_NAMES.values())
