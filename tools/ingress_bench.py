#!/usr/bin/env python3
"""How fast can `streamrnn serve`'s ingress spread messages over N workers?  Four ways, measured:

  router   the Python router serve uses (streamrnn.serve.routing.Router): PULL, crc32 of the topic's
           stream id, PUSH to the owner (sticky)
  proxy    zmq.proxy PULL -> PUSH in C: round-robin, NOT sticky; the ceiling of any in-process device
  prefix   PUB -> XSUB/XPUB proxy (C) -> N SUB workers subscribed by id prefix (sticky only if ids are
           made to start with their shard: in/0..., in/1...)
  direct   a client-side shard map: each producer hashes (crc32) and pushes straight to the owner's
           PULL (no middle hop at all)

    python tools/ingress_bench.py [--workers 2] [--messages 200000] [--producers 2] [--repeats 3]

Every message is a real streamrnn/1 data message of 20 ms of 16 kHz int16 audio (704 bytes + topic)
over 1000 stream ids; producers and workers are separate processes (spawn) on 127.0.0.1 TCP.
Rates are medians of interleaved repeats (the machine may be shared): messages/s delivered to the
workers, from the first message received to the last, and the CPU time the device itself (this
process: the router thread or the proxy, and libzmq's I/O threads) spent per message, whose inverse
is what one core of the device forwards when producers and workers run on other cores.  On a small
shared machine the end-to-end rate is bound by the Python producers and workers, not the device:
read ``device_cpu_us_per_msg``.  Prints one JSON object.
"""

import argparse
import json
import multiprocessing as mp
import statistics
import socket
import sys
import threading
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IDS = [f"mic{i:04d}" for i in range(1000)]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def frames_for(sid, prefix=""):
    import numpy as np

    from streamrnn.transport import wire

    m = wire.Message(wire.DATA, prefix + sid, "in", epoch=1, seq=0, t_capture=time.time(),
                     data=np.zeros((320, 1), np.int16))
    return wire.encode(m)


def producer(mode, addrs, n, workers, prefix_shard):
    import zmq

    ctx = zmq.Context()
    if mode == "direct":
        socks = []
        for a in addrs:
            s = ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.SNDHWM, 0)
            s.connect(a)
            socks.append(s)
    else:
        s = ctx.socket(zmq.PUB if mode == "prefix" else zmq.PUSH)
        s.setsockopt(zmq.SNDHWM, 0)
        s.connect(addrs[0])
    msgs = []
    for sid in IDS:
        w = zlib.crc32(sid.encode()) % workers
        msgs.append((w, frames_for(sid, f"{w}" if prefix_shard else "")))
    time.sleep(1.0)  # connections and subscriptions settle
    for i in range(n):
        w, fr = msgs[i % len(msgs)]
        if mode == "direct":
            socks[zlib.crc32(fr[0][3:fr[0].index(b"/", 3)]) % workers].send_multipart(fr)  # the client's hash
        else:
            s.send_multipart(fr)
    time.sleep(2.0)
    ctx.destroy(linger=0)


def worker(mode, addr, w, q):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB if mode == "prefix" else zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 0)
    if mode == "prefix":
        s.setsockopt(zmq.SUBSCRIBE, f"in/{w}".encode())
        s.connect(addr)
    elif mode == "direct":
        s.bind(addr)
    else:
        s.connect(addr)
    n, t_first, t_last = 0, None, None
    while s.poll(3000 if n else 60000):  # the first message may take the producers' start-up
        s.recv_multipart(copy=False)
        now = time.perf_counter()
        t_first = t_first or now
        t_last = now
        n += 1
    q.put((n, t_first, t_last))
    ctx.destroy(linger=0)


def run(mode, workers, n, producers):
    import zmq

    from streamrnn.serve.routing import Router

    ctx = zmq.Context()
    spawn = mp.get_context("spawn")
    q = spawn.Queue()
    stop_device = None
    ports = [free_port() for _ in range(workers)]
    ingress = f"tcp://127.0.0.1:{free_port()}"
    if mode == "router":
        src = ctx.socket(zmq.PULL)
        src.setsockopt(zmq.RCVHWM, 0)
        src.bind(ingress)
        outs = []
        for p in ports:
            o = ctx.socket(zmq.PUSH)
            o.setsockopt(zmq.SNDHWM, 100000)
            o.bind(f"tcp://127.0.0.1:{p}")
            outs.append(o)
        dev = Router(src, outs)
        dev.start()
        stop_device = dev.stop
        w_addrs = [f"tcp://127.0.0.1:{p}" for p in ports]
        p_addrs = [ingress]
    elif mode in ("proxy", "prefix"):
        a, b = (zmq.PULL, zmq.PUSH) if mode == "proxy" else (zmq.XSUB, zmq.XPUB)
        front, back = ctx.socket(a), ctx.socket(b)
        for s in (front, back):
            s.setsockopt(zmq.SNDHWM, 0)
            s.setsockopt(zmq.RCVHWM, 0)
        front.bind(ingress)
        back_addr = f"tcp://127.0.0.1:{ports[0]}"
        back.bind(back_addr)
        ctl = ctx.socket(zmq.PAIR)
        ctl.bind("inproc://ctl")
        peer = ctx.socket(zmq.PAIR)
        peer.connect("inproc://ctl")
        t = threading.Thread(target=zmq.proxy_steerable, args=(front, back, None, peer) if mode == "proxy"
                             else (front, back, None, peer), daemon=True)
        t.start()
        stop_device = lambda: (ctl.send(b"TERMINATE"), t.join(5))  # noqa: E731
        w_addrs = [back_addr] * workers
        p_addrs = [ingress]
    else:  # direct
        w_addrs = [f"tcp://127.0.0.1:{p}" for p in ports]
        p_addrs = w_addrs
    ws = [spawn.Process(target=worker, args=(mode, w_addrs[i], i, q)) for i in range(workers)]
    for p in ws:
        p.start()
    time.sleep(1.0)
    ps = [spawn.Process(target=producer, args=(mode, p_addrs, n // producers, workers, mode == "prefix"))
          for _ in range(producers)]
    for p in ps:
        p.start()
    cpu0 = time.process_time()  # from here this process runs only the device and libzmq's I/O threads
    res = [q.get(timeout=600) for _ in ws]
    for p in ps + ws:
        p.join(30)
    if stop_device:
        stop_device()
    cpu = time.process_time() - cpu0
    ctx.destroy(linger=0)
    got = sum(r[0] for r in res)
    t0 = min(r[1] for r in res if r[1])
    t1 = max(r[2] for r in res if r[2])
    return {"delivered": got, "sent": n // producers * producers, "msg_per_s": got / max(t1 - t0, 1e-9),
            "device_cpu_us_per_msg": 0.0 if mode == "direct" else cpu / max(got, 1) * 1e6,
            "per_worker": [r[0] for r in res]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="router,proxy,prefix,direct")
    a = ap.parse_args()
    modes = a.modes.split(",")
    runs = {m: [] for m in modes}
    for _ in range(a.repeats):  # interleaved: a burst of load from others hits every mode alike
        for m in modes:
            runs[m].append(run(m, a.workers, a.messages, a.producers))
    out = {"workers": a.workers, "messages": a.messages, "producers": a.producers, "repeats": a.repeats,
           "cpu_count": mp.cpu_count(), "modes": {}}
    for m, rs in runs.items():
        out["modes"][m] = {"median_msg_per_s": round(statistics.median(r["msg_per_s"] for r in rs)),
                           "all_msg_per_s": [round(r["msg_per_s"]) for r in rs],
                           "delivered_of_sent": [f"{r['delivered']}/{r['sent']}" for r in rs],
                           "per_worker": rs[-1]["per_worker"],
                           # CPU the device spends per message (its threads and libzmq's I/O threads):
                           # 1e6 / this is what one core of it forwards when producers and workers are elsewhere
                           "device_cpu_us_per_msg": round(statistics.median(r["device_cpu_us_per_msg"] for r in rs), 2),
                           "one_core_msg_per_s": round(1e6 / max(statistics.median(
                               r["device_cpu_us_per_msg"] for r in rs), 1e-9)) if m != "direct" else None}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
