#!/usr/bin/env python3
"""Soak: SECONDS of generated audio through the whole real-time pipeline, as fast as possible.

The in-process ``Pipeline.run`` loop (warm-up, periodic descriptors, heartbeats and stats) takes a
long deterministic signal in 20 ms blocks from a generator source and publishes to a ZeroMQ pub
sink on 127.0.0.1, a JSON-lines sink (to /dev/null) and a checking sink. The checking sink compares
every prediction with the offline computation (the same model on the same signal, computed in
10 s blocks so memory stays bounded) and samples the resident memory (VmRSS). Passes when

* the outputs equal the offline ones to 1e-5 and every frame came out,
* resident memory grew by less than 5 MB after warm-up (the first 20 % of the audio, at most 5 min),
* the stats show no drops, gaps, bad messages, overflows or sink errors.

    python tools/soak.py --seconds 3600          # the full hour (tests/test_soak.py runs it short)

Prints a JSON report; exit status 0 when it passed.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

import numpy as np

from streamrnn.config import StreamConfig
from streamrnn.runtime.pipeline import Pipeline
from streamrnn.stats import Stats
from streamrnn.transport.sinks import JsonLinesSink, Sink, ZmqSink
from streamrnn.transport.sources import Chunk, Source, new_epoch
from streamrnn.transport import wire

SR = 16000
GEN_BLOCK = 16000  # samples: the signal is defined per second, so any reader regenerates it exactly


def signal_block(k: int) -> np.ndarray:
    """Second ``k`` of the endless test signal (GEN_BLOCK samples, float32): tones that come and go
    (so a VAD's probabilities move), plus noise seeded by k."""
    t = (k * GEN_BLOCK + np.arange(GEN_BLOCK)) / SR
    on = (np.sin(2 * np.pi * t / 7.3) > 0.2).astype(np.float64)           # ~3 s on, ~4 s off
    x = on * (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1330 * t * (1 + 0.1 * np.sin(t))))
    x += np.random.default_rng(k).normal(0, 0.01, GEN_BLOCK)
    return x.astype(np.float32)


class GeneratedSource(Source):
    """``seconds`` of the test signal in ``block_ms`` blocks, as fast as the pipeline takes them."""

    live = False

    def __init__(self, seconds: float, block_ms: float = 20.0, stats=None, blocks_per_read: int = 10):
        super().__init__(stats)
        self.total = int(seconds * SR)
        self.block = int(SR * block_ms / 1000)
        self.per_read = blocks_per_read
        self.expected_rate = SR
        self.epoch = new_epoch()
        self.pos = 0
        self.seq = 0
        self._k, self._buf = -1, None

    def _samples(self, a: int, b: int) -> np.ndarray:
        out = np.empty(b - a, np.float32)
        i = a
        while i < b:
            k = i // GEN_BLOCK
            if k != self._k:
                self._k, self._buf = k, signal_block(k)
            j = min(b, (k + 1) * GEN_BLOCK)
            out[i - a:j - a] = self._buf[i - k * GEN_BLOCK:j - k * GEN_BLOCK]
            i = j
        return out

    def read(self, timeout):
        out = []
        for _ in range(self.per_read):
            if self.exhausted:
                break
            n = min(self.block, self.total - self.pos)
            x = self._samples(self.pos, self.pos + n)[:, None]  # (n, 1)
            end = self.pos + n >= self.total
            desc = wire.descriptor("soak0", self.epoch, "audio", "float32", 1, SR)
            out.append(Chunk("soak0", self.epoch, "audio", x, float(SR), self.pos, time.time() - n / SR,
                             seq=self.seq, desc=desc, end=end))
            self.pos += n
            self.seq += 1
            self.exhausted = end
        return out


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS from /proc/self/status), bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class CheckSink(Sink):
    """Compares every prediction with the offline outputs, computed ahead in 10 s blocks."""

    def __init__(self, model, total_samples: int, warmup_frames: int):
        super().__init__()
        self.ref_stream = model.audio_stream(SR)   # the offline computation: its own state, big blocks
        self.total = total_samples
        self.fed = 0
        self.ref = np.zeros((0, model.output_size), np.float32)
        self.ref_start = 0           # frame index of ref[0]
        self.frames = 0
        self.max_err = 0.0
        self.warmup_frames = warmup_frames
        self.rss_warm = None
        self.rss_max = 0
        self.rss_samples = []
        self.seqs_ok = True
        self._next_seq = 0
        self._src = GeneratedSource(total_samples / SR)

    def _ref_rows(self, k0: int, n: int) -> np.ndarray:
        while self.ref_start + len(self.ref) < k0 + n and self.fed < self.total:
            b = min(self.total, self.fed + 10 * SR)
            y = self.ref_stream.push(self._src._samples(self.fed, b)[:, None])
            self.fed = b
            keep = self.ref[k0 - self.ref_start:]  # rows already published are dropped: bounded memory
            self.ref_start = k0
            self.ref = np.concatenate([keep, y]) if len(keep) else y
        return self.ref[k0 - self.ref_start:k0 - self.ref_start + n]

    def write(self, m):
        if m.kind != wire.PRED:
            return
        if m.seq != self._next_seq or m.sample_index != self.frames:
            self.seqs_ok = False
        self._next_seq = m.seq + 1
        ref = self._ref_rows(m.sample_index, len(m.data))
        if len(ref) != len(m.data):
            self.max_err = float("inf")
        else:
            self.max_err = max(self.max_err, float(np.abs(ref - m.data).max()))
        self.frames += len(m.data)
        if self.frames >= self.warmup_frames and (m.seq % 250 == 0 or self.rss_warm is None):
            r = rss_bytes()
            if self.rss_warm is None:
                self.rss_warm = r
            self.rss_max = max(self.rss_max, r)
            self.rss_samples.append((self.frames, r))


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def load_soak_model():
    """The bundled VAD model if installed, else a random GRU with a log-mel front end."""
    import streamrnn
    from streamrnn.nn.modelfile import bundled_models

    if "vad" in bundled_models():
        return streamrnn.load_model("vad")
    from streamrnn.audio import LogMel

    fe = LogMel(n_mels=40)
    return streamrnn.Model.random("gru", input_size=fe.n_features, hidden_size=32, num_layers=2, output_size=1,
                                  activation="sigmoid", labels=["speech"], frontend=fe.to_dict(), name="soak")


def soak(seconds: float, model=None, max_rss_growth_mb: float = 5.0, tol: float = 1e-5) -> dict:
    """Run the soak and return its report (``report["ok"]`` says whether it passed)."""
    model = model or load_soak_model()
    stats = Stats()
    src = GeneratedSource(seconds, stats=stats)
    probe = model.audio_stream(SR)
    frame_rate = probe.frame_rate if hasattr(probe, "frame_rate") else 100.0
    total_frames_est = int(seconds * frame_rate)
    check = CheckSink(model, src.total, warmup_frames=int(min(0.2 * total_frames_est, 300 * frame_rate)))
    sinks = [check, ZmqSink(f"zmq+pub://127.0.0.1:{_free_port()}", stats=stats), JsonLinesSink("/dev/null", stats=stats)]
    cfg = StreamConfig(model=model.name, source="soak", sink=("soak",))
    pipe = Pipeline(src, sinks, model=model, config=cfg, stats=stats)
    t0 = time.perf_counter()
    pipe.run()
    wall = time.perf_counter() - t0
    snap = stats.snapshot(roll=False)["counters"]
    lost = {k: v for k, v in snap.items() if k in ("drops", "gaps", "bad", "overflows", "sink_errors") and v}
    growth = (check.rss_max - check.rss_warm) / 2**20 if check.rss_warm is not None else None
    expected_frames = len(probe.push(np.zeros((src.total, 1), np.float32))) if seconds <= 120 else None
    report = {
        "audio_seconds": seconds, "wall_seconds": round(wall, 2), "speed_x_realtime": round(seconds / wall, 1),
        "model": model.name, "frames_in": snap.get("frames_in"), "frames_out": check.frames,
        "max_abs_error": check.max_err, "consecutive": check.seqs_ok,
        "rss_warm_mb": round(check.rss_warm / 2**20, 2) if check.rss_warm else None,
        "rss_max_mb": round(check.rss_max / 2**20, 2), "rss_growth_mb": None if growth is None else round(growth, 3),
        "rss_samples": len(check.rss_samples), "lost": lost, "events": snap.get("events", {}),
    }
    report["ok"] = bool(check.max_err <= tol and check.seqs_ok and not lost and growth is not None
                        and growth < max_rss_growth_mb and snap.get("frames_in") == src.total
                        and check.frames > 0 and (expected_frames is None or check.frames == expected_frames))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3600.0, help="seconds of audio (default: one hour)")
    args = ap.parse_args(argv)
    r = soak(args.seconds)
    print(json.dumps(r, indent=1))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
