#!/usr/bin/env python3
"""A complete streamrnn/1 producer in plain Python: pyzmq, numpy and struct only.

Sends a NumPy array (.npy: audio samples (n,) / (n, channels), or feature
frames (T, F)) or a test tone as one stream: a descriptor first, data blocks,
the descriptor again every second, and an end-of-stream message.

    python producer.py --endpoint tcp://127.0.0.1:5555 --stream mic0 --content audio \
        --rate 16000 --input speech.npy
    python producer.py --pattern pub --bind --endpoint tcp://127.0.0.1:5556 --tone 440 --realtime --loop
"""
import argparse
import json
import random
import struct
import sys
import time

import numpy as np
import zmq

HEADER = struct.Struct("<4sBBBBIIQQQddQ")  # 64 bytes, little-endian
DATA, DESC, EOS = 1, 3, 5                  # message kinds
DTYPE_CODES = {"float32": 1, "float64": 2, "int16": 5}
FLAG_END = 1 << 3


def message(stream, kind_name, kind, dtype, flags, shape, epoch, seq, sample_index, t_capture, payload):
    """The three frames of one message: topic, header, payload."""
    n_rows, n_cols = shape
    header = HEADER.pack(b"SRNN", 1, kind, dtype, flags, n_rows, n_cols, epoch, seq,
                         sample_index, t_capture, time.time(), 0)
    return [f"in/{stream}/{kind_name}".encode("ascii"), header, payload]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    ap.add_argument("--pattern", choices=["push", "pub"], default="push")
    ap.add_argument("--bind", action="store_true", help="bind instead of connect")
    ap.add_argument("--stream", default="mic0", help="stream id, [A-Za-z0-9._-]{1,64}")
    ap.add_argument("--content", choices=["audio", "features"], default="audio")
    ap.add_argument("--rate", type=float, default=16000.0, help="samples (or frames) per second")
    ap.add_argument("--input", help=".npy file (audio (n,) or (n, ch); features (T, F))")
    ap.add_argument("--tone", type=float, default=440.0, help="Hz of the test tone if no --input")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of the test tone")
    ap.add_argument("--dtype", choices=list(DTYPE_CODES), default="float32")
    ap.add_argument("--block", type=int, default=320, help="rows per data message")
    ap.add_argument("--realtime", action="store_true", help="pace the blocks at --rate")
    ap.add_argument("--loop", action="store_true", help="repeat the input until killed")
    ap.add_argument("--wait", type=float, default=0.3, help="s to wait for peers before sending")
    ap.add_argument("--epoch", type=int, default=None, help="fixed epoch (default: random)")
    args = ap.parse_args()

    if args.input:
        x = np.load(args.input, allow_pickle=False)   # never unpickle
    else:
        t = np.arange(int(args.seconds * args.rate)) / args.rate
        x = 0.5 * np.sin(2 * np.pi * args.tone * t)
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]                                 # (n, channels)
    if args.dtype == "int16":
        x = np.clip(np.round(x * 32768), -32768, 32767) if x.dtype.kind == "f" else x
    x = np.ascontiguousarray(x, dtype={"float32": "<f4", "float64": "<f8", "int16": "<i2"}[args.dtype])
    dtype = DTYPE_CODES[args.dtype]

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH if args.pattern == "push" else zmq.PUB)
    sock.setsockopt(zmq.LINGER, 5000)                   # ms: deliver what is queued, then give up
    sock.setsockopt(zmq.SNDHWM, max(16, int(2 * args.rate / args.block)))  # ~2 s of messages
    (sock.bind if args.bind else sock.connect)(args.endpoint)
    time.sleep(args.wait)                               # PUB/SUB: let subscriptions arrive

    epoch = args.epoch if args.epoch is not None else random.getrandbits(53) | 1
    desc = {"format": "streamrnn/1", "stream": args.stream, "epoch": epoch, "content": args.content,
            "dtype": args.dtype, "channels": int(x.shape[1]), "rate": args.rate, "labels": None}
    seqs = {"desc": 0, "data": 0}

    def send_desc(sample_index, t):
        sock.send_multipart(message(args.stream, "desc", DESC, 0, 0, (0, 0), epoch, seqs["desc"],
                                    sample_index, t, json.dumps(desc).encode("utf-8")))
        seqs["desc"] += 1

    t0 = time.time()
    send_desc(0, t0)
    last_desc = time.monotonic()
    index = 0                                           # samples sent since the epoch began
    while True:
        for i in range(0, len(x), args.block):
            block = x[i:i + args.block]
            if args.realtime:  # a live source has a block once its last sample has arrived
                time.sleep(max(0.0, t0 + (index + len(block)) / args.rate - time.time()))
                t_capture = t0 + index / args.rate
            else:              # as fast as possible: pretend the block ends now
                t_capture = time.time() - len(block) / args.rate
            sock.send_multipart(message(args.stream, "data", DATA, dtype, 0, block.shape, epoch,
                                        seqs["data"], index, t_capture, block.tobytes()))
            seqs["data"] += 1
            index += len(block)
            if time.monotonic() - last_desc >= 1.0:     # late subscribers catch up
                send_desc(index, time.time())
                last_desc = time.monotonic()
        if not args.loop:
            break
    sock.send_multipart(message(args.stream, "eos", EOS, 0, FLAG_END, (0, 0), epoch, 0, index,
                                time.time(), b""))
    sock.close()                                        # waits up to LINGER for delivery
    ctx.term()
    print(json.dumps({"stream": args.stream, "epoch": epoch, "messages": seqs["data"], "rows": index}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
