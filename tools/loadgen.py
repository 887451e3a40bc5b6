#!/usr/bin/env python3
"""Load generator: N concurrent 16 kHz int16 audio streams over ZeroMQ PUSH, paced in real time.

    python tools/loadgen.py --streams 1000 --seconds 10 [--block-ms 100] tcp://127.0.0.1:5555

Speaks streamrnn/1 with pyzmq, numpy and struct only (like docs/examples/producer.py).
Each stream sends a descriptor, then one block every --block-ms of speech-like audio
(the bundled demo recording at random offsets), the descriptor again every second,
and an end-of-stream message.  The streams are spread over --phases groups: one group sends
every block-ms / phases (real producers are not in step), each stream once per block.  Connects to loopback only.  Prints a JSON summary, with
the generator's own CPU seconds (``cpu_s``): it shares the machine with what it loads.

It is as cheap as it can be, because it runs on the cores it measures: every stream's
topic and descriptor are made once; each group's turn fills the 64-byte headers of its
streams in one NumPy assignment and sends every block with three plain ``send`` calls
(slices of one header buffer and of the audio, no per-message packing); it sleeps once
per turn.
"""

import argparse
import json
import random
import struct
import time

import numpy as np
import zmq

HEADER = struct.Struct("<4sBBBBIIQQQddQ")  # streamrnn/1's 64-byte header (streamrnn.transport.wire)
# the same layout as a NumPy record, so one assignment fills the headers of every stream
HEADER_DTYPE = np.dtype([("magic", "S4"), ("version", "u1"), ("kind", "u1"), ("dtype", "u1"), ("flags", "u1"),
                         ("rows", "<u4"), ("cols", "<u4"), ("epoch", "<u8"), ("seq", "<u8"),
                         ("sample_index", "<u8"), ("t_capture", "<f8"), ("t_send", "<f8"), ("ref_seq", "<u8")])
assert HEADER_DTYPE.itemsize == HEADER.size == 64
DATA, DESC, EOS = 1, 3, 5
INT16, JSON_ = 5, 0
FLAG_END = 1 << 3


def headers(n: int, kind: int, dtype: int, flags: int, rows: int, cols: int, epochs: np.ndarray) -> np.ndarray:
    h = np.zeros(n, HEADER_DTYPE)
    h["magic"], h["version"], h["kind"], h["dtype"], h["flags"] = b"SRNN", 1, kind, dtype, flags
    h["rows"], h["cols"], h["epoch"] = rows, cols, epochs
    return h


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("endpoint")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--block-ms", type=int, default=100)
    ap.add_argument("--rate", type=int, default=16000)
    ap.add_argument("--phases", type=int, default=10,
                    help="groups of streams, each sending block-ms / phases after the previous (default 10); "
                         "1: every stream's block at once")
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
    n, block = a.streams, a.rate * a.block_ms // 1000
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.SNDTIMEO, 10000)  # a server gone (or stuck) for 10 s ends the run (zmq.Again), no hang
    sock.setsockopt(zmq.SNDHWM, 4 * n * 1000 // a.block_ms)
    sock.connect(a.endpoint)
    rng = random.Random(0)
    sids = [f"load{i:05d}" for i in range(n)]
    epochs = np.array([rng.getrandbits(53) | 1 for _ in range(n)], np.uint64)
    offs = np.array([rng.randrange(0, len(audio) - block) for _ in range(n)], np.int64)
    topics = {k: [f"in/{s}/{k}".encode() for s in sids] for k in ("data", "desc", "eos")}
    descs = [json.dumps({"format": "streamrnn/1", "stream": s, "epoch": int(e), "content": "audio", "dtype": "int16",
                         "channels": 1, "rate": float(a.rate), "labels": None}).encode() for s, e in zip(sids, epochs)]
    h_data = headers(n, DATA, INT16, 0, block, 1, epochs)
    h_desc = headers(n, DESC, JSON_, 0, 0, 0, epochs)
    h_eos = headers(n, EOS, JSON_, FLAG_END, 0, 0, epochs)
    pcm = memoryview(audio.tobytes())  # int16 bytes: a block is a slice of it
    send, more = sock.send, zmq.SNDMORE
    cpu0 = time.process_time()

    def send_rows(h, topic, payloads, t, rows):
        """Send the messages of streams ``rows`` (their headers from ``h``, times set now)."""
        hg = h[rows]
        hg["t_capture"], hg["t_send"] = t, time.time()
        hb = memoryview(hg.tobytes())
        for j, i in enumerate(rows):
            send(topic[i], more)
            send(hb[64 * j:64 * j + 64], more)
            send(payloads[i])

    everyone = list(range(n))
    send_rows(h_desc, topics["desc"], descs, time.time(), everyone)
    h_desc["seq"] += 1
    # the streams start in --phases groups spread over a block (real producers are not in step): one
    # group's blocks go out every block_ms / phases, and the generator sleeps once between two groups
    phases = max(1, min(a.phases, n))
    groups = [everyone[g::phases] for g in range(phases)]
    n_msgs, t0 = 0, time.monotonic()
    n_ticks = int(a.seconds * 1000 / a.block_ms)
    span = len(audio) - block
    per_s = 1000 // a.block_ms
    payload = [b""] * n
    for u in range(n_ticks * phases):
        tick, rows = divmod(u, phases)
        rows = groups[rows]
        due = t0 + (u + 1) * a.block_ms / 1000 / phases
        time.sleep(max(0.0, due - time.monotonic()))
        pos = tick * block
        h_data["seq"][rows], h_data["sample_index"][rows] = tick, pos
        for i, st in zip(rows, ((offs[rows] + pos) % span * 2).tolist()):  # byte offsets of the blocks
            payload[i] = pcm[st:st + 2 * block]
        send_rows(h_data, topics["data"], payload, time.time() - a.block_ms / 1000, rows)
        n_msgs += len(rows)
        if (tick + 1) % per_s == 0:  # every stream's descriptor again once a second
            h_desc["sample_index"][rows] = pos + block
            send_rows(h_desc, topics["desc"], descs, time.time(), rows)
            h_desc["seq"][rows] += 1
    h_eos["seq"], h_eos["sample_index"] = n_ticks, n_ticks * block
    send_rows(h_eos, topics["eos"], [b""] * n, time.time(), everyone)
    late = time.monotonic() - (t0 + n_ticks * a.block_ms / 1000)
    cpu = time.process_time() - cpu0
    sock.close()
    ctx.term()
    print(json.dumps({"streams": n, "messages": n_msgs, "seconds": a.seconds, "behind_s": round(late, 3),
                      "cpu_s": round(cpu, 3)}))


if __name__ == "__main__":
    main()
