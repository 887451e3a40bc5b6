#!/usr/bin/env python3
"""Load generator: N concurrent 16 kHz int16 audio streams over ZeroMQ PUSH, paced in real time.

    python tools/loadgen.py --streams 1000 --seconds 10 [--block-ms 100] tcp://127.0.0.1:5555

Speaks streamrnn/1 with pyzmq, numpy and struct only (like docs/examples/producer.py).
Each stream sends a descriptor, then one block every --block-ms of speech-like audio
(the bundled demo recording at random offsets), the descriptor again every second,
and an end-of-stream message.  Connects to loopback only.  Prints a JSON summary.
"""

import argparse
import json
import random
import struct
import time

import numpy as np
import zmq

HEADER = struct.Struct("<4sBBBBIIQQQddQ")
DATA, DESC, EOS = 1, 3, 5
INT16, JSON_ = 5, 0
FLAG_END = 1 << 3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("endpoint")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--block-ms", type=int, default=100)
    ap.add_argument("--rate", type=int, default=16000)
    a = ap.parse_args()
    host = a.endpoint.split("://", 1)[1].rsplit(":", 1)[0]
    if not (host.startswith("127.") or host in ("localhost", "[::1]")):
        raise SystemExit(f"loadgen only sends to loopback addresses, not {host!r}")
    try:
        import soundfile as sf

        from streamrnn.transport.sources import demo_path

        audio, _ = sf.read(str(demo_path()), dtype="int16")
    except ImportError:
        audio = (np.random.default_rng(0).standard_normal(16000 * 20) * 3000).astype(np.int16)
    block = a.rate * a.block_ms // 1000
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.SNDTIMEO, 10000)  # a server gone (or stuck) for 10 s ends the run (zmq.Again), no hang
    sock.setsockopt(zmq.SNDHWM, 4 * a.streams * 1000 // a.block_ms)
    sock.connect(a.endpoint)
    rng = random.Random(0)
    streams = []
    for i in range(a.streams):
        sid = f"load{i:05d}"
        epoch = rng.getrandbits(53) | 1
        desc = json.dumps({"format": "streamrnn/1", "stream": sid, "epoch": epoch, "content": "audio",
                           "dtype": "int16", "channels": 1, "rate": float(a.rate), "labels": None}).encode()
        streams.append({"sid": sid, "epoch": epoch, "desc": desc, "seq": 0, "dseq": 0, "pos": 0,
                        "off": rng.randrange(0, len(audio) - block)})

    def send(s, kind, kind_name, dtype, flags, rows, cols, payload, t):
        seq_key = "dseq" if kind == DESC else "seq"
        hdr = HEADER.pack(b"SRNN", 1, kind, dtype, flags, rows, cols, s["epoch"], s[seq_key], s["pos"], t,
                          time.time(), 0)
        if kind != EOS:
            s[seq_key] += 1
        sock.send_multipart([f"in/{s['sid']}/{kind_name}".encode(), hdr, payload], copy=False)

    for s in streams:
        send(s, DESC, "desc", JSON_, 0, 0, 0, s["desc"], time.time())
    n_msgs, t0 = 0, time.monotonic()
    n_ticks = int(a.seconds * 1000 / a.block_ms)
    for tick in range(n_ticks):
        due = t0 + (tick + 1) * a.block_ms / 1000
        time.sleep(max(0.0, due - time.monotonic()))
        t_cap = time.time() - a.block_ms / 1000
        for s in streams:
            o = (s["off"] + s["pos"]) % (len(audio) - block)
            send(s, DATA, "data", INT16, 0, block, 1, audio[o:o + block].tobytes(), t_cap)
            s["pos"] += block
            n_msgs += 1
        if (tick + 1) % (1000 // a.block_ms) == 0:
            for s in streams:
                send(s, DESC, "desc", JSON_, 0, 0, 0, s["desc"], time.time())
    for s in streams:
        send(s, EOS, "eos", JSON_, FLAG_END, 0, 0, b"", time.time())
    late = time.monotonic() - (t0 + n_ticks * a.block_ms / 1000)
    sock.close()
    ctx.term()
    print(json.dumps({"streams": a.streams, "messages": n_msgs, "seconds": a.seconds, "behind_s": round(late, 3)}))


if __name__ == "__main__":
    main()
