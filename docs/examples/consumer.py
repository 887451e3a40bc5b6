#!/usr/bin/env python3
"""A complete streamrnn/1 consumer in plain Python: pyzmq, numpy and struct only.

Subscribes to (or pulls) streamrnn/1 messages, checks each header, and prints
one JSON object per message on stdout. Predictions carry their rows in "data".

    python consumer.py --endpoint tcp://127.0.0.1:5556 --topic out/
    python consumer.py --endpoint tcp://127.0.0.1:5556 --until-eos 1 --timeout 10
"""
import argparse
import json
import struct
import sys
import time

import numpy as np
import zmq

HEADER = struct.Struct("<4sBBBBIIQQQddQ")  # 64 bytes, little-endian
KINDS = {1: "data", 2: "pred", 3: "desc", 4: "hb", 5: "eos", 6: "event", 7: "stats"}
DTYPES = {1: "<f4", 2: "<f8", 5: "<i2"}
FLAGS = {1: "gap", 2: "overflow", 4: "reset", 8: "end"}


def decode(frames):
    """A dict of one message, or raise ValueError saying what is wrong with it."""
    if len(frames) != 3:
        raise ValueError(f"{len(frames)} frames, expected 3")
    topic, header, payload = frames
    if len(header) != HEADER.size:
        raise ValueError(f"header of {len(header)} bytes, expected 64")
    (magic, version, kind, dtype, flags, n_rows, n_cols, epoch, seq, sample_index,
     t_capture, t_send, ref_seq) = HEADER.unpack(header)
    if magic != b"SRNN":
        raise ValueError(f"bad magic {magic!r}")
    if version != 1:
        raise ValueError(f"protocol version {version} is not 1")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind}")
    direction, stream, kind_name = topic.decode("ascii").split("/")
    if kind_name != KINDS[kind]:
        raise ValueError(f"topic kind {kind_name!r} but header kind {KINDS[kind]!r}")
    msg = {"topic": topic.decode("ascii"), "kind": KINDS[kind], "stream": stream, "epoch": epoch,
           "seq": seq, "sample_index": sample_index, "t_capture": t_capture, "t_send": t_send,
           "ref_seq": ref_seq, "flags": [n for b, n in FLAGS.items() if flags & b]}
    if kind in (1, 2):                                   # data / pred: a raw array
        dt = np.dtype(DTYPES[dtype])
        if len(payload) != n_rows * n_cols * dt.itemsize:
            raise ValueError("payload size disagrees with n_rows x n_cols")
        msg["data"] = np.frombuffer(payload, dt).reshape(n_rows, n_cols).tolist()
    elif kind in (3, 6, 7):                              # desc / event / stats: JSON
        msg["meta"] = json.loads(payload.decode("utf-8"))
    return msg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5556")
    ap.add_argument("--pattern", choices=["sub", "pull"], default="sub")
    ap.add_argument("--bind", action="store_true", help="bind instead of connect")
    ap.add_argument("--topic", default="out/", help="subscription prefix, e.g. out/mic0/")
    ap.add_argument("--until-eos", type=int, default=0, help="exit after this many end-of-stream messages")
    ap.add_argument("--count", type=int, default=0, help="exit after this many pred messages")
    ap.add_argument("--timeout", type=float, default=0, help="exit after this many idle seconds")
    args = ap.parse_args()

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB if args.pattern == "sub" else zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1000)
    if args.pattern == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, args.topic.encode("ascii"))
    (sock.bind if args.bind else sock.connect)(args.endpoint)
    print(json.dumps({"ready": True}), flush=True)     # tells a supervisor we are listening

    n_eos = n_pred = 0
    last = time.monotonic()
    try:
        while True:
            if not sock.poll(100):
                if args.timeout and time.monotonic() - last > args.timeout:
                    break
                continue
            last = time.monotonic()
            frames = sock.recv_multipart()
            try:
                msg = decode(frames)
            except (ValueError, UnicodeDecodeError, KeyError, struct.error) as e:
                print(f"skipped a bad message: {e}", file=sys.stderr)
                continue
            print(json.dumps(msg), flush=True)
            n_pred += msg["kind"] == "pred"
            n_eos += msg["kind"] == "eos"
            if (args.until_eos and n_eos >= args.until_eos) or (args.count and n_pred >= args.count):
                break
    except KeyboardInterrupt:
        pass
    sock.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
