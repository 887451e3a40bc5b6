#!/usr/bin/env python3
"""CPU per message of the ZeroMQ many-stream path, in one process, without a load generator's noise.

    python tools/profile_streams.py [--streams 500] [--ticks 40] [--block-ms 100] [--sink null|pub] [--per-read 512] [--cprofile]
                                    [--snapshot]

Builds what ``streamrnn stream --model vad --source zmq+pull://... --sink null --no-events`` builds
(``runtime.run.build_pipeline``), sends the messages of N streams (a descriptor each, then one int16
block per stream per tick, the descriptors again once a second of audio, like ``tools/loadgen.py``)
from a PUSH socket of the same process, one tick at a time, and times only the server's side: the
main thread's CPU (``time.thread_time``) in ``source.read`` + ``pipeline.process_many`` until the
tick's messages are all read.  (libzmq's I/O thread is not counted: this measures the Python side.)
Prints a JSON line: CPU us per message (median over ticks), messages, counters.  ``--cprofile`` prints
the top functions by total time instead.  ``--snapshot`` adds what a ``streamrnn serve`` worker's
snapshot of these streams costs (``WorkerPipeline.snapshot_state`` + ``store.pack``, the median CPU ms
of 15, and the packed bytes).  Connects to loopback only.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import sys
import time

import numpy as np
import zmq

HEADER = struct.Struct("<4sBBBBIIQQQddQ")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(n: int, sink: str):
    from streamrnn.config import EventParams, StreamConfig
    from streamrnn.runtime.run import build_pipeline

    port = _port()
    sinks = ("null",) if sink == "null" else (f"zmq+pub://127.0.0.1:{_port()}",)
    cfg = StreamConfig(model="vad", source=f"zmq+pull://127.0.0.1:{port}", sink=sinks, max_streams=n + 8,
                       events=EventParams(enabled=False))
    p = build_pipeline(cfg)
    for s in p.sinks:
        s.open()
    p.warm_up(p.source.expected_rate)
    p.source.open()
    return p, port


def messages(n: int, ticks: int, block_ms: int, rate: int = 16000):
    """Per tick, the frames of every message (tick 0: the descriptors first)."""
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(rate * 20) * 3000).astype(np.int16)
    block = rate * block_ms // 1000
    sids = [f"load{i:05d}" for i in range(n)]
    epochs = [int(e) | 1 for e in rng.integers(1, 2**53, n)]
    descs = [json.dumps({"format": "streamrnn/1", "stream": s, "epoch": e, "content": "audio", "dtype": "int16",
                         "channels": 1, "rate": float(rate), "labels": None}).encode() for s, e in zip(sids, epochs)]
    dseq = [0] * n

    def desc_msgs(t):
        out = []
        for i in range(n):
            out.append([f"in/{sids[i]}/desc".encode(), HEADER.pack(b"SRNN", 1, 3, 0, 0, 0, 0, epochs[i], dseq[i], 0,
                                                                   t, t, 0), descs[i]])
            dseq[i] += 1
        return out

    per_s = max(1, 1000 // block_ms)
    for tick in range(ticks):
        t = time.time()
        out = desc_msgs(t) if tick == 0 or tick % per_s == 0 else []
        for i in range(n):
            o = (i * 997 + tick * block) % (len(audio) - block)
            out.append([f"in/{sids[i]}/data".encode(),
                        HEADER.pack(b"SRNN", 1, 1, 5, 0, block, 1, epochs[i], tick, tick * block, t - block_ms / 1000,
                                    t, 0), audio[o:o + block].tobytes()])
        yield out


def snapshot_cost(p) -> dict:
    """CPU of a serve worker's snapshot of the open streams of ``p`` (median of 15) and its size."""
    from streamrnn.serve.store import pack, unpack
    from streamrnn.serve.worker import WorkerPipeline

    w = WorkerPipeline(p.source, p.sinks, p.processor, config=p.config, stats=p.stats)
    w.slots = p.slots
    cpu = []
    for _ in range(15):
        c0 = time.thread_time()
        data = pack(w.snapshot_state())
        cpu.append(time.thread_time() - c0)
    c0 = time.thread_time()
    tree = unpack(data)
    return {"streams": len(tree["streams"]), "cpu_ms_median": round(statistics.median(cpu) * 1e3, 2),
            "bytes": len(data), "unpack_cpu_ms": round((time.thread_time() - c0) * 1e3, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--ticks", type=int, default=40)
    ap.add_argument("--block-ms", type=int, default=100)
    ap.add_argument("--sink", choices=("null", "pub"), default="null")
    ap.add_argument("--per-read", type=int, default=512, help="at most this many messages per read (a server "
                    "under real-time load reads fewer than are queued here)")
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--snapshot", action="store_true", help="also time a serve worker's snapshot of the streams")
    a = ap.parse_args()
    p, port = build(a.streams, a.sink)
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)
    prof = None
    if a.cprofile:
        import cProfile

        prof = cProfile.Profile()
    per_tick, total_msgs, cpu_total, read_cpu = [], 0, 0.0, 0.0
    st = p.stats
    for out in messages(a.streams, a.ticks, a.block_ms):
        for fr in out:
            push.send_multipart(fr)
        want = st.get("messages_in") + len(out)
        time.sleep(0.002 + len(out) * 2e-6)  # let libzmq's I/O thread queue the tick (not timed)
        c0 = time.thread_time()
        if prof is not None:
            prof.enable()
        while st.get("messages_in") < want:
            r0 = time.thread_time()
            chunks = p.source.read(0.05, max_messages=a.per_read)
            read_cpu += time.thread_time() - r0
            p.process_many(chunks)
        if prof is not None:
            prof.disable()
        dc = time.thread_time() - c0
        cpu_total += dc
        total_msgs += len(out)
        per_tick.append(dc / len(out))
    snap_cost = snapshot_cost(p) if a.snapshot else None
    p.close_all("shutdown")
    p.source.close()
    for s in p.sinks:
        s.close()
    if prof is not None:
        import pstats

        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(28)
        print(f"per message: {cpu_total / total_msgs * 1e6:.2f} us (profiled)")
        return
    snap = st.snapshot(roll=False)
    out = {"streams": a.streams, "block_ms": a.block_ms, "per_read": a.per_read, "messages": total_msgs,
           "us_per_message_median": round(statistics.median(per_tick[1:]) * 1e6, 2),
           "us_per_message_mean": round(cpu_total / total_msgs * 1e6, 2),
           "us_per_message_in_read": round(read_cpu / total_msgs * 1e6, 2),
           "process_cpu_s": round(time.process_time(), 2),
           "counters": {k: v for k, v in snap["counters"].items() if k in ("drops", "bad", "gaps", "frames_out",
                                                                          "messages_in", "messages_out")}}
    if snap_cost is not None:
        out["snapshot"] = snap_cost
    print(json.dumps(out))


if __name__ == "__main__":
    main()
